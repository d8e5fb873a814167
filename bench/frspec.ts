/**
 * FR-Spec (arXiv 2502.14856) on one draft/target pair: the draft with its full lm_head against
 * the same draft restricted to each token map given (onnx/draft-vocab-graph.ts), interleaved
 * so that a shared machine's bursts hit every variant alike:
 *
 * 1. one draft pass (1 token after a 64-token prompt, then cropped back) per variant, and one
 *    target pass, median and 10th percentile in ms;
 * 2. generation on the first prompts of a benchmark set, for greedy decoding and the model's
 *    default sampling: `none` and `fixed:K` with each draft variant, prompt by prompt in turn;
 *    tokens/s, the ratio to `none`, accepted / drafted, and whether greedy outputs equal `none`'s;
 * 3. each map's coverage of the target's greedy outputs.
 *
 *   npm run build && node dist/bench/frspec.js --target T --draft D --map A.json[,B.json]
 *     [--dataset gsm8k] [--prompts 4] [--max-tokens 64] [--k 4] [--reps 30] [--threads 2] [--json FILE]
 */
import { writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import { type DatasetName, loadPrompts } from '../src/bench/datasets.js';
import { machineInfo } from '../src/bench/serve/report.js';
import { DecoderModel } from '../src/engine/model.js';
import { GREEDY, type SamplingParams } from '../src/engine/sampling.js';
import { SpeculativeDecoder } from '../src/engine/speculative.js';
import type { PolicySpec } from '../src/engine/stop-policy.js';
import { configVocabSize } from '../src/engine/vocab-map.js';
import { draftVocabMap } from '../src/onnx/draft-vocab-graph.js';
import { readTokenMap } from '../src/onnx/token-map.js';
import { TextTokenizer } from '../src/text/tokenizer.js';

const { values } = parseArgs({
  options: {
    target: { type: 'string' },
    draft: { type: 'string' },
    map: { type: 'string', default: '' },
    dataset: { type: 'string', default: 'gsm8k' },
    prompts: { type: 'string', default: '4' },
    'max-tokens': { type: 'string', default: '64' },
    k: { type: 'string', default: '4' },
    reps: { type: 'string', default: '30' },
    threads: { type: 'string', default: '2' },
    json: { type: 'string' },
  },
});
if (!values.target || !values.draft) throw new Error('--target and --draft are required');
const maps = values.map.split(',').filter((s) => s !== '');
const threads = Number(values.threads);
const quantile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
const ms = (x: number) => x.toFixed(1);

const vocab = configVocabSize(values.target);
const target = await DecoderModel.load(values.target, { threads });
const variants: { name: string; draft: DecoderModel; kept: number }[] = [{ name: 'full', draft: await DecoderModel.load(values.draft, { threads: 1 }), kept: vocab }];
for (const file of maps) {
  const map = readTokenMap(file, vocab);
  variants.push({ name: `map ${basename(file, '.json')}`, draft: await DecoderModel.load(values.draft, { threads: 1, vocabMap: draftVocabMap(vocab, vocab, map.ids) }), kept: map.ids.length });
}
const tokenizer = await TextTokenizer.fromDir(values.target);
const prompts = loadPrompts(values.dataset as DatasetName, Number(values.prompts)).map((p) => tokenizer.encodeChat(p.messages, { templateVars: { enable_thinking: false } }));

// 1. Passes.
const context = prompts[0]!.slice(0, 64);
const passTimes = new Map<string, number[]>();
const timed = async (name: string, model: DecoderModel) => {
  const cache = model.newCache();
  await model.forward(cache, context, 1);
  const times: number[] = [];
  passTimes.set(name, times);
  return async () => {
    const t0 = performance.now();
    await model.forward(cache, [context[1]!], 1);
    times.push(performance.now() - t0);
    await cache.crop(context.length);
  };
};
const passes = [await timed('target', target), ...(await Promise.all(variants.map((v) => timed(`draft ${v.name}`, v.draft))))];
for (let r = 0; r < Number(values.reps); r++) for (const run of r % 2 ? passes : [...passes].reverse()) await run();
console.log(`\none pass after ${context.length} positions (ms; median, p10), ${values.reps} interleaved reps`);
for (const [name, times] of passTimes) console.log(`  ${name.padEnd(28)} ${ms(quantile(times, 50)).padStart(7)} ${ms(quantile(times, 10)).padStart(7)}`);

// 2. Generation.
const defaults = target.info.generationDefaults;
const samplings: [string, SamplingParams][] = [
  ['greedy', GREEDY],
  [`defaults (T ${defaults.temperature ?? 1}, top-p ${defaults.topP ?? 1}, top-k ${defaults.topK ?? 0})`, { temperature: defaults.temperature ?? 1, topP: defaults.topP ?? 1, topK: defaults.topK ?? 0 }],
];
const fixed: PolicySpec = { policy: 'fixed', k: Number(values.k) };
const configs = [{ name: 'none', decoder: new SpeculativeDecoder(target), policy: { policy: 'none' } as PolicySpec }, ...variants.map((v) => ({ name: `fixed:${values.k} ${v.name}`, decoder: new SpeculativeDecoder(target, v.draft), policy: fixed }))];
const results: Record<string, unknown>[] = [];
const greedyOutputs: number[][] = [];
for (const [label, sampling] of samplings) {
  const acc = configs.map(() => ({ ms: 0, tokens: 0, drafted: 0, accepted: 0, rounds: 0, same: true }));
  for (let p = 0; p < prompts.length; p++) {
    const order = p % 2 ? configs.map((_, i) => i) : configs.map((_, i) => configs.length - 1 - i);
    const outs = new Map<number, number[]>();
    for (const i of order) {
      const c = configs[i]!;
      const t0 = performance.now();
      const g = c.decoder.start(prompts[p]!, { maxTokens: Number(values['max-tokens']), sampling, seed: p, policy: c.policy, eosTokenIds: [] });
      const out = await g.run();
      const a = acc[i]!;
      a.ms += performance.now() - t0;
      a.tokens += out.length;
      a.drafted += g.stats.draft_tokens;
      a.accepted += g.stats.accepted_tokens;
      a.rounds += g.stats.rounds;
      outs.set(i, out);
    }
    const reference = outs.get(0)!;
    if (sampling === GREEDY) greedyOutputs.push(reference);
    for (const [i, out] of outs) if (sampling === GREEDY && JSON.stringify(out) !== JSON.stringify(reference)) acc[i]!.same = false;
  }
  const base = acc[0]!.tokens / acc[0]!.ms;
  console.log(`\n${label}: ${prompts.length} ${values.dataset} prompts x ${values['max-tokens']} tokens, configurations interleaved per prompt`);
  console.log(`  ${'configuration'.padEnd(28)} ${'tok/s'.padStart(7)} ${'x none'.padStart(7)} ${'accepted'.padStart(9)} ${'per round'.padStart(9)}${sampling === GREEDY ? '  = none' : ''}`);
  configs.forEach((c, i) => {
    const a = acc[i]!;
    const tps = (1000 * a.tokens) / a.ms;
    const rate = a.drafted > 0 ? a.accepted / a.drafted : null;
    console.log(`  ${c.name.padEnd(28)} ${tps.toFixed(2).padStart(7)} ${(a.tokens / a.ms / base).toFixed(2).padStart(7)} ${(rate === null ? '-' : rate.toFixed(3)).padStart(9)} ${(a.tokens / a.rounds).toFixed(2).padStart(9)}${sampling === GREEDY ? `  ${a.same}` : ''}`);
    results.push({ sampling: label, configuration: c.name, tokens_per_s: tps, ratio_to_none: a.tokens / a.ms / base, acceptance: rate, tokens_per_round: a.tokens / a.rounds, ...(sampling === GREEDY ? { equal_to_none: a.same } : {}) });
  });
}

// 3. Coverage of the target's greedy outputs.
const all = greedyOutputs.flat();
const coverage = maps.map((file) => {
  const ids = new Set(readTokenMap(file, vocab).ids);
  return { map: file, kept: ids.size, coverage: all.filter((t) => ids.has(t)).length / all.length };
});
for (const c of coverage) console.log(`\n${c.map}: ${c.kept} tokens cover ${(100 * c.coverage).toFixed(1)}% of the target's greedy outputs`);

if (values.json) {
  const pass = Object.fromEntries([...passTimes].map(([k, v]) => [k, { median_ms: quantile(v, 50), p10_ms: quantile(v, 10) }]));
  writeFileSync(values.json, `${JSON.stringify({ date: new Date().toISOString(), machine: machineInfo(), args: values, passes: pass, generation: results, coverage }, null, 2)}\n`);
}
await target.release();
for (const v of variants) await v.draft.release();
