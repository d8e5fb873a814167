/**
 * JSON schemas of the request bodies (validated by fastify's ajv before a handler runs; see
 * schema-errors.ts for how failures become OpenAI-shaped 400s naming the parameter).
 *
 * The schemas check types, required fields and ranges. What depends on the model or on several
 * fields together (context length, token ids within the vocabulary, stream_options without
 * stream, fields specd cannot honour) is checked in planning (plan.ts). Fields not listed here are
 * ignored, as OpenAI's API does. Most optional fields accept `null` (= absent), as in
 * OpenAI's specification. A `description` on an `anyOf` is the "expected ..." text of its error.
 */
import { MAX_TOP_LOGPROBS } from '../engine/logprobs.js';
import { speculativeSchemaProperties } from './speculation.js';

/** Most choices one request may ask for (`n`, times the prompts of a /v1/completions batch). */
export const MAX_CHOICES = 16;
/** Most messages per chat request. */
export const MAX_MESSAGES = 2048;
/** Most stop strings per request. */
export const MAX_STOP_STRINGS = 16;
/** Most alternatives /v1/completions' integer `logprobs` may ask for. */
export const MAX_COMPLETION_LOGPROBS = MAX_TOP_LOGPROBS;

const nullable = (type: string) => [type, 'null'];
const int = (minimum: number, maximum?: number) => ({ type: nullable('integer'), minimum, ...(maximum !== undefined ? { maximum } : {}) });
const num = (minimum: number, maximum: number) => ({ type: nullable('number'), minimum, maximum });
const bool = { type: nullable('boolean') };
const str = { type: nullable('string') };

const stop = {
  description: 'a string or an array of strings',
  anyOf: [{ type: 'string' }, { type: 'null' }, { type: 'array', maxItems: MAX_STOP_STRINGS, items: { type: 'string' } }],
};

/** The `speculative` extension: overrides the server's draft policy for this request. */
const speculative = {
  type: nullable('object'),
  additionalProperties: false,
  // `policy` and every knob of the policy registry (engine/policy-registry.ts), typed.
  properties: speculativeSchemaProperties(),
};

/** Sampling and generation fields shared by both endpoints. */
const common = {
  model: str,
  stream: bool,
  stream_options: {
    type: nullable('object'),
    properties: { include_usage: bool, continuous_usage_stats: bool },
  },
  max_tokens: int(1),
  temperature: num(0, 2),
  /** 0 keeps only the most likely token (OpenAI accepts 0 to 1). */
  top_p: num(0, 1),
  /** vLLM's extension; -1 or 0: off. */
  top_k: int(-1),
  seed: int(Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER),
  stop,
  n: int(1, MAX_CHOICES),
  presence_penalty: num(-2, 2),
  frequency_penalty: num(-2, 2),
  logit_bias: {
    type: nullable('object'),
    propertyNames: { pattern: '^[0-9]+$' },
    additionalProperties: { type: 'number', minimum: -100, maximum: 100 },
  },
  user: str,
  /** vLLM's extension: EOS tokens do not end the generation. */
  ignore_eos: bool,
  speculative,
  /** Structured outputs; the value is checked in response-format.ts. */
  response_format: { type: nullable('object') },
};

const contentPart = {
  type: 'object',
  required: ['type'],
  properties: { type: { type: 'string' }, text: { type: 'string' } },
};

const message = {
  type: 'object',
  required: ['role'],
  properties: {
    role: { type: 'string' },
    content: {
      description: 'a string or an array of content parts',
      anyOf: [{ type: 'string' }, { type: 'null' }, { type: 'array', items: contentPart }],
    },
    name: { type: 'string' },
  },
};

export const chatCompletionBodySchema = {
  type: 'object',
  required: ['messages'],
  properties: {
    ...common,
    messages: { type: 'array', minItems: 1, maxItems: MAX_MESSAGES, items: message },
    max_completion_tokens: int(1),
    logprobs: bool,
    top_logprobs: int(0, MAX_TOP_LOGPROBS),
    /** Function tools; checked in tool-plan.ts. */
    tools: { type: nullable('array'), items: { type: 'object' } },
    chat_template_kwargs: { type: nullable('object') },
    tool_choice: { description: "'none', 'auto', 'required' or an object naming a function", anyOf: [{ type: 'string' }, { type: 'object' }, { type: 'null' }] },
    parallel_tool_calls: bool,
  },
} as const;

const tokenIds = { type: 'array', minItems: 1, items: { type: 'integer' } };

export const completionBodySchema = {
  type: 'object',
  required: ['prompt'],
  properties: {
    ...common,
    prompt: {
      description: 'a string, an array of strings, an array of token ids or an array of arrays of token ids',
      anyOf: [
        { type: 'string' },
        { type: 'array', minItems: 1, items: { type: 'string' } },
        tokenIds,
        { type: 'array', minItems: 1, items: tokenIds },
      ],
    },
    logprobs: int(0, MAX_COMPLETION_LOGPROBS),
    echo: bool,
    suffix: str,
    best_of: int(1),
  },
} as const;

const inputItem = {
  type: 'object',
  properties: {
    type: { type: 'string' },
    role: { type: 'string' },
    content: {
      description: 'a string or an array of content parts',
      anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'object', required: ['type'], properties: { type: { type: 'string' }, text: { type: 'string' } } } }],
    },
  },
};

/** POST /v1/responses (OpenAI's Responses API; responses-api.ts checks what needs the model). */
export const responsesBodySchema = {
  type: 'object',
  properties: {
    model: str,
    input: { description: 'a string or an array of input items', anyOf: [{ type: 'string' }, { type: 'array', maxItems: MAX_MESSAGES, items: inputItem }] },
    instructions: str,
    max_output_tokens: int(1),
    temperature: num(0, 2),
    top_p: common.top_p,
    top_logprobs: int(0, MAX_TOP_LOGPROBS),
    include: { type: nullable('array'), items: { type: 'string' } },
    stream: bool,
    stream_options: { type: nullable('object') },
    store: bool,
    background: bool,
    previous_response_id: str,
    metadata: { type: nullable('object'), maxProperties: 16, additionalProperties: { type: 'string', maxLength: 512 } },
    parallel_tool_calls: bool,
    max_tool_calls: int(1),
    tools: { type: nullable('array') },
    text: { type: nullable('object'), properties: { format: { type: nullable('object'), properties: { type: { type: 'string' } } } } },
    reasoning: { type: nullable('object') },
    truncation: { anyOf: [{ type: 'null' }, { type: 'string', enum: ['auto', 'disabled'] }], description: "'auto' or 'disabled'" },
    user: str,
    safety_identifier: str,
    prompt_cache_key: str,
    service_tier: str,
    top_k: common.top_k,
    seed: common.seed,
    speculative,
  },
} as const;

/** POST /tokenize (vLLM's): a prompt, or a chat. */
export const tokenizeBodySchema = {
  type: 'object',
  properties: {
    model: str,
    prompt: { type: 'string' },
    messages: { type: 'array', minItems: 1, maxItems: MAX_MESSAGES, items: message },
    add_generation_prompt: bool,
    add_special_tokens: bool,
    return_token_strs: bool,
  },
} as const;

/** POST /detokenize (vLLM's). */
export const detokenizeBodySchema = {
  type: 'object',
  required: ['tokens'],
  properties: { model: str, tokens: { type: 'array', items: { type: 'integer' } } },
} as const;
