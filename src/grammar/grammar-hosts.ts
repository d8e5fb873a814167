/**
 * Grammar threads for one engine worker: schemas compile off the worker's thread, with a time
 * limit, and the worker's rounds ask the thread that compiled a grammar for its masks.
 *
 * Why threads that keep the matchers: compiling a schema at the size limits (schema-limits.ts)
 * takes about a second of synchronous WebAssembly, and xgrammar's JavaScript binding cannot
 * serialize a compiled grammar, so the grammar stays in the instance (the thread) that compiled
 * it, and so do its matchers. A mask then crosses a MessagePort (a copy of ceil(V / 32) int32
 * words, transferred).
 *
 * Placement, so that a compile never delays a running generation:
 * - a spec already compiled in a thread gets its matcher there (no compile), unless that thread
 *   is compiling;
 * - a new spec compiles in a thread with no open matchers; when every thread has some, a new
 *   thread starts (at most `maxThreads`); past that the request waits for a thread to free up,
 *   for at most `placementWaitMs`, and then compiles in the thread with the fewest matchers
 *   (whose generations wait for their masks meanwhile: under a steady load of distinct schemas
 *   no thread might ever free up, and a new schema must not wait for ever);
 * - a compile that takes longer than `compileTimeoutMs` is abandoned: its thread (which holds
 *   no matchers) is terminated, the spec is remembered as failed, and the request gets a
 *   GrammarError saying so. A spec that failed gets the same error again without compiling;
 * - a spec that is compiling already is not compiled a second time: the requests that ask for
 *   it meanwhile wait for that compile and then open their matchers in its thread (vLLM's
 *   structured-output manager shares an in-flight compile the same way).
 * A request that is cancelled (its AbortSignal) stops waiting at once; a compile it started
 * goes on and its grammar stays in the thread's cache for the next request with the spec.
 */
import { Worker } from 'node:worker_threads';
import type { TokenConstraint } from '../engine/logits-processors.js';
import { type GrammarSpec, specKey } from './compiler.js';
import { applyMask, isOnPath, onlyAllowedToken, preparedMask } from './constraint.js';
import { GrammarError } from './errors.js';
import type { GrammarHostData, GrammarHostReply, GrammarHostRequest } from './grammar-host-protocol.js';

/**
 * How long one compile may take: a schema at the size limits (schema-limits.ts) compiles in
 * about 1 s on one free core, and took over 10 s on a 2-core machine running ten times as many
 * threads; past this the compile is abandoned.
 */
export const DEFAULT_GRAMMAR_COMPILE_TIMEOUT_MS = 30_000;
/** Grammar threads one engine worker keeps at most (each holds an xgrammar instance with the vocabulary's tables). */
export const DEFAULT_GRAMMAR_THREADS = 4;
/** How long a new spec waits for a grammar thread with no matchers when all are in use (then it compiles beside some). */
export const DEFAULT_GRAMMAR_PLACEMENT_WAIT_MS = 2_000;
/** Specs that failed, remembered with their error. */
const FAILED_SPECS_KEPT = 256;
/** Specs remembered per thread as compiled there (a hint: the thread answers `miss` when it evicted one). */
const SPECS_KEPT_PER_THREAD = 256;

const HOST_FILE = new URL('./grammar-host.js', import.meta.url);

/**
 * One grammar placed for a request (metrics): `compiled` and `failed` ran a compile in a grammar
 * thread (`seconds`: from the request to the thread's answer, or to the compile's abandonment
 * when it ran over the time limit); `cache_hit` opened a grammar the thread had compiled before
 * (`seconds` 0). A spec
 * refused again from the list of failed specs compiles nothing and reports nothing.
 */
export interface GrammarPlacement {
  outcome: 'compiled' | 'failed' | 'cache_hit';
  seconds: number;
}

export interface GrammarHostsOptions extends GrammarHostData {
  /** See DEFAULT_GRAMMAR_COMPILE_TIMEOUT_MS. */
  compileTimeoutMs?: number;
  /** See DEFAULT_GRAMMAR_THREADS. */
  maxThreads?: number;
  /** See DEFAULT_GRAMMAR_PLACEMENT_WAIT_MS. */
  placementWaitMs?: number;
  /** Called once per grammar placed (compiled, failed to compile, or found compiled). */
  onPlacement?: (placement: GrammarPlacement) => void;
}

/** A request without its number (distributes over the union). */
type Unnumbered<T> = T extends unknown ? Omit<T, 'req'> : never;

type Reply = Exclude<GrammarHostReply, { op: 'ready' } | { op: 'load-failed' }>;

/** One grammar thread, seen from the engine worker. */
class GrammarHost {
  readonly worker: Worker;
  readonly ready: Promise<number>;
  /** Matchers open in this thread. */
  open = 0;
  compiling = false;
  dead = false;
  /** Specs compiled here (least recently used first). */
  readonly specs = new Set<string>();
  private nextReq = 0;
  private readonly waiting = new Map<number, { resolve: (reply: Reply) => void; reject: (err: Error) => void }>();

  constructor(data: GrammarHostData, onExit: (host: GrammarHost) => void) {
    this.worker = new Worker(HOST_FILE, { workerData: data });
    this.worker.unref();
    this.ready = new Promise<number>((resolve, reject) => {
      this.worker.on('message', (reply: GrammarHostReply) => {
        if (reply.op === 'ready') return resolve(reply.vocabSize);
        if (reply.op === 'load-failed') return reject(new GrammarError(`the grammar thread could not start: ${reply.message}`));
        const waiter = this.waiting.get(reply.req);
        this.waiting.delete(reply.req);
        waiter?.resolve(reply);
      });
      const stop = (why: string) => {
        if (this.dead) return;
        this.dead = true;
        const err = new GrammarError(`the grammar thread stopped (${why})`);
        reject(err);
        for (const waiter of this.waiting.values()) waiter.reject(err);
        this.waiting.clear();
        onExit(this);
      };
      this.worker.on('error', (err) => stop(err.message));
      this.worker.on('exit', (code) => stop(`exit code ${code}`));
    });
    this.ready.catch(() => {}); // observed by callers; a thread that never starts must not be an unhandled rejection
  }

  /** Send a request with a reply; rejects with a GrammarError when the thread stops first. */
  request(message: Unnumbered<Extract<GrammarHostRequest, { req: number }>>): Promise<Reply> {
    if (this.dead) return Promise.reject(new GrammarError('the grammar thread stopped'));
    const req = this.nextReq++;
    return new Promise<Reply>((resolve, reject) => {
      this.waiting.set(req, { resolve, reject });
      this.worker.postMessage({ ...message, req } as GrammarHostRequest);
    });
  }

  send(message: Extract<GrammarHostRequest, { op: 'accept' | 'release' }>): void {
    if (!this.dead) this.worker.postMessage(message);
  }

  remember(key: string): void {
    this.specs.delete(key);
    this.specs.add(key);
    if (this.specs.size > SPECS_KEPT_PER_THREAD) this.specs.delete(this.specs.values().next().value as string);
  }
}

export class GrammarHosts {
  private readonly hosts: GrammarHost[] = [];
  private readonly failures = new Map<string, string>();
  /** Specs compiling now, each settled (never rejected) when its compile has answered. */
  private readonly inFlight = new Map<string, Promise<unknown>>();
  /** Resolved whenever a matcher is released or a thread stops (a waiting compile looks again). */
  private freed: { promise: Promise<void>; resolve: () => void } = GrammarHosts.signal();
  private nextId = 0;
  private readonly compileTimeoutMs: number;
  private readonly maxThreads: number;
  private readonly placementWaitMs: number;
  /** Threads started, for tests and metrics (a timed-out compile costs one). */
  threadsStarted = 0;

  constructor(private readonly options: GrammarHostsOptions) {
    this.compileTimeoutMs = options.compileTimeoutMs ?? DEFAULT_GRAMMAR_COMPILE_TIMEOUT_MS;
    this.maxThreads = options.maxThreads ?? DEFAULT_GRAMMAR_THREADS;
    this.placementWaitMs = options.placementWaitMs ?? DEFAULT_GRAMMAR_PLACEMENT_WAIT_MS;
  }

  /** Grammar threads running now. */
  get threads(): number {
    return this.hosts.length;
  }

  /**
   * A matcher for one sequence, in the thread that holds the spec's grammar.
   * @param signal when it aborts, the returned promise rejects with its reason at once; the
   *   compile this request started (if any) goes on into the thread's cache, and a matcher that
   *   opens after the abort is released
   * @throws GrammarError when the spec does not compile, admits no output, or takes longer than
   *   the compile time limit to compile (the same error for the same spec every time)
   */
  constraint(spec: GrammarSpec, signal?: AbortSignal): Promise<TokenConstraint> {
    if (!signal) return this.place(spec);
    if (signal.aborted) return Promise.reject(signal.reason);
    const placing = this.place(spec, signal);
    return new Promise<TokenConstraint>((resolve, reject) => {
      const onAbort = () => reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      placing.then(
        (constraint) => {
          signal.removeEventListener('abort', onAbort);
          if (signal.aborted) constraint.release(); // nobody is waiting for it any more
          else resolve(constraint);
        },
        (err: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(err);
        },
      );
    });
  }

  private async place(spec: GrammarSpec, signal?: AbortSignal): Promise<TokenConstraint> {
    const key = specKey(spec);
    const waitUntil = Date.now() + this.placementWaitMs;
    for (;;) {
      signal?.throwIfAborted();
      const failed = this.failures.get(key);
      if (failed !== undefined) throw new GrammarError(failed);
      for (const host of this.hosts.filter((h) => !h.compiling && h.specs.has(key))) {
        const opened = await this.open(host, spec, key, false);
        if (opened) return opened;
      }
      const compiling = this.inFlight.get(key);
      if (compiling) {
        await compiling; // then its thread has the grammar (or the spec is a known failure)
        continue;
      }
      const host = this.idleHost() ?? (Date.now() >= waitUntil ? this.leastBusyHost() : undefined);
      if (host) {
        const opening = this.open(host, spec, key, true);
        const settled = opening.then(
          () => {},
          () => {},
        );
        this.inFlight.set(key, settled);
        try {
          const opened = await opening;
          if (opened) return opened;
        } finally {
          if (this.inFlight.get(key) === settled) this.inFlight.delete(key);
        }
        continue; // the thread stopped under it: look again
      }
      let timer: NodeJS.Timeout | undefined;
      const waited = new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(0, waitUntil - Date.now()))));
      await Promise.race([this.freed.promise, waited]);
      clearTimeout(timer);
    }
  }

  /** Terminate every grammar thread (their matchers fail on their next mask). */
  async close(): Promise<void> {
    await Promise.all(this.hosts.map((h) => h.worker.terminate()));
  }

  /** A thread with no open matchers and no compile running, started when there is none and room for one. */
  private idleHost(): GrammarHost | undefined {
    const idle = this.hosts.find((h) => h.open === 0 && !h.compiling);
    if (idle || this.hosts.length >= this.maxThreads) return idle;
    const { modelDir, vocabSize, stopTokenIds } = this.options;
    const host = new GrammarHost({ modelDir, vocabSize, stopTokenIds }, (h) => this.remove(h));
    this.threadsStarted++;
    this.hosts.push(host);
    return host;
  }

  /** The thread with the fewest open matchers among those not compiling. */
  private leastBusyHost(): GrammarHost | undefined {
    return this.hosts.filter((h) => !h.compiling).sort((a, b) => a.open - b.open)[0];
  }

  private async open(host: GrammarHost, spec: GrammarSpec, key: string, compile: boolean): Promise<RemoteConstraint | undefined> {
    const vocabSize = await host.ready;
    const id = this.nextId++;
    const start = performance.now();
    const placed = (outcome: GrammarPlacement['outcome']) =>
      this.options.onPlacement?.({ outcome, seconds: outcome === 'cache_hit' ? 0 : (performance.now() - start) / 1000 });
    host.open++; // counted before the reply: no compile is placed on this thread meanwhile
    let timer: NodeJS.Timeout | undefined;
    try {
      if (compile) host.compiling = true;
      const reply = host.request({ op: 'open', id, spec, compile });
      const timedOut = new Promise<'timeout'>((resolve) => {
        if (compile) timer = setTimeout(() => resolve('timeout'), this.compileTimeoutMs);
      });
      const answer = await Promise.race([reply, timedOut]);
      if (answer === 'timeout') {
        reply.catch(() => {}); // rejected by the termination below
        await host.worker.terminate();
        placed('failed');
        throw this.fail(key, `compiling it took longer than ${this.compileTimeoutMs} ms (the limit), so it was abandoned; use a smaller schema`);
      }
      switch (answer.op) {
        case 'opened':
          host.remember(key);
          placed(answer.compiled ? 'compiled' : 'cache_hit');
          return new RemoteConstraint(host, id, vocabSize, this.options.stopTokenIds, () => this.released(host));
        case 'miss':
          host.specs.delete(key);
          this.released(host);
          return undefined;
        case 'error':
          if (answer.compiled) placed('failed');
          throw this.fail(key, answer.message);
        default:
          throw new GrammarError(`unexpected reply ${answer.op} from the grammar thread`);
      }
    } catch (err) {
      this.released(host);
      if (err instanceof GrammarError && host.dead && !this.failures.has(key)) return undefined;
      throw err;
    } finally {
      clearTimeout(timer);
      host.compiling = false;
    }
  }

  private released(host: GrammarHost): void {
    host.open--;
    this.wake();
  }

  private remove(host: GrammarHost): void {
    const i = this.hosts.indexOf(host);
    if (i >= 0) this.hosts.splice(i, 1);
    this.wake();
  }

  private wake(): void {
    const { resolve } = this.freed;
    this.freed = GrammarHosts.signal();
    resolve();
  }

  private fail(key: string, message: string): GrammarError {
    this.failures.set(key, message);
    if (this.failures.size > FAILED_SPECS_KEPT) this.failures.delete(this.failures.keys().next().value as string);
    return new GrammarError(message);
  }

  private static signal(): { promise: Promise<void>; resolve: () => void } {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    return { promise, resolve };
  }
}

/**
 * One sequence's grammar, its matcher in a grammar thread (see GrammarConstraint, whose
 * contract it keeps): masks are asked for in `prepare` and kept per path position, so the
 * draft step and the verification row of a position share one request.
 */
class RemoteConstraint implements TokenConstraint {
  private path: number[] = [];
  /** masks[i]: allowed tokens after the verified output + path[0..i-1] // each [ceil(vocab / 32)] */
  private masks: (Int32Array | undefined)[] = [];
  private readonly stop: Set<number>;
  private released = false;

  constructor(
    private readonly host: GrammarHost,
    private readonly id: number,
    private readonly vocabSize: number,
    stopTokenIds: readonly number[],
    private readonly onRelease: () => void,
  ) {
    this.stop = new Set(stopTokenIds);
  }

  async prepare(pending: readonly number[]): Promise<void> {
    if (this.masks[pending.length] !== undefined && this.onPath(pending)) return;
    const reply = await this.host.request({ op: 'mask', id: this.id, pending: [...pending] });
    if (reply.op === 'error') throw new GrammarError(reply.message);
    if (reply.op !== 'mask') throw new GrammarError(`unexpected reply ${reply.op} from the grammar thread`);
    let common = 0;
    while (common < pending.length && common < this.path.length && this.path[common] === pending[common]) common++;
    if (common < pending.length) {
      // A new path from `common` on: masks past it were for the old one.
      this.masks.length = Math.min(this.masks.length, common + 1);
      this.path = [...pending];
    }
    this.masks[pending.length] = reply.mask;
  }

  maskRow(row: Float32Array, pending: readonly number[]): void {
    applyMask(this.maskAt(pending), row, this.vocabSize);
  }

  forcedToken(pending: readonly number[]): number | undefined {
    return onlyAllowedToken(this.maskAt(pending), this.stop);
  }

  accept(tokens: readonly number[]): void {
    if (this.released) return;
    this.host.send({ op: 'accept', id: this.id, tokens: [...tokens] });
    const kept = this.onPath(tokens) ? this.masks[tokens.length] : undefined;
    this.path = [];
    this.masks = kept ? [kept] : [];
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.host.send({ op: 'release', id: this.id });
    this.onRelease();
  }

  private maskAt(pending: readonly number[]): Int32Array {
    return preparedMask(this.masks, this.path, pending);
  }

  private onPath(pending: readonly number[]): boolean {
    return isOnPath(this.path, pending);
  }
}
