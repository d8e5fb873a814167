/**
 * How much of the target's own greedy output a copying proposer could have proposed: the
 * ceiling of prompt lookup and suffix decoding on a prompt set, beside what `suffix` achieved.
 *
 * Per prompt, the bundled target writes its greedy answer (`none`); then, for the text the
 * sequence held before each output token (prompt and output so far):
 * - `copyable(n)`: the share of output tokens that follow an earlier occurrence of the n tokens
 *   before them (any occurrence: an oracle that always picks the right one);
 * - oracle rounds: a proposer that each round proposes the longest continuation, among all earlier
 *   occurrences of the last `--min-match` tokens, that agrees with the target's output (capped at
 *   `--k` candidates), so a round emits that many plus one. Its tokens per round is the most any
 *   single-chain copying proposer with that minimum match delivers on this output;
 * - `suffix` run for real (policy `suffix`, greedy): tokens per round and the distribution of
 *   accepted candidates per round that proposed some.
 * It also prints each prompt's kind, the answer's first line and how many characters of it agree
 * with the set's reference answer (the instruction followed).
 *
 * Then a knob sweep, simulated against the recorded greedy outputs (a greedy target accepts the
 * common prefix of proposal and output, plus one token): tokens and candidates per round, the
 * speed over `none` that a verification costing a + b x width implies (a, b the line through the
 * widths measured directly, below; the fit to the real suffix run's rounds, the first one left
 * out, is printed too, but on a shared machine it moves with the load), and the calibration of the two estimates of a proposal's
 * accepted length: the acceptance by match length (acceptance-by-match.ts) and the suffix tree's
 * own score (the sum of its path probabilities), each over what was accepted. `cut c` keeps a
 * proposal's candidates while the acceptance-by-match chain stays >= c; `cut by cost` keeps the
 * prefix with the most predicted tokens per ms (hybrid.ts copiedLengthByCost).
 *
 * Last, the verification's cost measured directly (the target's pass of n = 1..33 tokens, the
 * minimum CPU time of `--reps` each), the oracle's speed over `none` under that line, and the largest
 * row cost b / a at which the oracle would still reach 2.5x `none`.
 *
 *   npm run build && node dist/bench/copy-ceiling.js [--dataset edit] [--prompts 12] [--max-tokens 96] [--threads N] [--reps 100] [--json FILE]
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadPrompts } from '../src/bench/datasets.js';
import { editTasks } from '../src/bench/edit-dataset.js';
import { parsePolicy } from '../src/engine/policy-registry.js';
import type { RoundStats } from '../src/engine/stats.js';
import { generateText } from '../src/engine/text-generation.js';
import { ModelPair } from '../src/pair/model-pair.js';
import { copiedLengthByCost } from '../src/proposers/hybrid.js';
import { type DraftFreeOptions, DraftFreeProposer } from '../src/proposers/draft-free.js';
import { DATASETS_DIR } from '../src/paths.js';

const { values } = parseArgs({
  options: {
    dataset: { type: 'string', default: 'edit' },
    prompts: { type: 'string', default: '12' },
    'max-tokens': { type: 'string', default: '96' },
    'min-match': { type: 'string', default: '2' },
    k: { type: 'string', default: '32' },
    threads: { type: 'string' },
    reps: { type: 'string', default: '100' },
    json: { type: 'string' },
  },
});
const prompts = Number(values.prompts);
const maxTokens = Number(values['max-tokens']);
const minMatch = Number(values['min-match']);
const K = Number(values.k);
const reps = Number(values.reps);
const threads = values.threads === undefined ? undefined : Number(values.threads);
for (const [name, v] of [['--prompts', prompts], ['--max-tokens', maxTokens], ['--min-match', minMatch], ['--k', K], ['--reps', reps], ['--threads', threads ?? 1]] as const) {
  if (!Number.isInteger(v) || v < 1) {
    process.stderr.write(`copy-ceiling: ${name} must be a positive integer\n`);
    process.exit(1);
  }
}

/** Whether `out[t]` follows an earlier occurrence of the n tokens before it in `seq` (prompt + out). */
function copyable(seq: readonly number[], at: number, n: number): boolean {
  if (at < n) return false;
  for (let j = n; j < at; j++) {
    let ok = seq[j] === seq[at];
    for (let i = 1; ok && i <= n; i++) ok = seq[j - i] === seq[at - i];
    if (ok) return true;
  }
  return false;
}

/** Whether `out[t]` follows an occurrence in the prompt (its first `promptLength` tokens) of the n tokens before it. */
function copyableFromPrompt(seq: readonly number[], at: number, n: number, promptLength: number): boolean {
  for (let j = n; j < promptLength; j++) {
    let ok = seq[j] === seq[at];
    for (let i = 1; ok && i <= n; i++) ok = seq[j - i] === seq[at - i];
    if (ok) return true;
  }
  return false;
}

/** Oracle rounds over the output: at each round the longest agreeing continuation of any earlier match of `minMatch` tokens. */
function oracleRounds(seq: readonly number[], from: number): { rounds: number; accepted: number[] } {
  let at = from;
  const accepted: number[] = [];
  while (at < seq.length) {
    let best = 0;
    for (let j = minMatch; j < at; j++) {
      let ok = true;
      for (let i = 1; ok && i <= minMatch; i++) ok = seq[j - i] === seq[at - i];
      if (!ok) continue;
      let run = 0;
      while (run < K && at + run < seq.length && j + run < at + run && seq[j + run] === seq[at + run]) run++;
      best = Math.max(best, run);
    }
    accepted.push(best);
    at += best + 1;
  }
  return { rounds: accepted.length, accepted };
}

const pair = await ModelPair.load(threads === undefined ? {} : { threads, draftThreads: threads, spinning: false });
const set = loadPrompts(values.dataset as 'edit', prompts);
const references = values.dataset === 'edit' ? new Map(editTasks(DATASETS_DIR).map((t) => [t.id, t])) : new Map();
const histogram = (xs: number[]) => xs.reduce<Record<number, number>>((h, x) => ({ ...h, [x]: (h[x] ?? 0) + 1 }), {});
const rows: Record<string, unknown>[] = [];
/** Per prompt: its ids and the target's greedy output (for the knob sweep); per real round: verification width and target ms (for the cost line). */
const outputs: { prompt: number[]; output: number[] }[] = [];
const passes: { width: number; ms: number }[] = [];
const totals = { tokens: 0, copy1: 0, copy2: 0, copy4: 0, prompt2: 0, prompt4: 0, oracleRounds: 0, suffixRounds: 0, suffixTokens: 0, suffixAccepted: [] as number[], oracleAccepted: [] as number[] };
for (const [i, prompt] of set.entries()) {
  const promptIds = pair.tokenizer.encodeChat(prompt.messages);
  const none = await generateText(pair, { tokenIds: promptIds }, { maxTokens, sampling: { temperature: 0, topP: 1, topK: 0 }, seed: i, policy: parsePolicy('none') });
  pair.decoder.suffixCaches.clear();
  const rounds: RoundStats[] = [];
  const suffix = await generateText(pair, { tokenIds: promptIds }, { maxTokens, sampling: { temperature: 0, topP: 1, topK: 0 }, seed: i, policy: parsePolicy('suffix'), onRound: (r) => rounds.push({ ...r }) });
  pair.decoder.suffixCaches.clear();
  outputs.push({ prompt: promptIds, output: none.token_ids });
  // The first round also takes in the prompt.
  for (const r of rounds.slice(1)) passes.push({ width: 1 + r.drafted, ms: r.targetMs });
  if (suffix.token_ids.join(',') !== none.token_ids.join(',')) throw new Error(`prompt ${prompt.id}: suffix's output differs from none's`);
  const seq = [...promptIds, ...none.token_ids];
  const from = promptIds.length;
  const count = (n: number) => none.token_ids.filter((_, t) => copyable(seq, from + t, n)).length;
  const countFromPrompt = (n: number) => none.token_ids.filter((_, t) => copyableFromPrompt(seq, from + t, n, from)).length;
  const oracle = oracleRounds(seq, from);
  const proposing = rounds.filter((r) => r.drafted > 0).map((r) => r.accepted);
  const text = none.text;
  const reference = references.get(prompt.id)?.reference as string | undefined;
  let agree = 0;
  while (reference && agree < text.length && text[agree] === reference[agree]) agree++;
  const row = {
    id: prompt.id,
    prompt_tokens: promptIds.length,
    output_tokens: none.token_ids.length,
    copyable_1: count(1),
    copyable_2: count(2),
    copyable_4: count(4),
    copyable_from_prompt_2: countFromPrompt(2),
    copyable_from_prompt_4: countFromPrompt(4),
    oracle_tokens_per_round: none.token_ids.length / oracle.rounds,
    suffix_tokens_per_round: suffix.token_ids.length / rounds.length,
    suffix_accepted_histogram: histogram(proposing),
    chars_agreeing_with_reference: reference === undefined ? null : agree,
    output_head: text.slice(0, 80),
  };
  rows.push(row);
  totals.tokens += none.token_ids.length;
  totals.copy1 += row.copyable_1;
  totals.copy2 += row.copyable_2;
  totals.copy4 += row.copyable_4;
  totals.prompt2 += row.copyable_from_prompt_2;
  totals.prompt4 += row.copyable_from_prompt_4;
  totals.oracleRounds += oracle.rounds;
  totals.oracleAccepted.push(...oracle.accepted);
  totals.suffixRounds += rounds.length;
  totals.suffixTokens += suffix.token_ids.length;
  totals.suffixAccepted.push(...proposing);
  process.stdout.write(
    `${prompt.id.padEnd(32)} copyable n>=1/2/4 ${row.copyable_1}/${row.copyable_2}/${row.copyable_4} of ${row.output_tokens}` +
      ` | tok/round oracle ${row.oracle_tokens_per_round.toFixed(2)} suffix ${row.suffix_tokens_per_round.toFixed(2)}` +
      ` | agrees ${row.chars_agreeing_with_reference ?? '-'} chars | ${JSON.stringify(row.output_head)}\n`,
  );
}
const summary = {
  output_tokens: totals.tokens,
  copyable_share: { n1: totals.copy1 / totals.tokens, n2: totals.copy2 / totals.tokens, n4: totals.copy4 / totals.tokens },
  copyable_from_prompt_share: { n2: totals.prompt2 / totals.tokens, n4: totals.prompt4 / totals.tokens },
  oracle_tokens_per_round: totals.tokens / totals.oracleRounds,
  suffix_tokens_per_round: totals.suffixTokens / totals.suffixRounds,
  oracle_accepted_histogram: histogram(totals.oracleAccepted),
  suffix_accepted_histogram: histogram(totals.suffixAccepted),
};
process.stdout.write(`${JSON.stringify(summary, null, 1)}\n`);

// The verification's cost, a line a + b * width fitted to the suffix run's rounds (least squares).
const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
const mw = mean(passes.map((p) => p.width));
const mm = mean(passes.map((p) => p.ms));
const slope = passes.reduce((s, p) => s + (p.width - mw) * (p.ms - mm), 0) / passes.reduce((s, p) => s + (p.width - mw) ** 2, 0);
const cost = { a: mm - slope * mw, b: slope };
process.stdout.write(`verification ms ~ ${cost.a.toFixed(2)} + ${cost.b.toFixed(3)} x width (fitted to ${passes.length} rounds)\n`);
/**
 * The verification's cost measured directly: the target's pass of n tokens after the first
 * prompt (the cache cut back after each), n = 1..K + 1, `reps` times each in alternation; the
 * minimum per width of the process's CPU time (a loaded machine only adds to it; with
 * `--threads 1` it is the pass's own work, as its wall time on a quiet machine would be).
 */
const WIDTHS = [1, 2, 3, 5, 9, 17, 33].filter((n) => n <= K + 1);
const direct: Record<number, number> = {};
{
  const ids = outputs[0]!.prompt;
  const cache = pair.target.newCache();
  await pair.target.forward(cache, ids, 1);
  const best = new Map(WIDTHS.map((n) => [n, Infinity]));
  for (let r = 0; r < reps; r++) {
    for (const n of WIDTHS) {
      const input = Array.from({ length: n }, (_, i) => ids[(ids.length - n + i + ids.length) % ids.length]!);
      const start = process.cpuUsage();
      await pair.target.forward(cache, input, n);
      const used = process.cpuUsage(start);
      best.set(n, Math.min(best.get(n)!, (used.user + used.system) / 1000));
      await cache.crop(ids.length);
    }
  }
  cache.release();
  for (const n of WIDTHS) direct[n] = best.get(n)!;
}
// A line a + b n through the widths' minima (least squares).
const directCost = (() => {
  const xs = WIDTHS;
  const ys = WIDTHS.map((n) => direct[n]!);
  const mx = mean(xs);
  const my = mean(ys);
  const b = xs.reduce((acc, x, i) => acc + (x - mx) * (ys[i]! - my), 0) / xs.reduce((acc, x) => acc + (x - mx) ** 2, 0);
  return { a: my - b * mx, b };
})();
process.stdout.write(`verification measured directly (CPU ms, min of ${reps}): ${WIDTHS.map((n) => `T(${n}) ${direct[n]!.toFixed(2)}`).join(', ')} ms; line ${directCost.a.toFixed(2)} + ${directCost.b.toFixed(3)} x width\n`);
/** Speed over `none` of rounds verifying 1 + accepted_i tokens each, under a verification costing a + b x width. */
const modelledOverNone = (accepted: readonly number[], c: { a: number; b: number }) => ((c.a + c.b) * accepted.reduce((n, x) => n + x + 1, 0)) / accepted.reduce((ms, x) => ms + c.a + c.b * (1 + x), 0);
// The oracle proposes exactly what is accepted: its rounds verify 1 + accepted tokens.
const oracleMs = totals.oracleAccepted.reduce((s, n) => s + cost.a + cost.b * (1 + n), 0);
const oracleSpeedup = ((cost.a + cost.b) * totals.tokens) / oracleMs;
const oracleDirect = modelledOverNone(totals.oracleAccepted, directCost);
// The largest b / a at which the oracle would still reach `target` x none: tau (a + b) / (a + b (1 + mean accepted)) >= target.
const tau = summary.oracle_tokens_per_round;
const TARGET_SPEEDUP = 2.5;
const maxRowShare = tau > TARGET_SPEEDUP ? (tau - TARGET_SPEEDUP) / (TARGET_SPEEDUP * tau - tau) : 0;
process.stdout.write(
  `oracle: tok/round ${tau.toFixed(2)}  modelled x none ${oracleSpeedup.toFixed(2)} (fit to rounds), ${oracleDirect.toFixed(2)} (measured widths); ` +
    `${TARGET_SPEEDUP}x none needs b / a <= ${maxRowShare.toFixed(3)}, measured ${(directCost.b / directCost.a).toFixed(3)}\n`,
);

/** Simulated greedy rounds of a draft-free proposer against the target's recorded output: tokens per round, candidates per round, modelled speed over none. */
/** `simulate`'s cut by the most predicted tokens per ms (hybrid.ts copiedLengthByCost) under the measured line. */
const BY_COST = -1;

function simulate(options: DraftFreeOptions, cut = 0): { tokensPerRound: number; candidatesPerRound: number; modelledSpeedup: number; predictedOverAccepted: number; scoreOverAccepted: number } {
  let rounds = 0;
  let candidates = 0;
  let tokens = 0;
  let ms = 0;
  let predicted = 0;
  let acceptedSum = 0;
  let scoreSum = 0;
  for (const { prompt, output } of outputs) {
    const proposer = new DraftFreeProposer(options);
    proposer.add(0, prompt);
    let at = 0;
    while (at < output.length) {
      let [p] = proposer.propose([0]);
      if (cut === BY_COST && p!.method) {
        const tracker = proposer.acceptance[p!.method];
        const rates = p!.tokens.map((_, j) => tracker.rate(p!.matchLength, j + 1));
        const keep = copiedLengthByCost(rates, (n) => directCost.a + directCost.b * n).length;
        p = { ...p!, tokens: p!.tokens.slice(0, keep), method: keep ? p!.method : undefined };
      } else if (cut > 0 && p!.method) {
        let chain = 1;
        let keep = 0;
        while (keep < p!.tokens.length && (chain *= proposer.acceptance[p!.method].rate(p!.matchLength, keep + 1)) >= cut) keep++;
        p = { ...p!, tokens: p!.tokens.slice(0, keep), method: keep ? p!.method : undefined };
      }
      let a = 0;
      while (a < p!.tokens.length && at + a < output.length && p!.tokens[a] === output[at + a]) a++;
      const verified = output.slice(at, Math.min(output.length, at + a + 1));
      if (p!.method) {
        predicted += proposer.acceptance[p!.method].expectedAccepted(p!.matchLength, p!.tokens.length);
        acceptedSum += Math.min(a, verified.length);
        scoreSum += p!.score ?? 0;
      }
      proposer.observe(0, p, Math.min(a, verified.length), verified);
      rounds++;
      candidates += p!.tokens.length;
      ms += directCost.a + directCost.b * (1 + p!.tokens.length);
      at += verified.length;
    }
    tokens += output.length;
  }
  return { tokensPerRound: tokens / rounds, candidatesPerRound: candidates / rounds, modelledSpeedup: ((directCost.a + directCost.b) * tokens) / ms, predictedOverAccepted: predicted / acceptedSum, scoreOverAccepted: scoreSum / acceptedSum };
}
const vocabSize = pair.target.info.vocabSize;
const VARIANTS: Record<string, DraftFreeOptions> = {
  'suffix (default)': { methods: ['suffix'], vocabSize },
  'suffix min prob 0.3': { methods: ['suffix'], vocabSize, suffix: { minTokenProb: 0.3 } },
  'suffix min prob 0.5': { methods: ['suffix'], vocabSize, suffix: { minTokenProb: 0.5 } },
  'suffix K 8': { methods: ['suffix'], vocabSize, suffix: { numSpeculativeTokens: 8 } },
  'suffix K 16': { methods: ['suffix'], vocabSize, suffix: { numSpeculativeTokens: 16 } },
  'suffix factor 0.5': { methods: ['suffix'], vocabSize, suffix: { maxSpecFactor: 0.5 } },
  'suffix factor 2': { methods: ['suffix'], vocabSize, suffix: { maxSpecFactor: 2 } },
  'suffix depth 24': { methods: ['suffix'], vocabSize, suffix: { maxTreeDepth: 24 } },
  'ngram (default)': { methods: ['ngram'], vocabSize },
  'ngram 2-8 K 8': { methods: ['ngram'], vocabSize, ngram: { promptLookupMin: 2, promptLookupMax: 8, numSpeculativeTokens: 8 } },
  'ngram 2-12 K 16': { methods: ['ngram'], vocabSize, ngram: { promptLookupMin: 2, promptLookupMax: 12, numSpeculativeTokens: 16 } },
  'ngram+suffix': { methods: ['ngram', 'suffix'], vocabSize },
  'suffix est 4x4 prior .6': { methods: ['suffix'], vocabSize, acceptance: { maxMatchLength: 4, maxPosition: 4, priorRate: 0.6 } },
  'suffix est 4x4 prior .7': { methods: ['suffix'], vocabSize, acceptance: { maxMatchLength: 4, maxPosition: 4, priorRate: 0.7 } },
  'suffix est 4x8 prior .6': { methods: ['suffix'], vocabSize, acceptance: { maxMatchLength: 4, maxPosition: 8, priorRate: 0.6 } },
  'suffix est 4x4 prior .6 w4': { methods: ['suffix'], vocabSize, acceptance: { maxMatchLength: 4, maxPosition: 4, priorRate: 0.6, priorWeight: 4 } },
};
const sweep: Record<string, unknown>[] = [];
for (const [name, options, cut] of [...Object.entries(VARIANTS).map(([n, o]) => [n, o, 0] as const), [`suffix cut by cost`, VARIANTS['suffix (default)']!, BY_COST] as const, [`ngram+suffix cut by cost`, VARIANTS['ngram+suffix']!, BY_COST] as const, ...[0.1, 0.2].flatMap((c) => [[`suffix cut ${c}`, VARIANTS['suffix (default)']!, c] as const, [`ngram 2-12 K 16 cut ${c}`, VARIANTS['ngram 2-12 K 16']!, c] as const, [`ngram+suffix cut ${c}`, VARIANTS['ngram+suffix']!, c] as const])]) {
  const r = simulate(options, cut);
  sweep.push({ variant: name, tokens_per_round: r.tokensPerRound, candidates_per_round: r.candidatesPerRound, modelled_speedup_vs_none: r.modelledSpeedup, predicted_over_accepted: r.predictedOverAccepted });
  process.stdout.write(`${name.padEnd(24)} tok/round ${r.tokensPerRound.toFixed(2)}  candidates/round ${r.candidatesPerRound.toFixed(2)}  modelled x none ${r.modelledSpeedup.toFixed(2)}  E[accepted] / accepted ${r.predictedOverAccepted.toFixed(2)} tree score / accepted ${r.scoreOverAccepted.toFixed(2)}\n`);
}
if (values.json) {
  const settings = { dataset: values.dataset, prompts, max_tokens: maxTokens, min_match: minMatch, k: K, threads: threads ?? 'default', reps, command: `node ${process.argv.slice(1).join(' ')}` };
  const measured = { widths_min_ms: direct, line_ms: directCost, oracle_modelled_speedup_vs_none: oracleDirect, max_row_share_for_2_5x: maxRowShare };
  writeFileSync(values.json, `${JSON.stringify({ settings, summary, cost_ms: cost, oracle_modelled_speedup_vs_none: oracleSpeedup, verification_measured: measured, sweep, prompts: rows }, null, 2)}\n`);
}
await pair.release();
