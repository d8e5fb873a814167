/** `specd bench offline`: speedup of each draft policy over target-only decoding, in-process. */
import { writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { SingleBar } from 'cli-progress';
import { Command, InvalidArgumentError } from 'commander';
import { DATASETS, type DatasetName, isDataset, loadPrompts, REPETITION_DATASETS, SCHEMA_DATASETS } from '../bench/datasets.js';
import { benchHeadTraining } from '../bench/head-train-bench.js';
import { GRAMMAR_MODES, type GrammarMode, runOfflineBench, type OfflineResult } from '../bench/offline.js';
import { paretoChartSvg } from '../bench/pareto-chart.js';
import { formatSummary, summarize } from '../bench/policy-summary.js';
import { machineInfo } from '../bench/serve/report.js';
import { speedupChartSvg } from '../bench/speedup-chart.js';
import { textTable } from '../bench/text-table.js';
import { ModelPair } from '../pair/model-pair.js';
import { DEVICES, type Device } from '../engine/device.js';
import { defaultGraph, GRAPH_CHOICES, type GraphChoice } from '../engine/graph-choice.js';
import { contextPrompt, formatLatencyTable, latencyChartSvg, measureLatency, type LatencyResult } from '../bench/latency.js';
import { BUNDLED_DRAFT, BUNDLED_TARGET } from '../paths.js';
import { TextTokenizer } from '../text/tokenizer.js';
import { temperatureLabel } from '../engine/sampling.js';
import { DRAFT_PHASE_MODES, type DraftPhaseMode } from '../engine/speculative.js';
import { HEAD_MODES, type HeadMode } from '../heads/runtime/head-loader.js';
import { policyNeeds } from '../engine/policy-registry.js';
import { DEFAULT_SPECDEC_K_MAX, DEFAULT_SPECDEC_K_MIN, MAX_DRAFT_LIMIT, type PolicySpec, policyLabel, recommendedThresholdAt, validatePolicySpec } from '../engine/stop-policy.js';
import { benchPeerCommand } from './bench-peer.js';
import { benchServeCommand } from './bench-serve.js';
import { addModelOptions, intIn, type ModelFlags, numberIn, pairOptions, policyListArg } from './options.js';

interface OfflineFlags extends ModelFlags {
  dataset: DatasetName[];
  prompts: number;
  maxTokens: number;
  policies: PolicySpec[];
  temperature: number;
  topP: number;
  topK: number;
  seed: number;
  threshold?: number | 'auto';
  kMin: number;
  kMax: number;
  json?: string;
  chart?: string;
  speedupChart?: string;
  headMode: HeadMode;
  grammar: GrammarMode[];
  draftPhase: DraftPhaseMode;
}

function draftPhaseArg(text: string): DraftPhaseMode {
  if (!(DRAFT_PHASE_MODES as readonly string[]).includes(text)) throw new InvalidArgumentError(`expected one of ${DRAFT_PHASE_MODES.join(', ')}`);
  return text as DraftPhaseMode;
}

/** `--threshold`: a number in [0, 1] or `auto`. */
function thresholdArg(text: string): number | 'auto' {
  if (text.trim() === 'auto') return 'auto';
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v) || v < 0 || v > 1) throw new InvalidArgumentError('expected auto or a number in [0, 1]');
  return v;
}

function headModeArg(text: string): HeadMode {
  if (!(HEAD_MODES as readonly string[]).includes(text)) throw new InvalidArgumentError(`expected one of ${HEAD_MODES.join(', ')}`);
  return text as HeadMode;
}

/** A comma-separated list of data sets, or `all`. */
/** `--contexts 128,512,1000`: positive token counts. */
function contextsArg(text: string): number[] {
  const items = text.split(',').map((t) => Number(t.trim()));
  if (items.length === 0 || items.some((n) => !Number.isInteger(n) || n < 2 || n > 10_000_000)) {
    throw new InvalidArgumentError(`expected a comma-separated list of context lengths (whole numbers of tokens, at least 2), got "${text}"`);
  }
  return items;
}

function datasetArg(text: string): DatasetName[] {
  if (text.trim() === 'all') return [...DATASETS];
  const names = text.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = names.filter((n) => !isDataset(n));
  if (names.length === 0 || bad.length) throw new InvalidArgumentError(`expected a comma-separated list of ${[...DATASETS, ...SCHEMA_DATASETS, ...REPETITION_DATASETS].join(', ')}, or all`);
  return [...new Set(names)] as DatasetName[];
}

function grammarModesArg(text: string): GrammarMode[] {
  const modes = text.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = modes.filter((m) => !(GRAMMAR_MODES as readonly string[]).includes(m));
  if (modes.length === 0 || bad.length) throw new InvalidArgumentError(`expected a comma-separated list of ${GRAMMAR_MODES.join(', ')}`);
  return [...new Set(modes)] as GrammarMode[];
}

export function benchCommand(): Command {
  const bench = new Command('bench').description('benchmarks');
  const offline = new Command('offline')
    .description('compare draft policies on a data set, in-process (speedup over target-only decoding)')
    .option('--dataset <list>', `prompt sets, comma-separated (${[...DATASETS, ...SCHEMA_DATASETS, ...REPETITION_DATASETS].join(', ')}) or all (${DATASETS.join(', ')})`, datasetArg, ['gsm8k'] as DatasetName[])
    .option('--prompts <n>', 'number of prompts', intIn(1, 100_000), 20)
    .option('--max-tokens <n>', 'new tokens per prompt', intIn(1, 100_000), 128)
    .option('--policies <list>', 'comma-separated policies, e.g. none,fixed:4,confidence:0.6,specdec++:0.7 (bare specdec++: the default threshold)', policyListArg, policyListArg('none,fixed:4,confidence:0.6'))
    .option('--temperature <t>', 'sampling temperature (0 = greedy)', numberIn(0, 100), 0)
    .option('--top-p <p>', 'nucleus sampling mass', numberIn(0, 1), 1)
    .option('--top-k <k>', 'top-k sampling (0 = off)', intIn(0, 1_000_000), 0)
    .option('--seed <n>', 'seed of the first prompt (prompt i uses seed + i)', intIn(0, Number.MAX_SAFE_INTEGER), 0)
    .option('--threshold <h>', "threshold of bare specdec++ entries, or auto: the engine's draft controller chooses h from the measured pass costs each round, as `specd serve` does for requests without one (default: the head's recommended h)", thresholdArg)
    .option('--k-min <n>', 'K_min of specdec++ entries', intIn(1, MAX_DRAFT_LIMIT), DEFAULT_SPECDEC_K_MIN)
    .option('--k-max <n>', 'K_max of specdec++ entries', intIn(1, MAX_DRAFT_LIMIT), DEFAULT_SPECDEC_K_MAX)
    .option('--json <file>', 'also write the results as JSON')
    .option('--chart <file>', 'also write the discard rate vs verification rate chart (SVG)')
    .option('--speedup-chart <file>', 'also write the speedup over none per data set and policy (SVG)')
    .option('--grammar <list>', `grammar modes, comma-separated (${GRAMMAR_MODES.join(', ')}): on constrains the output to each prompt's JSON Schema (--dataset json)`, grammarModesArg, ['off'] as GrammarMode[])
    .option('--head-mode <mode>', 'run the acceptance head fused into the draft graph or as its own session per draft step', headModeArg, 'fused' as HeadMode)
    .option('--draft-phase <mode>', "one-run: a greedy round's draft steps in one ONNX Runtime run where the draft allows it; per-step: one run per draft step", draftPhaseArg, 'one-run' as DraftPhaseMode);
  addModelOptions(offline);
  offline.action(async (flags: OfflineFlags) => {
    const pair = await ModelPair.load({ ...pairOptions(flags), headMode: flags.headMode });
    if (!pair.draft && flags.policies.some((p) => policyNeeds(p).draft)) throw new InvalidArgumentError(`${flags.policies.filter((p) => policyNeeds(p).draft).map(policyLabel).join(', ')} need a draft model`);
    if (!pair.head && flags.policies.some((p) => policyNeeds(p).head)) throw new InvalidArgumentError(`${flags.policies.filter((p) => policyNeeds(p).head).map(policyLabel).join(', ')} need an acceptance head (--head FILE)`);
    // specdec++ entries (and hybrid's draft side): the shared K bounds, and the default threshold made explicit.
    // With --threshold auto, bare entries keep no threshold: the draft controller chooses it (draft-controller.ts).
    const auto = flags.threshold === 'auto';
    const defaultThreshold = auto ? undefined : ((flags.threshold as number | undefined) ?? recommendedThresholdAt(pair.head, flags.temperature));
    const policies = flags.policies.map((p): PolicySpec =>
      p.policy === 'specdec++' || p.policy === 'hybrid' ? validatePolicySpec({ ...p, threshold: p.threshold ?? defaultThreshold, kMin: flags.kMin, kMax: flags.kMax }) : p,
    );
    const specdecDefault = defaultThreshold === undefined ? undefined : policyLabel({ policy: 'specdec++', threshold: defaultThreshold, kMin: flags.kMin, kMax: flags.kMax });
    const sampling = { temperature: flags.temperature, topP: flags.topP, topK: flags.topK };
    const results: OfflineResult[] = [];
    if (flags.grammar.some((m) => m !== 'off') && flags.dataset.some((d) => !(SCHEMA_DATASETS as readonly string[]).includes(d))) {
      throw new InvalidArgumentError(`--grammar ${flags.grammar.join(',')} needs prompts with a JSON Schema: --dataset ${SCHEMA_DATASETS.join(',')}`);
    }
    for (const dataset of flags.dataset) {
      const room = pair.decoder.contextLength - flags.maxTokens;
      const prompts = loadPrompts(dataset, flags.prompts, { fits: (p) => pair.tokenizer.encodeChat(p.messages).length <= room });
      if (prompts.skipped) process.stderr.write(`${dataset}: passed over ${prompts.skipped} prompt(s) longer than ${room} tokens (context ${pair.decoder.contextLength} - ${flags.maxTokens} new tokens)\n`);
      if (prompts.length === 0) throw new InvalidArgumentError(`no ${dataset} prompt fits the context with --max-tokens ${flags.maxTokens}`);
      const bar = new SingleBar({ format: `${dataset} {bar} {value}/{total} generations | ETA {eta_formatted}`, stream: process.stderr, hideCursor: true });
      bar.start(prompts.length * policies.length * flags.grammar.length, 0);
      results.push(
        ...(await runOfflineBench(pair, { dataset, prompts, policies, maxTokens: flags.maxTokens, sampling, seed: flags.seed, grammar: flags.grammar, draftPhase: flags.draftPhase, onProgress: (done) => bar.update(done) })),
      );
      bar.stop();
    }
    // The summary compares policies without a grammar, or with it when that is all there is.
    const summary = summarize(results.filter((r) => r.grammar === flags.grammar[0]), specdecDefault);
    process.stdout.write(formatTable(results));
    process.stdout.write(formatSummary(summary));
    const settings = {
      datasets: flags.dataset,
      prompts: flags.prompts,
      max_tokens: flags.maxTokens,
      temperature: flags.temperature,
      top_p: flags.topP,
      top_k: flags.topK,
      seed: flags.seed,
      head: pair.head?.onnxPath ?? null,
      head_mode: flags.headMode,
      draft_phase: flags.draftPhase,
      specdec_default_threshold: auto ? 'auto' : (defaultThreshold ?? null),
      k_min: flags.kMin,
      k_max: flags.kMax,
      grammar: flags.grammar,
      command: `specd ${process.argv.slice(2).join(' ')}`,
    };
    if (flags.json) {
      const machine = { ...machineInfo(), device: flags.device, draft_device: flags.draftDevice ?? flags.device, graph: flags.graph ?? defaultGraph(flags.device) };
      writeFileSync(flags.json, `${JSON.stringify({ machine, settings, summary, results }, null, 2)}\n`);
      process.stderr.write(`wrote ${flags.json}\n`);
    }
    if (flags.chart) {
      const title = `discard vs verification rate, ${temperatureLabel(flags.temperature)}, ${flags.prompts} prompts x ${flags.maxTokens} tokens`;
      writeFileSync(flags.chart, paretoChartSvg(results, title));
      process.stderr.write(`wrote ${flags.chart}\n`);
    }
    if (flags.speedupChart) {
      const title = `speedup over none, ${temperatureLabel(flags.temperature)}, ${flags.prompts} prompts x ${flags.maxTokens} tokens`;
      writeFileSync(flags.speedupChart, speedupChartSvg(results, title));
      process.stderr.write(`wrote ${flags.speedupChart}\n`);
    }
    await pair.release();
  });
  bench.addCommand(offline);
  bench.addCommand(benchServeCommand());
  bench.addCommand(headTrainCommand());
  bench.addCommand(latencyCommand());
  bench.addCommand(benchPeerCommand());
  return bench;
}

/** `specd bench latency`: per-pass costs of the target and the draft on each device and graph. */
function latencyCommand(): Command {
  const list = <T extends string>(all: readonly T[], what: string) => (text: string): T[] => {
    const items = text.split(',').map((s) => s.trim()).filter(Boolean);
    const bad = items.filter((i) => !(all as readonly string[]).includes(i));
    if (items.length === 0 || bad.length) throw new InvalidArgumentError(`expected a comma-separated list of ${what}: ${all.join(', ')}`);
    return [...new Set(items)] as T[];
  };
  return new Command('latency')
    .description('ms per decoded token, per 5-token verification pass and per KV rollback of the target and the draft, on each device and graph')
    .option('--target <dir>', 'target model directory (default: the bundled specd-pair target)')
    .option('--draft <dir>', 'draft model directory (default: the bundled draft with the bundled target)')
    .option('--no-draft', 'measure the target only')
    .option('--devices <list>', `comma-separated devices (${DEVICES.join(', ')})`, list(DEVICES, 'devices'), ['cpu'] as Device[])
    .option('--graphs <list>', `comma-separated graphs (${GRAPH_CHOICES.join(', ')}; default: each device's default)`, list(GRAPH_CHOICES, 'graphs'))
    .option('--threads <n>', 'intra-op threads of the target on the CPU (default: all cores)', intIn(1, 1024))
    .option('--draft-threads <n>', 'intra-op threads of the draft on the CPU', intIn(1, 1024), 1)
    .option('--tokens <n>', 'tokens to decode', intIn(5, 100_000), 64)
    .option('--dataset <name>', `prompt: the first prompt of this data set (${DATASETS.join(', ')})`, (t: string) => datasetArg(t)[0]!, 'gsm8k' as DatasetName)
    .option('--contexts <list>', 'comma-separated context lengths to decode up to (prompt = the data set\'s prompts joined, context - tokens long); default: the first prompt', contextsArg)
    .option('--json <file>', 'also write the results as JSON')
    .option('--chart <file>', 'also write ms per token by model, device and graph as a bar chart (SVG)')
    .action(async (flags: { target?: string; draft?: string | boolean; devices: Device[]; graphs?: GraphChoice[]; threads?: number; draftThreads: number; tokens: number; dataset: DatasetName; contexts?: number[]; json?: string; chart?: string }) => {
      const targetDir = flags.target ?? BUNDLED_TARGET;
      const draftDir = flags.draft === false ? undefined : typeof flags.draft === 'string' ? flags.draft : flags.target === undefined ? BUNDLED_DRAFT : undefined;
      const tokenizer = await TextTokenizer.fromDir(targetDir);
      const prompts: number[][] = [];
      if (flags.contexts) {
        const encoded = function* () {
          for (const p of loadPrompts(flags.dataset, Infinity)) yield tokenizer.encodeChat(p.messages);
        };
        for (const context of flags.contexts) {
          if (context <= flags.tokens) throw new InvalidArgumentError(`--contexts ${context} is not longer than --tokens ${flags.tokens}`);
          prompts.push(contextPrompt(encoded(), context - flags.tokens));
        }
      } else prompts.push(tokenizer.encodeChat(loadPrompts(flags.dataset, 1)[0]!.messages));
      const results: LatencyResult[] = [];
      const roles: [string, string, number | undefined][] = [['target', targetDir, flags.threads]];
      if (draftDir) roles.push(['draft', draftDir, flags.draftThreads]);
      for (const [role, dir, threads] of roles) {
        for (const prompt of prompts) {
          let first: LatencyResult | undefined;
          for (const device of flags.devices) {
            for (const graph of flags.graphs ?? [defaultGraph(device)]) {
              process.stderr.write(`${role} on ${device} (${graph} graph), decoding up to position ${prompt.length + flags.tokens}...\n`);
              const r = await measureLatency({ role, dir, device, graph, threads }, prompt, flags.tokens, first);
              first ??= r;
              results.push(r);
            }
          }
        }
      }
      process.stdout.write(formatLatencyTable(results));
      if (flags.json) {
        const settings = { tokens: flags.tokens, dataset: flags.dataset, prompt_tokens: prompts.map((p) => p.length), command: `specd ${process.argv.slice(2).join(' ')}` };
        writeFileSync(flags.json, `${JSON.stringify({ machine: machineInfo(), settings, results }, null, 2)}\n`);
        process.stderr.write(`wrote ${flags.json}\n`);
      }
      if (flags.chart) {
        const what = flags.contexts ? `the last ${flags.tokens} tokens up to each context length` : `${flags.tokens} tokens after a ${prompts[0]!.length}-token prompt`;
        writeFileSync(flags.chart, latencyChartSvg(results, `ms per decoded token (${what})`));
        process.stderr.write(`wrote ${flags.chart}\n`);
      }
    });
}

/** `specd bench head-train`: acceptance-head training throughput on synthetic features. */
function headTrainCommand(): Command {
  return new Command('head-train')
    .description('acceptance-head training throughput (rows/s) on synthetic features, per width')
    .option('--widths <list>', 'comma-separated hidden widths', (t: string) => t.split(',').map((w) => intIn(1, 65_536)(w.trim())), [128, 4096])
    .option('--batch-size <n>', 'rows per step', intIn(1, 1_000_000), 256)
    .option('--steps <n>', 'timed steps per width', intIn(1, 100_000), 10)
    .option('--threads <n>', 'intra-op threads (default: all cores)', intIn(1, 1024))
    .option('--json <file>', 'also write the results as JSON')
    .action(async (flags: { widths: number[]; batchSize: number; steps: number; threads?: number; json?: string }) => {
      const results = [];
      process.stdout.write('width  parameters  step ms  (ORT  AdamW  gather)  rows/s  plain-JS forward rows/s\n');
      for (const width of flags.widths) {
        const r = await benchHeadTraining(width, { batchSize: flags.batchSize, steps: flags.steps, threads: flags.threads });
        results.push(r);
        process.stdout.write(
          `${String(width).padStart(5)}  ${String(r.parameters).padStart(10)}  ${r.step_ms.toFixed(1).padStart(7)}  (${r.ort_ms.toFixed(1)}  ${r.adamw_ms.toFixed(1)}  ${r.gather_ms.toFixed(1)})  ${Math.round(r.rows_per_s).toString().padStart(6)}  ${r.js_forward_rows_per_s.toFixed(1)}\n`,
        );
      }
      if (flags.json) {
        writeFileSync(flags.json, `${JSON.stringify({ machine: machineInfo(), settings: { batch_size: flags.batchSize, steps: flags.steps, threads: flags.threads ?? availableParallelism() }, results }, null, 2)}\n`);
        process.stderr.write(`wrote ${flags.json}\n`);
      }
    });
}

export function formatTable(results: OfflineResult[]): string {
  const grammar = results.some((r) => r.grammar !== 'off');
  const threshold = results.some((r) => r.mean_threshold !== null);
  const head = ['policy', ...(grammar ? ['grammar'] : []), 'dataset', 'tokens', 'tok/s', 'speedup', 'accepted/round', 'tokens/call', 'acceptance', 'discard', 'verify', 'overhead', 'exact', ...(threshold ? ['mean h'] : []), ...(grammar ? ['mask ms/token', 'mask share'] : [])];
  const rows = results.map((r) => [
    r.policy,
    ...(grammar ? [r.grammar] : []),
    r.dataset,
    String(r.new_tokens),
    r.tokens_per_s.toFixed(1),
    r.speedup_vs_none === null ? '-' : `${r.speedup_vs_none.toFixed(2)}x`,
    r.mean_accepted_per_round.toFixed(2),
    r.tokens_per_target_call.toFixed(2),
    `${(r.acceptance_rate * 100).toFixed(1)}%`,
    `${(r.discard_rate * 100).toFixed(1)}%`,
    r.verification_rate.toFixed(3),
    `${(r.overhead_fraction * 100).toFixed(1)}%`,
    r.matches_none === null ? '-' : r.matches_none ? 'yes' : 'NO',
    ...(threshold ? [r.mean_threshold === null ? '-' : r.mean_threshold.toFixed(3)] : []),
    ...(grammar ? [r.mask_ms_per_token === null ? '-' : r.mask_ms_per_token.toFixed(3), r.mask_share === null ? '-' : `${(r.mask_share * 100).toFixed(1)}%`] : []),
  ]);
  return textTable(head, rows, 2).join('\n') + '\n';
}
