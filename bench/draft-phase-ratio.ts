/**
 * What the draft phase of a round costs per candidate against one draft pass alone. Per prompt,
 * alternately: the prompt decoded with a policy (`specdec++` by default, greedy), its draft
 * phase's milliseconds per drafted candidate (RoundStats draft_ms over draft_tokens: the draft's
 * catching up, its steps, sampling and the head, as the round runs them); then the same prompt
 * fed to the policy's draft model alone and `--max-tokens` one-token passes timed one by one
 * (the same context lengths, nothing else between them). The ratio of the two (pooled over the
 * prompts) is the draft phase's overhead per candidate; 1.0 would be a phase that costs nothing
 * but its passes.
 *
 *   npm run build && node dist/bench/draft-phase-ratio.js [--dataset gsm8k] [--prompts 8]
 *     [--max-tokens 128] [--policy specdec++] [--json FILE]
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { isDataset, loadPrompts } from '../src/bench/datasets.js';
import { machineInfo } from '../src/bench/serve/report.js';
import { parsePolicy } from '../src/engine/policy-registry.js';
import { encodePrompt, generateText } from '../src/engine/text-generation.js';
import { ModelPair } from '../src/pair/model-pair.js';

const { values } = parseArgs({
  options: {
    dataset: { type: 'string', default: 'gsm8k' },
    prompts: { type: 'string', default: '8' },
    'max-tokens': { type: 'string', default: '128' },
    policy: { type: 'string', default: 'specdec++' },
    json: { type: 'string' },
  },
});

function fail(message: string): never {
  process.stderr.write(`draft-phase-ratio: ${message}\n`);
  process.exit(1);
}

const prompts = Number(values.prompts);
const maxTokens = Number(values['max-tokens']);
if (!Number.isInteger(prompts) || prompts < 1) fail(`--prompts must be a positive integer, got ${values.prompts}`);
if (!Number.isInteger(maxTokens) || maxTokens < 1) fail(`--max-tokens must be a positive integer, got ${values['max-tokens']}`);
if (!isDataset(values.dataset)) fail(`unknown --dataset ${values.dataset}`);
const policy = parsePolicy(values.policy);

const pair = await ModelPair.load();
const draft = policy.policy === 'specdec++' ? (pair.headDraft ?? pair.draft) : pair.draft;
if (!draft) fail('the pair has no draft model');
const greedy = { temperature: 0, topK: 0, topP: 1 };
const set = loadPrompts(values.dataset, prompts);

/** Median of `xs`. */
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

let phaseMs = 0;
let drafted = 0;
const aloneMs: number[] = [];
// Warm-up: one short decode and a few passes alone.
await generateText(pair, { messages: set[0]!.messages }, { maxTokens: 8, sampling: greedy, policy });
for (const prompt of set) {
  const r = await generateText(pair, { messages: prompt.messages }, { maxTokens, sampling: greedy, policy });
  phaseMs += r.stats.draft_ms;
  drafted += r.stats.draft_tokens;
  const ids = encodePrompt(pair, { messages: prompt.messages });
  const cache = draft.newCache();
  await draft.forward(cache, ids, 1);
  let token = ids.at(-1)!;
  for (const next of r.token_ids.slice(0, maxTokens)) {
    const start = performance.now();
    await draft.forward(cache, [token], 1);
    aloneMs.push(performance.now() - start);
    token = next;
  }
  cache.release();
}
await pair.release();

const perCandidate = phaseMs / drafted;
const alone = median(aloneMs);
const result = {
  machine: machineInfo(),
  dataset: values.dataset,
  prompts,
  maxTokens,
  policy: values.policy,
  draftedCandidates: drafted,
  phaseMsPerCandidate: perCandidate,
  draftPassAloneMedianMs: alone,
  ratio: perCandidate / alone,
};
process.stdout.write(
  `${values.policy}, ${values.dataset} x ${prompts}: draft phase ${perCandidate.toFixed(3)} ms per candidate (${drafted} candidates), ` +
    `one draft pass alone ${alone.toFixed(3)} ms (median of ${aloneMs.length}): ${result.ratio.toFixed(2)}x\n`,
);
if (values.json) writeFileSync(values.json, `${JSON.stringify(result, null, 2)}\n`);
