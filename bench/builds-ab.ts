/**
 * Two builds of specd against each other, in one process: this build (B) and another one's
 * compiled `dist` directory (A, e.g. a second git worktree at an older commit, built with
 * `npx tsc -p tsconfig.json`), each loading its own pair, alternated prompt by prompt and policy
 * by policy (A first on even prompts, B first on odd ones), so that a shared machine's slow
 * spells hit both alike. Per data set and policy: tokens/s of each build, its speedup over its
 * own `none`, tokens per round (target passes), whether its greedy output equals its `none`'s,
 * and B / A. Suffix decoding's global tree is emptied before each generation, as `bench offline`
 * does.
 *
 *   node dist/bench/builds-ab.js --base ../old/dist [--dataset gsm8k,alpaca,humaneval] [--prompts 16]
 *     [--policies none,fixed:3,fixed:4,specdec++] [--temperature 0] [--target DIR --draft DIR] [--dtype q8|q4] [--threads N] [--json FILE]
 *
 * `--threads N` runs both models of both builds on N intra-op threads that do not spin; with 1,
 * the process's CPU time (also reported, ms per token) counts the generations' own work only,
 * which a loaded machine moves far less than their wall time.
 *
 * The other build is imported as it is: its `src/pair/model-pair.js`, `src/engine/text-generation.js`
 * and `src/engine/policy-registry.js` must have the interfaces this build's have (they do from
 * the policy registry on).
 */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { DATASETS, isDataset, loadPrompts } from '../src/bench/datasets.js';
import { parsePolicy } from '../src/engine/policy-registry.js';
import { generateText } from '../src/engine/text-generation.js';
import { ModelPair, type PairOptions } from '../src/pair/model-pair.js';

const { values } = parseArgs({
  options: {
    base: { type: 'string' },
    dataset: { type: 'string', default: DATASETS.join(',') },
    prompts: { type: 'string', default: '16' },
    'max-tokens': { type: 'string', default: '128' },
    policies: { type: 'string', default: 'none,fixed:3,fixed:4,specdec++' },
    temperature: { type: 'string', default: '0' },
    target: { type: 'string' },
    draft: { type: 'string' },
    dtype: { type: 'string' },
    threads: { type: 'string' },
    json: { type: 'string' },
  },
});

function fail(message: string): never {
  process.stderr.write(`builds-ab: ${message}\n`);
  process.exit(1);
}

if (!values.base) fail('--base DIR (the other build\'s dist directory) is required');
const datasets = values.dataset.split(',');
for (const d of datasets) if (!isDataset(d)) fail(`unknown data set ${d}`);
const prompts = Number(values.prompts);
const maxTokens = Number(values['max-tokens']);
const temperature = Number(values.temperature);
if (!Number.isInteger(prompts) || prompts < 1) fail(`--prompts must be a positive integer, got ${values.prompts}`);
if (!Number.isInteger(maxTokens) || maxTokens < 1) fail(`--max-tokens must be a positive integer, got ${values['max-tokens']}`);
if (!(temperature >= 0)) fail(`--temperature must be >= 0, got ${values.temperature}`);
if (values.threads !== undefined && !(Number.isInteger(Number(values.threads)) && Number(values.threads) >= 1)) fail(`--threads must be a positive integer, got ${values.threads}`);
const policyNames = values.policies.split(',');
if (!policyNames.includes('none')) fail('--policies must include none (the speedups are over it)');
const pairOptions: PairOptions = {
  ...(values.target ? { target: values.target, draft: values.draft ?? null } : {}),
  ...(values.dtype ? { dtype: values.dtype } : {}),
  ...(values.threads ? { threads: Number(values.threads), draftThreads: Number(values.threads), spinning: false } : {}),
};

/** What a build offers this benchmark: its pair, its generateText and its policy parser. */
interface Build {
  label: 'A' | 'B';
  pair: { release(): Promise<void>; decoder?: { suffixCaches?: { clear(): void } } };
  generate: typeof generateText;
  parse: typeof parsePolicy;
}

async function baseBuild(dir: string): Promise<Build> {
  const from = (path: string) => import(pathToFileURL(resolve(dir, path)).href);
  const [{ ModelPair: BasePair }, { generateText: baseGenerate }, { parsePolicy: baseParse }] = await Promise.all([
    from('src/pair/model-pair.js'),
    from('src/engine/text-generation.js'),
    from('src/engine/policy-registry.js'),
  ]);
  return { label: 'A', pair: await BasePair.load(pairOptions), generate: baseGenerate, parse: baseParse };
}

const builds: Build[] = [await baseBuild(values.base), { label: 'B', pair: await ModelPair.load(pairOptions), generate: generateText, parse: parsePolicy }];
const sampling = { temperature, topP: 1, topK: 0 };
const run = (b: Build, messages: Parameters<typeof generateText>[1], policy: string, seed: number, tokens: number) => {
  // Suffix decoding's global tree starts empty for every generation, as in `bench offline`: else
  // a policy would copy the answer another policy's run of the same prompt left there.
  b.pair.decoder?.suffixCaches?.clear();
  return b.generate(b.pair as ModelPair, messages, { maxTokens: tokens, sampling, seed, policy: b.parse(policy) });
};

// Warm-up: every build and policy once, so first-run allocation counts for neither.
const warm = loadPrompts('gsm8k', 1)[0]!;
for (const b of builds) for (const p of policyNames) await run(b, { messages: warm.messages }, p, 0, 8);

interface Cell {
  tokens: number;
  /** Target passes (rounds) of the generations: tokens per round does not move with the load. */
  rounds: number;
  wallMs: number;
  /** The process's CPU time (user and system) over the generations. */
  cpuMs: number;
  outputs: string[];
}
const rows: Record<string, unknown>[] = [];
for (const dataset of datasets) {
  const set = loadPrompts(dataset as (typeof DATASETS)[number], prompts);
  const cells = builds.map(() => new Map(policyNames.map((p): [string, Cell] => [p, { tokens: 0, rounds: 0, wallMs: 0, cpuMs: 0, outputs: [] }])));
  for (const [i, prompt] of set.entries()) {
    for (const policy of policyNames) {
      for (const b of i % 2 === 0 ? [0, 1] : [1, 0]) {
        const cpu = process.cpuUsage();
        const r = await run(builds[b]!, { messages: prompt.messages }, policy, i, maxTokens);
        const used = process.cpuUsage(cpu);
        const c = cells[b]!.get(policy)!;
        c.cpuMs += (used.user + used.system) / 1000;
        c.tokens += r.token_ids.length;
        c.rounds += r.stats.rounds;
        c.wallMs += r.stats.wall_ms;
        c.outputs.push(r.token_ids.join(','));
      }
    }
  }
  for (const policy of policyNames) {
    const row: Record<string, unknown> = { dataset, policy };
    const line = [dataset.padEnd(9), policy.padEnd(14)];
    builds.forEach((b, j) => {
      const c = cells[j]!.get(policy)!;
      const none = cells[j]!.get('none')!;
      const tps = (c.tokens / c.wallMs) * 1000;
      const speedup = tps / ((none.tokens / none.wallMs) * 1000);
      const exact = temperature === 0 ? c.outputs.every((o, k) => o === none.outputs[k]) : null;
      const perRound = c.tokens / c.rounds;
      const cpuPerToken = c.cpuMs / c.tokens;
      const cpuSpeedup = none.cpuMs / none.tokens / cpuPerToken;
      Object.assign(row, {
        [`${b.label}_tokens_per_s`]: tps,
        [`${b.label}_speedup_vs_none`]: speedup,
        [`${b.label}_tokens_per_round`]: perRound,
        [`${b.label}_cpu_ms_per_token`]: cpuPerToken,
        [`${b.label}_cpu_speedup_vs_none`]: cpuSpeedup,
        [`${b.label}_matches_none`]: exact,
      });
      line.push(
        `${b.label} ${tps.toFixed(1).padStart(6)} tok/s ${speedup.toFixed(2)}x none, cpu ${cpuPerToken.toFixed(2)} ms/tok ${cpuSpeedup.toFixed(2)}x, ${perRound.toFixed(2)} tok/round${exact === null ? '' : exact ? ' exact' : ' NOT EXACT'}`,
      );
    });
    row.B_over_A = (row.B_tokens_per_s as number) / (row.A_tokens_per_s as number);
    row.B_over_A_cpu = (row.A_cpu_ms_per_token as number) / (row.B_cpu_ms_per_token as number);
    line.push(`B/A ${(row.B_over_A as number).toFixed(2)}x, cpu ${(row.B_over_A_cpu as number).toFixed(2)}x`);
    rows.push(row);
    process.stdout.write(`${line.join(' | ')}\n`);
  }
}
if (values.json) {
  const settings = { base: values.base, dtype: values.dtype ?? 'fp32', threads: values.threads ?? 'default', datasets, prompts, max_tokens: maxTokens, temperature, policies: policyNames, command: `node ${process.argv.slice(1).join(' ')}` };
  writeFileSync(values.json, `${JSON.stringify({ settings, results: rows }, null, 2)}\n`);
}
for (const b of builds) await b.pair.release();
