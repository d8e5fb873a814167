/**
 * The draft phase's run against the same draft steps as separate passes, in isolation (no target
 * pass between): per round of `--steps` candidates, alternately, one draft-phase run with fixed K
 * (the stop rule off) and K one-token passes of the same draft, each from the same cache length.
 * Prints the medians (wall ms per round) and their ratio; with `--profile DIR`, ONNX Runtime's
 * profile of both sessions goes there (per-node times).
 *
 *   npm run build && node dist/bench/draft-phase-isolated.js [--steps 4] [--rounds 400] [--profile DIR]
 */
import { parseArgs } from 'node:util';
import { DraftPhase } from '../src/engine/draft-phase.js';
import { DecoderModel } from '../src/engine/model.js';
import { RULE_OFF } from '../src/engine/stop-policy.js';
import { loadHeadForDraft } from '../src/heads/runtime/head-loader.js';
import { BUNDLED_DRAFT, BUNDLED_HEAD, BUNDLED_TARGET } from '../src/paths.js';

const { values } = parseArgs({ options: { steps: { type: 'string', default: '4' }, rounds: { type: 'string', default: '400' }, context: { type: 'string', default: '100' }, target: { type: 'boolean', default: false }, spinning: { type: 'boolean', default: false }, sweep: { type: 'boolean', default: false } } });
const steps = Number(values.steps);
const rounds = Number(values.rounds);
const context = Number(values.context);

const plain = await DecoderModel.load(BUNDLED_DRAFT, { threads: 1, keepGraph: true });
const { headDraft } = await loadHeadForDraft(BUNDLED_HEAD, plain, { threads: 1 });
const phase = (await DraftPhase.create(headDraft, 1))!;
// --target: a target pass (2 threads) before each round, as in a speculative round (its weights evict the draft's from the caches).
const target = values.target ? await DecoderModel.load(BUNDLED_TARGET, { threads: 2, spinning: values.spinning }) : undefined;
const targetCache = target?.newCache();
const prompt = Array.from({ length: context }, (_, i) => 32 + (i % 90));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const oneRun: number[] = [];
const perStep: number[] = [];
const cache = headDraft.newCache();
await headDraft.forward(cache, prompt, 1);
if (target) await target.forward(targetCache!, prompt, 1);
// --sweep: instead of a target pass, read 64 MiB from JavaScript (evicts the caches, no ONNX Runtime threads).
const sweepBuf = values.sweep ? new Float64Array(8 << 20).fill(1) : undefined;
let sink = 0;
const targetPass = async () => {
  if (sweepBuf) for (let i = 0; i < sweepBuf.length; i += 8) sink += sweepBuf[i]!;
  if (!target) return;
  await target.forward(targetCache!, [65, 66, 67, 68], 1);
  await targetCache!.crop(context);
};
const rule = { kMin: 1, threshold: RULE_OFF, pMin: 0, maxSteps: steps, candidateWeights: new Float32Array(4) };
for (let r = 0; r < rounds; r++) {
  await targetPass();
  let start = performance.now();
  const out = await phase.run(cache, [prompt.at(-1)!], rule);
  oneRun.push(performance.now() - start);
  await cache.crop(context);
  await targetPass();
  start = performance.now();
  let token = prompt.at(-1)!;
  for (let s = 0; s < steps; s++) {
    await headDraft.forward(cache, [token], 1);
    token = out.tokens[s]!;
  }
  perStep.push(performance.now() - start);
  await cache.crop(context);
}
const a = median(oneRun);
const b = median(perStep);
process.stdout.write(`${steps} steps at context ${context}: one run ${a.toFixed(3)} ms, ${steps} passes ${b.toFixed(3)} ms (${(b / steps).toFixed(3)} per pass): ${(a / b).toFixed(2)}x\n`);
if (sink < 0) process.stdout.write('');
cache.release();
targetCache?.release();
await target?.release();
await phase.release();
await headDraft.release();
await plain.release();
