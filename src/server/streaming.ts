/**
 * Server-sent events for `stream: true`: `data: {chunk}\n\n` per chunk and `data: [DONE]\n\n`
 * last, as OpenAI streams. The text in the chunks is what the worker's detokenizer and stop
 * matcher released (never half a UTF-8 character, never part of a stop string).
 *
 * The response headers wait for the first output: an error before it (the engine refusing
 * the request) is still an ordinary HTTP error; one after it is sent as an `error` event (the
 * openai client raises it) before `[DONE]`.
 */
import type { OutgoingHttpHeaders } from 'node:http';
import type { FastifyReply } from 'fastify';
import type { TokenLogprob } from '../engine/logprobs.js';
import { abortedError, type GenerationRun, workerError } from './generation-run.js';
import type { ApiFinishReason, Usage } from './responses.js';

/** How one endpoint writes its chunks. */
export interface StreamFormat {
  /** Chunks that open choice `index` (chat: the assistant role). */
  open(index: number): object[];
  /** The chunk(s) for new output of choice `index`; undefined when there is nothing to send. */
  delta(index: number, output: OutputPiece): object | object[] | undefined;
  /** The chunk(s) that end choice `index`: what was held back, then the finish reason. */
  finish(index: number, reason: ApiFinishReason): object | object[];
  /** The last chunk with `stream_options.include_usage`. */
  usage(usage: Usage): object;
}

/** Output of one choice that became final: its text, and its tokens' text offsets and logprobs. */
export interface OutputPiece {
  text: string;
  textOffsets: number[];
  logprobs?: TokenLogprob[];
}

export const SSE_HEADERS = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-cache',
  'X-Accel-Buffering': 'no',
} as const;

/**
 * Take the response over from fastify and send the event stream's head, with the headers hooks
 * set on the reply (CORS, x-request-id).
 */
export function openEventStream(reply: FastifyReply): void {
  reply.hijack();
  reply.raw.writeHead(200, { ...(reply.getHeaders() as OutgoingHttpHeaders), ...SSE_HEADERS });
}

/**
 * Stream a run to the client. Returns once every choice has ended (a disconnect cancels them,
 * and they end within one round).
 * @throws ApiError if the run fails before anything was sent
 */
export async function streamRun(reply: FastifyReply, run: GenerationRun, format: StreamFormat, promptParam: string): Promise<void> {
  const res = reply.raw;
  const { plan } = run;
  const write = (data: string) => {
    if (!res.destroyed && !res.writableEnded) res.write(`data: ${data}\n\n`);
  };
  const send = (chunk: object) => write(JSON.stringify(chunk));
  /** Usage on content chunks: so far (continuous_usage_stats), else null with include_usage, as OpenAI. */
  const withUsage = (chunk: object) => (plan.continuousUsage ? { ...chunk, usage: run.usage.toJSON() } : plan.includeUsage ? { ...chunk, usage: null } : chunk);

  let opened = false;
  let failed = false;
  for await (const { index, message } of run) {
    if (message.type === 'start' || failed) continue; // after a failure: let the cancelled choices end
    const aborted = message.type === 'done' && message.result.finish_reason === 'abort';
    if (message.type === 'error' || aborted) {
      run.cancel();
      const err = message.type === 'error' ? workerError(message, promptParam) : abortedError();
      if (!opened) throw err;
      send(err.toBody());
      failed = true;
      continue;
    }
    if (!opened) {
      openEventStream(reply);
      opened = true;
      for (let i = 0; i < plan.requests.length; i++) for (const chunk of format.open(i)) send(withUsage(chunk));
    }
    if (message.type === 'tokens') {
      for (const chunk of [format.delta(index, message) ?? []].flat()) send(withUsage(chunk));
    } else {
      for (const chunk of [format.finish(index, message.result.finish_reason as ApiFinishReason)].flat()) send(withUsage(chunk));
    }
  }
  if (!failed && plan.includeUsage) send(format.usage(run.usage.toJSON()));
  write('[DONE]');
  res.end();
}
