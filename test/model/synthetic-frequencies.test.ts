/**
 * A synthetic pair whose logits follow token frequencies (synthetic/frequency-prior.ts): on a
 * tiny Qwen3-vocabulary pair (V = 151,936) with the shipped prompts' counts, the target's greedy
 * and sampled outputs fall on the most counted tokens, as a trained model's do (a random pair
 * without the prior spreads them over the whole vocabulary: TOP / V by chance); the draft's greedy agreement
 * stays within a stated band on a fixed seed; greedy speculation stays equal to target-only.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LLAMA_PRESETS, tokenizerPackageDir, writeLlamaPair, type LlamaPair } from '../../src/bench/llama-pair.js';
import { loadPrompts } from '../../src/bench/datasets.js';
import { countCorpus, type CorpusCounts } from '../../src/bench/vocab-counts.js';
import { DecoderModel } from '../../src/engine/model.js';
import { GREEDY, type SamplingParams } from '../../src/engine/sampling.js';
import { SpeculativeDecoder } from '../../src/engine/speculative.js';
import { priorChannel } from '../../src/synthetic/frequency-prior.js';
import { TextTokenizer } from '../../src/text/tokenizer.js';
import { TINY_QWEN3_SHAPE } from '../support/real-vocab-pair.js';

const QWEN3 = LLAMA_PRESETS['qwen3-0.6b']!;
const root = mkdtempSync(join(tmpdir(), 'specd-frequencies-'));
const tokenizerDir = tokenizerPackageDir(QWEN3.tokenizerPackage);
const shape = { ...TINY_QWEN3_SHAPE, layers: 4 };
/** The deep blocks' scale of the pair under test, and the band its greedy agreement must fall in (measured 0.73 on seed 3; 0.81 sampled). */
const DEEP_SCALE = 0.08;
const AGREEMENT_BAND: [number, number] = [0.6, 0.9];
const TOP = 1000;

let counted: CorpusCounts;
let pair: LlamaPair;
let rank: Int32Array;
let prompts: number[][];
after(() => rmSync(root, { recursive: true, force: true }));
before(async () => {
  counted = await countCorpus(tokenizerDir, shape.vocab, { datasets: ['gsm8k', 'humaneval', 'alpaca'] });
  const c = counted.counts.counts;
  const order = Int32Array.from({ length: shape.vocab }, (_, i) => i).sort((a, b) => c[b]! - c[a]! || a - b);
  rank = new Int32Array(shape.vocab);
  order.forEach((id, r) => (rank[id] = r));
  const tokenizer = await TextTokenizer.fromDir(tokenizerDir);
  pair = writeLlamaPair(join(root, 'pair'), {
    shape,
    tokenizerDir,
    generationConfig: QWEN3.generationConfig,
    bosTokenId: QWEN3.bosTokenId,
    eosTokenId: QWEN3.eosTokenId,
    draftLayers: 1,
    deepScale: DEEP_SCALE,
    seed: 3,
    frequencyPrior: { counts: counted.counts.counts },
  });
  prompts = loadPrompts('gsm8k', 3).map((p) => tokenizer.encodeChat(p.messages, { templateVars: { enable_thinking: false } }));
});

interface Run {
  outputs: number[];
  agreement: number;
  equalToTargetOnly: boolean;
}

/** Decodes the prompts with `fixed:1` and target-only. */
async function decode(sampling: SamplingParams): Promise<Run> {
  const target = await DecoderModel.load(pair.targetDir, { threads: 1 });
  const draft = await DecoderModel.load(pair.draftDir, { threads: 1 });
  try {
    const decoder = new SpeculativeDecoder(target, draft);
    const run: Run = { outputs: [], agreement: 0, equalToTargetOnly: true };
    let drafted = 0;
    let accepted = 0;
    for (const [i, prompt] of prompts.entries()) {
      const options = { maxTokens: 32, sampling, seed: i, eosTokenIds: [] };
      const g = decoder.start(prompt, { ...options, policy: { policy: 'fixed', k: 1 } });
      const out = await g.run();
      drafted += g.stats.draft_tokens;
      accepted += g.stats.accepted_tokens;
      run.outputs.push(...out);
      const alone = await decoder.start(prompt, { ...options, policy: { policy: 'none' } }).run();
      if (JSON.stringify(alone) !== JSON.stringify(out)) run.equalToTargetOnly = false;
    }
    run.agreement = accepted / drafted;
    return run;
  } finally {
    await target.release();
    await draft.release();
  }
}

/** Share of `outputs` among the TOP most counted tokens. */
const topShare = (outputs: number[]) => outputs.filter((t) => rank[t]! < TOP).length / outputs.length;

describe('a synthetic pair that follows token frequencies', () => {
  test('the channel: every token between BASE and BASE + SPREAD by its log count, the gain scaling it to strength per nat', () => {
    const { values, gain } = priorChannel({ counts: [0, 1, 99.5], strength: 2 }, 4);
    assert.deepEqual([...values].map((v) => Number(v.toFixed(4))), [1, 1.0207, 1.1, 1]);
    // strength x (log 100 - log 0.5) / (BASE x SPREAD)
    assert.ok(Math.abs(gain - (2 * Math.log(200)) / 0.1) < 1e-9);
    assert.throws(() => priorChannel({ counts: [1, -1] }, 2), /token 1 has count -1/);
    assert.throws(() => priorChannel({ counts: [1, 2, 3] }, 2), /3 token counts for a vocabulary of 2/);
  });

  test('greedy: outputs on the most counted tokens, agreement within its band, speculation equal to target-only', async () => {
    const prior = await decode(GREEDY);
    assert.ok(topShare(prior.outputs) > 0.6, `with the prior ${topShare(prior.outputs)} of the outputs in the top ${TOP}`);
    assert.ok(new Set(prior.outputs).size >= 12, `${new Set(prior.outputs).size} distinct tokens: the prior must not collapse the text onto a few`);
    assert.ok(prior.agreement >= AGREEMENT_BAND[0] && prior.agreement <= AGREEMENT_BAND[1], `greedy agreement ${prior.agreement} outside ${AGREEMENT_BAND}`);
    assert.ok(prior.equalToTargetOnly);
  });

  test("the model's default sampling: outputs on the most counted tokens too", async () => {
    const d = QWEN3.generationConfig as { temperature: number; top_p: number; top_k: number };
    const sampled = await decode({ temperature: d.temperature, topP: d.top_p, topK: d.top_k });
    assert.ok(topShare(sampled.outputs) > 0.6, `${topShare(sampled.outputs)} of the sampled outputs in the top ${TOP}`);
  });
});
