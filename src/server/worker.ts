/**
 * An engine worker (a piscina worker thread). It loads the model pair once, when the thread
 * starts, and tells the pool when it is ready; then every task is one generation, streamed
 * back over the task's port (see protocol.ts). Forward passes run here, never on the server's
 * main thread: onnxruntime-node's `run()` blocks the thread it runs on.
 *
 * A worker runs up to `maxBatch` generations at once (piscina's concurrentTasksPerWorker): each
 * task waits for room in the KV-cache budget (kv-budget.ts), then its rounds run in the worker's
 * batches (scheduler.ts), one forward pass for all of them; what the passes did goes to the pool
 * as `engine-stats` messages for the metrics.
 *
 * `session.run()` is awaited (it is scheduled through `setImmediate`), so this thread's event
 * loop turns between forward passes and a `cancel` message on the port is seen before the
 * next round: generateText checks the abort signal between rounds.
 */
import { parentPort, receiveMessageOnPort, threadId, workerData } from 'node:worker_threads';
import { KvBudget, kvBytesPerPosition, type KvReservation } from '../engine/kv-budget.js';
import type { TokenConstraint } from '../engine/logits-processors.js';
import { ModelPair } from '../pair/model-pair.js';
import { policyNeeds } from '../engine/policy-registry.js';
import { BatchScheduler, type PassRecord } from '../engine/scheduler.js';
import type { RoundStats } from '../engine/stats.js';
import { generateText } from '../engine/text-generation.js';
import { GrammarHosts } from '../grammar/grammar-hosts.js';
import { nextFault, triggerFault } from './faults.js';
import { engineArguments } from './generate-options.js';
import { errorReply } from './worker-errors.js';
import type { ControlMessage, EngineStatsMessage, EngineWorkerData, GenerationRequest, GenerationTask, GrammarStatsMessage, LoadMessage, WorkerMessage } from './protocol.js';

const { pair: pairOptions, batching, faults } = workerData as EngineWorkerData;

// The server caches prefixes unless told not to (--no-enable-prefix-caching); their rows count against the budget.
const loading: Promise<ModelPair> = ModelPair.load({ ...pairOptions, prefixCaching: pairOptions.prefixCaching ?? true });
const budget = new KvBudget(batching.kvCacheMemoryBytes);
void loading.then((pair) => {
  for (const model of new Set([pair.target, pair.draft, pair.headDraft])) if (model?.kvPool) budget.addReclaimable(model.kvPool);
}, () => {});
const passes: PassRecord[] = [];
const scheduler = new BatchScheduler({
  maxBatchTokens: batching.maxBatchTokens,
  onPass: (pass) => {
    // Reported once per turn of the event loop, whatever the number of passes.
    if (passes.push(pass) === 1) setImmediate(reportStats);
  },
});

/** Grammar threads (grammar/grammar-hosts.ts): schemas compile there, off this thread's rounds. Started on the first grammar. */
let grammarHosts: GrammarHosts | undefined;
function grammars(pair: ModelPair): GrammarHosts {
  if (!pair.targetDir) throw new Error('the pair has no target directory to read a grammar vocabulary from');
  grammarHosts ??= new GrammarHosts({
    modelDir: pair.targetDir,
    vocabSize: pair.target.info.vocabSize,
    stopTokenIds: [...pair.target.info.eosTokenIds],
    onPlacement: (placement) => parentPort?.postMessage({ specd: 'grammar-stats', threadId, ...placement } satisfies GrammarStatsMessage),
  });
  return grammarHosts;
}

function reportStats(): void {
  const message: EngineStatsMessage = { specd: 'engine-stats', threadId, passes: passes.splice(0), kvCacheUsage: budget.usage };
  parentPort?.postMessage(message);
}

/** Bytes of KV cache a generation may come to need: its longest sequence in the target and in the draft its policy runs. */
function kvBytesFor(pair: ModelPair, request: GenerationRequest): number {
  const needs = policyNeeds(request.policy);
  const draft = !needs.draft ? undefined : needs.head ? (pair.headDraft ?? pair.draft) : pair.draft;
  const models = [pair.target, draft].filter((m) => m !== undefined);
  const positions = Math.min(request.promptIds.length + request.maxTokens, pair.target.info.maxPositions);
  return models.reduce((n, m) => n + positions * kvBytesPerPosition(m.info), 0);
}

loading.then(
  (pair) => announce({ specd: 'loaded', threadId, hasHead: pair.head !== undefined || pair.headDraft !== undefined }),
  (err: unknown) => announce({ specd: 'load-failed', threadId, message: errorMessage(err) }),
);

function announce(message: LoadMessage): void {
  parentPort?.postMessage(message);
}

/** The piscina task handler: one generation. Never throws; failures are `error` messages. */
export default async function generate({ port, request }: GenerationTask): Promise<void> {
  const post = (message: WorkerMessage) => port.postMessage(message);
  const controller = new AbortController();
  const onControl = (message: ControlMessage) => {
    if (message.type === 'cancel') controller.abort();
  };
  // A cancel sent while the task waited in the queue is already on the port.
  for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) onControl(m.message as ControlMessage);
  port.on('message', onControl);

  // Tests only (faults.ts): this generation fails after its first tokens.
  let fault = nextFault(faults);
  let constraint: TokenConstraint | undefined;
  let release: KvReservation | undefined;
  try {
    const pair = await loading;
    // With its prompt: the cached prefix it starts from is held for it while it is admitted.
    release = await budget.reserve(kvBytesFor(pair, request), request.promptIds);
    reportStats();
    post({ type: 'start', threadId });
    // A cancel while the grammar compiles ends the wait (the compile goes on into the cache), and
    // the generation then ends at once with finish reason `abort`, before its first round.
    constraint = request.grammar
      ? await grammars(pair)
          .constraint(request.grammar, controller.signal)
          .catch((err: unknown) => {
            if (controller.signal.aborted) return undefined;
            throw err;
          })
      : undefined;
    const rounds: RoundStats[] = [];
    const { input, options } = engineArguments(request, { constraint, signal: controller.signal, scheduler, onRound: (round) => rounds.push(round) });
    const generating = generateText(
      pair,
      input,
      options,
      ({ text, tokenIds, textOffsets, logprobs }) => {
        post({ type: 'tokens', text, tokenIds, textOffsets, logprobs, rounds: rounds.splice(0) });
        if (fault) {
          const kind = fault;
          fault = undefined;
          triggerFault(kind);
        }
      },
    );
    // generateText made the generation's caches before it first waited: they hold their prefix now.
    release.unprotect();
    const result = await generating;
    post({ type: 'done', result, rounds: rounds.splice(0) });
  } catch (err) {
    post(errorReply(err, request));
  } finally {
    constraint?.release(); // the generation released it, unless it never started
    if (release) {
      release();
      reportStats();
    }
    port.off('message', onControl);
    port.close(); // messages already posted are still delivered, then 'close' fires on the main side
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
