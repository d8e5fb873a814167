/** The draft's intra-op threads when none are asked for: 1 for a small draft, the target's for one whose products are large (src/pair/draft-threads.ts). */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { BUNDLED_DRAFT } from '../../src/paths.js';
import { defaultDraftThreads, macsPerToken, PARALLEL_DRAFT_MACS } from '../../src/pair/draft-threads.js';

describe('draft threads by the draft multiply-adds per token', () => {
  const root = mkdtempSync(join(tmpdir(), 'specd-draft-threads-'));
  after(() => rmSync(root, { recursive: true, force: true }));
  const write = (name: string, config: Record<string, unknown>) => {
    const dir = join(root, name);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
    return dir;
  };
  // Qwen3-0.6B's widths with 2 blocks (specd models synth --preset qwen3-0.6b --draft-layers 2).
  const qwen3Draft = write('qwen3', {
    model_type: 'qwen3', vocab_size: 151936, hidden_size: 1024, intermediate_size: 3072, num_hidden_layers: 2,
    num_attention_heads: 16, num_key_value_heads: 8, head_dim: 128,
  });

  test('the bundled GPT-2 draft: 2 blocks of width 128 (MLP 512), a 259-column lm_head', () => {
    // 2 x (2 x 128 x 4 x 32 (q, out) + 2 x 128 x 4 x 32 (k, v) + 2 x 128 x 512) + 128 x 259
    assert.equal(macsPerToken(BUNDLED_DRAFT), 426_368);
    assert.equal(defaultDraftThreads(BUNDLED_DRAFT, 2), 1);
  });

  test('a Qwen3-0.6B-shaped 2-block draft: its parameters with the full lm_head, the map cuts the lm_head term', () => {
    // Per block 2 x 1024 x 2048 + 2 x 1024 x 1024 + 3 x 1024 x 3072 = 15,728,640.
    assert.equal(macsPerToken(qwen3Draft), 2 * 15_728_640 + 1024 * 151_936);
    assert.equal(macsPerToken(qwen3Draft, 32_768), 2 * 15_728_640 + 1024 * 32_768);
    assert.equal(defaultDraftThreads(qwen3Draft, 2, 32_768), 2);
    assert.equal(defaultDraftThreads(qwen3Draft, 16), 16);
  });

  test('a small real-vocabulary draft restricted to a map stays on one thread; its full lm_head does not', () => {
    const small = write('small', {
      model_type: 'qwen3', vocab_size: 151936, hidden_size: 256, intermediate_size: 768, num_hidden_layers: 1,
      num_attention_heads: 4, num_key_value_heads: 2, head_dim: 64,
    });
    assert.ok(macsPerToken(small, 32_768) < PARALLEL_DRAFT_MACS);
    assert.equal(defaultDraftThreads(small, 2, 32_768), 1);
    assert.equal(defaultDraftThreads(small, 2), 2);
  });

  test('a config without its widths counts nothing and keeps one thread', () => {
    const bare = write('bare', { model_type: 'llama', vocab_size: 32000 });
    assert.equal(macsPerToken(bare), 0);
    assert.equal(defaultDraftThreads(bare, 8), 1);
  });
});
