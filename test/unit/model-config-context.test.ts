/** A config's context (max_position_embeddings / n_positions) beyond what specd can hold is refused when the model directory is read. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ModelLoadError } from '../../src/errors.js';
import { MAX_CONTEXT, normaliseConfig } from '../../src/engine/model-dir.js';

describe('the context a config declares', () => {
  const llama = { model_type: 'llama', vocab_size: 128256, hidden_size: 2048, num_attention_heads: 32, num_key_value_heads: 8, num_hidden_layers: 16 };

  test('a real long context is read as it is', () => {
    assert.equal(normaliseConfig({ ...llama, max_position_embeddings: 131072 }).maxPositions, 131072);
    assert.equal(normaliseConfig({ ...llama, max_position_embeddings: MAX_CONTEXT }).maxPositions, MAX_CONTEXT);
  });

  for (const [field, value] of [['max_position_embeddings', 1e12], ['n_positions', 1e12], ['max_position_embeddings', MAX_CONTEXT + 1]] as const) {
    test(`${field}: ${value} is refused naming the file and the field`, () => {
      assert.throws(
        () => normaliseConfig({ ...llama, [field]: value }, '/models/x/config.json'),
        (err: unknown) => err instanceof ModelLoadError && /^\/models\/x\/config\.json: a context of \d+ positions \(max_position_embeddings \/ n_positions\) is beyond/.test(err.message) && !err.message.includes('\n'),
      );
    });
  }
});
