/**
 * The output of a greedy generation is decided token by token, so it is the same under every
 * draft policy and K, streamed or not (bundled specd-pair). For prompts whose greedy text has
 * multi-byte characters and for stop strings taken from that text (one hit by the first token,
 * one completed exactly by the max_tokens-th token, one spanning rounds, one starting with a
 * multi-byte character, two at once, none), every policy's text, tokens, text offsets, finish
 * reason and logprobs equal what the slow reference (test/support/output-oracle.ts) computes
 * from target-only decoding's tokens, and the streamed pieces add up to them.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { TokenLogprob } from '../../src/engine/logprobs.js';
import { ModelPair } from '../../src/pair/model-pair.js';
import { GREEDY } from '../../src/engine/sampling.js';
import { policyLabel, type PolicySpec } from '../../src/engine/stop-policy.js';
import { generateText, type PromptInput, type TextGenerationResult } from '../../src/engine/text-generation.js';
import { oracleOutput } from '../support/output-oracle.js';

const POLICIES: PolicySpec[] = [
  { policy: 'none' },
  ...[1, 2, 3, 4, 8].map((k): PolicySpec => ({ policy: 'fixed', k })),
  { policy: 'confidence', pMin: 0.5, kMax: 16 },
  { policy: 'specdec++', kMin: 1, kMax: 16 },
];
/** Same logprob under every policy, up to float noise (the target scores the rows in passes of different lengths). */
const LOGPROB_TOLERANCE = 1e-3;
const REFERENCE_TOKENS = 64;

const PROMPTS: { name: string; input: PromptInput }[] = [
  { name: 'café chat', input: { messages: [{ role: 'user', content: 'Write the word café and naïve.' }] } },
  { name: 'fox', input: { prompt: 'The quick brown fox' } },
  { name: 'gsm8k', input: { messages: [{ role: 'user', content: 'Natalia sold 48 clips in April and half as many in May. How many clips did she sell altogether?' }] } },
];

let pair: ModelPair;
before(async () => {
  pair = await ModelPair.load({ threads: 2, draftThreads: 1 });
});
after(() => pair?.release());

interface Case {
  name: string;
  maxTokens: number;
  stop: string[];
}

/** Complete text of the first `n` tokens (an incomplete character at the end left out). */
const textOf = (tokens: readonly number[], n: number) => oracleOutput(tokens.slice(0, n), { maxTokens: Infinity, eosTokenIds: [], stop: [] }).text;

/** Stop strings and lengths that exercise each rule on this greedy text. */
function casesFor(tokens: readonly number[]): Case[] {
  const text = textOf(tokens, tokens.length);
  const cases: Case[] = [
    { name: 'no stop', maxTokens: 48, stop: [] },
    { name: 'stop in the first token', maxTokens: 48, stop: [text[0]!] },
    { name: 'stop spanning rounds', maxTokens: 48, stop: [text.slice(8, 20)] },
    { name: 'two stops, one never seen', maxTokens: 48, stop: ['\u0000never', text.slice(15, 18)] },
  ];
  // A stop string completed by exactly the max_tokens-th token (and seen nowhere before it).
  for (let m = 20; m < tokens.length; m++) {
    const before = textOf(tokens, m - 1);
    const upTo = textOf(tokens, m);
    const stop = upTo.slice(-3);
    if (upTo.length > before.length && stop.trim().length === 3 && upTo.indexOf(stop) === upTo.length - 3) {
      cases.push({ name: `stop completed by token ${m} = max_tokens`, maxTokens: m, stop: [stop] });
      break;
    }
  }
  const wide = [...text].findIndex((ch) => Buffer.byteLength(ch) > 1);
  if (wide >= 0) {
    const at = [...text].slice(0, wide).join('').length;
    cases.push({ name: 'stop starting with a multi-byte character', maxTokens: 48, stop: [text.slice(at, at + 3)] });
  }
  return cases;
}

interface Outcome {
  result: TextGenerationResult;
  streamed: { text: string; tokenIds: number[]; textOffsets: number[]; logprobs: TokenLogprob[] };
}

async function run(input: PromptInput, policy: PolicySpec, c: Case): Promise<Outcome> {
  const streamed: Outcome['streamed'] = { text: '', tokenIds: [], textOffsets: [], logprobs: [] };
  const result = await generateText(pair, input, { maxTokens: c.maxTokens, sampling: GREEDY, policy, stop: c.stop, logprobs: 1 }, (d) => {
    streamed.text += d.text;
    streamed.tokenIds.push(...d.tokenIds);
    streamed.textOffsets.push(...d.textOffsets);
    streamed.logprobs.push(...d.logprobs!);
  });
  return { result, streamed };
}

describe('greedy output is decided token by token: identical under every policy, streamed or not', () => {
  for (const prompt of PROMPTS) {
    test(prompt.name, async () => {
      const reference = await generateText(pair, prompt.input, { maxTokens: REFERENCE_TOKENS, sampling: GREEDY, policy: { policy: 'none' } });
      const tokens = reference.finish_reason === 'stop' ? [...reference.token_ids, ...pair.target.info.eosTokenIds.slice(0, 1)] : reference.token_ids;
      const cases = casesFor(tokens);
      if (prompt.name === 'café chat') assert.ok(cases.some((c) => c.name.includes('multi-byte')), `no multi-byte character in ${JSON.stringify(reference.text)}`);
      for (const c of cases) {
        const expected = oracleOutput(tokens, { maxTokens: c.maxTokens, eosTokenIds: pair.target.info.eosTokenIds, stop: c.stop });
        assert.ok(expected.finishReason, `${c.name}: the reference ends the output`);
        if (c.name !== 'no stop') assert.equal(expected.finishReason, 'stop', `${c.name}: the stop string is hit`);
        let baseline: TokenLogprob[] | undefined;
        for (const policy of POLICIES) {
          const label = `${prompt.name}, ${c.name} (${JSON.stringify(c.stop)}, max ${c.maxTokens}), ${policyLabel(policy)}`;
          const { result, streamed } = await run(prompt.input, policy, c);
          assert.deepEqual(
            { text: result.text, tokenIds: result.token_ids, textOffsets: result.text_offsets, finishReason: result.finish_reason },
            expected,
            label,
          );
          assert.deepEqual({ text: streamed.text, tokenIds: streamed.tokenIds, textOffsets: streamed.textOffsets }, { text: result.text, tokenIds: result.token_ids, textOffsets: result.text_offsets }, `${label}: streamed`);
          const logprobs = result.logprobs!;
          assert.deepEqual(logprobs.map((l) => l.token), result.token_ids, `${label}: one logprob per output token`);
          assert.deepEqual(streamed.logprobs, logprobs, `${label}: streamed logprobs`);
          baseline ??= logprobs;
          logprobs.forEach((l, i) => assert.ok(Math.abs(l.logprob - baseline![i]!.logprob) < LOGPROB_TOLERANCE, `${label}: logprob ${i}`));
        }
      }
    });
  }
});
