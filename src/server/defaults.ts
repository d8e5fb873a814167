/**
 * Server defaults that depend on the machine: how many engine workers, and how many intra-op
 * threads each gets, so that workers x threads <= cores (the draft runs on one thread, never at
 * the same time as its worker's target).
 */
import { totalmem } from 'node:os';
import type { Device } from '../engine/device.js';
import type { BatchingOptions } from './protocol.js';

export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_PORT = 8000;
/** Requests that may wait for a worker before new ones are refused (429). */
export const DEFAULT_MAX_QUEUE = 64;
/** Seconds in-flight requests get to finish after SIGTERM / SIGINT before they are cancelled. */
export const DEFAULT_GRACE_S = 30;
/** Request bodies larger than this are refused (413). */
export const DEFAULT_BODY_LIMIT = 4 * 1024 * 1024;
/** Longest time to receive a whole request (headers and body), ms: a 4 MiB body needs ~1 Mbit/s. */
export const DEFAULT_BODY_TIMEOUT_MS = 30_000;
/** Open connections at most (clients, probes and scrapers together; far above --max-queue plus the running generations). */
export const DEFAULT_MAX_CONNECTIONS = 2048;
/** On CPU, one worker per this many cores; machines with at most this many get one worker using all of them. */
export const CORES_PER_WORKER = 4;

/**
 * One worker on GPUs (each worker holds its own copy of the models on the device) and on
 * machines with at most CORES_PER_WORKER cores (the target then gets every core); otherwise
 * one per CORES_PER_WORKER cores, so several requests run at once with enough threads each.
 */
export function defaultWorkers(cores: number, device: Device = 'cpu'): number {
  if (device !== 'cpu') return 1;
  return Math.max(1, Math.floor(cores / CORES_PER_WORKER));
}

/** Intra-op threads of each worker's target session: the cores shared out, at least 1. */
export function threadsPerWorker(cores: number, workers: number): number {
  return Math.max(1, Math.floor(cores / workers));
}

/**
 * Generations one worker batches at once (vLLM's max_num_seqs, `--max-batch`). 64: on the
 * 2-core CPU a pass over 64 sequences of the bundled pair still costs a few times one sequence's,
 * and the KV budget below holds them many times over.
 */
export const DEFAULT_MAX_BATCH = 64;
/** Tokens one scheduler iteration's passes feed at most (vLLM's max_num_batched_tokens, `--max-batch-tokens`). */
export const DEFAULT_MAX_BATCH_TOKENS = 512;
/** Share of the machine's memory the workers' KV-cache budgets take together by default. */
export const DEFAULT_KV_MEMORY_SHARE = 0.25;

/** Each worker's KV-cache budget by default: DEFAULT_KV_MEMORY_SHARE of the memory, shared out among the workers (bytes). */
export function defaultKvCacheMemoryBytes(workers: number, memory = totalmem()): number {
  return Math.floor((memory * DEFAULT_KV_MEMORY_SHARE) / workers);
}

/** Batching options with every default filled in. */
export function batchingOptions(given: Partial<BatchingOptions>, workers: number): BatchingOptions {
  return {
    maxBatch: given.maxBatch ?? DEFAULT_MAX_BATCH,
    maxBatchTokens: given.maxBatchTokens ?? DEFAULT_MAX_BATCH_TOKENS,
    kvCacheMemoryBytes: given.kvCacheMemoryBytes ?? defaultKvCacheMemoryBytes(workers),
  };
}
