/**
 * The draft-free proposers' own cost per round (src/proposers): prompt lookup (`ngram`),
 * suffix decoding (`suffix`) and both at once (the draft-free side of `hybrid`), at contexts of
 * 1k-32k tokens, no model involved.
 *
 * The work is a code edit: the prompt is HumanEval problems with their canonical solutions
 * (bench/datasets/humaneval), tokenized with the bundled pair's tokenizer, up to the context
 * length; the output is the last problem's code again with its function renamed and a comment
 * added. Rounds are simulated as a greedy target that writes exactly that output would verify
 * them: the common prefix of proposal and output is accepted, plus one more token. Per round
 * the proposer proposes and takes in the round's verified tokens; that is what is timed. The
 * one-time cost of taking in the prompt is reported apart. Methods run interleaved, repetition
 * by repetition, so that a shared machine's bursts hit them alike.
 *
 * With `--knobs`, a second table: tokens per round (the ideal target's, as above) on 40
 * single-function edits (HumanEval 0-39: the function is the prompt, the renamed and commented
 * function the output) for a few settings of each proposer's knobs, so that defaults can be
 * chosen per kind of vocabulary (the bundled pair's is byte-level: a token is about a quarter of
 * a subword model's).
 *
 *   npm run build && node dist/bench/proposers.js [--reps 5] [--knobs] [--json FILE]
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { machineInfo } from '../src/bench/serve/report.js';
import { BUNDLED_TARGET, DATASETS_DIR } from '../src/paths.js';
import { type DraftFreeMethod, type DraftFreeOptions, DraftFreeProposer } from '../src/proposers/draft-free.js';
import { TextTokenizer } from '../src/text/tokenizer.js';

const { values } = parseArgs({ options: { reps: { type: 'string', default: '5' }, knobs: { type: 'boolean', default: false }, json: { type: 'string' } } });
const REPS = Number(values.reps);
const CONTEXTS = [1024, 2048, 4096, 8192, 16384, 32768];
const VARIANTS: { name: string; methods: DraftFreeMethod[] }[] = [
  { name: 'ngram', methods: ['ngram'] },
  { name: 'suffix', methods: ['suffix'] },
  { name: 'ngram+suffix', methods: ['ngram', 'suffix'] },
];

interface Problem {
  prompt: string;
  canonical_solution: string;
  entry_point: string;
}

const problems = gunzipSync(readFileSync(join(DATASETS_DIR, 'humaneval', 'HumanEval.jsonl.gz')))
  .toString('utf8')
  .split('\n')
  .filter((l) => l.trim())
  .map((l) => JSON.parse(l) as Problem);
const tokenizer = await TextTokenizer.fromDir(BUNDLED_TARGET);

/** The prompt (problems' code up to `length` tokens, then the instruction) and the edited output. */
function workload(length: number): { prompt: number[]; output: number[] } {
  const prompt: number[] = [];
  let last: Problem | undefined;
  for (let i = 0; prompt.length < length; i++) {
    const p = problems[i % problems.length]!;
    prompt.push(...tokenizer.encode(`${p.prompt}${p.canonical_solution}\n\n`));
    last = p;
  }
  prompt.length = length - 16;
  prompt.push(...tokenizer.encode(`Rename ${last!.entry_point} and add a comment.\n`).slice(0, 16));
  const code = `${last!.prompt}${last!.canonical_solution}`.replaceAll(last!.entry_point, `${last!.entry_point}_v2`);
  const output = tokenizer.encode(code.replace('"""\n', '"""\n    # Edited.\n'));
  return { prompt, output };
}

interface Measure {
  buildMs: number;
  roundUs: number[];
  tokensPerRound: number;
}

/** One simulated request: build from the prompt, then round after round until the output is written. */
function run(methods: DraftFreeMethod[] | DraftFreeOptions, prompt: readonly number[], output: readonly number[]): Measure {
  const proposer = new DraftFreeProposer(Array.isArray(methods) ? { methods } : methods);
  let t = performance.now();
  proposer.add(0, prompt);
  const buildMs = performance.now() - t;
  const roundUs: number[] = [];
  let at = 0;
  while (at < output.length) {
    t = performance.now();
    const [p] = proposer.propose([0]);
    let a = 0;
    while (a < p!.tokens.length && at + a < output.length && p!.tokens[a] === output[at + a]) a++;
    const verified = output.slice(at, Math.min(output.length, at + a + 1));
    proposer.observe(0, p, Math.min(a, verified.length), verified);
    roundUs.push((performance.now() - t) * 1000);
    at += verified.length;
  }
  return { buildMs, roundUs, tokensPerRound: output.length / roundUs.length };
}

const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]!;
// Warm-up: the first runs of each method pay for JIT compilation.
{
  const { prompt, output } = workload(CONTEXTS[0]!);
  for (let i = 0; i < 3; i++) for (const v of VARIANTS) run(v.methods, prompt, output);
}
const rows: Record<string, unknown>[] = [];
process.stdout.write(`draft-free proposers, ${REPS} interleaved repetitions, load average ${loadavg()[0]!.toFixed(1)}; per round: propose + take in the verified tokens\n`);
process.stdout.write('context  method         build ms  round us (median / p90)  tokens/round\n');
for (const length of CONTEXTS) {
  const { prompt, output } = workload(length);
  const acc = new Map(VARIANTS.map((v) => [v.name, { build: [] as number[], rounds: [] as number[], tpr: 0 }]));
  for (let r = 0; r < REPS; r++) {
    const order = r % 2 ? [...VARIANTS].reverse() : VARIANTS;
    for (const v of order) {
      const m = run(v.methods, prompt, output);
      const a = acc.get(v.name)!;
      a.build.push(m.buildMs);
      a.rounds.push(...m.roundUs);
      a.tpr = m.tokensPerRound;
    }
  }
  for (const v of VARIANTS) {
    const a = acc.get(v.name)!;
    const row = {
      context: length,
      method: v.name,
      output_tokens: output.length,
      build_ms_median: quantile(a.build, 0.5),
      round_us_median: quantile(a.rounds, 0.5),
      round_us_p90: quantile(a.rounds, 0.9),
      tokens_per_round: a.tpr,
    };
    rows.push(row);
    process.stdout.write(
      `${String(length).padStart(7)}  ${v.name.padEnd(13)} ${row.build_ms_median.toFixed(1).padStart(9)}  ${row.round_us_median.toFixed(1).padStart(9)} / ${row.round_us_p90.toFixed(1).padEnd(12)} ${row.tokens_per_round.toFixed(2).padStart(8)}\n`,
    );
  }
}
/** Knob settings compared with --knobs. */
const KNOBS: Record<string, DraftFreeOptions> = {
  'ngram 2-5, K 8 (default)': { methods: ['ngram'] },
  'ngram 4-12, K 16': { methods: ['ngram'], ngram: { promptLookupMin: 4, promptLookupMax: 12, numSpeculativeTokens: 16 } },
  'ngram 8-16, K 24': { methods: ['ngram'], ngram: { promptLookupMin: 8, promptLookupMax: 16, numSpeculativeTokens: 24 } },
  'suffix depth 24 (default)': { methods: ['suffix'] },
  'suffix depth 64': { methods: ['suffix'], suffix: { maxTreeDepth: 64 } },
  'suffix depth 96, K 32': { methods: ['suffix'], suffix: { maxTreeDepth: 96, numSpeculativeTokens: 32 } },
};
const knobRows: Record<string, unknown>[] = [];
if (values.knobs) {
  const edits = problems.slice(0, 40).map((p) => {
    const code = `${p.prompt}${p.canonical_solution}`;
    return {
      prompt: tokenizer.encode(`Rename ${p.entry_point} and add a comment.\n\n${code}`),
      output: tokenizer.encode(code.replaceAll(p.entry_point, `${p.entry_point}_v2`).replace('"""\n', '"""\n    # Edited.\n')),
    };
  });
  process.stdout.write('\nknobs: tokens per round, mean over 40 single-function edits\n');
  for (const [name, options] of Object.entries(KNOBS)) {
    const tpr = edits.map((e) => run(options, e.prompt, e.output).tokensPerRound);
    const mean = tpr.reduce((a, b) => a + b, 0) / tpr.length;
    knobRows.push({ setting: name, options, tokens_per_round: mean });
    process.stdout.write(`  ${name.padEnd(28)} ${mean.toFixed(2)}\n`);
  }
}
if (values.json) {
  const load = loadavg().map((x) => Math.round(x * 100) / 100);
  writeFileSync(values.json, `${JSON.stringify({ created: new Date().toISOString(), machine: machineInfo(), load_average: load, reps: REPS, command: `node dist/bench/proposers.js ${process.argv.slice(2).join(' ')}`, rows, knobs: knobRows }, null, 2)}\n`);
}
