/**
 * A request's sampling settings and logits adjustments for the engine.
 *
 * Precedence (as vLLM): the model's generation_config.json < the request; without either,
 * temperature 1, top_p 1, top_k 0 (off). `top_k` -1 (vLLM's "off") is 0. `n` choices get seeds
 * seed, seed + 1, ... so that each choice is reproducible and they differ.
 */
import type { LogitsAdjustments } from '../engine/logits-processors.js';
import type { SamplingParams } from '../engine/sampling.js';
import { apiErrors } from './errors.js';
import type { PlanFacts } from './plan-context.js';
import type { CommonBody } from './requests.js';
import { given } from './unsupported.js';

/** temperature, top_p and top_k from the request over the model's defaults. */
export function samplingParams(body: Pick<CommonBody, 'temperature' | 'top_p' | 'top_k'>, defaults: PlanFacts['generationDefaults']): SamplingParams {
  const topK = body.top_k ?? defaults.topK ?? 0;
  return { temperature: body.temperature ?? defaults.temperature ?? 1, topP: body.top_p ?? defaults.topP ?? 1, topK: topK < 0 ? 0 : topK };
}

/** The seed of choice `choice` (0-based): the request's seed + choice; undefined without a seed (random). */
export function choiceSeed(body: Pick<CommonBody, 'seed'>, choice: number): number | undefined {
  return given(body.seed) ? body.seed! + choice : undefined;
}

/**
 * presence_penalty, frequency_penalty and logit_bias as the engine's logits processors take them
 * (token ids as numbers); undefined when none changes anything.
 * @param vocabSize the target's vocabulary size, tokens
 * @throws ApiError 400 naming `logit_bias` for a token id outside the vocabulary
 */
export function logitsAdjustments(body: Pick<CommonBody, 'presence_penalty' | 'frequency_penalty' | 'logit_bias'>, vocabSize: number): LogitsAdjustments | undefined {
  const presencePenalty = body.presence_penalty ?? 0;
  const frequencyPenalty = body.frequency_penalty ?? 0;
  const bias = body.logit_bias ?? {};
  for (const id of Object.keys(bias)) {
    if (Number(id) >= vocabSize) throw apiErrors.invalidValue('logit_bias', `Invalid 'logit_bias': token id ${id} is outside the vocabulary (${vocabSize} tokens).`);
  }
  if (presencePenalty === 0 && frequencyPenalty === 0 && Object.keys(bias).length === 0) return undefined;
  return { presencePenalty, frequencyPenalty, logitBias: Object.fromEntries(Object.entries(bias).map(([id, b]) => [Number(id), b])) };
}
