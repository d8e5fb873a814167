/**
 * One API request's generations (its choices) on the engine, as one stream of events, and the
 * non-streaming way to consume it: wait for every choice and assemble the results.
 */
import type { ServerResponse } from 'node:http';
import { AsyncQueue } from './async-queue.js';
import { ApiError, apiErrors } from './errors.js';
import { type EnginePool, EngineUnavailableError, type GenerationHandle } from './engine-pool.js';
import type { WorkerMessage } from './protocol.js';
import type { GenerationPlan } from './requests.js';
import { type ChoiceOutput, UsageTally } from './responses.js';

export interface RunEvent {
  /** The choice. */
  index: number;
  message: WorkerMessage;
}

export class GenerationRun implements AsyncIterable<RunEvent> {
  readonly usage: UsageTally;
  private readonly queue = new AsyncQueue<RunEvent>();
  private readonly handles: GenerationHandle[];
  private open: number;

  /** @throws ApiError when the engine cannot take the request (loading, full, shutting down) */
  /** @param arrivedAt performance.now() when the HTTP request arrived (default: now), where TTFT and e2e latency start */
  constructor(
    engine: EnginePool,
    readonly plan: GenerationPlan,
    arrivedAt?: number,
  ) {
    this.usage = new UsageTally(plan.promptTokens, plan.policy);
    this.open = plan.requests.length;
    try {
      this.handles = engine.submit(
        plan.requests,
        (index, message) => {
        if (message.type === 'tokens') {
          this.usage.addTokens(message.tokenIds.length);
          this.usage.addRounds(message.rounds);
        } else if (message.type === 'done') {
          this.usage.addRounds(message.rounds);
          this.usage.addCached(message.result.cached_tokens, plan.requests[index]!.promptIds.length);
        }
        this.queue.push({ index, message });
        if ((message.type === 'done' || message.type === 'error') && --this.open === 0) this.queue.close();
        },
        arrivedAt,
      );
    } catch (err) {
      throw err instanceof EngineUnavailableError ? unavailableError(err) : err;
    }
  }

  /** Stop every choice after its current round. */
  cancel(): void {
    for (const h of this.handles) h.cancel();
  }

  /** Cancel when the client disconnects before the response has been sent in full. */
  cancelOnDisconnect(res: ServerResponse): void {
    if (res.destroyed) this.cancel();
    else res.on('close', () => !res.writableFinished && this.cancel());
  }

  [Symbol.asyncIterator](): AsyncIterator<RunEvent> {
    return this.queue[Symbol.asyncIterator]();
  }
}

export function unavailableError(err: EngineUnavailableError): ApiError {
  switch (err.reason) {
    case 'loading':
      return apiErrors.loading();
    case 'queue_full':
      return apiErrors.queueFull();
    case 'draining':
    case 'closed':
      return apiErrors.shuttingDown();
    case 'failed':
      return apiErrors.unavailable(err.message);
  }
}

/** A worker's `error` message as the API error to answer with. */
export function workerError(message: Extract<WorkerMessage, { type: 'error' }>, promptParam: string): ApiError {
  switch (message.code) {
    case 'context_length_exceeded':
      return apiErrors.invalidValue(message.param ?? promptParam, message.message, 'context_length_exceeded');
    case 'invalid_grammar': {
      const param = message.param ?? promptParam;
      return apiErrors.invalidValue(param, `Invalid '${param}': the grammar it makes cannot be compiled: ${message.message}`, 'invalid_schema');
    }
    case 'invalid_request':
      return apiErrors.invalidValue(message.param ?? promptParam, message.message);
    case 'queue_full':
      return apiErrors.queueFull();
    case 'queue_timeout':
      return apiErrors.queueTimeout(message.message);
    case 'request_timeout':
      return apiErrors.requestTimeout(message.message);
    case 'worker_stalled':
      return apiErrors.workerStalled(message.message);
    case 'shutting_down':
      return apiErrors.shuttingDown();
    case 'internal':
      return apiErrors.internal(message.message);
  }
}

/** Choices cut short by the server (shutdown) rather than finished. */
export const abortedError = () => apiErrors.shuttingDown();

/**
 * Wait for every choice; throws the first error as an ApiError.
 * @param promptParam where a prompt-related engine error points (`messages` or `prompt`)
 */
export async function collectRun(run: GenerationRun, promptParam: string): Promise<ChoiceOutput[]> {
  const choices: (ChoiceOutput | undefined)[] = run.plan.requests.map(() => undefined);
  for await (const { index, message } of run) {
    if (message.type === 'error') {
      run.cancel();
      throw workerError(message, promptParam);
    }
    if (message.type === 'done') {
      const { result } = message;
      if (result.finish_reason === 'abort') {
        run.cancel();
        throw abortedError();
      }
      choices[index] = { text: result.text, finishReason: result.finish_reason, logprobs: result.logprobs, textOffsets: result.text_offsets };
    }
  }
  return choices.map((c) => c!);
}
