/**
 * A draft whose logits are laid onto the target's vocabulary (onnx/draft-vocab-graph.ts,
 * engine/vocab-map.ts): FR-Spec token maps (the lm_head restricted to the kept tokens) and draft
 * and target vocab_size of different padded sizes.
 * - token maps: ranking, special tokens kept, the file format and its errors;
 * - the restricted draft's logits are the full draft's on the kept columns and -Infinity
 *   elsewhere, at V = 151,936 (Qwen3's tokenizer), and the one-run draft phase proposes what
 *   step-by-step drafting over the restricted row proposes;
 * - greedy speculation with a restricted draft, and with drafts of 151,808 and 152,064 ids
 *   against a 151,936-id target, equals target-only decoding;
 * - sampled speculation with a restricted draft is distributed as the target (chi-square), and
 *   the same statistic rejects the output of a rule that keeps the output inside the map.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DraftPhase } from '../../src/engine/draft-phase.js';
import { DecoderModel } from '../../src/engine/model.js';
import { ModelPair } from '../../src/pair/model-pair.js';
import { Rng } from '../../src/engine/rng.js';
import { argmax, GREEDY, sample, softmax, toProbs, type SamplingParams } from '../../src/engine/sampling.js';
import type { PolicySpec } from '../../src/engine/stop-policy.js';
import { planDraftVocab, rowOverVocabulary } from '../../src/engine/vocab-map.js';
import { SpeculativeDecoder } from '../../src/engine/speculative.js';
import { writeFixturePair } from '../../src/testing/decoder-fixture.js';
import { DRAFT_VOCAB_KEY, draftVocabMap } from '../../src/onnx/draft-vocab-graph.js';
import { readTokenMap, TokenCounts, writeTokenMap } from '../../src/onnx/token-map.js';
import { BUNDLED_DRAFT, BUNDLED_HEAD, BUNDLED_TARGET } from '../../src/paths.js';
import type { LlamaPair } from '../../src/bench/llama-pair.js';
import { TextTokenizer } from '../../src/text/tokenizer.js';
import { writeTinyQwen3Pair } from '../support/real-vocab-pair.js';
import { chiSquare } from '../support/statistics.js';

const root = mkdtempSync(join(tmpdir(), 'specd-draft-vocab-'));
after(() => rmSync(root, { recursive: true, force: true }));

describe('token maps', () => {
  test('the most frequent ids, ties by the lower id, special tokens always kept, ascending', () => {
    const counts = new TokenCounts(10);
    counts.add([3, 3, 3, 7, 7, 1, 1, 5]);
    const map = counts.top(4, [9]);
    assert.deepEqual([...map.ids], [1, 3, 7, 9]);
    assert.equal(counts.coverage(map), 7 / 8);
    assert.deepEqual([...counts.top(3).ids], [1, 3, 7]);
    assert.deepEqual([...counts.top(5).ids], [0, 1, 3, 5, 7], 'uncounted ids fill by id');
    assert.throws(() => counts.top(1, [8, 9]), /2 special tokens do not fit a token map of 1/);
    assert.throws(() => counts.add([10]), /token id 10 is outside the vocabulary of 10/);
  });

  test('the file round-trips; bad files are refused naming the file and the problem', () => {
    const file = join(root, 'map.json');
    writeTokenMap(file, { ids: Int32Array.of(2, 5, 9), vocabSize: 10, source: 'test' });
    const read = readTokenMap(file, 10);
    assert.deepEqual([...read.ids], [2, 5, 9]);
    assert.equal(read.source, 'test');
    const bad = (body: string, message: RegExp, vocab = 10) => {
      writeFileSync(file, body);
      assert.throws(() => readTokenMap(file, vocab), (err: Error) => message.test(err.message) && err.message.includes(file));
    };
    writeFileSync(file, '[9, 2, 5]'); // a bare list is read (sorted)
    assert.deepEqual([...readTokenMap(file, 10).ids], [2, 5, 9]);
    bad('{"token_ids": [1, 10]}', /token id 10 is not an id of the draft's vocabulary of 10/);
    bad('{"token_ids": [1, 1.5]}', /token id 1\.5 is not an id/);
    bad('{"token_ids": [4, 4]}', /token id 4 appears twice/);
    bad('{"token_ids": []}', /non-empty "token_ids"/);
    bad('{"ids": [1]}', /non-empty "token_ids"/);
    bad('not json', /not a token map/);
  });
});

describe('a restricted draft at V = 151,936 (Qwen3 tokenizer)', () => {
  let pair: LlamaPair;
  before(() => {
    pair = writeTinyQwen3Pair(join(root, 'qwen3'));
  });

  test("its logits are the full draft's on the kept ids and -Infinity elsewhere", async () => {
    const V = 151_936;
    const keep = Int32Array.from({ length: 20_000 }, (_, i) => (i * 7 + 3) % V).sort();
    const full = await DecoderModel.load(pair.draftDir, { threads: 1 });
    const restricted = await DecoderModel.load(pair.draftDir, { threads: 1, vocabMap: draftVocabMap(V, V, keep), keepGraph: true });
    try {
      assert.equal(restricted.info.vocabSize, V);
      assert.ok(restricted.graphProto!.metadataProps.some((p) => p.key === DRAFT_VOCAB_KEY));
      const prompt = [151644, 872, 198, 9707, 11, 1879, 0, 151645];
      const a = await full.forward(full.newCache(), prompt, 2);
      const b = await restricted.forward(restricted.newCache(), prompt, 2);
      assert.equal(b.length, 2 * V);
      const kept = new Set(keep);
      let worst = 0;
      for (let i = 0; i < b.length; i++) {
        if (kept.has(i % V)) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
        else assert.equal(b[i], -Infinity, `id ${i % V} is not kept`);
      }
      assert.ok(worst < 1e-4, `kept logits differ by ${worst}`);
      // Kept columns alone: the same numbers without the spread.
      const columns = await DecoderModel.load(pair.draftDir, { threads: 1, vocabMap: draftVocabMap(V, V, keep), logitColumns: 'kept' });
      try {
        assert.deepEqual(columns.logitIds, keep);
        assert.equal(columns.info.vocabSize, V);
        const c = await columns.forward(columns.newCache(), prompt, 2);
        assert.equal(c.length, 2 * keep.length);
        for (let r = 0; r < 2; r++) assert.deepEqual(rowOverVocabulary(c.subarray(r * keep.length, (r + 1) * keep.length), keep, V), b.subarray(r * V, (r + 1) * V));
        assert.throws(() => new SpeculativeDecoder(columns), /token map's columns only/);
      } finally {
        await columns.release();
      }
    } finally {
      await full.release();
      await restricted.release();
    }
  });

  test('greedy speculation with a restricted draft equals target-only decoding', async () => {
    const tokenizer = await TextTokenizer.fromDir(pair.targetDir);
    const prompt = tokenizer.encodeChat([{ role: 'user', content: 'Count the primes below 30.' }], { templateVars: { enable_thinking: false } });
    const base = { maxTokens: 32, sampling: GREEDY, eosTokenIds: [] as number[] };
    const target = await ModelPair.load({ target: pair.targetDir, draft: null });
    const none = await target.decoder.start(prompt, { ...base, policy: { policy: 'none' } }).run();
    await target.release();
    // A map holding the first half of the output and 4,000 other ids: candidates are accepted
    // while the target stays in the map, and its tokens outside come from the rejection path.
    const file = join(root, 'qwen3-map.json');
    const ids = new Set([...none.slice(0, 16), ...Array.from({ length: 4000 }, (_, i) => i * 31)]);
    writeTokenMap(file, { ids: Int32Array.from(ids).sort() });
    const models = await ModelPair.load({ target: pair.targetDir, draft: pair.draftDir, threads: 1, speculativeTokenMap: file });
    try {
      assert.equal(models.draft!.info.vocabSize, 151_936);
      for (const policy of [{ policy: 'fixed', k: 4 }, { policy: 'confidence', pMin: 0.01, kMax: 8 }] as PolicySpec[]) {
        const g = models.decoder.start(prompt, { ...base, policy });
        assert.deepEqual(await g.run(), none, policy.policy);
        assert.ok(g.stats.accepted_tokens >= 8, `${policy.policy}: ${g.stats.accepted_tokens} of ${g.stats.draft_tokens} accepted`);
        assert.ok(g.stats.accepted_tokens < g.stats.draft_tokens, `${policy.policy}: tokens outside the map were rejected`);
      }
    } finally {
      await models.release();
    }
  });
});

describe("a restricted draft's kept columns at V = 151,936 (Qwen3 tokenizer)", () => {
  test("sampling with Qwen3's defaults drafts what the full rows draft, seed by seed", async () => {
    const pair = writeTinyQwen3Pair(join(root, 'qwen3-columns'));
    const tokenizer = await TextTokenizer.fromDir(pair.targetDir);
    const prompt = tokenizer.encodeChat([{ role: 'user', content: 'Write a haiku.' }], { templateVars: { enable_thinking: false } });
    const file = join(root, 'qwen3-columns-map.json');
    const keep = Int32Array.from({ length: 32_768 }, (_, i) => i * 4);
    writeTokenMap(file, { ids: keep });
    const models = await ModelPair.load({ target: pair.targetDir, draft: pair.draftDir, head: null, threads: 1, draftThreads: 1, speculativeTokenMap: file });
    const full = await DecoderModel.load(pair.draftDir, { threads: 1, vocabMap: draftVocabMap(151_936, 151_936, keep) });
    try {
      assert.equal(models.draft!.logitIds!.length, 32_768);
      const fullRows = new SpeculativeDecoder(models.target, full);
      let drafted = 0;
      for (let seed = 0; seed < 6; seed++) {
        const opts = { maxTokens: 16, seed, eosTokenIds: [] as number[], sampling: { temperature: 0.6, topK: 20, topP: 0.95 }, policy: { policy: 'fixed', k: 3 } as PolicySpec };
        const kept = models.decoder.start(prompt, opts);
        assert.deepEqual(await kept.run(), await fullRows.start(prompt, opts).run(), `seed ${seed}`);
        drafted += kept.stats.draft_tokens;
      }
      assert.ok(drafted > 0);
    } finally {
      await full.release();
      await models.release();
    }
  });
});

describe('draft and target of different vocab_size, one tokenizer', () => {
  for (const draftVocab of [151_808, 152_064]) {
    test(`a draft of ${draftVocab} ids against a target of 151,936: greedy output equals target-only, candidates accepted`, async () => {
      const pair = writeTinyQwen3Pair(join(root, `sizes-${draftVocab}`), { draftVocab });
      const tokenizer = await TextTokenizer.fromDir(pair.targetDir);
      const plan = await planDraftVocab(pair.targetDir, pair.draftDir, tokenizer);
      assert.deepEqual([plan.map!.draftVocab, plan.map!.outVocab, plan.map!.ids.length], [draftVocab, 151_936, Math.min(draftVocab, 151_936)]);
      const prompt = tokenizer.encodeChat([{ role: 'user', content: 'Name three rivers.' }], { templateVars: { enable_thinking: false } });
      const base = { maxTokens: 24, sampling: GREEDY, eosTokenIds: [] as number[] };
      const models = await ModelPair.load({ target: pair.targetDir, draft: pair.draftDir, threads: 1 });
      try {
        assert.equal(models.draft!.info.vocabSize, 151_936);
        const none = await models.decoder.start(prompt, { ...base, policy: { policy: 'none' } }).run();
        const g = models.decoder.start(prompt, { ...base, policy: { policy: 'fixed', k: 4 } });
        assert.deepEqual(await g.run(), none);
        assert.ok(g.stats.accepted_tokens > g.stats.draft_tokens / 2, `${g.stats.accepted_tokens} of ${g.stats.draft_tokens} accepted`);
        if (draftVocab < 151_936) {
          // An id the draft has no embedding row for (the target's padding) is read as its last id.
          const beyond = await models.draft!.forward(models.draft!.newCache(), [...prompt, 151_900], 1);
          const last = await models.draft!.forward(models.draft!.newCache(), [...prompt, draftVocab - 1], 1);
          assert.deepEqual(beyond, last);
          // Its rows are its own ids' columns: the target's ids past them have q = 0.
          assert.equal(beyond.length, draftVocab);
          assert.deepEqual([models.draft!.logitIds!.length, models.draft!.logitIds!.at(-1)], [draftVocab, draftVocab - 1]);
        }
      } finally {
        await models.release();
      }
    });
  }
});

describe('the one-run draft phase with a restricted draft (bundled draft, 259 ids)', () => {
  test('candidates and q(y) equal step-by-step drafting over the restricted row', async () => {
    const V = 259;
    const keep = Int32Array.from({ length: 120 }, (_, i) => (i * 13 + 5) % V).sort();
    const draft = await DecoderModel.load(BUNDLED_DRAFT, { threads: 1, keepGraph: true, vocabMap: draftVocabMap(V, V, keep) });
    const phase = (await DraftPhase.create(draft))!;
    try {
      assert.ok(phase, 'a restricted in-place draft runs its phase in one run');
      const prompt = Array.from({ length: 40 }, (_, i) => (i * 37 + 11) % 256);
      const stepwise = draft.newCache();
      const oneRun = draft.newCache();
      await draft.forward(stepwise, prompt.slice(0, -1), 0);
      await draft.forward(oneRun, prompt.slice(0, -1), 0);
      const tokens: number[] = [];
      const probs: number[] = [];
      let input = prompt.slice(-1);
      for (let s = 0; s < 6; s++) {
        const row = (await draft.forward(stepwise, input, 1)).slice(-V);
        const y = argmax(row);
        assert.ok(keep.includes(y));
        tokens.push(y);
        probs.push(softmax(row)[y]!);
        input = [y];
      }
      const out = await phase.run(oneRun, prompt.slice(-1), { maxSteps: 6, kMin: 1, threshold: 2, pMin: 0, candidateWeights: new Float32Array(4) });
      assert.deepEqual(out.tokens, tokens);
      out.probs.forEach((p, i) => assert.ok(Math.abs(p - probs[i]!) < 1e-5, `q(y_${i + 1}) ${p} vs ${probs[i]}`));
    } finally {
      await phase?.release();
      await draft.release();
    }
  });

  test('greedy speculation on the bundled pair with a restricted draft (and its acceptance head fused in) equals target-only decoding', async () => {
    const file = join(root, 'bundled-map.json');
    writeTokenMap(file, { ids: Int32Array.from({ length: 150 }, (_, i) => i) });
    const models = await ModelPair.load({ target: BUNDLED_TARGET, draft: BUNDLED_DRAFT, head: BUNDLED_HEAD, threads: 1, speculativeTokenMap: file });
    try {
      assert.ok(models.head && models.headDraft && models.headDraft !== models.draft, 'the head runs fused into a draft of its own');
      assert.equal(models.headDraft.info.vocabSize, 259);
      const prompt = models.tokenizer.encodeChat([{ role: 'user', content: 'What is 12 times 7?' }]);
      const base = { maxTokens: 48, sampling: GREEDY, eosTokenIds: [] as number[] };
      const none = await models.decoder.start(prompt, { ...base, policy: { policy: 'none' } }).run();
      for (const policy of [{ policy: 'fixed', k: 4 }, { policy: 'specdec++', threshold: 0.7, kMin: 1, kMax: 8 }] as PolicySpec[]) {
        const g = models.decoder.start(prompt, { ...base, policy });
        assert.deepEqual(await g.run(), none, policy.policy);
        assert.ok(g.stats.accepted_tokens > 0, policy.policy);
      }
    } finally {
      await models.release();
    }
  });
});

describe('sampled speculation with a restricted draft is distributed as the target (fixture, vocab 12)', () => {
  const VOCAB = 12;
  const PROMPT = [1, 4, 10];
  const GENERATIONS = 8000;
  const KEPT = [0, 2, 4, 6, 8, 10];
  let pair: ModelPair;
  before(async () => {
    const p = writeFixturePair(join(root, 'fixture'), { style: 'llama', vocabSize: VOCAB });
    const file = join(root, 'fixture-map.json');
    writeTokenMap(file, { ids: Int32Array.from(KEPT) });
    pair = await ModelPair.load({ target: p.targetDir, draft: p.draftDir, threads: 1, draftThreads: 1, speculativeTokenMap: file });
    assert.ok(pair.draft!.kvInPlace);
  });
  after(async () => pair?.release());

  /** The target's distribution of the first two tokens, index t1 * V + t2; `within`: renormalised over pairs inside the map (what a rule that never leaves the map would give). */
  async function targetJoint(params: SamplingParams, within = false): Promise<Float64Array> {
    const V = VOCAB;
    const t = pair.target;
    const p1 = toProbs((await t.forward(t.newCache(), PROMPT)).slice(-V), params);
    const joint = new Float64Array(V * V);
    for (let a = 0; a < V; a++) {
      if (p1[a] === 0) continue;
      const p2 = toProbs((await t.forward(t.newCache(), [...PROMPT, a])).slice(-V), params);
      for (let b = 0; b < V; b++) joint[a * V + b] = within && !(KEPT.includes(a) && KEPT.includes(b)) ? 0 : p1[a]! * p2[b]!;
    }
    const sum = joint.reduce((x, y) => x + y, 0);
    return joint.map((x) => x / sum);
  }

  for (const params of [
    { temperature: 1, topK: 0, topP: 1 },
    { temperature: 1.2, topK: 6, topP: 0.95 },
  ]) {
    test(`fixed:2, T=${params.temperature} top_k=${params.topK} top_p=${params.topP}`, async (t) => {
      const counts = new Float64Array(VOCAB * VOCAB);
      let drafted = 0;
      let accepted = 0;
      let outside = 0;
      for (let seed = 0; seed < GENERATIONS; seed++) {
        const g = pair.decoder.start(PROMPT, { maxTokens: 3, sampling: params, seed, policy: { policy: 'fixed', k: 2 }, eosTokenIds: [] });
        const out = await g.run();
        counts[out[0]! * VOCAB + out[1]!]!++;
        if (!KEPT.includes(out[0]!) || !KEPT.includes(out[1]!)) outside++;
        drafted += g.stats.draft_tokens;
        accepted += g.stats.accepted_tokens;
      }
      const fit = chiSquare(counts, await targetJoint(params));
      t.diagnostic(`accepted ${accepted} of ${drafted}, ${outside} outputs leave the map; chi2 ${fit.stat.toFixed(1)}, dof ${fit.dof}, p-value ${fit.pValue.toExponential(2)}`);
      assert.ok(accepted > 0.1 * GENERATIONS && drafted - accepted > 0.1 * GENERATIONS, `both paths run: accepted ${accepted} of ${drafted}`);
      assert.ok(outside > 0.05 * GENERATIONS, `tokens outside the map are emitted (${outside})`);
      assert.equal(fit.impossible, 0);
      assert.ok(fit.pValue > 1e-4, `distributed as the target (p-value ${fit.pValue})`);
      // Control: a rule that keeps the output inside the map would give the target renormalised
      // over the map; the statistic has the power to tell that apart from what was emitted.
      const within = chiSquare(counts, await targetJoint(params, true));
      assert.ok(within.impossible > 0 || within.pValue < 1e-4, `the in-map distribution is rejected (p-value ${within.pValue}, impossible ${within.impossible})`);
    });
  }

  test("a draft returning the map's columns alone drafts what its full rows draft: same outputs, seed by seed", async () => {
    const full = await DecoderModel.load(pair.draft!.info.dir, { threads: 1, vocabMap: draftVocabMap(VOCAB, VOCAB, Int32Array.from(KEPT)) });
    try {
      assert.equal(full.logitIds, undefined);
      assert.deepEqual([...pair.draft!.logitIds!], KEPT);
      const fullRows = new SpeculativeDecoder(pair.target, full);
      const cases = [
        { sampling: GREEDY, policy: { policy: 'fixed', k: 3 } },
        { sampling: { temperature: 1, topK: 0, topP: 1 }, policy: { policy: 'fixed', k: 2 } },
        { sampling: { temperature: 0.8, topK: 5, topP: 0.9 }, policy: { policy: 'fixed', k: 3 } },
        { sampling: { temperature: 1.1, topK: 0, topP: 0.8 }, policy: { policy: 'confidence', pMin: 0.05, kMax: 4 } },
        // Logits processing indexes rows by token id: the kept columns are laid over the vocabulary first.
        { sampling: { temperature: 1, topK: 0, topP: 1 }, policy: { policy: 'fixed', k: 2 }, adjustments: { presencePenalty: 1.5, logitBias: { 4: 3, 3: 2 } } },
      ] as { sampling: SamplingParams; policy: PolicySpec; adjustments?: object }[];
      for (const c of cases) {
        let drafted = 0;
        for (let seed = 0; seed < 40; seed++) {
          const opts = { maxTokens: 12, seed, eosTokenIds: [] as number[], draftPhase: 'per-step' as const, ...c };
          const kept = pair.decoder.start(PROMPT, opts);
          const a = await kept.run();
          const b = await fullRows.start(PROMPT, opts).run();
          assert.deepEqual(a, b, `${JSON.stringify(c)} seed ${seed}`);
          drafted += kept.stats.draft_tokens;
        }
        assert.ok(drafted > 0, JSON.stringify(c));
      }
    } finally {
      await full.release();
    }
  });

  test('the statistic rejects a wrong rule: candidates accepted whenever drafted (q alone)', async () => {
    const params = { temperature: 1, topK: 0, topP: 1 };
    const counts = new Float64Array(VOCAB * VOCAB);
    const d = pair.draft!;
    // What the output would be if every candidate were accepted: two tokens drawn from the restricted q.
    const rng = new Rng(3);
    const row = async (tokens: number[]) => rowOverVocabulary(await d.forward(d.newCache(), tokens, 1), d.logitIds!, VOCAB);
    const q1 = toProbs(await row(PROMPT), params);
    const q2 = new Map<number, Float64Array>();
    for (let n = 0; n < GENERATIONS; n++) {
      const a = sample(q1, rng);
      if (!q2.has(a)) q2.set(a, toProbs(await row([...PROMPT, a]), params));
      counts[a * VOCAB + sample(q2.get(a)!, rng)]!++;
    }
    const fit = chiSquare(counts, await targetJoint(params));
    assert.ok(fit.pValue < 1e-4, `the restricted draft's own distribution is rejected (p-value ${fit.pValue})`);
  });
});
