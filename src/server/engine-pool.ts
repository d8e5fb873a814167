/**
 * The engine workers, seen from the main thread: a piscina pool whose workers each load the
 * model pair once (worker.ts), and the generations running or queued on it.
 *
 * Readiness: piscina treats its first workers as ready at once, so each worker announces
 * itself on `parentPort` when its models have loaded (or failed to); the pool is ready when
 * every worker has. Capacity: at most `workers` x `maxBatch` generations run (each worker batches
 * its own, engine/scheduler.ts) and `maxQueue` wait; beyond that `submit` refuses at once
 * instead of queueing without bound. A generation a worker has taken but whose KV cache does not
 * fit its budget yet (engine/kv-budget.ts) counts as waiting until the worker starts it.
 *
 * A worker that dies (an uncaught exception, process.exit, a native crash short of the whole
 * process) ends its generation with an `error`, and piscina starts a replacement, which loads
 * the models again; queued generations wait for it. Should the replacement fail to load, the
 * pool turns `failed`, as when the first load fails.
 *
 * A watchdog (every WATCHDOG_PERIOD_MS) bounds what waits: a generation queued longer than
 * `queueTimeoutMs` ends with `queue_timeout`, one past `requestTimeoutMs` since its request
 * arrived is cancelled and ends with `request_timeout`, and a worker that has generations but
 * has sent nothing (no tokens, no pass report) for `stallTimeoutMs` is terminated: its
 * generations end with `worker_stalled`, piscina starts a replacement, and the pool reports
 * the stall (`stalledWorkers` until the replacement has loaded, `workerStalls` in all).
 */
import { fileURLToPath } from 'node:url';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { PairOptions } from '../pair/model-pair.js';
import type { WorkerFaults } from './faults.js';
import { type BatchingOptions, type ControlMessage, type EngineStatsMessage, type EngineWorkerData, type GenerationRequest, type GenerationTask, type GrammarStatsMessage, isEngineStatsMessage, isGrammarStatsMessage, isLoadMessage, type WorkerMessage } from './protocol.js';

function seconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(3))} s`;
}

/** The compiled worker module (this file is dist/src/server/engine-pool.js). */
export const WORKER_FILE = fileURLToPath(new URL('./worker.js', import.meta.url));

export type EngineState = 'loading' | 'ready' | 'failed' | 'closed';

/** Period of the timer that keeps the process alive while workers load (it does nothing). */
const LOAD_KEEPALIVE_MS = 60_000;

export interface EnginePoolOptions {
  /** Worker threads, each with its own copy of the models. */
  workers: number;
  /** Generations that may wait for a worker; beyond it `submit` throws EngineUnavailableError('queue_full'). */
  maxQueue: number;
  /** How every worker loads its pair (intra-op threads included). */
  pair: PairOptions;
  /** How every worker batches its generations (defaults.ts `batchingOptions` fills them in). */
  batching: BatchingOptions;
  /** Tests only: generations that fail on purpose (faults.ts). */
  faults?: WorkerFaults;
  /** Told when a worker thread stops while the pool is open (a replacement is then loading). */
  onWorkerLost?: () => void;
  /** Longest wait for a worker, ms (Infinity: none; default DEFAULT_QUEUE_TIMEOUT_MS). */
  queueTimeoutMs?: number;
  /** Longest time from a request's arrival to its end, ms (Infinity: none; default DEFAULT_REQUEST_TIMEOUT_MS). */
  requestTimeoutMs?: number;
  /** Longest time a worker with generations may go without sending anything before it is replaced, ms (default DEFAULT_STALL_TIMEOUT_MS). */
  stallTimeoutMs?: number;
}

/** A queued generation waits at most 60 s for a worker (then 503 `queue_timeout`). */
export const DEFAULT_QUEUE_TIMEOUT_MS = 60_000;
/** A request runs at most 600 s from its arrival (then `request_timeout`): the openai clients' own default timeout. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 600_000;
/** A worker with generations that sends nothing for 60 s is stalled (a round of the bundled pair takes milliseconds; a prompt piece of a large model seconds). */
export const DEFAULT_STALL_TIMEOUT_MS = 60_000;
/** How often the watchdog looks. */
const WATCHDOG_PERIOD_MS = 250;

/** Why the pool cannot take a generation now. */
export type UnavailableReason = 'loading' | 'failed' | 'draining' | 'closed' | 'queue_full';

export class EngineUnavailableError extends Error {
  override name = 'EngineUnavailableError';
  constructor(
    readonly reason: UnavailableReason,
    message: string,
  ) {
    super(message);
  }
}

/** Hooks for telemetry (metrics.ts); called before the request's own listener. */
export interface EngineObserver {
  submitted(handle: GenerationHandle): void;
  event(handle: GenerationHandle, message: WorkerMessage): void;
  /** A worker's passes since its last report, and its KV-cache usage. */
  engineStats?(message: EngineStatsMessage): void;
  /** A worker was found stalled and is being replaced. */
  workerStalled?(): void;
  /** A worker placed a grammar for a generation (compiled it, failed to, or found it compiled). */
  grammarPlaced?(message: GrammarStatsMessage): void;
}

/** One generation on the pool. Timestamps are performance.now() milliseconds. */
export class GenerationHandle {
  state: 'queued' | 'running' | 'finished' = 'queued';
  /** When the generation was queued for a worker (its queue time starts here). */
  readonly submittedAt = performance.now();
  /** When its HTTP request arrived (before templating and tokenizing): its TTFT and e2e latency start here. */
  readonly arrivedAt: number;
  startedAt: number | undefined;
  /** The worker thread running it (from its `start`). */
  threadId: number | undefined;
  /** Set by `cancel`. */
  cancelled = false;

  constructor(
    readonly request: GenerationRequest,
    private readonly port: MessagePort,
    arrivedAt?: number,
  ) {
    this.arrivedAt = arrivedAt ?? this.submittedAt;
  }

  /** Ask the worker to stop after the current round; the generation then ends with `done` (finish reason `abort`). */
  cancel(): void {
    if (this.state === 'finished' || this.cancelled) return;
    this.cancelled = true;
    this.port.postMessage({ type: 'cancel' } satisfies ControlMessage);
  }
}

export type EventListener = (index: number, message: WorkerMessage) => void;

export class EnginePool {
  /** Resolves when every worker has loaded its models; rejects if one fails to. */
  readonly ready: Promise<void>;
  private readonly pool: Piscina;
  private readonly loadedThreads = new Set<number>();
  /** Threads that have announced a load, successful or not. */
  private readonly settledThreads = new Set<number>();
  private readonly settleWaiters: (() => void)[] = [];
  private readonly active = new Set<GenerationHandle>();
  private readonly idleWaiters: (() => void)[] = [];
  private stateValue: EngineState = 'loading';
  private draining = false;
  private loadErrorMessage: string | undefined;
  private headLoaded: boolean | undefined;
  /** Each worker's last reported KV-cache usage, by thread id. */
  private readonly kvUsage = new Map<number, number>();
  /** When each worker last sent anything (performance.now()), by thread id. */
  private readonly lastHeard = new Map<number, number>();
  /** Tasks each worker has started and not returned from (a generation ended by a deadline still counts until its task returns). */
  private readonly outstanding = new Map<number, number>();
  /** Workers terminated for stalling whose replacements have not loaded yet. */
  private stalledCount = 0;
  private stallsTotal = 0;
  /** Ends each handle with an error from the watchdog. */
  private readonly enders = new Map<GenerationHandle, (message: WorkerMessage) => void>();
  private readonly watchdog: NodeJS.Timeout;

  constructor(
    readonly options: EnginePoolOptions,
    private readonly observer?: EngineObserver,
  ) {
    this.pool = new Piscina({
      filename: WORKER_FILE,
      minThreads: options.workers,
      maxThreads: options.workers,
      maxQueue: options.maxQueue,
      // A worker's generations share its batches (engine/scheduler.ts).
      concurrentTasksPerWorker: options.batching.maxBatch,
      // Workers block in Atomics.wait when idle otherwise; plain messages keep their event loops free.
      atomics: 'disabled',
      workerData: { pair: options.pair, batching: options.batching, faults: options.faults } satisfies EngineWorkerData,
    });
    this.pool.on('workerDestroy', () => {
      if (this.stateValue !== 'closed') this.options.onWorkerLost?.();
      // Piscina drops the worker from its list right after this event.
      queueMicrotask(() => {
        const live = this.liveThreads();
        for (const id of this.loadedThreads) if (!live.has(id)) this.loadedThreads.delete(id);
        for (const id of this.kvUsage.keys()) if (!live.has(id)) this.kvUsage.delete(id);
        this.notifySettled();
      });
    });
    // Piscina unrefs its threads; keep the process alive until they have loaded (a process
    // that exits while a worker is inside onnxruntime's session creation aborts).
    const keepAlive = setInterval(() => {}, LOAD_KEEPALIVE_MS);
    this.ready = new Promise<void>((resolve, reject) => {
      const fail = (message: string) => {
        if (this.stateValue === 'failed' || this.stateValue === 'closed') return;
        const wasLoading = this.stateValue === 'loading';
        this.stateValue = 'failed';
        this.loadErrorMessage = message;
        if (wasLoading) reject(new Error(message));
      };
      this.pool.on('message', (message: unknown) => {
        if (isEngineStatsMessage(message) || isLoadMessage(message)) this.lastHeard.set(message.threadId, performance.now());
        if (isEngineStatsMessage(message)) {
          this.kvUsage.set(message.threadId, message.kvCacheUsage);
          this.observer?.engineStats?.(message);
          return;
        }
        if (isGrammarStatsMessage(message)) {
          this.observer?.grammarPlaced?.(message);
          return;
        }
        if (!isLoadMessage(message)) return;
        this.settledThreads.add(message.threadId);
        this.notifySettled();
        // A replacement worker that cannot load fails the pool as the first load would.
        if (message.specd === 'load-failed') return fail(message.message);
        this.loadedThreads.add(message.threadId);
        if (this.stalledCount > 0) this.stalledCount--;
        this.headLoaded = message.hasHead;
        if (this.stateValue === 'loading' && this.loadedThreads.size >= options.workers) {
          this.stateValue = 'ready';
          resolve();
        }
      });
      // Piscina reports a worker's death here when it had no task (with one, the task fails).
      this.pool.on('error', (err: Error) => {
        if (this.stateValue === 'loading') fail(`engine worker failed: ${err.message}`);
      });
    });
    this.watchdog = setInterval(() => this.watch(), WATCHDOG_PERIOD_MS);
    this.watchdog.unref();
    this.ready.then(
      () => clearInterval(keepAlive),
      () => clearInterval(keepAlive), // observed through `state` and by whoever awaits `ready`
    );
  }

  get state(): EngineState {
    return this.stateValue;
  }

  /** Why loading failed (state `failed`). */
  get loadError(): string | undefined {
    return this.loadErrorMessage;
  }

  /** False once `drain` has been called or the pool is closed. */
  get accepting(): boolean {
    return !this.draining && this.stateValue !== 'closed';
  }

  /** Whether the workers' pairs have an acceptance head; undefined until a worker has loaded. */
  get hasHead(): boolean | undefined {
    return this.headLoaded;
  }

  /** Workers that have loaded their models. */
  get loadedWorkers(): number {
    return this.loadedThreads.size;
  }

  /** Generations a worker is running. */
  get running(): number {
    let n = 0;
    for (const h of this.active) if (h.state === 'running') n++;
    return n;
  }

  /** KV-cache usage across the workers, 0..1: the mean of their reserved shares of their budgets. */
  get kvCacheUsage(): number {
    if (this.kvUsage.size === 0) return 0;
    let sum = 0;
    for (const u of this.kvUsage.values()) sum += u;
    return sum / this.kvUsage.size;
  }

  /** Workers found stalled whose replacements have not loaded yet. */
  get stalledWorkers(): number {
    return this.stalledCount;
  }

  /** Workers found stalled (and replaced) since the pool started. */
  get workerStalls(): number {
    return this.stallsTotal;
  }

  /** Generations waiting for a worker. */
  get waiting(): number {
    let n = 0;
    for (const h of this.active) if (h.state === 'queued') n++;
    return n;
  }

  /**
   * Queue generations (all or none). `listener` gets every message of every one, tagged with
   * its index in `requests`; each ends with `done` or `error`. `arrivedAt`: when their request
   * arrived (performance.now(); default: now).
   * @throws EngineUnavailableError when loading, draining, closed or full
   */
  submit(requests: GenerationRequest[], listener: EventListener, arrivedAt?: number): GenerationHandle[] {
    this.checkAvailable(requests.length);
    return requests.map((request, index) => this.start(request, (message) => listener(index, message), arrivedAt));
  }

  /** Refuse new generations from now on (shutdown); running and queued ones go on. */
  drain(): void {
    this.draining = true;
  }

  /** Cancel every running and queued generation. */
  cancelAll(): void {
    for (const h of this.active) h.cancel();
  }

  /** End every generation still running or queued with `shutting_down`, whether or not its worker has stopped (a stuck one has not). */
  abandonAll(): void {
    for (const handle of [...this.active]) {
      handle.cancel();
      this.enders.get(handle)?.({ type: 'error', code: 'shutting_down', message: 'The server is shutting down.' });
    }
  }

  /** Resolves once no generation is running or queued. */
  idle(): Promise<void> {
    if (this.active.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Cancel what is left and terminate the workers (their sessions go with them). */
  async close(): Promise<void> {
    if (this.stateValue === 'closed') return;
    this.draining = true;
    // Terminating a thread inside onnxruntime's session creation aborts the process: let loading
    // end first, a replacement worker's included.
    await this.ready.catch(() => {});
    await this.threadsSettled();
    this.stateValue = 'closed';
    clearInterval(this.watchdog);
    this.cancelAll();
    await this.pool.destroy();
  }

  private checkAvailable(count: number): void {
    const { workers, maxQueue } = this.options;
    const { maxBatch } = this.options.batching;
    if (this.stateValue === 'closed') throw new EngineUnavailableError('closed', 'the engine is closed');
    if (this.draining) throw new EngineUnavailableError('draining', 'the server is shutting down');
    if (this.stateValue === 'loading') throw new EngineUnavailableError('loading', 'the models are still loading');
    if (this.stateValue === 'failed') throw new EngineUnavailableError('failed', `the models failed to load: ${this.loadErrorMessage}`);
    if (this.active.size + count > workers * maxBatch + maxQueue) throw new EngineUnavailableError('queue_full', 'every worker is busy and the queue is full');
  }

  private start(request: GenerationRequest, listener: (message: WorkerMessage) => void, arrivedAt?: number): GenerationHandle {
    const { port1, port2 } = new MessageChannel();
    const handle = new GenerationHandle(request, port1, arrivedAt);
    this.active.add(handle);
    this.observer?.submitted(handle);

    const deliver = (message: WorkerMessage) => {
      if (handle.state === 'finished') return;
      if (message.type === 'start') {
        handle.state = 'running';
        handle.startedAt = performance.now();
        handle.threadId = message.threadId;
        this.outstanding.set(message.threadId, (this.outstanding.get(message.threadId) ?? 0) + 1);
      }
      if (handle.threadId !== undefined) this.lastHeard.set(handle.threadId, performance.now());
      const last = message.type === 'done' || message.type === 'error';
      if (last) this.finish(handle, port1);
      this.observer?.event(handle, message);
      listener(message);
    };
    port1.on('message', deliver);
    this.enders.set(handle, deliver);
    // The worker closes its end after its last message; a close before it means the worker died.
    port1.on('close', () => deliver({ type: 'error', code: 'internal', message: 'the engine worker stopped before the generation ended' }));

    const task: GenerationTask = { port: port2, request };
    const returned = () => {
      const id = handle.threadId;
      if (id !== undefined) this.outstanding.set(id, (this.outstanding.get(id) ?? 1) - 1);
    };
    const run = this.pool.run(task, { transferList: [port2] });
    run.then(returned, returned);
    run.catch((err: Error) => {
      // Piscina refused the task, the task threw, or its worker died (then the port closes
      // too, whichever comes first ends the generation).
      const full = handle.state === 'queued' && /queue is at limit|No task queue available/i.test(err.message);
      deliver({ type: 'error', code: full ? 'queue_full' : 'internal', message: full ? 'the queue is full' : `engine worker failed: ${err.message}` });
    });
    return handle;
  }

  /** Thread ids of the pool's live workers. */
  private liveThreads(): Set<number> {
    return new Set(this.pool.threads.map((t) => t.threadId).filter((id) => id >= 0));
  }

  /** Resolves once every live worker has announced whether its models loaded. */
  private async threadsSettled(): Promise<void> {
    const unsettled = () => [...this.liveThreads()].some((id) => !this.settledThreads.has(id));
    while (unsettled()) await new Promise<void>((resolve) => this.settleWaiters.push(resolve));
  }

  private notifySettled(): void {
    for (const resolve of this.settleWaiters.splice(0)) resolve();
  }

  /** The watchdog: queue and request deadlines, and workers that make no progress. */
  private watch(): void {
    const now = performance.now();
    const { queueTimeoutMs = DEFAULT_QUEUE_TIMEOUT_MS, requestTimeoutMs = DEFAULT_REQUEST_TIMEOUT_MS, stallTimeoutMs = DEFAULT_STALL_TIMEOUT_MS } = this.options;
    for (const handle of [...this.active]) {
      const end = this.enders.get(handle)!;
      if (now - handle.arrivedAt > requestTimeoutMs) {
        handle.cancel();
        end({ type: 'error', code: 'request_timeout', message: `The request ran past the server's deadline of ${seconds(requestTimeoutMs)} (--request-timeout).` });
      } else if (handle.state === 'queued' && now - handle.submittedAt > queueTimeoutMs) {
        handle.cancel();
        end({ type: 'error', code: 'queue_timeout', message: `The request waited ${seconds(queueTimeoutMs)} for an engine worker (--queue-timeout). Retry later.` });
      }
    }
    for (const [threadId, tasks] of this.outstanding) {
      if (tasks <= 0 || now - (this.lastHeard.get(threadId) ?? now) <= stallTimeoutMs) continue;
      const worker = this.pool.threads.find((t) => t.threadId === threadId);
      this.outstanding.delete(threadId);
      this.lastHeard.delete(threadId);
      this.stalledCount++;
      this.stallsTotal++;
      this.observer?.workerStalled?.();
      for (const handle of [...this.active]) {
        if (handle.threadId !== threadId) continue;
        this.enders.get(handle)!({ type: 'error', code: 'worker_stalled', message: `The engine worker running this request made no progress for ${seconds(stallTimeoutMs)} and is being replaced.` });
      }
      void worker?.terminate();
    }
  }

  private finish(handle: GenerationHandle, port: MessagePort): void {
    this.enders.delete(handle);
    handle.state = 'finished';
    port.close();
    this.active.delete(handle);
    if (this.active.size === 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}
