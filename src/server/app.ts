/**
 * The OpenAI-compatible HTTP server: `buildApp(opts)` assembles it and never listens (tests use
 * `app.inject()`, or `app.listen({port: 0})`; `specd serve` listens).
 *
 *   POST /v1/chat/completions   chat, streamed (SSE) or not
 *   POST /v1/completions        text completion of a prompt string or token ids
 *   POST /v1/responses          OpenAI's Responses API, streamed (typed events) or not; nothing stored
 *   GET  /v1/models             the served model
 *   POST /tokenize, /detokenize vLLM's tokenizer endpoints
 *   GET  /info, /version        what the server is (model, policy, head, workers, ...), its version
 *   GET  /health                503 {status: "loading"} until every worker has loaded, then 200
 *   GET  /metrics               Prometheus text
 *
 * Every response carries `x-request-id` (request-id.ts) and, for allowed origins, CORS headers
 * (cors.ts). Refusals a client is expected to meet (4xx, 429, 503 while loading or shutting
 * down) are logged as one `info` line; only failures of the server itself (500) at `error`,
 * with their stack.
 *
 * The main thread renders chat templates, tokenizes, validates and streams; generation runs in
 * the engine workers (engine-pool.ts). Shared things are decorations on the instance
 * (`app.specd`), released in `onClose`.
 */
import { availableParallelism } from 'node:os';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import type { PairOptions } from '../pair/model-pair.js';
import { DEFAULT_FIXED_K, parsePolicy, type PolicySpec } from '../engine/stop-policy.js';
import { apiKeyHook } from './auth.js';
import { type CorsOptions, DEFAULT_CORS, registerCors } from './cors.js';
import { batchingOptions, DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT_MS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_QUEUE, defaultWorkers, threadsPerWorker } from './defaults.js';
import type { BatchingOptions } from './protocol.js';
import { EnginePool } from './engine-pool.js';
import { ApiError, apiErrors } from './errors.js';
import { EventLoopMonitor } from './event-loop.js';
import { type FaultOptions, workerFaults } from './faults.js';
import { clientError, frameworkError } from './http-errors.js';
import { ServerMetrics } from './metrics.js';
import { loadModelFacts, type ModelFacts } from './model-facts.js';
import { chatRoutes } from './routes/chat.js';
import { completionRoutes } from './routes/completions.js';
import { healthRoutes } from './routes/health.js';
import { metricsRoutes } from './routes/metrics.js';
import { infoRoutes } from './routes/info.js';
import { modelRoutes } from './routes/models.js';
import { responsesRoutes } from './routes/responses.js';
import { tokenizeRoutes } from './routes/tokenize.js';
import { requestId, requestIdHook } from './request-id.js';
import { AJV_OPTIONS, formatSchemaErrors } from './schema-errors.js';
import { DEFAULT_RESPONSE_STORE_BYTES, DEFAULT_RESPONSE_STORE_TTL_S, ResponseStore, type ResponseStoreOptions } from './response-store.js';
import { ResponseTracker } from './shutdown.js';
import { TokenTexts } from './token-text.js';
import type { ReasoningParserName } from '../text/reasoning-parser.js';

export interface ServerOptions {
  /** Models, device and threads; `threads` is per worker (default: the cores shared out). */
  pair?: PairOptions;
  /** The name clients pass as `model` (default: the target directory's name). */
  modelName?: string;
  /** Engine worker threads (default: defaults.ts `defaultWorkers`). */
  workers?: number;
  /** Requests that may wait for a worker (default DEFAULT_MAX_QUEUE). */
  maxQueue?: number;
  /** How each worker batches its generations (defaults.ts: DEFAULT_MAX_BATCH, DEFAULT_MAX_BATCH_TOKENS, a share of the memory for the KV cache). */
  batching?: Partial<BatchingOptions>;
  /** Require `Authorization: Bearer KEY` on every route but /health, /version and /metrics (auth.ts). */
  apiKey?: string;
  /** With `apiKey`, whether /metrics needs the key too (default: open). */
  metricsAuth?: boolean;
  /**
   * The draft policy of requests that do not choose one, or a function that picks it once the
   * models have loaded from whether an acceptance head is there (default: specdec++ with the
   * head's recommended threshold when there is one, else fixed with K = DEFAULT_FIXED_K; none
   * without a draft).
   */
  policy?: PolicySpec | ((hasHead: boolean) => PolicySpec);
  /** Largest request body in bytes (default DEFAULT_BODY_LIMIT). */
  bodyLimit?: number;
  /** CORS for browser pages (default DEFAULT_CORS: any origin); `allowedOrigins: []` turns it off. */
  cors?: CorsOptions;
  /** Split reasoning models' `<think>` blocks from their answers (text/reasoning-parser.ts; default: off). */
  reasoningParser?: ReasoningParserName;
  /** fastify's logger option (default: off). */
  logger?: boolean | object;
  /** Deadlines and the stall watchdog, ms (engine-pool.ts: DEFAULT_QUEUE_TIMEOUT_MS, DEFAULT_REQUEST_TIMEOUT_MS, DEFAULT_STALL_TIMEOUT_MS). */
  queueTimeoutMs?: number;
  requestTimeoutMs?: number;
  stallTimeoutMs?: number;
  /** Longest time to receive a whole request, headers and body, ms (default DEFAULT_BODY_TIMEOUT_MS); then 408 and the connection closes. */
  bodyTimeoutMs?: number;
  /** Open connections at most (default DEFAULT_MAX_CONNECTIONS); more are closed as they arrive. */
  maxConnections?: number;
  /** Bounds of the Responses API's stored responses (response-store.ts: DEFAULT_RESPONSE_STORE_BYTES, DEFAULT_RESPONSE_STORE_TTL_S). */
  responseStore?: Partial<ResponseStoreOptions>;
  /** Tests only: engine generations that fail on purpose (faults.ts). Never set from a flag or a request. */
  faults?: FaultOptions;
}

/** What the routes share (`app.specd`). */
export interface ServerContext {
  engine: EnginePool;
  facts: ModelFacts;
  /** The policy of requests that do not choose one (see ServerOptions.policy). */
  readonly defaultPolicy: PolicySpec;
  metrics: ServerMetrics;
  eventLoop: EventLoopMonitor;
  /** Token texts for logprobs. */
  texts: TokenTexts;
  /** How outputs are split into reasoning and content (none: all content). */
  readonly reasoningParser?: ReasoningParserName;
  /** Responses in flight (shutdown waits for them). */
  responses: ResponseTracker;
  /** The Responses API's stored responses (`store`, `previous_response_id`). */
  responseStore: ResponseStore;
  /** Whether the engine has an acceptance head; undefined while its models load. */
  readonly hasHead: boolean | undefined;
}

declare module 'fastify' {
  interface FastifyInstance {
    specd: ServerContext;
  }
  interface FastifyRequest {
    /** performance.now() when the request arrived: where its time to first token and latency start. */
    arrivedAt: number;
  }
}

export async function buildApp(opts: ServerOptions = {}): Promise<FastifyInstance> {
  const pairOptions = opts.pair ?? {};
  const facts = await loadModelFacts(pairOptions, opts.modelName);
  const cores = availableParallelism();
  const workers = opts.workers ?? defaultWorkers(cores, pairOptions.device);
  const eventLoop = new EventLoopMonitor();
  // The gauges read the engine when scraped, by which time it exists.
  const metrics = new ServerMetrics(facts.name, () => engine, eventLoop);
  const engine: EnginePool = new EnginePool(
    {
      workers,
      maxQueue: opts.maxQueue ?? DEFAULT_MAX_QUEUE,
      batching: batchingOptions(opts.batching ?? {}, workers),
      pair: { ...pairOptions, threads: pairOptions.threads ?? threadsPerWorker(cores, workers) },
      faults: opts.faults && workerFaults(opts.faults),
      onWorkerLost: () => app.log.warn('an engine worker stopped; a new one is loading the models'),
      queueTimeoutMs: opts.queueTimeoutMs,
      requestTimeoutMs: opts.requestTimeoutMs,
      stallTimeoutMs: opts.stallTimeoutMs,
    },
    metrics,
  );
  // Measure the event loop from when the server can serve, not while it starts.
  engine.ready.then(() => eventLoop.reset(), () => {});

  const policy = opts.policy;
  const withoutDraft = pairOptions.draft === null;
  const chooseDefault = (hasHead: boolean): PolicySpec => {
    if (typeof policy === 'function') return policy(hasHead);
    if (policy) return policy;
    if (withoutDraft) return { policy: 'none' };
    return hasHead ? parsePolicy('specdec++') : { policy: 'fixed', k: DEFAULT_FIXED_K };
  };

  const bodyLimit = opts.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const bodyTimeoutMs = opts.bodyTimeoutMs ?? DEFAULT_BODY_TIMEOUT_MS;
  const app = Fastify({
    logger: opts.logger ?? false,
    bodyLimit,
    // A client sending its body byte by byte gives up its socket after this (node's server.requestTimeout: receiving only, never a streamed response).
    requestTimeout: bodyTimeoutMs,
    // Node only tracks the timeout when the server is created with it; how often it looks (its default, 30 s, would let them run on that long).
    http: { requestTimeout: bodyTimeoutMs, headersTimeout: bodyTimeoutMs, connectionsCheckingInterval: Math.max(10, Math.min(1000, bodyTimeoutMs / 4)) },
    // Requests that arrive while closing get our own OpenAI-shaped 503 (the engine is draining).
    return503OnClosing: false,
    ajv: { customOptions: AJV_OPTIONS },
    schemaErrorFormatter: formatSchemaErrors,
    frameworkErrors: frameworkError,
    clientErrorHandler: clientError,
    requestIdHeader: false,
    genReqId: requestId,
  });
  app.server.maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  app.decorate('specd', {
    engine,
    facts,
    get defaultPolicy() {
      return chooseDefault(Boolean(engine.hasHead));
    },
    metrics,
    eventLoop,
    texts: new TokenTexts(facts.tokenizer),
    ...(opts.reasoningParser ? { reasoningParser: opts.reasoningParser } : {}),
    responses: new ResponseTracker(app.server),
    responseStore: new ResponseStore({
      maxBytes: opts.responseStore?.maxBytes ?? DEFAULT_RESPONSE_STORE_BYTES,
      ttlMs: opts.responseStore?.ttlMs ?? DEFAULT_RESPONSE_STORE_TTL_S * 1000,
    }),
    get hasHead() {
      return engine.hasHead;
    },
  } satisfies ServerContext);

  app.setErrorHandler((err: FastifyError | ApiError, request, reply) => {
    const apiError = toApiError(err, bodyLimit);
    // A refusal the API defines is the client's to handle: one line. Anything else is a bug: its stack.
    if (apiError.status >= 500 && !(err instanceof ApiError && apiError.code !== 'internal_error')) request.log.error(err);
    else request.log.info({ status: apiError.status, code: apiError.code, param: apiError.param }, apiError.message);
    // A client without the key gets no more of this connection (nor a slow body's worth of it).
    if (apiError.status === 401) reply.header('connection', 'close');
    return reply.code(apiError.status).headers(apiError.headers).send(apiError.toBody());
  });
  app.setNotFoundHandler((request, reply) => {
    const err = apiErrors.routeNotFound(request.method, request.url);
    return reply.code(err.status).send(err.toBody());
  });
  app.decorateRequest('arrivedAt', 0);
  app.addHook('onRequest', async (request) => {
    request.arrivedAt = performance.now();
  });
  app.addHook('onRequest', requestIdHook);
  // CORS before the key: preflights are answered without it. (After the error handler, which
  // routes take as they are registered: CORS registers one for OPTIONS.)
  await registerCors(app, opts.cors ?? DEFAULT_CORS);
  if (opts.apiKey) app.addHook('onRequest', apiKeyHook(opts.apiKey, { metrics: opts.metricsAuth }));
  app.addHook('onClose', async () => {
    await engine.close();
    eventLoop.stop();
  });

  await app.register(chatRoutes);
  await app.register(completionRoutes);
  await app.register(responsesRoutes);
  await app.register(tokenizeRoutes);
  await app.register(infoRoutes);
  await app.register(modelRoutes);
  await app.register(healthRoutes);
  await app.register(metricsRoutes);
  return app;
}

/** fastify's own errors (body parsing, limits) in OpenAI's shape; anything unexpected is a 500. */
function toApiError(err: FastifyError | ApiError, bodyLimit: number): ApiError {
  if (err instanceof ApiError) return err;
  const status = err.statusCode ?? 500;
  if (status === 413) return apiErrors.bodyTooLarge(bodyLimit);
  if (status === 415) return new ApiError(415, 'invalid_request_error', `${err.message}; send application/json.`, null, 'unsupported_media_type');
  if (status >= 400 && status < 500) return apiErrors.badBody(`Invalid request body: ${err.message}`);
  return apiErrors.internal('The server failed to handle the request.');
}
