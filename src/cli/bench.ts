/** `specd bench offline`: speedup of each draft policy over target-only decoding, in-process. */
import { writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { SingleBar } from 'cli-progress';
import { Command, InvalidArgumentError } from 'commander';
import { DATASETS, type DatasetName, isDataset, loadPrompts } from '../bench/datasets.js';
import { runOfflineBench, type OfflineResult } from '../bench/offline.js';
import { ModelPair } from '../engine/pair.js';
import type { PolicySpec } from '../engine/stop-policy.js';
import { addModelOptions, intIn, type ModelFlags, numberIn, pairOptions, policyListArg } from './options.js';

interface OfflineFlags extends ModelFlags {
  dataset: DatasetName;
  prompts: number;
  maxTokens: number;
  policies: PolicySpec[];
  temperature: number;
  topP: number;
  topK: number;
  seed: number;
  json?: string;
}

function datasetArg(text: string): DatasetName {
  if (!isDataset(text)) throw new InvalidArgumentError(`expected one of ${DATASETS.join(', ')}`);
  return text;
}

export function benchCommand(): Command {
  const bench = new Command('bench').description('benchmarks');
  const offline = new Command('offline')
    .description('compare draft policies on a data set, in-process (speedup over target-only decoding)')
    .option('--dataset <name>', `prompt set: ${DATASETS.join(', ')}`, datasetArg, 'gsm8k' as DatasetName)
    .option('--prompts <n>', 'number of prompts', intIn(1, 100_000), 20)
    .option('--max-tokens <n>', 'new tokens per prompt', intIn(1, 100_000), 128)
    .option('--policies <list>', 'comma-separated policies, e.g. none,fixed:4,confidence:0.6', policyListArg, policyListArg('none,fixed:4,confidence:0.6'))
    .option('--temperature <t>', 'sampling temperature (0 = greedy)', numberIn(0, 100), 0)
    .option('--top-p <p>', 'nucleus sampling mass', numberIn(0, 1), 1)
    .option('--top-k <k>', 'top-k sampling (0 = off)', intIn(0, 1_000_000), 0)
    .option('--seed <n>', 'seed of the first prompt (prompt i uses seed + i)', intIn(0, Number.MAX_SAFE_INTEGER), 0)
    .option('--json <file>', 'also write the results as JSON');
  addModelOptions(offline);
  offline.action(async (flags: OfflineFlags) => {
    const prompts = loadPrompts(flags.dataset, flags.prompts);
    const pair = await ModelPair.load(pairOptions(flags));
    if (!pair.draft && flags.policies.some((p) => p.policy !== 'none')) throw new InvalidArgumentError('policies other than none need a draft model');
    const bar = new SingleBar({ format: 'bench {bar} {value}/{total} generations | ETA {eta_formatted}', stream: process.stderr, hideCursor: true });
    bar.start(prompts.length * flags.policies.length, 0);
    const results = await runOfflineBench(pair, {
      dataset: flags.dataset,
      prompts,
      policies: flags.policies,
      maxTokens: flags.maxTokens,
      sampling: { temperature: flags.temperature, topP: flags.topP, topK: flags.topK },
      seed: flags.seed,
      onProgress: (done) => bar.update(done),
    });
    bar.stop();
    process.stdout.write(formatTable(results));
    if (flags.json) {
      const machine = { cpu: cpus()[0]?.model ?? 'unknown', cores: availableParallelism(), device: flags.device, node: process.version };
      const settings = { dataset: flags.dataset, prompts: flags.prompts, max_tokens: flags.maxTokens, temperature: flags.temperature, top_p: flags.topP, top_k: flags.topK, seed: flags.seed };
      writeFileSync(flags.json, `${JSON.stringify({ machine, settings, results }, null, 2)}\n`);
      process.stderr.write(`wrote ${flags.json}\n`);
    }
    await pair.release();
  });
  bench.addCommand(offline);
  return bench;
}

export function formatTable(results: OfflineResult[]): string {
  const head = ['policy', 'dataset', 'tokens', 'tok/s', 'speedup', 'accepted/round', 'tokens/call', 'acceptance', 'overhead', 'exact'];
  const rows = results.map((r) => [
    r.policy,
    r.dataset,
    String(r.new_tokens),
    r.tokens_per_s.toFixed(1),
    r.speedup_vs_none === null ? '-' : `${r.speedup_vs_none.toFixed(2)}x`,
    r.mean_accepted_per_round.toFixed(2),
    r.tokens_per_target_call.toFixed(2),
    `${(r.acceptance_rate * 100).toFixed(1)}%`,
    `${(r.overhead_fraction * 100).toFixed(1)}%`,
    r.matches_none === null ? '-' : r.matches_none ? 'yes' : 'NO',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n') + '\n';
}
