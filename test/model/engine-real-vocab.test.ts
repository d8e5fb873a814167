/**
 * A pair with a real vocabulary (test/support/real-vocab-pair.ts: Qwen3's tokenizer, chat
 * template and 151,936 tokens, q/k norms, tied embeddings): written as optimum exports it, loaded
 * and rebuilt in place, its in-place logits equal to its exported graph's, and greedy speculation
 * on a chat prompt tokenized by the real tokenizer token for token equal to target-only decoding.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DecoderModel } from '../../src/engine/model.js';
import { ModelPair } from '../../src/pair/model-pair.js';
import { GREEDY } from '../../src/engine/sampling.js';
import type { PolicySpec } from '../../src/engine/stop-policy.js';
import type { LlamaPair } from '../../src/bench/llama-pair.js';
import { TextTokenizer } from '../../src/text/tokenizer.js';
import { TINY_QWEN3_SHAPE, writeTinyQwen3Pair } from '../support/real-vocab-pair.js';
import { maxAbsDiff, speculationPasses } from '../support/tensors.js';

const VOCAB = 151936;
const root = mkdtempSync(join(tmpdir(), 'specd-real-vocab-'));
after(() => rmSync(root, { recursive: true, force: true }));

describe('a real-vocabulary pair (Qwen3 tokenizer, V = 151,936)', () => {
  let pair: LlamaPair;
  before(() => {
    pair = writeTinyQwen3Pair(join(root, 'pair'));
  });

  test('its config and tokenizer are Qwen3\'s', async () => {
    const config = JSON.parse(readFileSync(join(pair.targetDir, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(config.model_type, 'qwen3');
    assert.equal(config.vocab_size, VOCAB);
    assert.equal(config.tie_word_embeddings, true);
    assert.deepEqual([config.num_hidden_layers, JSON.parse(readFileSync(join(pair.draftDir, 'config.json'), 'utf8')).num_hidden_layers], [2, 1]);
    const tokenizer = await TextTokenizer.fromDir(pair.targetDir);
    const ids = tokenizer.encodeChat([{ role: 'user', content: 'Héllo, wörld! 你好' }]);
    assert.equal(tokenizer.decode(ids, { skipSpecialTokens: false }), '<|im_start|>user\nHéllo, wörld! 你好<|im_end|>\n<|im_start|>assistant\n');
    assert.ok(ids.some((id) => id > 150000), 'ChatML control tokens have Qwen3\'s ids (151644, 151645)');
  });

  test('the in-place rebuild (q/k norms) gives the exported graph\'s logits', async () => {
    const prompt = Array.from({ length: 40 }, (_, i) => (i * 7919) % VOCAB);
    const exported = await DecoderModel.load(pair.targetDir, { threads: 1, graph: 'exported' });
    const ref = await speculationPasses(exported, prompt);
    await exported.release();
    const inplace = await DecoderModel.load(pair.targetDir, { threads: 1, graph: 'inplace' });
    assert.ok(inplace.kvInPlace);
    const got = await speculationPasses(inplace, prompt);
    await inplace.release();
    assert.equal(ref[0]!.length, prompt.length * VOCAB);
    got.forEach((g, i) => assert.ok(maxAbsDiff(g, ref[i]!) < 2e-4, `pass ${i}: ${maxAbsDiff(g, ref[i]!)}`));
  });

  test('greedy speculation on a chat prompt equals target-only decoding, and the draft is accepted', async () => {
    const models = await ModelPair.load({ target: pair.targetDir, draft: pair.draftDir, threads: 1, draftThreads: 1 });
    try {
      assert.ok(models.target.kvInPlace && models.draft!.kvInPlace);
      const tokenizer = await TextTokenizer.fromDir(pair.targetDir);
      const prompt = tokenizer.encodeChat([{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Count the primes below 30.' }], { templateVars: { enable_thinking: false } });
      const base = { maxTokens: 40, sampling: GREEDY, eosTokenIds: [] as number[] };
      const none = await models.decoder.start(prompt, { ...base, policy: { policy: 'none' } }).run();
      assert.equal(none.length, 40);
      assert.ok(new Set(none).size > 5, `the output moves: ${none.join(' ')}`);
      for (const policy of [{ policy: 'fixed', k: 4 }, { policy: 'confidence', pMin: 0.01, kMax: 8 }] as PolicySpec[]) {
        const g = models.decoder.start(prompt, { ...base, policy });
        assert.deepEqual(await g.run(), none, policy.policy);
        assert.ok(g.stats.accepted_tokens > g.stats.draft_tokens / 2, `${policy.policy}: ${g.stats.accepted_tokens} of ${g.stats.draft_tokens} accepted`);
      }
    } finally {
      await models.release();
    }
  });

  test('its shape is Qwen3-0.6B\'s but for the sizes reduced', () => {
    assert.deepEqual([TINY_QWEN3_SHAPE.vocab, TINY_QWEN3_SHAPE.ropeTheta, TINY_QWEN3_SHAPE.epsilon, TINY_QWEN3_SHAPE.tiedEmbeddings], [VOCAB, 1e6, 1e-6, true]);
  });
});
