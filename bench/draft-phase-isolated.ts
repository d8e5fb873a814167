/**
 * The draft phase's one run against the same draft steps as separate passes, in isolation: per
 * round of `--steps` candidates, alternately, one draft-phase run with fixed K (the stop rule
 * off) and K one-token passes of the same draft (bundled draft with its head fused), each from
 * the same cache length. With `--base DIR` (another build's compiled `dist`), that build's
 * draft phase runs too, interleaved round by round, on its own copy of the draft. Prints the
 * medians of wall time and the means of CPU time (the process's, user + system) per round:
 * on a shared host CPU time is the steadier measure of the work done.
 *
 * `--target`: a target pass (2 threads) before each round's variants, as in a speculative round
 * (its weights evict the draft's from the caches); `--spinning` lets the target's threads spin.
 *
 *   npm run build && node dist/bench/draft-phase-isolated.js [--steps 4] [--rounds 400]
 *     [--context 100] [--base ../other/dist] [--target [--spinning]]
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '4' },
    rounds: { type: 'string', default: '400' },
    context: { type: 'string', default: '100' },
    base: { type: 'string' },
    target: { type: 'boolean', default: false },
    spinning: { type: 'boolean', default: false },
  },
});
const steps = Number(values.steps);
const rounds = Number(values.rounds);
const context = Number(values.context);
for (const [name, v] of [['--steps', steps], ['--rounds', rounds], ['--context', context]] as const) {
  if (!Number.isInteger(v) || v < 1) {
    process.stderr.write(`draft-phase-isolated: ${name} must be a positive integer\n`);
    process.exit(1);
  }
}

/** A build's draft (head fused), its draft phase and a cache holding the context. */
async function setup(dist: string) {
  const load = (path: string) => import(pathToFileURL(resolve(dist, path)).href);
  const [{ DraftPhase }, { DecoderModel }, { loadHeadForDraft }, paths] = await Promise.all([
    load('src/engine/draft-phase.js'),
    load('src/engine/model.js'),
    load('src/heads/runtime/head-loader.js'),
    load('src/paths.js'),
  ]);
  const plain = await DecoderModel.load(paths.BUNDLED_DRAFT, { threads: 1, keepGraph: true });
  const { headDraft } = await loadHeadForDraft(paths.BUNDLED_HEAD, plain, { threads: 1 });
  const phase = await DraftPhase.create(headDraft, 1);
  const cache = headDraft.newCache();
  await headDraft.forward(cache, prompt, 1);
  return { phase, headDraft, cache, plain, paths, DecoderModel };
}

const prompt = Array.from({ length: context }, (_, i) => 32 + (i % 90));
const own = await setup(resolve(import.meta.dirname, '..'));
const base = values.base ? await setup(resolve(values.base)) : undefined;
const target = values.target ? await own.DecoderModel.load(own.paths.BUNDLED_TARGET, { threads: 2, spinning: values.spinning }) : undefined;
const targetCache = target?.newCache();
if (target) await target.forward(targetCache, prompt, 1);
const rule = { kMin: 1, threshold: 2, pMin: 0, maxSteps: steps, candidateWeights: new Float32Array(4) };

type Variant = { name: string; run: () => Promise<void>; wall: number[]; cpu: number };
let tokens: number[] = [];
const variants: Variant[] = [
  { name: 'one run', run: async () => void (tokens = (await own.phase.run(own.cache, [prompt.at(-1)!], rule)).tokens), wall: [], cpu: 0 },
  {
    name: `${steps} passes`,
    run: async () => {
      let token = prompt.at(-1)!;
      for (let s = 0; s < steps; s++) {
        await own.headDraft.forward(own.cache, [token], 1);
        token = tokens[s] ?? token;
      }
    },
    wall: [],
    cpu: 0,
  },
];
if (base) variants.push({ name: 'one run (base)', run: async () => void (await base.phase.run(base.cache, [prompt.at(-1)!], rule)), wall: [], cpu: 0 });

for (let r = 0; r < rounds; r++) {
  for (const v of r % 2 === 0 ? variants : [...variants].reverse()) {
    if (target) {
      await target.forward(targetCache, [65, 66, 67, 68], 1);
      await targetCache.crop(context);
    }
    const cpu = process.cpuUsage();
    const start = performance.now();
    await v.run();
    v.wall.push(performance.now() - start);
    const used = process.cpuUsage(cpu);
    v.cpu += (used.user + used.system) / 1000;
    for (const c of [own.cache, base?.cache]) await c?.crop(context);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
process.stdout.write(`${steps} steps at context ${context}, ${rounds} rounds${target ? ', a target pass before each' : ''}:\n`);
for (const v of variants) process.stdout.write(`  ${v.name.padEnd(16)} wall ${median(v.wall).toFixed(3)} ms (median), CPU ${(v.cpu / rounds).toFixed(3)} ms (mean)\n`);
for (const b of [own, base]) {
  if (!b) continue;
  b.cache.release();
  await b.phase.release();
  await b.headDraft.release();
  await b.plain.release();
}
targetCache?.release();
await target?.release();
