/**
 * The draft-free policies through the server, with no draft model loaded (`--no-draft`), via
 * the real openai client on a real port: `--policy ngram` as the server's default, `suffix`
 * and knobs through the `speculative` request field; greedy output equals `none`'s, and
 * candidates are drafted and accepted on a prompt whose answer repeats it; bad knobs are
 * OpenAI errors naming the field. Suffix decoding's global tree is the worker's: a request
 * repeating an earlier one's answer gets it back in long accepted runs.
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
  rounds: number;
  draft_tokens: number;
  accepted_tokens: number;
  methods: { suffix?: { num_drafts: number; num_accepted_tokens: number; num_accepted_tokens_per_pos: number[] } };
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

  test("a finished answer feeds the worker's suffix tree: the same answer again comes in long accepted runs", async (t) => {
    const prompt = 'Write a short story about a lighthouse keeper and a storm.';
    const ask = (speculative: Record<string, unknown>) =>
      client.completions.create({ model: MODEL, prompt, max_tokens: 96, temperature: 0, logit_bias: NO_EOS, speculative } as OpenAI.CompletionCreateParamsNonStreaming);
    // Without a global tree (max_cached_requests 0), then with one: the first answer is its first output.
    const alone = await ask({ policy: 'suffix', suffix_decoding_max_cached_requests: 0 });
    const first = await ask({ policy: 'suffix' });
    const again = await ask({ policy: 'suffix' });
    assert.equal(first.choices[0]!.text, alone.choices[0]!.text);
    assert.equal(again.choices[0]!.text, alone.choices[0]!.text);
    const [a, f, g] = [alone, first, again].map(usageOf);
    const longest = (u: SpeculativeUsage) => u.methods.suffix?.num_accepted_tokens_per_pos.findLastIndex((n) => n > 0) ?? -1;
    t.diagnostic(`rounds for 96 tokens: ${a!.rounds} without a global tree, ${f!.rounds} first, ${g!.rounds} again; longest accepted run ${longest(a!) + 1}, ${longest(f!) + 1}, ${longest(g!) + 1}`);
    assert.ok(g!.rounds * 3 <= a!.rounds, `the repeated answer took ${g!.rounds} rounds, ${a!.rounds} without the cache`);
    assert.ok(longest(g!) + 1 >= 16, `longest accepted run ${longest(g!) + 1}`);
    assert.ok(g!.accepted_tokens >= 0.8 * 96, `${g!.accepted_tokens} of 96 tokens accepted`);
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
