/**
 * Prometheus metrics (prom-client), one registry per server.
 *
 * vLLM's names where vLLM has the metric, under a `specd_` prefix, each series labelled with
 * `model_name` as vLLM's are; every "request" here is one generation (one choice). Beyond vLLM:
 * candidate-length and accepted-length histograms by policy, draft vs verify time, the acceptance
 * head's live calibration, the main thread's event-loop delay. Node's default process metrics
 * come unprefixed and unlabelled, as usual (default-metrics.ts). The output passes
 * `promtool check metrics`.
 *
 * The PromQL that reads these (acceptance rate, acceptance by position, percentiles, ...) is in
 * docs/operations.md (Metrics) and deploy/prometheus/rules.yml; the test suite runs every query
 * there against a real Prometheus scraping `specd serve`.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { preferredBuckets } from './buckets.js';
import type { RoundStats } from '../engine/stats.js';
import { PROPOSAL_METHODS } from '../proposers/method-stats.js';
import { registerDefaultMetrics } from './default-metrics.js';
import type { EngineObserver, GenerationHandle } from './engine-pool.js';
import type { EventLoopDelay, EventLoopMonitor } from './event-loop.js';
import type { FinishReason } from '../engine/speculative.js';
import { type EngineStatsMessage, type GrammarStatsMessage, WORKER_ERROR_CODES, type WorkerMessage } from './protocol.js';

export const PREFIX = 'specd_';

/**
 * Latency buckets (seconds), 1 ms to 80 s on the R10 series (ten per decade, each 1.26x the
 * last, 1.28x at most): a GPU's millisecond first tokens and a CPU's multi-second queued prompts alike, with
 * histogram_quantile() off by less than one bucket (28%) anywhere in the range.
 */
export const LATENCY_BUCKETS = preferredBuckets(0.001, 80);
/** Inter-token latency buckets (seconds): 0.1 ms (a GPU round) to 10 s, R10 series. */
export const ITL_BUCKETS = preferredBuckets(0.0001, 10);
/** Draft lengths: every value up to 8, then coarser up to the longest draft a policy may ask for. */
export const LENGTH_BUCKETS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 20, 24, 32];
/** Token counts per request. */
export const TOKEN_COUNT_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];
/** Sequences per forward pass: every value up to 8, then powers of two up to the largest batch a worker may run. */
export const BATCH_SIZE_BUCKETS = [1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];
/** Tokens per forward pass (vLLM's iteration_tokens_total buckets). */
export const PASS_TOKEN_BUCKETS = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384];
/** Pass kinds of the batch histograms: draft steps, verification, prompt pieces. */
const PASS_KINDS = ['draft', 'verify', 'prefill'] as const;
/** Reliability buckets of the head's predicted P(accept): [0, 0.1), [0.1, 0.2), ..., [0.9, 1]. */
export const CALIBRATION_BUCKETS = 10;

/** Every finish reason and worker error code: their series are created at 0. */
const FINISH_REASONS: readonly FinishReason[] = ['stop', 'length', 'abort'];

interface GenerationTimes {
  firstTokensAt?: number;
  lastTokensAt?: number;
}

/** What the gauges read from the engine pool when scraped. */
export interface EngineGauges {
  readonly running: number;
  /** Reserved share of the workers' KV-cache budgets, 0..1. */
  readonly kvCacheUsage: number;
  readonly waiting: number;
  readonly loadedWorkers: number;
  readonly options: { readonly workers: number };
}

export class ServerMetrics implements EngineObserver {
  readonly registry = new Registry();
  private readonly times = new WeakMap<GenerationHandle, GenerationTimes>();

  private readonly numDrafts: Counter;
  private readonly numDraftTokens: Counter;
  private readonly numAcceptedTokens: Counter;
  private readonly acceptedPerPos: Counter<'position'>;
  private readonly methodDrafts: Counter<'method'>;
  private readonly methodDraftTokens: Counter<'method'>;
  private readonly methodAcceptedTokens: Counter<'method'>;
  private readonly methodAcceptedPerPos: Counter<'method' | 'position'>;
  private readonly promptTokens: Counter;
  private readonly prefixQueries: Counter;
  private readonly prefixHits: Counter;
  private readonly generationTokens: Counter;
  private readonly requestSuccess: Counter<'finished_reason'>;
  private readonly requestErrors: Counter<'code'>;
  private readonly workerStalls: Counter;
  private readonly grammarCompileSeconds: Histogram;
  private readonly grammarCompiles: Counter;
  private readonly grammarCompileFailures: Counter;
  private readonly grammarCacheHits: Counter;
  private readonly ttft: Histogram;
  private readonly itl: Histogram;
  private readonly e2e: Histogram;
  private readonly tpot: Histogram;
  private readonly queueTime: Histogram;
  private readonly requestPromptTokens: Histogram;
  private readonly requestGenerationTokens: Histogram;
  private readonly candidateLength: Histogram<'policy'>;
  private readonly acceptedLength: Histogram<'policy'>;
  private readonly draftSeconds: Counter<'policy'>;
  private readonly verifySeconds: Counter<'policy'>;
  private readonly batchSize: Histogram<'kind'>;
  private readonly passTokens: Histogram<'kind'>;
  private readonly headPredictions: Counter<'bucket'>;
  private readonly headPredictedSum: Counter<'bucket'>;
  private readonly headAccepted: Counter<'bucket'>;
  private readonly headSquaredError: Counter;

  /** Node's default process metrics, without the model_name label. */
  private readonly processRegistry = new Registry();

  /**
   * @param modelName the served model's name (`model_name` label of every specd series)
   * @param engine the pool whose running and waiting generations the gauges report
   */
  constructor(modelName: string, engine: () => EngineGauges, eventLoop: EventLoopMonitor) {
    this.registry.setDefaultLabels({ model_name: modelName });
    const registers = [this.registry];
    const counter = <L extends string = never>(name: string, help: string, labelNames: L[] = []) =>
      new Counter<L>({ name: PREFIX + name, help, labelNames, registers });
    const histogram = <L extends string = never>(name: string, help: string, buckets: number[], labelNames: L[] = []) =>
      new Histogram<L>({ name: PREFIX + name, help, buckets, labelNames, registers });

    this.numDrafts = counter('spec_decode_num_drafts_total', 'Speculative rounds that drafted at least one candidate.');
    this.numDraftTokens = counter('spec_decode_num_draft_tokens_total', 'Candidates proposed by the draft model.');
    this.numAcceptedTokens = counter('spec_decode_num_accepted_tokens_total', 'Candidates accepted by the target model.');
    this.acceptedPerPos = counter('spec_decode_num_accepted_tokens_per_pos_total', 'Accepted candidates by position in the draft (0-based).', ['position']);
    // The same four per proposal method (draft model, prompt lookup, suffix decoding); the totals above are their sums.
    this.methodDrafts = counter('spec_decode_method_num_drafts_total', 'Speculative rounds that verified at least one candidate, by the method that proposed them.', ['method']);
    this.methodDraftTokens = counter('spec_decode_method_num_draft_tokens_total', 'Candidates proposed, by method.', ['method']);
    this.methodAcceptedTokens = counter('spec_decode_method_num_accepted_tokens_total', 'Candidates accepted by the target model, by the method that proposed them.', ['method']);
    this.methodAcceptedPerPos = counter('spec_decode_method_num_accepted_tokens_per_pos_total', 'Accepted candidates by method and position in the proposal (0-based).', ['method', 'position']);
    for (const method of PROPOSAL_METHODS) {
      for (const c of [this.methodDrafts, this.methodDraftTokens, this.methodAcceptedTokens]) c.inc({ method }, 0);
    }
    this.promptTokens = counter('prompt_tokens_total', 'Prompt tokens processed.');
    this.generationTokens = counter('generation_tokens_total', 'Tokens generated.');
    // vLLM's prefix_cache_queries / prefix_cache_hits, in tokens: hit rate = rate(hits) / rate(queries).
    this.prefixQueries = counter('prefix_cache_queries_total', 'Prompt tokens looked up in the prefix cache (every finished generation\'s prompt).');
    this.prefixHits = counter('prefix_cache_hits_total', 'Prompt tokens whose KV rows came from the prefix cache (not computed).');
    this.requestSuccess = counter('request_success_total', 'Finished generations by finish reason (stop, length, abort).', ['finished_reason']);
    this.requestErrors = counter('request_errors_total', 'Generations that ended in an error, by code.', ['code']);
    this.workerStalls = counter('worker_stalls_total', 'Engine workers that made no progress for the stall timeout and were replaced.');
    // Grammars (response_format, tools) compile in the workers' grammar threads (grammar/grammar-hosts.ts).
    this.grammarCompileSeconds = histogram(
      'grammar_compile_seconds',
      "Time to compile a request's grammar in a grammar thread, failed compiles included (from the request to the thread's answer).",
      LATENCY_BUCKETS,
    );
    this.grammarCompiles = counter('grammar_compiles_total', 'Grammars compiled for requests, failed compiles included (a spec compiling already is shared, not compiled again).');
    this.grammarCompileFailures = counter('grammar_compile_failures_total', 'Grammar compiles that failed or ran past the compile time limit (a 400 invalid_grammar).');
    this.grammarCacheHits = counter('grammar_cache_hits_total', 'Requests whose grammar a grammar thread had compiled before (no compile).');
    this.ttft = histogram('time_to_first_token_seconds', "Time from the request's arrival (templating, tokenizing and queueing included) to the first generated tokens.", LATENCY_BUCKETS);
    this.itl = histogram('inter_token_latency_seconds', 'Time between successive token deliveries of a generation (one per speculative round).', ITL_BUCKETS);
    this.tpot = histogram(
      'request_time_per_output_token_seconds',
      'Time per output token after the first, per generation: (e2e - TTFT) / (generated tokens - 1).',
      ITL_BUCKETS,
    );
    this.e2e = histogram('e2e_request_latency_seconds', "Time from the request's arrival to the end of a generation.", LATENCY_BUCKETS);
    this.queueTime = histogram('request_queue_time_seconds', 'Time a generation waited for an engine worker.', LATENCY_BUCKETS);
    this.requestPromptTokens = histogram('request_prompt_tokens', 'Prompt tokens per generation.', TOKEN_COUNT_BUCKETS);
    this.requestGenerationTokens = histogram('request_generation_tokens', 'Generated tokens per generation.', TOKEN_COUNT_BUCKETS);
    this.candidateLength = histogram('spec_decode_candidate_length', 'Candidates drafted per round, by policy.', LENGTH_BUCKETS, ['policy']);
    this.acceptedLength = histogram('spec_decode_accepted_length', 'Candidates accepted per round, by policy.', LENGTH_BUCKETS, ['policy']);
    this.draftSeconds = counter('spec_decode_draft_seconds_total', 'Time spent drafting candidates, by policy.', ['policy']);
    this.verifySeconds = counter('spec_decode_verify_seconds_total', "Time spent in the target's verification passes (and acceptance), by policy.", ['policy']);
    this.batchSize = histogram('batch_size', 'Sequences per forward pass of a worker, by pass kind (draft step, verify, prefill).', BATCH_SIZE_BUCKETS, ['kind']);
    this.passTokens = histogram('iteration_tokens', 'Tokens fed per forward pass of a worker (padding excluded), by pass kind.', PASS_TOKEN_BUCKETS, ['kind']);
    for (const kind of PASS_KINDS) {
      this.batchSize.zero({ kind });
      this.passTokens.zero({ kind });
    }
    this.headPredictions = counter('head_calibration_predictions_total', "The acceptance head's predictions, by predicted-probability bucket (lower edge).", ['bucket']);
    this.headPredictedSum = counter('head_calibration_predicted_probability_total', 'Sum of the predicted acceptance probabilities, by bucket.', ['bucket']);
    this.headAccepted = counter('head_calibration_accepted_total', 'Predicted candidates the target accepted, by bucket.', ['bucket']);
    this.headSquaredError = counter('head_calibration_squared_error_total', 'Sum of squared errors of the predictions (Brier score = this / predictions).');
    // Known label values start at 0, so rates and ratios over them exist before the first event.
    for (const reason of FINISH_REASONS) this.requestSuccess.inc({ finished_reason: reason }, 0);
    for (const code of WORKER_ERROR_CODES) this.requestErrors.inc({ code }, 0);

    new Gauge({
      name: PREFIX + 'num_requests_running',
      help: "Generations running on an engine worker (in a worker's batches).",
      registers,
      collect() {
        this.set(engine().running);
      },
    });
    new Gauge({
      name: PREFIX + 'kv_cache_usage_perc',
      help: "KV-cache usage, 0..1: the share of the workers' KV-cache budgets reserved by running generations (prompt + max_tokens each).",
      registers,
      collect() {
        this.set(engine().kvCacheUsage);
      },
    });
    new Gauge<'state'>({
      name: PREFIX + 'engine_workers',
      help: 'Engine worker threads by state: loaded (serving) or loading the models (starting, or replacing one that stopped).',
      labelNames: ['state'],
      registers,
      collect() {
        const e = engine();
        this.set({ state: 'loaded' }, e.loadedWorkers);
        this.set({ state: 'loading' }, Math.max(0, e.options.workers - e.loadedWorkers));
      },
    });
    new Gauge({
      name: PREFIX + 'num_requests_waiting',
      help: 'Generations waiting for an engine worker or for room in its KV-cache budget.',
      registers,
      collect() {
        this.set(engine().waiting);
      },
    });
    const delay = (name: string, help: string, read: (d: EventLoopDelay) => number) =>
      new Gauge({
        name: PREFIX + name,
        help,
        registers,
        collect() {
          this.set(read(eventLoop.snapshot()));
        },
      });
    const since = "of the server main thread's event-loop delay since it became ready";
    delay('event_loop_delay_p50_seconds', `Median ${since}.`, (d) => d.p50);
    delay('event_loop_delay_p90_seconds', `90th percentile ${since}.`, (d) => d.p90);
    delay('event_loop_delay_p99_seconds', `99th percentile ${since}.`, (d) => d.p99);
    delay('event_loop_delay_max_seconds', `Maximum ${since}.`, (d) => d.max);
    registerDefaultMetrics(this.processRegistry);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text: specd's series, then Node's process metrics. */
  async text(): Promise<string> {
    return (await this.registry.metrics()) + (await this.processRegistry.metrics());
  }

  submitted(handle: GenerationHandle): void {
    this.times.set(handle, {});
  }

  event(handle: GenerationHandle, message: WorkerMessage): void {
    const now = performance.now();
    const times = this.times.get(handle) ?? {};
    const policy = handle.request.policy.policy;
    switch (message.type) {
      case 'start':
        this.queueTime.observe((now - handle.submittedAt) / 1000);
        this.promptTokens.inc(handle.request.promptIds.length);
        this.requestPromptTokens.observe(handle.request.promptIds.length);
        break;
      case 'tokens':
        // The last message may carry only held-back text (no new tokens): not a token delivery.
        if (message.tokenIds.length > 0) {
          if (times.firstTokensAt === undefined) {
            this.ttft.observe((now - handle.arrivedAt) / 1000);
            times.firstTokensAt = now;
          } else this.itl.observe((now - times.lastTokensAt!) / 1000);
          times.lastTokensAt = now;
          this.generationTokens.inc(message.tokenIds.length);
        }
        this.observeRounds(policy, message.rounds);
        break;
      case 'done':
        this.observeRounds(policy, message.rounds);
        this.e2e.observe((now - handle.arrivedAt) / 1000);
        this.requestGenerationTokens.observe(message.result.token_ids.length);
        // vLLM's definition; the tokens of one round arrive together, so this is the mean per token.
        if (times.firstTokensAt !== undefined && message.result.token_ids.length > 1) this.tpot.observe((now - times.firstTokensAt) / 1000 / (message.result.token_ids.length - 1));
        this.requestSuccess.inc({ finished_reason: message.result.finish_reason });
        this.prefixQueries.inc(handle.request.promptIds.length);
        this.prefixHits.inc(message.result.cached_tokens);
        break;
      case 'error':
        this.requestErrors.inc({ code: message.code });
        break;
    }
    this.times.set(handle, times);
  }

  workerStalled(): void {
    this.workerStalls.inc();
  }

  grammarPlaced(message: GrammarStatsMessage): void {
    if (message.outcome === 'cache_hit') return this.grammarCacheHits.inc();
    this.grammarCompiles.inc();
    this.grammarCompileSeconds.observe(message.seconds);
    if (message.outcome === 'failed') this.grammarCompileFailures.inc();
  }

  engineStats(message: EngineStatsMessage): void {
    for (const pass of message.passes) {
      this.batchSize.observe({ kind: pass.kind }, pass.sequences);
      this.passTokens.observe({ kind: pass.kind }, pass.tokens);
    }
  }

  private observeRounds(policy: string, rounds: RoundStats[]): void {
    for (const r of rounds) {
      if (r.drafted > 0) {
        this.numDrafts.inc();
        this.numDraftTokens.inc(r.drafted);
        this.numAcceptedTokens.inc(r.accepted);
        for (let i = 0; i < r.accepted; i++) this.acceptedPerPos.inc({ position: String(i) });
        const method = r.method ?? 'draft';
        this.methodDrafts.inc({ method });
        this.methodDraftTokens.inc({ method }, r.drafted);
        this.methodAcceptedTokens.inc({ method }, r.accepted);
        for (let i = 0; i < r.accepted; i++) this.methodAcceptedPerPos.inc({ method, position: String(i) });
      }
      this.candidateLength.observe({ policy }, r.drafted);
      this.acceptedLength.observe({ policy }, r.accepted);
      this.draftSeconds.inc({ policy }, r.draftMs / 1000);
      this.verifySeconds.inc({ policy }, r.targetMs / 1000);
      if (r.acceptProbs) this.observeCalibration(r.acceptProbs, r.accepted);
    }
  }

  /**
   * The head's predictions against what the target did. Candidate i (0-based) is verified only
   * if every candidate before it was accepted: it was accepted when i < accepted and rejected
   * when i == accepted (the first rejection); the candidates after that were never judged and
   * are not counted.
   */
  private observeCalibration(acceptProbs: readonly number[], accepted: number): void {
    const judged = Math.min(acceptProbs.length, accepted + 1);
    for (let i = 0; i < judged; i++) {
      const p = acceptProbs[i]!;
      const bucket = (Math.min(CALIBRATION_BUCKETS - 1, Math.floor(p * CALIBRATION_BUCKETS)) / CALIBRATION_BUCKETS).toFixed(1);
      const realised = i < accepted ? 1 : 0;
      this.headPredictions.inc({ bucket });
      this.headPredictedSum.inc({ bucket }, p);
      if (realised) this.headAccepted.inc({ bucket });
      this.headSquaredError.inc((p - realised) ** 2);
    }
  }
}
