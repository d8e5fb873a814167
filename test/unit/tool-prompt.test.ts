/**
 * Tools in the prompt without a model (server/tool-prompt.ts, with plans from tool-plan.ts): the
 * conversation for templates with and without tool support, and special-token text in tools and
 * call arguments kept as text (with the bundled tokenizer here; with Qwen3's 151,936-token one in
 * test/model/tool-prompt-real-tokenizer.test.ts).
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { BUNDLED_TARGET } from '../../src/paths.js';
import { planTools } from '../../src/server/tool-plan.js';
import { toolConversation } from '../../src/server/tool-prompt.js';
import { TextTokenizer } from '../../src/text/tokenizer.js';
import { assertInjectionStaysText } from '../support/tool-injection.js';

describe('the conversation with tools', () => {
  const plan = planTools({ tools: [{ type: 'function', function: { name: 'get_weather', description: 'Weather.', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }] })!;
  const messages = [
    { role: 'user', content: 'Weather in Paris?' },
    { role: 'assistant', content: '', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }] },
    { role: 'tool', content: '18 degrees', tool_call_id: 'call_1' },
  ];

  test('without template support: tools in a system message, calls as the model writes them, results as user turns', () => {
    const { messages: out, templateVars } = toolConversation(messages, plan, false);
    assert.equal(templateVars, undefined);
    assert.equal(out[0]!.role, 'system');
    assert.match(out[0]!.content, /<tools>\n\{"name":"get_weather","description":"Weather.","parameters":/);
    assert.equal(out[2]!.content, '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>');
    assert.deepEqual(out[3], { role: 'user', content: '<tool_response>\n18 degrees\n</tool_response>' });
  });

  test('a template that reads tools gets them, and the calls with parsed arguments', () => {
    const root = mkdtempSync(join(tmpdir(), 'specd-tools-'));
    after(() => rmSync(root, { recursive: true, force: true }));
    cpSync(BUNDLED_TARGET, root, { recursive: true });
    const template =
      "{% if tools %}{{ '<|im_start|>system\\n' }}{% for t in tools %}{{ t.function.name + ': ' + t.function.description + '\\n' }}{% endfor %}{{ '<|im_end|>\\n' }}{% endif %}" +
      "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content }}{% if m.tool_calls %}{% for c in m.tool_calls %}{{ 'CALL ' + c.function.name + ' city=' + c.function.arguments.city }}{% endfor %}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}" +
      "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    const config = { ...JSON.parse(readFileSync(join(BUNDLED_TARGET, 'tokenizer_config.json'), 'utf8')), chat_template: template };
    writeFileSync(join(root, 'tokenizer_config.json'), JSON.stringify(config));
    return TextTokenizer.fromDir(root).then((tokenizer) => {
      assert.equal(tokenizer.templateUsesTools, true);
      const conversation = toolConversation(messages, plan, tokenizer.templateUsesTools);
      const rendered = tokenizer.renderChat(conversation.messages, { templateVars: conversation.templateVars });
      assert.match(rendered, /^<\|im_start\|>system\nget_weather: Weather\.\n/);
      assert.match(rendered, /CALL get_weather city=Paris/);
      assert.match(rendered, /<\|im_start\|>tool\n18 degrees/);
    });
  });
});

describe('special-token text through tools stays text', () => {
  test("the bundled pair's tokenizer with a template that prints tools and call arguments", async () => {
    const root = mkdtempSync(join(tmpdir(), 'specd-tools-inject-'));
    after(() => rmSync(root, { recursive: true, force: true }));
    cpSync(BUNDLED_TARGET, root, { recursive: true });
    const template =
      "{% if tools %}{{ '<|im_start|>system\\n' }}{% for t in tools %}{{ t | tojson }}{% endfor %}{{ '<|im_end|>\\n' }}{% endif %}" +
      "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content }}{% if m.tool_calls %}{% for c in m.tool_calls %}{{ c.function.arguments | tojson }}{% endfor %}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}" +
      "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    const config = { ...JSON.parse(readFileSync(join(BUNDLED_TARGET, 'tokenizer_config.json'), 'utf8')), chat_template: template };
    writeFileSync(join(root, 'tokenizer_config.json'), JSON.stringify(config));
    const tok = await TextTokenizer.fromDir(root);
    const imEnd = tok.idOf('<|im_end|>');
    assert.ok(imEnd !== undefined && tok.specialTokenIds.has(imEnd), 'the bundled tokenizer has <|im_end|> as a special token');
    assertInjectionStaysText(tok);
  });
});
