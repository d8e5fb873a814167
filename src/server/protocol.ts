/**
 * What crosses the thread boundary between the server's main thread and its engine workers.
 *
 * One piscina task per generation. The task carries a `MessagePort` (transferred, one
 * `MessageChannel` per request) on which the worker streams typed messages back while it
 * generates; the main thread sends `cancel` on the same port. Cancelling is a message and not
 * a piscina abort, because aborting a running piscina task terminates its worker thread and
 * with it the loaded models.
 *
 *   main                          worker
 *    |-- task {port, request} ----->|   (piscina queue)
 *    |<------------------ start ----|   picked up (with the worker's thread id): queue time ends
 *    |<------------------ tokens ---|   once per round: final text, ids, text offsets, logprobs, round stats
 *    |-- cancel ------------------->|   client went away: ends within one round
 *    |<------------- done | error --|   always last
 */
import type { MessagePort } from 'node:worker_threads';
import type { LogitsAdjustments } from '../engine/logits-processors.js';
import type { TokenLogprob } from '../engine/logprobs.js';
import type { PairOptions } from '../pair/model-pair.js';
import type { PassRecord } from '../engine/scheduler.js';
import type { SamplingParams } from '../engine/sampling.js';
import type { RoundStats } from '../engine/stats.js';
import type { PolicySpec } from '../engine/stop-policy.js';
import type { TextGenerationResult } from '../engine/text-generation.js';
import type { GrammarSpec } from '../grammar/compiler.js';
import type { GrammarPlacement } from '../grammar/grammar-hosts.js';
import type { WorkerFaults } from './faults.js';

/** `workerData` of every engine worker: how to load its models, how to batch (and, in tests, faults to suffer). */
export interface EngineWorkerData {
  pair: PairOptions;
  batching: BatchingOptions;
  faults?: WorkerFaults;
}

/** How a worker batches its generations (engine/scheduler.ts, engine/kv-budget.ts). */
export interface BatchingOptions {
  /** Generations one worker runs at once (vLLM's max_num_seqs); 1: one at a time, no batching. */
  maxBatch: number;
  /** Tokens the passes of one scheduler iteration feed at most (vLLM's max_num_batched_tokens). */
  maxBatchTokens: number;
  /** KV-cache memory a worker's running generations may reserve, bytes (Infinity: no limit). */
  kvCacheMemoryBytes: number;
}

/**
 * One generation, as plain data: the main thread has tokenized and validated it (plan.ts). The
 * one shape a request has from its route to the engine: the worker turns it into the engine's
 * arguments in one function (generate-options.ts `engineArguments`), where every field keeps its
 * name but `ignoreEos`.
 */
export interface GenerationRequest {
  promptIds: number[];
  maxTokens: number;
  sampling: SamplingParams;
  seed?: number;
  policy: PolicySpec;
  stop: string[];
  adjustments?: LogitsAdjustments;
  /** Alternatives per position when logprobs are asked for; undefined: none recorded. */
  logprobs?: number;
  /** EOS tokens do not end the generation (they stay in the output). */
  ignoreEos?: boolean;
  /** A grammar the output follows (response_format, tools), compiled by the worker. */
  grammar?: GrammarSpec;
  /** The request parameter the grammar came from, for the error when it does not compile. */
  grammarParam?: string;
}

export interface GenerationTask {
  port: MessagePort;
  request: GenerationRequest;
}

/** Worker -> main, on the task's port. */
export type WorkerMessage =
  | { type: 'start'; /** The worker thread running it. */ threadId: number }
  | { type: 'tokens'; text: string; tokenIds: number[]; textOffsets: number[]; logprobs?: TokenLogprob[]; rounds: RoundStats[] }
  | { type: 'done'; result: TextGenerationResult; rounds: RoundStats[] }
  | { type: 'error'; code: WorkerErrorCode; message: string; /** The request parameter at fault, when known. */ param?: string };

/**
 * Why a generation ended in an error: the one list the API's error table (generation-run.ts) and
 * the metrics' `code` label (metrics.ts) are built from.
 *
 *   invalid_request          the engine refused the request (a policy without its model, a KV cache beyond the budget)
 *   invalid_grammar          its grammar does not compile, faulted, or admits no output
 *   context_length_exceeded  the prompt does not fit
 *   queue_full               piscina's queue was at its limit
 *   queue_timeout            it waited for a worker longer than the queue deadline
 *   request_timeout          it ran past the request deadline
 *   worker_stalled           its worker made no progress for the stall timeout and was replaced
 *   shutting_down            the server shut down before it ended (its worker did not stop when cancelled)
 *   internal                 anything else: a bug, or a worker that died
 */
export const WORKER_ERROR_CODES = [
  'invalid_request',
  'invalid_grammar',
  'context_length_exceeded',
  'queue_full',
  'queue_timeout',
  'request_timeout',
  'worker_stalled',
  'shutting_down',
  'internal',
] as const;
export type WorkerErrorCode = (typeof WORKER_ERROR_CODES)[number];

/** Main -> worker, on the task's port. */
export type ControlMessage = { type: 'cancel' };

/** Worker -> pool (piscina forwards `parentPort` messages as the pool's 'message' event). */
export type LoadMessage =
  | { specd: 'loaded'; threadId: number; /** Whether the pair has an acceptance head (policies like specdec++ need one). */ hasHead: boolean }
  | { specd: 'load-failed'; threadId: number; message: string };

/** Worker -> pool: what the batches did since the last report (metrics.ts). */
export interface EngineStatsMessage {
  specd: 'engine-stats';
  threadId: number;
  passes: PassRecord[];
  /** Reserved share of the worker's KV-cache budget, 0..1. */
  kvCacheUsage: number;
}

/** Worker -> pool: a grammar placed for a generation (grammar/grammar-hosts.ts), for the metrics. */
export interface GrammarStatsMessage extends GrammarPlacement {
  specd: 'grammar-stats';
  threadId: number;
}

export function isLoadMessage(value: unknown): value is LoadMessage {
  return typeof value === 'object' && value !== null && 'specd' in value && (value.specd === 'loaded' || value.specd === 'load-failed');
}

export function isEngineStatsMessage(value: unknown): value is EngineStatsMessage {
  return typeof value === 'object' && value !== null && 'specd' in value && value.specd === 'engine-stats';
}

export function isGrammarStatsMessage(value: unknown): value is GrammarStatsMessage {
  return typeof value === 'object' && value !== null && 'specd' in value && value.specd === 'grammar-stats';
}
