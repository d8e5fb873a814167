/**
 * `specd serve`: the OpenAI-compatible server (src/server). Prints `specd: listening on URL` on
 * stdout once it listens (the models keep loading in the workers; /health says when they are
 * ready) and shuts down gracefully on SIGTERM / SIGINT.
 */
import { createServer } from 'node:net';
import { availableParallelism } from 'node:os';
import { Command, InvalidArgumentError, Option } from 'commander';
import { policyLabel } from '../engine/stop-policy.js';
import { buildApp } from '../server/app.js';
import { DEFAULT_CORS } from '../server/cors.js';
import { DEFAULT_QUEUE_TIMEOUT_MS, DEFAULT_REQUEST_TIMEOUT_MS, DEFAULT_STALL_TIMEOUT_MS } from '../server/engine-pool.js';
import { DEFAULT_GRACE_S, DEFAULT_HOST, DEFAULT_KV_MEMORY_SHARE, DEFAULT_MAX_BATCH, DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MAX_QUEUE, DEFAULT_PORT, defaultWorkers, threadsPerWorker } from '../server/defaults.js';
import { DEFAULT_RESPONSE_STORE_BYTES, DEFAULT_RESPONSE_STORE_TTL_S } from '../server/response-store.js';
import { shutdown } from '../server/shutdown.js';
import { REASONING_PARSERS, type ReasoningParserName } from '../text/reasoning-parser.js';
import { policyNeeds } from '../engine/policy-registry.js';
import { addModelOptions, addPolicyOptions, defaultPolicyName, intIn, type ModelFlags, numberIn, pairOptions, type PolicyFlags, policySpec } from './options.js';

interface ServeFlags extends ModelFlags, PolicyFlags {
  host: string;
  port: number;
  modelName?: string;
  workers?: number;
  maxQueue: number;
  maxBatch: number;
  maxBatchTokens: number;
  kvCacheMemoryBytes?: number;
  apiKey?: string;
  metricsAuth: boolean;
  logLevel: string;
  grace: number;
  queueTimeout: number;
  requestTimeout: number;
  stallTimeout: number;
  allowedOrigins: string[];
  allowedMethods: string[];
  allowedHeaders: string[];
  reasoningParser?: ReasoningParserName;
  enablePrefixCaching: boolean;
  responsesStoreSize: number;
  responsesStoreTtl: number;
}

/** A comma-separated list; empty entries dropped ('' is the empty list). */
function listArg(text: string): string[] {
  return text.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

/** A size in bytes: a whole number with an optional K, M, G or T suffix (powers of 1024, an optional i or iB after it). */
export function byteSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(text.trim());
  if (!m) throw new InvalidArgumentError(`expected a size in bytes such as 2G, 512M or 1073741824, got '${text}'`);
  const bytes = Math.floor(Number(m[1]) * 1024 ** ' kmgt'.indexOf((m[2] || ' ').toLowerCase()));
  if (bytes < 1) throw new InvalidArgumentError(`the size must be at least one byte, got '${text}'`);
  return bytes;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

function logLevelArg(text: string): string {
  if (!LOG_LEVELS.includes(text)) throw new InvalidArgumentError(`expected one of ${LOG_LEVELS.join(', ')}`);
  return text;
}

/** An error message on one line (onnxruntime's carry newlines). */
const oneLine = (text: string) => text.replace(/\s*\n\s*/g, ' ').trim();

/**
 * Refuses, before any model loads, a port this process cannot listen on: one that another
 * process holds (EADDRINUSE) or one below 1024 without the privilege (EACCES). Listens on
 * `host`:`port` as the server will and closes at once; port 0 (any free port) always passes.
 * @throws InvalidArgumentError naming the port and the fix
 */
export async function checkPortFree(host: string, port: number): Promise<void> {
  if (port === 0) return;
  const probe = createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject);
      probe.listen({ host, port, exclusive: true }, resolve);
    });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') throw new InvalidArgumentError(`--port ${port}: ${host}:${port} is already in use by another process; stop it or choose another --port`);
    if (code === 'EACCES') throw new InvalidArgumentError(`--port ${port}: no permission to listen on ${host}:${port} (ports below 1024 need privileges); choose another --port`);
    throw new InvalidArgumentError(`--host ${host} --port ${port}: cannot listen there: ${(err as Error).message}`);
  } finally {
    await new Promise<void>((resolve) => (probe.listening ? probe.close(() => resolve()) : resolve()));
  }
}

export function serveCommand(): Command {
  const cmd = new Command('serve').description('serve an OpenAI-compatible API: /v1/chat/completions, /v1/completions, /v1/responses, /v1/models, /tokenize, /detokenize, /info, /version, /health, /metrics');
  cmd
    .option('--host <host>', 'address to listen on', DEFAULT_HOST)
    .option('--port <n>', 'port to listen on (0: any free port)', intIn(0, 65535), DEFAULT_PORT)
    .option('--model-name <name>', "the model name clients send as 'model' (default: the target directory's name)")
    .option('--workers <n>', `engine worker threads, each with its own copy of the models (default: 1 on a GPU or with <= 4 cores, else cores / 4)`, intIn(1, 1024))
    .option('--max-queue <n>', 'requests that may wait for a worker; more are refused with 429', intIn(0, 1_000_000), DEFAULT_MAX_QUEUE)
    .option('--max-batch <n>', 'generations each worker runs at once in one batch (continuous batching; 1: one at a time)', intIn(1, 4096), DEFAULT_MAX_BATCH)
    .option('--max-batch-tokens <n>', 'tokens one scheduler iteration feeds at most (verification plus prompt pieces)', intIn(1, 1_000_000), DEFAULT_MAX_BATCH_TOKENS)
    .option('--kv-cache-memory-bytes <size>', `KV-cache memory each worker's running generations may reserve, e.g. 2G or 512M (default: ${DEFAULT_KV_MEMORY_SHARE * 100}% of the memory, shared out among the workers)`, byteSize)
    .option('--api-key <key>', 'require "Authorization: Bearer KEY" on every route but /health, /version and /metrics (default: $SPECD_API_KEY)')
    .option('--metrics-auth', 'with an API key, require it on /metrics too', false)
    .option('--log-level <level>', `log level of the JSON lines on stderr: ${LOG_LEVELS.join(', ')}`, logLevelArg, 'warn')
    .option('--grace <seconds>', 'on SIGTERM/SIGINT, time in-flight requests get to finish before they are cancelled', numberIn(0, 86_400), DEFAULT_GRACE_S)
    .option('--queue-timeout <seconds>', 'longest wait for an engine worker; then 503 queue_timeout', numberIn(0.001, 86_400), DEFAULT_QUEUE_TIMEOUT_MS / 1000)
    .option('--request-timeout <seconds>', "longest time from a request's arrival to its end; then 408 request_timeout (an error event on streams)", numberIn(0.001, 86_400), DEFAULT_REQUEST_TIMEOUT_MS / 1000)
    .option('--stall-timeout <seconds>', 'a worker with requests that makes no progress for this long is replaced (its requests get 503 worker_stalled)', numberIn(0.001, 86_400), DEFAULT_STALL_TIMEOUT_MS / 1000)
    .option('--allowed-origins <list>', 'CORS: comma-separated origins browser pages may call from ("*": any; "": no CORS headers)', listArg, DEFAULT_CORS.allowedOrigins)
    .option('--allowed-methods <list>', 'CORS: methods a preflight allows ("*": any)', listArg, DEFAULT_CORS.allowedMethods)
    .option('--allowed-headers <list>', 'CORS: request headers a preflight allows (default: those it asks for)', listArg, DEFAULT_CORS.allowedHeaders)
    .option('--enable-prefix-caching', "keep finished requests' KV rows and start a prompt from the longest cached prefix (vLLM's automatic prefix caching; default)", true)
    .option('--no-enable-prefix-caching', 'compute every prompt from its first token')
    .option('--responses-store-size <size>', 'memory for stored /v1/responses (store: true; previous_response_id continues one), e.g. 64M; the least recently used leave first', byteSize, DEFAULT_RESPONSE_STORE_BYTES)
    .option('--responses-store-ttl <seconds>', 'how long a stored response stays', numberIn(1, 365 * 86_400), DEFAULT_RESPONSE_STORE_TTL_S)
    .addOption(new Option('--reasoning-parser <name>', "split reasoning models' <think> blocks into reasoning_content (chat) and reasoning items (responses)").choices(REASONING_PARSERS));
  // The server's default draft policy; a request may choose another with its `speculative` field.
  addPolicyOptions(cmd);
  // Models, device and threads (--threads is per worker here: default, the cores shared out among
  // the workers). Every model flag reaches the workers through pairOptions(), the acceptance
  // head's (--head FILE) included once the shared options carry it.
  addModelOptions(cmd);
  cmd.action(async (flags: ServeFlags) => {
    const pair = { ...pairOptions(flags), prefixCaching: flags.enablePrefixCaching };
    // Without --policy the default depends on whether the workers load an acceptance head.
    const policy = flags.policy === undefined ? undefined : policySpec(flags);
    if (policy && policyNeeds(policy).draft && pair.draft === null) throw new InvalidArgumentError(`--policy ${policy.policy} needs a draft model (use --draft DIR or --policy none)`);
    // A port that is taken fails now, in one line, not after the models have loaded.
    await checkPortFree(flags.host, flags.port);
    const cores = availableParallelism();
    const workers = flags.workers ?? defaultWorkers(cores, flags.device);
    const app = await buildApp({
      pair,
      modelName: flags.modelName,
      workers,
      maxQueue: flags.maxQueue,
      batching: { maxBatch: flags.maxBatch, maxBatchTokens: flags.maxBatchTokens, kvCacheMemoryBytes: flags.kvCacheMemoryBytes },
      apiKey: flags.apiKey ?? (process.env.SPECD_API_KEY || undefined),
      metricsAuth: flags.metricsAuth,
      queueTimeoutMs: flags.queueTimeout * 1000,
      requestTimeoutMs: flags.requestTimeout * 1000,
      stallTimeoutMs: flags.stallTimeout * 1000,
      policy: policy ?? ((hasHead) => policySpec(flags, defaultPolicyName({ draft: pair.draft !== null, head: hasHead }))),
      ...(flags.reasoningParser ? { reasoningParser: flags.reasoningParser } : {}),
      responseStore: { maxBytes: flags.responsesStoreSize, ttlMs: flags.responsesStoreTtl * 1000 },
      cors: { allowedOrigins: flags.allowedOrigins, allowedMethods: flags.allowedMethods, allowedHeaders: flags.allowedHeaders },
      // Warnings and server errors (a 5xx is a bug) as JSON lines on stderr; stdout stays for the URL.
      logger: { level: flags.logLevel, stream: process.stderr },
    }).catch((err: Error) => {
      throw new Error(oneLine(err.message));
    });
    const { engine, facts } = app.specd;
    const threads = engine.options.pair.threads ?? threadsPerWorker(cores, workers);
    process.stderr.write(`specd: loading ${facts.name} on ${workers} worker${workers > 1 ? 's' : ''} x ${threads} thread${threads > 1 ? 's' : ''} (${flags.device})\n`);

    const url = await app.listen({ host: flags.host, port: flags.port });
    process.stdout.write(`specd: listening on ${url}\n`);

    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        process.stderr.write(`specd: ${signal} again: cancelling in-flight requests\n`);
        engine.cancelAll();
        return;
      }
      stopping = true;
      process.stderr.write(`specd: ${signal}: shutting down (in-flight requests get ${flags.grace} s)\n`);
      shutdown(app, flags.grace * 1000).then(
        () => process.stderr.write('specd: stopped\n'),
        (err: Error) => {
          process.stderr.write(`specd: error while shutting down: ${err.message}\n`);
          process.exitCode = 1;
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);

    try {
      await engine.ready;
    } catch (err) {
      await app.close();
      throw new Error(oneLine(`the models failed to load: ${(err as Error).message}`));
    }
    if (policy && policyNeeds(policy).head && !engine.hasHead) {
      await app.close();
      throw new InvalidArgumentError(`--policy ${policy.policy} needs an acceptance head and none is loaded (use --head FILE)`);
    }
    process.stderr.write(`specd: ready: model ${facts.name}, default policy ${policyLabel(app.specd.defaultPolicy)}\n`);
  });
  return cmd;
}
