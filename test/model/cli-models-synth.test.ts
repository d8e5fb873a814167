/**
 * `specd models synth` for Llama-family pairs: a preset's shape with layers and sizes reduced by
 * flags, its real tokenizer and generation defaults, a config.json as the family writes it, a
 * pair that `specd generate` runs with greedy speculation equal to target-only decoding; bad
 * shapes are one line on stderr and exit 1.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { PACKAGE_ROOT } from '../../src/paths.js';

const cli = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');
const root = mkdtempSync(join(tmpdir(), 'specd-synth-'));
after(() => rmSync(root, { recursive: true, force: true }));

const specd = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

describe('specd models synth, Llama family', () => {
  test('a Llama-3.2-1B-shaped pair, reduced: its config, tokenizer and defaults, run by specd generate', () => {
    const out = join(root, 'llama');
    const run = specd('models', 'synth', '--out', out, '--preset', 'llama-3.2-1b', '--layers', '3', '--draft-layers', '1', '--width', '64', '--heads', '4', '--kv-heads', '2', '--head-dim', '16', '--intermediate', '128', '--seed', '5');
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stderr, /wrote .*target \(\d+\.\dM parameters\) and .*draft/);
    const config = JSON.parse(readFileSync(join(out, 'target', 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual(
      [config.model_type, config.vocab_size, config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim, config.tie_word_embeddings, config.rope_theta],
      ['llama', 128256, 3, 64, 4, 2, 16, true, 500000],
    );
    assert.deepEqual(config.rope_scaling, { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 });
    assert.equal(JSON.parse(readFileSync(join(out, 'draft', 'config.json'), 'utf8')).num_hidden_layers, 1);
    const generation = JSON.parse(readFileSync(join(out, 'target', 'generation_config.json'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual([generation.temperature, generation.top_p, generation.eos_token_id], [0.6, 0.9, [128001, 128008, 128009]]);
    const tokenizerConfig = JSON.parse(readFileSync(join(out, 'target', 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(tokenizerConfig.eos_token, '<|eot_id|>');
    const generate = (policy: string) => {
      const gen = specd('generate', '--target', join(out, 'target'), '--draft', join(out, 'draft'), '--prompt', 'Name three rivers.', '--max-tokens', '16', '--temperature', '0', '--policy', policy, '--json', '--threads', '1');
      assert.equal(gen.status, 0, gen.stderr);
      return JSON.parse(gen.stdout) as { token_ids: number[]; stats: { draft_tokens: number; accepted_tokens: number } };
    };
    const none = generate('none');
    const fixed = generate('fixed');
    assert.equal(none.token_ids.length, 16);
    assert.ok(none.token_ids.some((id) => id > 100000), 'ids from the whole 128,256-token vocabulary');
    assert.deepEqual(fixed.token_ids, none.token_ids);
    assert.ok(fixed.stats.accepted_tokens > 0, `${fixed.stats.accepted_tokens} of ${fixed.stats.draft_tokens} accepted`);
  });

  test('--token-frequencies: a text file counted through the tokenizer, the prior in the metadata, draft/token_map.json of the same counts', () => {
    const out = join(root, 'frequencies');
    const corpus = join(root, 'corpus.txt');
    writeFileSync(corpus, 'The cat sat on the mat. The dog sat on the log. '.repeat(20));
    const run = specd('models', 'synth', '--out', out, '--preset', 'qwen3-0.6b', '--layers', '2', '--draft-layers', '1', '--width', '32', '--heads', '2', '--kv-heads', '1', '--head-dim', '16', '--intermediate', '64', '--token-frequencies', corpus, '--frequency-strength', '2', '--token-map-size', '64');
    assert.equal(run.status, 0, run.stderr);
    const map = JSON.parse(readFileSync(join(out, 'draft', 'token_map.json'), 'utf8')) as { token_ids: number[]; vocab_size: number; source: string };
    assert.equal(map.token_ids.length, 64);
    assert.equal(map.vocab_size, 151936);
    assert.match(map.source, /corpus\.txt \(\d+ tokens\)/);
    const counted = new Set(map.token_ids);
    for (const word of ['The', ' cat', ' sat', ' on', ' mat']) {
      const id = (JSON.parse(readFileSync(join(out, 'target', 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } }).model.vocab[word.replace(' ', 'Ġ')];
      assert.ok(id !== undefined && counted.has(id), `${word} (id ${id}) in the map`);
    }
    assert.ok(map.token_ids.includes(151645), '<|im_end|>, a special token, kept');
    const onnx = readFileSync(join(out, 'target', 'onnx', 'model.onnx'));
    assert.ok(onnx.includes('"frequency_strength":2'), 'the strength in the synthetic metadata');
  });

  test('bad shapes and a tokenizer larger than the vocabulary: one line, exit 1', () => {
    const cases: [string[], RegExp][] = [
      [['--preset', 'qwen3-0.6b', '--vocab', '1000'], /the tokenizer in .* has 151669 tokens, more than the vocabulary of 1000/],
      [['--model-type', 'qwen3', '--heads', '5'], /--heads 5 is not a multiple of --kv-heads 8/],
      [['--preset', 'qwen3-0.6b', '--head-dim', '7'], /--head-dim 7 is odd/],
      [['--preset', 'qwen3-0.6b', '--layers', '2', '--draft-layers', '3'], /--draft-layers 3 exceeds --layers 2/],
      [['--vocab', '100'], /--vocab is for Llama-family pairs/],
      [['--preset', 'mistral-7b'], /expected one of qwen3-0.6b, qwen3-1.7b, qwen2.5-0.5b, llama-3.2-1b/],
      [['--preset', 'qwen3-0.6b', '--tokenizer-from', root], /tokenizer.json not found/],
      [['--preset', 'qwen3-0.6b', '--layers', '1', '--draft-layers', '1', '--token-frequencies', 'gsm8k,nope'], /--token-frequencies gsm8k,nope is neither data sets \(gsm8k, humaneval, alpaca\) nor a text file/],
      [['--preset', 'qwen3-0.6b', '--frequency-strength', '2'], /--frequency-strength needs --token-frequencies/],
      [['--token-frequencies', 'gsm8k'], /--token-frequencies is for Llama-family pairs/],
    ];
    for (const [i, [args, message]] of cases.entries()) {
      const run = specd('models', 'synth', '--out', join(root, `bad-${i}`), ...args);
      assert.equal(run.status, 1, args.join(' '));
      assert.match(run.stderr, message);
      assert.equal(run.stderr.trim().split('\n').length, 1, run.stderr);
    }
  });
});
