/**
 * The draft-free policies through the server, with no draft model loaded (`--no-draft`), via
 * the real openai client on a real port: `--policy ngram` as the server's default, `suffix`
 * and knobs through the `speculative` request field; greedy output equals `none`'s, and
 * candidates are drafted and accepted on a prompt whose answer repeats it; bad knobs are
 * OpenAI errors naming the field.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { startServe, type ServeProcess } from '../support/serve-process.js';

const MODEL = 'specd-pair-target';
const NO_EOS = { '256': -100, '258': -100 };
const CODE = 'def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n';
const PROMPT = `Repeat this code exactly.\n${CODE}\nRepeat this code exactly.\n${CODE}`;

interface SpeculativeUsage {
  policy: string;
  draft_tokens: number;
  accepted_tokens: number;
}

describe('draft-free speculation through the server (no draft model)', () => {
  let server: ServeProcess;
  let client: OpenAI;
  before(async () => {
    server = await startServe(['--threads', '1', '--no-draft', '--policy', 'ngram']);
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  after(async () => {
    await server?.stop();
  });

  const complete = (speculative?: Record<string, unknown>) =>
    client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 48, temperature: 0, logit_bias: NO_EOS, ...(speculative ? { speculative } : {}) } as OpenAI.CompletionCreateParamsNonStreaming);
  const usageOf = (r: OpenAI.Completion) => (r.usage as OpenAI.CompletionUsage & { speculative: SpeculativeUsage }).speculative;

  test('greedy output of ngram (the server default) and suffix equals none; candidates are accepted', async () => {
    const none = await complete({ policy: 'none' });
    assert.equal(usageOf(none).draft_tokens, 0);
    for (const speculative of [undefined, { policy: 'suffix' }, { policy: 'ngram', prompt_lookup_min: 3, prompt_lookup_max: 8, num_speculative_tokens: 6 }]) {
      const res = await complete(speculative);
      assert.equal(res.choices[0]!.text, none.choices[0]!.text, JSON.stringify(speculative));
      const spec = usageOf(res);
      assert.equal(spec.policy, speculative?.policy ?? 'ngram');
      assert.ok(spec.draft_tokens > 0 && spec.accepted_tokens > 0, `${JSON.stringify(speculative)}: ${spec.accepted_tokens} of ${spec.draft_tokens}`);
    }
  });

  test('bad knobs are 400s naming the field; a drafting policy without a draft is refused', async () => {
    const fails = (speculative: Record<string, unknown>, param: string) =>
      assert.rejects(complete(speculative), (e: InstanceType<typeof OpenAI.APIError>) => e.status === 400 && (e.error as { param: string }).param === param);
    await fails({ policy: 'ngram', prompt_lookup_max: 0 }, 'speculative.prompt_lookup_max');
    await fails({ policy: 'suffix', suffix_decoding_min_token_prob: 2 }, 'speculative.suffix_decoding_min_token_prob');
    await fails({ policy: 'ngram', k: 3 }, 'speculative.k');
    await fails({ policy: 'fixed', k: 3 }, 'speculative.policy');
  });
});
