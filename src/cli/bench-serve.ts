/**
 * `specd bench serve`: a load generator against an OpenAI-compatible server, like
 * `vllm bench serve`. Against a running server (--url) or servers it starts itself (--spawn),
 * one configuration at a time (--compare), on the same prompts; prints one side-by-side table
 * and writes JSON, Markdown and an SVG chart on request.
 */
import { writeFileSync } from 'node:fs';
import { dirname, relative } from 'node:path';
import { SingleBar } from 'cli-progress';
import { Command, InvalidArgumentError } from 'commander';
import { type BenchConfig, parseCompareList } from '../bench/serve/configs.js';
import { applySpeedups, formatComparison, machineInfo, markdownReport, REPORT_SCHEMA, type ServeReport, type ServeSettings, shellJoin } from '../bench/serve/report.js';
import { type ConfigResult, runConfig, type Target } from '../bench/serve/run-config.js';
import { serveChartSvg } from '../bench/serve/serve-chart.js';
import { type ServerProcess, splitArgs, startServer } from '../bench/serve/server-process.js';
import { benchAgent, requestJson } from '../bench/serve/stream-request.js';
import { buildWorkload, isServeDataset, SERVE_DATASETS, type ServeDataset, type WorkItem } from '../bench/serve/workload.js';
import { intIn, numberIn } from './options.js';

interface ServeBenchFlags {
  url?: string;
  spawn?: boolean;
  serverArgs: string[];
  dataset: ServeDataset;
  numPrompts: number;
  maxTokens: number;
  randomInputLen: number;
  randomOutputLen?: number;
  concurrency?: number;
  requestRate: number;
  temperature: number;
  seed: number;
  apiKey?: string;
  model?: string;
  compare?: BenchConfig[];
  extraBody?: Record<string, unknown>;
  json?: string;
  markdown?: string;
  chart?: string;
}

const wrap =
  <T>(parse: (text: string) => T) =>
  (text: string): T => {
    try {
      return parse(text);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };

function datasetArg(text: string): ServeDataset {
  if (!isServeDataset(text)) throw new InvalidArgumentError(`expected one of ${SERVE_DATASETS.join(', ')}`);
  return text;
}

function rateArg(text: string): number {
  if (text.trim() === 'inf') return Infinity;
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v) || v <= 0) throw new InvalidArgumentError('expected a positive number of requests per second, or inf');
  return v;
}

function urlArg(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new InvalidArgumentError('expected a URL such as http://127.0.0.1:8000');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new InvalidArgumentError('expected an http:// or https:// URL');
  return url.origin;
}

function jsonObjectArg(text: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new InvalidArgumentError(`not JSON: ${(err as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new InvalidArgumentError('expected a JSON object');
  return v as Record<string, unknown>;
}

/** The served model's name, which also checks that the server answers and takes the key. */
async function servedModel(target: Target): Promise<string> {
  const res = await requestJson(new URL('/v1/models', target.url), target.agent, { apiKey: target.apiKey }).catch((err: Error) => {
    throw new Error(`cannot reach ${target.url}: ${err.message}`);
  });
  if (res.status !== 200) throw new Error(`GET ${target.url}/v1/models: HTTP ${res.status}${res.status === 401 ? ' (check --api-key)' : ''}`);
  const id = (JSON.parse(res.body) as { data?: { id?: string }[] }).data?.[0]?.id;
  if (!id) throw new Error(`GET ${target.url}/v1/models lists no model`);
  return id;
}

export function benchServeCommand(): Command {
  return new Command('serve')
    .description('load-test an OpenAI-compatible server (like vllm bench serve): throughput, TTFT, TPOT, ITL, e2e latency, speculation figures')
    .option('--url <url>', 'a running server, e.g. http://127.0.0.1:8000', urlArg)
    .option('--spawn', 'start `specd serve --port 0` for each configuration and stop it after')
    .option('--server-args <flags>', 'extra `specd serve` flags with --spawn, e.g. "--workers 1 --threads 2"', wrap(splitArgs), [] as string[])
    .option('--dataset <name>', `prompts: ${SERVE_DATASETS.join(', ')}`, datasetArg, 'gsm8k' as ServeDataset)
    .option('--num-prompts <n>', 'requests to send', intIn(1, 1_000_000), 50)
    .option('--max-tokens <n>', 'max_tokens of each request', intIn(1, 1_000_000), 128)
    .option('--random-input-len <n>', 'random prompts: characters of text', intIn(1, 10_000_000), 128)
    .option('--random-output-len <n>', 'random prompts: max_tokens (default: --max-tokens)', intIn(1, 1_000_000))
    .option('--concurrency <n>', 'most requests in flight (default: no cap)', intIn(1, 1_000_000))
    .option('--request-rate <r>', 'requests per second, Poisson arrivals; inf: all at once', rateArg, Infinity)
    .option('--temperature <t>', 'sampling temperature (0 = greedy)', numberIn(0, 100), 0)
    .option('--seed <n>', 'seeds arrivals, random prompts and requests (request i gets seed + i)', intIn(0, 2 ** 32 - 1), 0)
    .option('--api-key <key>', 'bearer token for /v1 routes (default: $SPECD_API_KEY); with --spawn the server gets it too')
    .option('--model <name>', "the request's model (default: the one /v1/models lists)")
    .option('--compare <list>', 'policies to compare one after another, e.g. none,fixed:4,specdec++ (speedups are over none, else the first)', wrap(parseCompareList))
    .option('--extra-body <json>', 'a JSON object merged into every request body, e.g. \'{"logit_bias": {"258": -100}}\'', jsonObjectArg)
    .option('--json <file>', 'write the report as JSON (schema: bench/README.md)')
    .option('--markdown <file>', 'write the report as Markdown')
    .option('--chart <file>', 'write latency percentiles and throughput per configuration as SVG')
    .action(async (flags: ServeBenchFlags) => {
      if (flags.url && flags.spawn) throw new InvalidArgumentError('give either --url or --spawn, not both');
      if (!flags.url && !flags.spawn) throw new InvalidArgumentError('give --url URL (a running server) or --spawn (start one)');
      if (flags.url && flags.serverArgs.length) throw new InvalidArgumentError('--server-args needs --spawn');
      if (flags.dataset !== 'random' && flags.randomOutputLen !== undefined) throw new InvalidArgumentError('--random-output-len needs --dataset random');
      const apiKey = flags.apiKey ?? (process.env.SPECD_API_KEY || undefined);
      const items = buildWorkload({
        dataset: flags.dataset,
        numPrompts: flags.numPrompts,
        maxTokens: flags.maxTokens,
        seed: flags.seed,
        randomInputLen: flags.randomInputLen,
        randomOutputLen: flags.randomOutputLen ?? flags.maxTokens,
      });
      const configs: (BenchConfig | null)[] = flags.compare ?? [null];
      const serverArgs = [...flags.serverArgs, ...(flags.spawn && apiKey ? ['--api-key', apiKey] : [])];
      const results: ConfigResult[] = [];
      for (const config of configs) {
        results.push(flags.spawn ? await spawned(config, serverArgs, items, flags, apiKey) : await against(flags.url!, config, items, flags, apiKey));
      }
      const baseline = applySpeedups(results);
      const settings: ServeSettings = {
        command: shellJoin(['specd', ...process.argv.slice(2)]),
        url: flags.url ?? null,
        spawn: Boolean(flags.spawn),
        server_args: flags.serverArgs,
        dataset: flags.dataset,
        num_prompts: flags.numPrompts,
        max_tokens: flags.maxTokens,
        random_input_len: flags.dataset === 'random' ? flags.randomInputLen : null,
        random_output_len: flags.dataset === 'random' ? (flags.randomOutputLen ?? flags.maxTokens) : null,
        request_rate: Number.isFinite(flags.requestRate) ? flags.requestRate : null,
        concurrency: flags.concurrency ?? null,
        temperature: flags.temperature,
        seed: flags.seed,
        extra_body: flags.extraBody ?? null,
      };
      const report: ServeReport = { schema: REPORT_SCHEMA, created: new Date().toISOString(), machine: machineInfo(), settings, baseline, configs: results };
      process.stdout.write(formatComparison(results, baseline));
      const wrote = (file: string) => process.stderr.write(`wrote ${file}\n`);
      if (flags.json) {
        writeFileSync(flags.json, `${JSON.stringify(report, null, 2)}\n`);
        wrote(flags.json);
      }
      if (flags.chart) {
        writeFileSync(flags.chart, serveChartSvg(report));
        wrote(flags.chart);
      }
      if (flags.markdown) {
        writeFileSync(flags.markdown, markdownReport(report, flags.chart ? relative(dirname(flags.markdown), flags.chart) : undefined));
        wrote(flags.markdown);
      }
      const empty = results.filter((r) => r.completed === 0).map((r) => r.label);
      if (empty.length) throw new Error(`no request succeeded under ${empty.join(', ')}: ${results.find((r) => r.completed === 0)!.errors[0] ?? 'no error message'}`);
    });
}

/** One configuration against a server that is already running. */
async function against(url: string, config: BenchConfig | null, items: WorkItem[], flags: ServeBenchFlags, apiKey: string | undefined, label?: string, serverArgs?: string[]): Promise<ConfigResult> {
  const target: Target = { url, agent: benchAgent(new URL(url)), apiKey };
  try {
    const model = flags.model ?? (await servedModel(target));
    const name = label ?? config?.label ?? 'server';
    const bar = new SingleBar({ format: `${name} {bar} {value}/{total} requests | ETA {eta_formatted}`, stream: process.stderr, hideCursor: true });
    bar.start(items.length, 0);
    try {
      return await runConfig(
        target,
        items,
        { model, temperature: flags.temperature, seed: flags.seed, speculative: serverArgs ? undefined : config?.speculative, extraBody: flags.extraBody },
        { label: name, speculative: serverArgs ? null : (config?.speculative ?? null), server_args: serverArgs ?? null },
        { requestRate: flags.requestRate, concurrency: flags.concurrency ?? Infinity, seed: flags.seed, onProgress: (done) => bar.update(done) },
      );
    } finally {
      bar.stop();
    }
  } finally {
    target.agent.destroy();
  }
}

/** One configuration against its own `specd serve`, stopped after. */
async function spawned(config: BenchConfig | null, serverArgs: string[], items: WorkItem[], flags: ServeBenchFlags, apiKey: string | undefined): Promise<ConfigResult> {
  const args = [...serverArgs, ...(config?.serverFlags ?? [])];
  process.stderr.write(`starting specd serve ${shellJoin(args)}\n`);
  const server: ServerProcess = await startServer(args);
  try {
    const result = await against(server.url, config, items, flags, apiKey, config?.label ?? server.policy ?? 'server', args);
    const code = server.exitCode();
    if (code !== undefined) throw new Error(`specd serve ${shellJoin(args)} exited (code ${code}) during the benchmark: ${server.stderrTail(3).replace(/\n/g, ' | ')}`);
    return result;
  } finally {
    await server.stop();
  }
}
