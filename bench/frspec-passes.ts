/**
 * Where a speculative round's time goes on one pair loaded as `specd` loads it (ModelPair: the
 * draft's token map from its directory, the draft on `--draft-threads`, the target on every core):
 *
 * 1. passes alone, interleaved: a draft step (1 token after a 64-token context) with the draft
 *    on each of `--draft-threads` intra-op threads, and the target's pass over 1 and over K + 1
 *    tokens, median and 10th percentile in ms;
 * 2. generation with `none` and each `fixed:K` (the draft on each thread count), prompt by
 *    prompt in turn: tokens/s, the ratio to `none`, and per pass kind (scheduler.ts `onPass`: prefill, catch-up, draft, verify) the
 *    passes run and their mean ms, with what the round spent outside passes (sampling, acceptance,
 *    bookkeeping) per output token; greedy outputs are checked against `none`'s.
 *
 *   npm run build && node dist/bench/frspec-passes.js --target T --draft D
 *     [--policies none,fixed:2,fixed:4] [--dataset gsm8k] [--prompts 4] [--max-tokens 48]
 *     [--reps 20] [--draft-threads 1[,2]] [--no-token-map] [--full-rows] [--json FILE]
 *
 * `--full-rows` adds the same draft returning rows of the target's width (the kept columns spread
 * over the vocabulary with -Infinity elsewhere, as before `DecoderModel.logitIds`) beside the one
 * returning the token map's columns alone: its passes alone (each with the argmax of its row) and
 * its rounds.
 */
import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { type DatasetName, loadPrompts } from '../src/bench/datasets.js';
import { machineInfo } from '../src/bench/serve/report.js';
import { argmax, GREEDY } from '../src/engine/sampling.js';
import { BatchScheduler, type PassKind } from '../src/engine/scheduler.js';
import { ALONE_MAX_BATCH_TOKENS, SpeculativeDecoder } from '../src/engine/speculative.js';
import type { PolicySpec } from '../src/engine/stop-policy.js';
import { DecoderModel } from '../src/engine/model.js';
import { planDraftVocab } from '../src/engine/vocab-map.js';
import { ModelPair } from '../src/pair/model-pair.js';

const { values } = parseArgs({
  options: {
    target: { type: 'string' },
    draft: { type: 'string' },
    policies: { type: 'string', default: 'none,fixed:2,fixed:4' },
    dataset: { type: 'string', default: 'gsm8k' },
    prompts: { type: 'string', default: '4' },
    'max-tokens': { type: 'string', default: '48' },
    reps: { type: 'string', default: '20' },
    'draft-threads': { type: 'string', default: '1' },
    'no-token-map': { type: 'boolean', default: false },
    'full-rows': { type: 'boolean', default: false },
    json: { type: 'string' },
  },
});
if (!values.target || !values.draft) throw new Error('--target and --draft are required');
const policies: PolicySpec[] = values.policies.split(',').map((p) => {
  if (p === 'none') return { policy: 'none' };
  const m = /^fixed:(\d+)$/.exec(p);
  if (!m) throw new Error(`--policies: ${p} is neither none nor fixed:K`);
  return { policy: 'fixed', k: Number(m[1]) };
});
const policyName = (p: PolicySpec) => (p.policy === 'fixed' ? `fixed:${p.k}` : p.policy);
const quantile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

const draftThreads = values['draft-threads'].split(',').map(Number);
const tokenMap = values['no-token-map'] ? { speculativeTokenMap: null } : {};
const pair = await ModelPair.load({ target: values.target, draft: values.draft, head: null, draftThreads: draftThreads[0], ...tokenMap });
const { target, draft, decoder, tokenizer } = pair;
if (!draft) throw new Error('no draft loaded');
// The same draft on the other thread counts, for the passes alone.
const vocab = await planDraftVocab(values.target, values.draft, tokenizer, values['no-token-map'] ? null : undefined);
const otherDrafts = await Promise.all(draftThreads.slice(1).map((threads) => DecoderModel.load(values.draft!, { threads, vocabMap: vocab.map, logitColumns: 'kept' })));
const draftNames = draftThreads.map((t) => `${t} thread(s)`);
if (values['full-rows'] && vocab.map) {
  otherDrafts.push(await DecoderModel.load(values.draft, { threads: draftThreads[0], vocabMap: vocab.map, logitColumns: 'vocabulary' }));
  draftNames.push(`${draftThreads[0]} thread(s), full rows`);
}
const prompts = loadPrompts(values.dataset as DatasetName, Number(values.prompts)).map((p) => tokenizer.encodeChat(p.messages, { templateVars: { enable_thinking: false } }));

// 1. Passes alone.
const maxK = Math.max(1, ...policies.map((p) => (p.policy === 'fixed' ? p.k! : 0)));
const context = prompts[0]!.slice(0, 64);
const passTimes = new Map<string, number[]>();
const timed = async (name: string, model: DecoderModel, fed: number) => {
  const cache = model.newCache();
  await model.forward(cache, context, 1);
  const times: number[] = [];
  passTimes.set(name, times);
  return async () => {
    const t0 = performance.now();
    const row = await model.forward(cache, context.slice(1, 1 + fed), fed);
    argmax(row.subarray(row.length - (model.logitIds?.length ?? model.info.vocabSize)));
    times.push(performance.now() - t0);
    await cache.crop(context.length);
  };
};
const passes = [
  ...(await Promise.all([draft, ...otherDrafts].map((model, i) => timed(`draft, ${draftNames[i]}`, model, 1)))),
  await timed('target, 1 token', target, 1),
  await timed(`target, ${maxK + 1} tokens`, target, maxK + 1),
];
for (let r = 0; r < Number(values.reps); r++) for (const run of r % 2 ? passes : [...passes].reverse()) await run();
console.log(`one pass after ${context.length} positions (ms; median, p10), ${values.reps} interleaved reps`);
for (const [name, times] of passTimes) console.log(`  ${name.padEnd(36)} ${quantile(times, 50).toFixed(2).padStart(8)} ${quantile(times, 10).toFixed(2).padStart(8)}`);

// 2. Generation, pass by pass.
const KINDS: PassKind[] = ['prefill', 'catch-up', 'draft', 'verify'];
// Each drafting policy with the draft on each thread count; `none` once.
const drafts = [draft, ...otherDrafts];
const configs = policies.flatMap((policy): { name: string; policy: PolicySpec; decoder: SpeculativeDecoder }[] =>
  policy.policy === 'none'
    ? [{ name: 'none', policy, decoder }]
    : drafts.map((model, t) => ({ name: drafts.length > 1 ? `${policyName(policy)} draft ${draftNames[t]}` : policyName(policy), policy, decoder: t === 0 ? decoder : new SpeculativeDecoder(target, model) })),
);
const acc = configs.map(() => ({ ms: 0, passMs: 0, tokens: 0, drafted: 0, accepted: 0, same: true, kinds: new Map<PassKind, { n: number; ms: number }>() }));
for (let p = 0; p < prompts.length; p++) {
  const order = p % 2 ? configs.map((_, i) => i) : configs.map((_, i) => configs.length - 1 - i);
  const outs = new Map<number, number[]>();
  for (const i of order) {
    const a = acc[i]!;
    const scheduler = new BatchScheduler({
      maxBatchTokens: ALONE_MAX_BATCH_TOKENS,
      onPass: (pass) => {
        const k = a.kinds.get(pass.kind) ?? { n: 0, ms: 0 };
        k.n++;
        k.ms += pass.ms;
        a.kinds.set(pass.kind, k);
        a.passMs += pass.ms;
      },
    });
    const t0 = performance.now();
    const c = configs[i]!;
    const g = c.decoder.start(prompts[p]!, { maxTokens: Number(values['max-tokens']), sampling: GREEDY, seed: p, policy: c.policy, eosTokenIds: [] });
    while (!g.done) await scheduler.step(g);
    a.ms += performance.now() - t0;
    const out = g.tokenIds.slice(0, Number(values['max-tokens']));
    a.tokens += out.length;
    a.drafted += g.stats.draft_tokens;
    a.accepted += g.stats.accepted_tokens;
    outs.set(i, out);
  }
  const reference = JSON.stringify(outs.get(configs.findIndex((x) => x.policy.policy === 'none')) ?? outs.get(0));
  for (const [i, out] of outs) if (JSON.stringify(out) !== reference) acc[i]!.same = false;
}
const noneIndex = Math.max(0, configs.findIndex((x) => x.policy.policy === 'none'));
const base = acc[noneIndex]!.tokens / acc[noneIndex]!.ms;
console.log(`\ngreedy, ${prompts.length} ${values.dataset} prompts x ${values['max-tokens']} tokens, policies interleaved per prompt`);
console.log(`  ${'policy'.padEnd(34)} ${'tok/s'.padStart(7)} ${'x none'.padStart(7)} ${'accepted'.padStart(9)} ${KINDS.map((k) => `${k} n / ms`.padStart(18)).join('')} ${'other ms/token'.padStart(15)}  = none`);
const results = configs.map((c, i) => {
  const a = acc[i]!;
  const kinds = Object.fromEntries(KINDS.map((k) => [k, a.kinds.get(k) ?? { n: 0, ms: 0 }]));
  const row = {
    policy: c.name,
    tokens_per_s: (1000 * a.tokens) / a.ms,
    ratio_to_none: a.tokens / a.ms / base,
    acceptance: a.drafted > 0 ? a.accepted / a.drafted : null,
    passes: Object.fromEntries(KINDS.map((k) => [k, { count: kinds[k]!.n, mean_ms: kinds[k]!.n ? kinds[k]!.ms / kinds[k]!.n : 0 }])),
    other_ms_per_token: (a.ms - a.passMs) / a.tokens,
    equal_to_none: a.same,
  };
  const cell = (k: PassKind) => `${row.passes[k]!.count} / ${row.passes[k]!.mean_ms.toFixed(2)}`.padStart(18);
  console.log(
    `  ${row.policy.padEnd(34)} ${row.tokens_per_s.toFixed(2).padStart(7)} ${row.ratio_to_none.toFixed(2).padStart(7)} ${(row.acceptance === null ? '-' : row.acceptance.toFixed(3)).padStart(9)} ${KINDS.map(cell).join('')} ${row.other_ms_per_token.toFixed(2).padStart(15)}  ${a.same}`,
  );
  return row;
});

if (values.json) {
  const pass = Object.fromEntries([...passTimes].map(([k, v]) => [k, { median_ms: quantile(v, 50), p10_ms: quantile(v, 10) }]));
  writeFileSync(values.json, `${JSON.stringify({ date: new Date().toISOString(), machine: machineInfo(), load_average: loadavg(), args: values, passes: pass, generation: results }, null, 2)}\n`);
}
await pair.release();
for (const model of otherDrafts) await model.release();
