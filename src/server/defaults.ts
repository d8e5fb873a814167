/**
 * Server defaults that depend on the machine: how many engine workers, and how many intra-op
 * threads each gets, so that workers x threads <= cores (the draft runs on one thread, never at
 * the same time as its worker's target).
 */
import type { Device } from '../engine/device.js';

export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_PORT = 8000;
/** Requests that may wait for a worker before new ones are refused (429). */
export const DEFAULT_MAX_QUEUE = 64;
/** Seconds in-flight requests get to finish after SIGTERM / SIGINT before they are cancelled. */
export const DEFAULT_GRACE_S = 30;
/** Request bodies larger than this are refused (413). */
export const DEFAULT_BODY_LIMIT = 4 * 1024 * 1024;
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
