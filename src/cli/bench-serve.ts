/**
 * `specd bench serve`: a load generator against an OpenAI-compatible server, like
 * `vllm bench serve`. Against a running server (--url) or servers it starts itself (--spawn,
 * one per server variant and policy), every configuration at every concurrency level, on the
 * same prompts; prints a side-by-side table (one level) or one row per point (a sweep), the
 * ratios against the first server variant, and writes JSON, Markdown and an SVG chart on request.
 */
import { writeFileSync } from 'node:fs';
import { dirname, relative } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { type BenchConfig, checkVariants, parseCompareList, parseConcurrencyList } from '../bench/serve/configs.js';
import { applySpeedups, applyVariantRatios, formatReport, machineInfo, markdownReport, REPORT_SCHEMA, type ServeReport, type ServeSettings, shellJoin } from '../bench/serve/report.js';
import type { ConfigResult } from '../bench/serve/run-config.js';
import { serveChartSvg } from '../bench/serve/serve-chart.js';
import { splitArgs } from '../bench/serve/server-process.js';
import { sweepChartSvg } from '../bench/serve/sweep-chart.js';
import { runSweep } from '../bench/serve/sweep-runner.js';
import { buildWorkload, isServeDataset, SERVE_DATASETS, type ServeDataset } from '../bench/serve/workload.js';
import { formatMultiTurn, multiTurnChartSvg, runMultiTurnBench } from '../bench/serve/multi-turn.js';
import { intIn, numberIn } from './options.js';

interface ServeBenchFlags {
  url?: string;
  spawn?: boolean;
  /** One word list per --server-args (a server variant each). */
  serverArgs: string[][];
  dataset: ServeDataset;
  numPrompts: number;
  maxTokens: number;
  randomInputLen: number;
  randomOutputLen?: number;
  concurrency?: number[];
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
  multiTurn?: boolean;
  conversations: number;
  turns: number;
  systemPromptLen: number;
  questionLen: number;
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

/** Each --server-args value is one server variant, split into words. */
function variantArg(text: string, previous: string[][]): string[][] {
  return [...previous, wrap(splitArgs)(text)];
}

export function benchServeCommand(): Command {
  return new Command('serve')
    .description('load-test an OpenAI-compatible server (like vllm bench serve): throughput, TTFT, TPOT, ITL, e2e latency, speculation figures')
    .option('--url <url>', 'a running server, e.g. http://127.0.0.1:8000', urlArg)
    .option('--spawn', 'start `specd serve --port 0` for each configuration (server variant and policy) and stop it after')
    .option('--server-args <flags>', 'extra `specd serve` flags with --spawn, e.g. "--workers 1 --threads 2"; given several times, each value is a server variant run beside the others ("" for the defaults)', variantArg, [] as string[][])
    .option('--dataset <name>', `prompts: ${SERVE_DATASETS.join(', ')}`, datasetArg, 'gsm8k' as ServeDataset)
    .option('--num-prompts <n>', 'requests to send', intIn(1, 1_000_000), 50)
    .option('--max-tokens <n>', 'max_tokens of each request', intIn(1, 1_000_000), 128)
    .option('--random-input-len <n>', 'random prompts: characters of text', intIn(1, 10_000_000), 128)
    .option('--random-output-len <n>', 'random prompts: max_tokens (default: --max-tokens)', intIn(1, 1_000_000))
    .option('--concurrency <list>', 'most requests in flight; a comma list such as 1,4,16,64 runs every configuration at each level (default: no cap)', wrap(parseConcurrencyList))
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
    .option('--chart <file>', 'write an SVG: latency percentiles and throughput per configuration; with several concurrency levels, output tokens/s, TTFT and TPOT medians against concurrency')
    .option('--multi-turn', 'a multi-turn chat workload instead of one-turn prompts: --conversations chats of --turns turns, sharing a system prompt of --system-prompt-len characters, each turn sending the whole conversation (TTFT per turn, prefix cache hit rate)')
    .option('--conversations <n>', 'multi-turn: conversations', intIn(1, 100_000), 16)
    .option('--turns <n>', 'multi-turn: turns per conversation', intIn(1, 1000), 8)
    .option('--system-prompt-len <n>', 'multi-turn: characters of the shared system prompt', intIn(0, 10_000_000), 1000)
    .option('--question-len <n>', 'multi-turn: characters of each question', intIn(1, 10_000_000), 40)
    .action(async (flags: ServeBenchFlags) => {
      if (flags.url && flags.spawn) throw new InvalidArgumentError('give either --url or --spawn, not both');
      if (!flags.url && !flags.spawn) throw new InvalidArgumentError('give --url URL (a running server) or --spawn (start one)');
      if (flags.url && flags.serverArgs.length) throw new InvalidArgumentError('--server-args needs --spawn');
      if (flags.multiTurn) return multiTurn(flags);
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
      const variants = flags.spawn ? (flags.serverArgs.length ? flags.serverArgs : [[]]) : [];
      checkVariants(variants);
      const results = await runSweep(
        {
          url: flags.url,
          variants,
          configs: flags.compare ?? [null],
          levels: flags.concurrency ?? [null],
          repeats: flags.repeats,
          requestRate: flags.requestRate,
          temperature: flags.temperature,
          seed: flags.seed,
          apiKey,
          model: flags.model,
          extraBody: flags.extraBody,
        },
        items,
      );
      const baseline = applySpeedups(results);
      applyVariantRatios(results, variants.length > 1 ? variants[0]! : null);
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
      process.stdout.write(formatReport(report));
      const wrote = (file: string) => process.stderr.write(`wrote ${file}\n`);
      if (flags.json) {
        writeFileSync(flags.json, `${JSON.stringify(report, null, 2)}\n`);
        wrote(flags.json);
      }
      if (flags.chart) {
        writeFileSync(flags.chart, (flags.concurrency?.length ?? 1) > 1 ? sweepChartSvg(report) : serveChartSvg(report));
        wrote(flags.chart);
      }
      if (flags.markdown) {
        writeFileSync(flags.markdown, markdownReport(report, flags.chart ? relative(dirname(flags.markdown), flags.chart) : undefined));
        wrote(flags.markdown);
      }
      const empty = results.filter((r) => r.completed === 0);
      const where = (r: ConfigResult) => (r.concurrency === null || !flags.concurrency || flags.concurrency.length === 1 ? r.label : `${r.label} at concurrency ${r.concurrency}`);
      if (empty.length) throw new Error(`no request succeeded under ${empty.map(where).join(', ')}: ${empty[0]!.errors[0] ?? 'no error message'}`);
    });
}

/** `--multi-turn`: the conversation workload (bench/serve/multi-turn.ts) on each server variant, interleaved. */
async function multiTurn(flags: ServeBenchFlags): Promise<void> {
  if (flags.compare) throw new InvalidArgumentError('--compare does not apply to --multi-turn (compare servers with --server-args)');
  if ((flags.concurrency?.length ?? 1) > 1) throw new InvalidArgumentError('--multi-turn takes one --concurrency level');
  const apiKey = flags.apiKey ?? (process.env.SPECD_API_KEY || undefined);
  const summaries = await runMultiTurnBench(
    { url: flags.url, variants: flags.spawn ? (flags.serverArgs.length ? flags.serverArgs : [[]]) : [], repeats: flags.repeats, model: flags.model },
    {
      conversations: flags.conversations,
      turns: flags.turns,
      systemPromptLen: flags.systemPromptLen,
      questionLen: flags.questionLen,
      maxTokens: flags.maxTokens,
      concurrency: flags.concurrency?.[0] ?? flags.conversations,
      seed: flags.seed,
      temperature: flags.temperature,
      apiKey,
    },
  );
  process.stdout.write(formatMultiTurn(summaries));
  const settings = { command: shellJoin(['specd', ...process.argv.slice(2)]), conversations: flags.conversations, turns: flags.turns, system_prompt_len: flags.systemPromptLen, question_len: flags.questionLen, max_tokens: flags.maxTokens, concurrency: flags.concurrency?.[0] ?? flags.conversations, repeats: flags.repeats, temperature: flags.temperature, seed: flags.seed };
  if (flags.json) {
    writeFileSync(flags.json, `${JSON.stringify({ created: new Date().toISOString(), machine: machineInfo(), settings, variants: summaries }, null, 2)}\n`);
    process.stderr.write(`wrote ${flags.json}\n`);
  }
  if (flags.chart) {
    writeFileSync(flags.chart, multiTurnChartSvg(summaries, `${flags.conversations} conversations x ${flags.turns} turns, system prompt ${flags.systemPromptLen} characters, concurrency ${settings.concurrency}`));
    process.stderr.write(`wrote ${flags.chart}\n`);
  }
  const failed = summaries.filter((s) => s.failed > 0);
  if (failed.length) throw new Error(`${failed.map((s) => `${s.failed} turns failed on ${s.label}`).join(', ')}: ${failed[0]!.errors[0] ?? 'no error message'}`);
}
