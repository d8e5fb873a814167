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
import { type ConfigResult, type RawRun, runOnce, summarizeConfig, type Target, warmUp } from '../bench/serve/run-config.js';
import { serveChartSvg } from '../bench/serve/serve-chart.js';
import { type ServerProcess, splitArgs, startServer } from '../bench/serve/server-process.js';
import { benchAgent, requestJson } from '../bench/serve/stream-request.js';
import { buildWorkload, isServeDataset, type RequestSettings, SERVE_DATASETS, type ServeDataset, type WorkItem } from '../bench/serve/workload.js';
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
  repeats: number;
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
    .option('--repeats <n>', 'passes over the prompts per configuration, interleaved round by round (with --spawn every server stays up meanwhile)', intIn(1, 1000), 1)
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
      const slots: Slot[] = configs.map((config) => ({
        config,
        serverArgs: flags.spawn ? [...serverArgs, ...(config?.serverFlags ?? [])] : undefined,
        label: config?.label ?? 'server',
        runs: [],
      }));
      await runSlots(slots, flags, items, apiKey);
      const results: ConfigResult[] = slots.map((slot) =>
        summarizeConfig({ label: slot.label, speculative: slot.serverArgs ? null : (slot.config?.speculative ?? null), server_args: slot.serverArgs ?? null }, items, slot.runs),
      );
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
        repeats: flags.repeats,
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

/** One column of the comparison: where its requests go and what they carry. */
interface Slot {
  config: BenchConfig | null;
  /** `specd serve` flags (--spawn), else undefined. */
  serverArgs?: string[];
  server?: ServerProcess;
  target?: Target;
  settings?: RequestSettings;
  label: string;
  runs: RawRun[];
}

/** Start the slot's server (--spawn) or point it at --url, find the model and warm it up. */
async function open(slot: Slot, flags: ServeBenchFlags, items: WorkItem[], apiKey: string | undefined): Promise<void> {
  let url = flags.url!;
  if (slot.serverArgs) {
    process.stderr.write(`starting specd serve ${shellJoin(slot.serverArgs)}\n`);
    slot.server = await startServer(slot.serverArgs);
    url = slot.server.url;
    slot.label = slot.config?.label ?? slot.server.policy ?? 'server';
  }
  const target: Target = { url, agent: benchAgent(new URL(url)), apiKey };
  slot.target = target;
  const model = flags.model ?? (await servedModel(target));
  slot.settings = { model, temperature: flags.temperature, seed: flags.seed, speculative: slot.serverArgs ? undefined : slot.config?.speculative, extraBody: flags.extraBody };
  await warmUp(target, items, slot.settings, slot.label);
}

async function close(slot: Slot): Promise<void> {
  slot.target?.agent.destroy();
  slot.target = undefined;
  await slot.server?.stop();
  slot.server = undefined;
}

/** Every configuration, `flags.repeats` passes each, interleaved round by round. */
async function runSlots(slots: Slot[], flags: ServeBenchFlags, items: WorkItem[], apiKey: string | undefined): Promise<void> {
  // One pass: each spawned server lives for its own pass. More: they all stay up, so rounds can interleave.
  const keep = flags.repeats > 1;
  try {
    for (let round = 1; round <= flags.repeats; round++) {
      for (const slot of slots) {
        if (!slot.target) await open(slot, flags, items, apiKey);
        const name = flags.repeats > 1 ? `${slot.label} (${round}/${flags.repeats})` : slot.label;
        const bar = new SingleBar({ format: `${name} {bar} {value}/{total} requests | ETA {eta_formatted}`, stream: process.stderr, hideCursor: true });
        bar.start(items.length, 0);
        try {
          slot.runs.push(await runOnce(slot.target!, items, slot.settings!, { requestRate: flags.requestRate, concurrency: flags.concurrency ?? Infinity, seed: flags.seed, onProgress: (done) => bar.update(done) }));
        } finally {
          bar.stop();
        }
        const code = slot.server?.exitCode();
        if (code !== undefined && code !== null) throw new Error(`specd serve ${shellJoin(slot.serverArgs!)} exited (code ${code}) during the benchmark: ${slot.server!.stderrTail(3).replace(/\n/g, ' | ')}`);
        if (!keep) await close(slot);
      }
    }
  } finally {
    for (const slot of slots) await close(slot);
  }
}
