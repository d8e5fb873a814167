/**
 * Planning without a model or a worker: OpenAI requests (chat, completions, responses) planned
 * against fake model facts, checked field by field, and the plan's requests turned into the
 * engine's arguments by the worker's one conversion. Runs in about a second.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BatchScheduler } from '../../src/engine/scheduler.js';
import { parsePolicy, type PolicySpec } from '../../src/engine/policy-registry.js';
import type { ChatMessage, ChatOptions } from '../../src/text/tokenizer.js';
import { ApiError } from '../../src/server/errors.js';
import { engineArguments } from '../../src/server/generate-options.js';
import { type ApiRequest, plan, type PlanContext } from '../../src/server/plan.js';
import type { PlanFacts, PlanTokenizer } from '../../src/server/plan-context.js';
import type { GenerationRequest } from '../../src/server/protocol.js';

const VOCAB = 200;
const CONTEXT = 64;
/** Token ids the fake chat template gives each role's turn, and the assistant's opener. */
const ROLE_IDS: Record<string, number> = { system: 190, user: 191, assistant: 192, tool: 193 };
const GENERATION_PROMPT = 199;

/** One token per character (its code modulo the vocabulary); a chat is [role id, content tokens...] per message, then the opener. */
class FakeTokenizer implements PlanTokenizer {
  readonly hasChatTemplate: boolean;
  readonly templateUsesTools = false;
  /** Every chat rendered, with its options: what the planner asked the template for. */
  readonly chats: { messages: readonly ChatMessage[]; opts: ChatOptions }[] = [];
  constructor(hasChatTemplate = true) {
    this.hasChatTemplate = hasChatTemplate;
  }
  encode(text: string): number[] {
    return [...text].map((c) => c.codePointAt(0)! % 180);
  }
  encodeChat(messages: readonly ChatMessage[], opts: ChatOptions = {}): number[] {
    this.chats.push({ messages, opts });
    const vars = opts.templateVars ? this.encode(JSON.stringify(opts.templateVars)) : [];
    return [...vars, ...messages.flatMap((m) => [ROLE_IDS[m.role]!, ...this.encode(m.content)]), GENERATION_PROMPT];
  }
}

function context(over: { facts?: Partial<PlanFacts>; policy?: PolicySpec; hasHead?: boolean } = {}): PlanContext & { facts: { tokenizer: FakeTokenizer } } {
  const facts = {
    name: 'fake-model',
    tokenizer: new FakeTokenizer(),
    contextLength: CONTEXT,
    maxTokenChars: 4,
    vocabSize: VOCAB,
    generationDefaults: { temperature: 0.6, topP: 0.9 },
    hasDraft: true,
    ...over.facts,
  } as PlanFacts & { tokenizer: FakeTokenizer };
  return { facts, defaultPolicy: over.policy ?? parsePolicy('fixed:4'), hasHead: over.hasHead ?? true };
}

const chat = (body: Record<string, unknown>): ApiRequest => ({ endpoint: 'chat.completions', body: { messages: [{ role: 'user', content: 'hi' }], ...body } as never });
const completion = (body: Record<string, unknown>): ApiRequest => ({ endpoint: 'completions', body: { prompt: 'abc', ...body } as never });
const responses = (body: Record<string, unknown>): ApiRequest => ({ endpoint: 'responses', body: { input: 'hi', ...body } as never });

/** A 4xx naming `param` (and `code` when given). */
const refused = (param: string, code?: string, status = 400) => (e: unknown) => e instanceof ApiError && e.status === status && e.param === param && (code === undefined || e.code === code);

describe('chat completions', () => {
  test('the prompt is the rendered chat; sampling from the model defaults under the request', () => {
    const ctx = context();
    const out = plan(chat({ messages: [{ role: 'developer', content: 'be brief' }, { role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] }], top_p: 0.5 }), ctx);
    const [r] = out.requests;
    assert.deepEqual(ctx.facts.tokenizer.chats[0]!.messages, [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'a\nb' }]);
    assert.deepEqual(r!.promptIds, [190, ...ctx.facts.tokenizer.encode('be brief'), 191, ...ctx.facts.tokenizer.encode('a\nb'), GENERATION_PROMPT]);
    assert.equal(out.promptTokens, r!.promptIds.length);
    assert.deepEqual(r!.sampling, { temperature: 0.6, topP: 0.5, topK: 0 });
    assert.equal(r!.maxTokens, CONTEXT - r!.promptIds.length, 'no max_tokens: what the context leaves');
    assert.equal(out.model, 'fake-model');
    assert.equal(out.policy, 'fixed:4');
    assert.equal(r!.ignoreEos, false);
    assert.equal(r!.seed, undefined);
    assert.equal(r!.adjustments, undefined);
  });

  test('n choices are seeded seed, seed + 1, ...; stop, logprobs, ignore_eos, penalties and bias reach every request', () => {
    const out = plan(chat({ n: 3, seed: 7, stop: 'END', logprobs: true, top_logprobs: 2, ignore_eos: true, presence_penalty: 0.5, logit_bias: { '5': -100 }, max_completion_tokens: 9, top_k: -1 }), context());
    assert.deepEqual(out.requests.map((r) => r.seed), [7, 8, 9]);
    for (const r of out.requests) {
      assert.deepEqual(r.stop, ['END']);
      assert.equal(r.logprobs, 2);
      assert.equal(r.ignoreEos, true);
      assert.equal(r.maxTokens, 9);
      assert.equal(r.sampling.topK, 0, 'top_k -1 is off');
      assert.deepEqual(r.adjustments, { presencePenalty: 0.5, frequencyPenalty: 0, logitBias: { 5: -100 } });
    }
    assert.equal(out.logprobs, 2);
  });

  test('the output length against the context names the parameter that set it', () => {
    assert.throws(() => plan(chat({ max_tokens: CONTEXT }), context()), refused('messages', 'context_length_exceeded'));
    assert.throws(() => plan(chat({ messages: [{ role: 'user', content: 'x'.repeat(CONTEXT) }] }), context()), refused('messages', 'context_length_exceeded'));
    assert.throws(() => plan(chat({ messages: [{ role: 'user', content: 'x'.repeat(CONTEXT * 4 * 4 + 1) }] }), context()), refused('messages'), 'far too long: refused before tokenizing');
    const unbounded = plan(chat({}), context({ facts: { contextLength: Infinity } }));
    assert.equal(unbounded.requests[0]!.maxTokens, 4096, 'no context: MAX_TOKENS_WITHOUT_CONTEXT');
  });

  test('response_format and tools become the grammar, with the param it came from', () => {
    const json = plan(chat({ response_format: { type: 'json_object' } }), context());
    assert.deepEqual(json.requests[0]!.grammar, { type: 'json_object' });
    assert.equal(json.requests[0]!.grammarParam, 'response_format');
    const ctx = context({ facts: { contextLength: 4096 } });
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
    const withTools = plan(chat({ tools, tool_choice: 'required' }), ctx);
    assert.equal(withTools.tools?.mode, 'required');
    assert.ok(withTools.requests[0]!.grammar, 'a tool-call grammar');
    assert.equal(withTools.requests[0]!.grammarParam, 'tools');
    assert.match(ctx.facts.tokenizer.chats[0]!.messages.map((m) => m.content).join('\n'), /get_weather/, 'the tools are in the prompt');
    const none = plan(chat({ tools, tool_choice: 'none' }), ctx);
    assert.equal(none.tools, undefined);
    assert.equal(none.requests[0]!.grammar, undefined);
    assert.throws(() => plan(chat({ tools, response_format: { type: 'json_object' } }), ctx), refused('response_format', 'unsupported_parameter'));
  });

  test('a response format carries only the fields OpenAI defines, vLLM\'s structured-output fields and malformed tools are refused: nothing is dropped unconstrained', () => {
    const schema = { type: 'string' };
    assert.throws(() => plan(chat({ response_format: { type: 'json_schema', json_schema: { name: 'a', schema }, grammar: 'root ::= "a"' } }), context()), refused('response_format.grammar', 'unsupported_parameter'));
    assert.throws(() => plan(chat({ response_format: { type: 'json_object', schema } }), context()), refused('response_format.schema', 'unsupported_parameter'));
    assert.throws(() => plan(chat({ response_format: { type: 'json_schema', json_schema: { name: 'a', schema, regex: 'a' } } }), context()), refused('response_format.json_schema.regex', 'unsupported_parameter'));
    for (const field of ['guided_json', 'guided_regex', 'guided_choice', 'guided_grammar', 'structured_outputs']) {
      assert.throws(() => plan(chat({ [field]: { type: 'string' } }), context()), refused(field, 'unsupported_parameter'));
      assert.throws(() => plan(completion({ [field]: 'a' }), context()), refused(field, 'unsupported_parameter'));
    }
    assert.throws(() => plan(responses({ text: { format: { type: 'json_schema', name: 'a', schema, grammar: 'root ::= "a"' } } }), context()), refused('text.format.grammar', 'unsupported_parameter'));
    // A tool's arguments are an object; its strict flag a boolean (not dropped when it is not one).
    assert.throws(() => plan(chat({ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'string' } } }] }), context()), refused('tools[0].function.parameters', 'invalid_function_parameters'));
    assert.throws(() => plan(responses({ tools: [{ type: 'function', name: 'f', parameters: { type: 'array' } }] }), context()), refused('tools[0].parameters', 'invalid_function_parameters'));
    assert.throws(() => plan(responses({ tools: [{ type: 'function', name: 'f', strict: 'yes' }] }), context()), refused('tools[0].strict', 'invalid_type'));
    // What OpenAI defines still plans.
    const full = plan(chat({ response_format: { type: 'json_schema', json_schema: { name: 'a', description: 'd', strict: true, schema } } }), context());
    assert.equal(full.requests[0]!.grammarParam, 'response_format.json_schema.schema');
    const text = plan(responses({ text: { format: { type: 'json_schema', name: 'a', description: 'd', strict: true, schema } } }), context());
    assert.equal(text.requests[0]!.grammarParam, 'text.format.schema');
    assert.equal(plan(responses({ text: { format: { type: 'json_object' } } }), context()).requests[0]!.grammarParam, 'text.format');
  });

  test('refusals name the field', () => {
    assert.throws(() => plan(chat({ model: 'other' }), context()), refused('model', 'model_not_found', 404));
    assert.throws(() => plan(chat({ audio: { voice: 'x' } }), context()), refused('audio', 'unsupported_parameter'));
    assert.throws(() => plan(chat({ stream_options: { include_usage: true } }), context()), refused('stream_options'));
    assert.throws(() => plan(chat({ top_logprobs: 2 }), context()), refused('top_logprobs'));
    assert.throws(() => plan(chat({ logit_bias: { [String(VOCAB)]: 1 } }), context()), refused('logit_bias'));
    assert.throws(() => plan(chat({ messages: [{ role: 'robot', content: 'x' }] }), context()), refused('messages[0].role'));
    assert.throws(() => plan(chat({ messages: [{ role: 'user', content: [{ type: 'image_url' }] }] }), context()), refused('messages[0].content[0].type', 'unsupported_parameter'));
    assert.throws(() => plan(chat({}), context({ facts: { tokenizer: new FakeTokenizer(false) } })), refused('messages', 'no_chat_template'));
  });
});

describe('the draft policy', () => {
  test('the speculative field over the server default, through the registry', () => {
    assert.deepEqual(plan(chat({}), context()).requests[0]!.policy, parsePolicy('fixed:4'));
    assert.deepEqual(plan(chat({ speculative: { k: 2 } }), context()).requests[0]!.policy, parsePolicy('fixed:2'));
    const out = plan(chat({ speculative: { policy: 'confidence', p_min: 0.3 } }), context());
    assert.equal(out.policy, 'confidence:0.3');
    assert.throws(() => plan(chat({ speculative: { policy: 'fixed', k: 40 } }), context()), refused('speculative.k'));
  });

  test('a policy needing a model the server lacks is refused; draft-free policies need none', () => {
    const noDraft = context({ facts: { hasDraft: false }, policy: { policy: 'none' } });
    assert.throws(() => plan(chat({ speculative: { policy: 'fixed' } }), noDraft), refused('speculative.policy'));
    assert.equal(plan(chat({ speculative: { policy: 'ngram' } }), noDraft).policy, 'ngram');
    assert.throws(() => plan(chat({ speculative: { policy: 'specdec++' } }), context({ hasHead: false })), refused('speculative.policy'));
    assert.equal(plan(chat({ speculative: { policy: 'specdec++' } }), context({ hasHead: undefined })).policy, 'specdec++', 'while loading: the engine answers');
  });
});

describe('text completions', () => {
  test('prompts times n, in order; 16 tokens by default', () => {
    const ctx = context();
    const out = plan(completion({ prompt: ['ab', [5, 6, 7]], n: 2, seed: 1 }), ctx);
    assert.deepEqual(out.requests.map((r) => r.promptIds), [ctx.facts.tokenizer.encode('ab'), ctx.facts.tokenizer.encode('ab'), [5, 6, 7], [5, 6, 7]]);
    assert.deepEqual(out.requests.map((r) => r.seed), [1, 2, 3, 4]);
    assert.equal(out.promptTokens, 5, 'each prompt once, not per choice');
    assert.ok(out.requests.every((r) => r.maxTokens === 16));
  });

  test('refusals name the prompt', () => {
    assert.throws(() => plan(completion({ prompt: [1, VOCAB] }), context()), refused('prompt'));
    assert.throws(() => plan(completion({ prompt: ['a', ''] }), context()), refused('prompt[1]'));
    assert.throws(() => plan(completion({ prompt: ['a', 'b'], n: 9 }), context()), refused('prompt'));
    assert.throws(() => plan(completion({ echo: true }), context()), refused('echo', 'unsupported_parameter'));
    assert.throws(() => plan(completion({ max_tokens: CONTEXT }), context()), refused('prompt', 'context_length_exceeded'));
  });
});

describe('responses', () => {
  test('instructions and input as a chat; max_output_tokens; refusals name input', () => {
    const ctx = context();
    const out = plan(responses({ instructions: 'be brief', max_output_tokens: 5, temperature: 0 }), ctx);
    assert.deepEqual(ctx.facts.tokenizer.chats[0]!.messages, [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hi' }]);
    assert.equal(out.requests[0]!.maxTokens, 5);
    assert.equal(out.requests[0]!.sampling.temperature, 0);
    assert.throws(() => plan(responses({ max_output_tokens: CONTEXT }), context()), refused('input', 'context_length_exceeded'));
    assert.throws(() => plan(responses({ previous_response_id: 'resp_1' }), context()), refused('previous_response_id', 'unsupported_parameter'));
  });
});

describe('the plan is data', () => {
  test('the same request plans the same, leaves the body as it was, and survives structuredClone (it is posted to a worker)', () => {
    const body = { messages: [{ role: 'user', content: 'hi' }], n: 2, seed: 3, logit_bias: { '4': 2 }, speculative: { k: 3 }, response_format: { type: 'json_object' } };
    const frozen = JSON.stringify(body);
    const a = plan({ endpoint: 'chat.completions', body: body as never }, context());
    const b = plan({ endpoint: 'chat.completions', body: body as never }, context());
    assert.deepEqual(a, b);
    assert.equal(JSON.stringify(body), frozen);
    assert.deepEqual(structuredClone(a), a);
  });
});

describe('the worker\'s one conversion into engine options', () => {
  const request: GenerationRequest = {
    promptIds: [1, 2, 3],
    maxTokens: 5,
    sampling: { temperature: 0.7, topP: 0.9, topK: 3 },
    seed: 11,
    policy: parsePolicy('fixed:2'),
    stop: ['\n'],
    adjustments: { presencePenalty: 0.1, frequencyPenalty: 0, logitBias: { 4: 1 } },
    logprobs: 2,
    ignoreEos: true,
    grammar: { type: 'json_object' },
    grammarParam: 'response_format',
  };

  test('every field reaches the engine under its name; ignore_eos as no EOS ids; the grammar as the compiled constraint', () => {
    const scheduler = new BatchScheduler({ maxBatchTokens: 256 });
    const signal = new AbortController().signal;
    const { input, options } = engineArguments(request, { signal, scheduler });
    assert.deepEqual(input, { tokenIds: [1, 2, 3] });
    assert.deepEqual(options, {
      maxTokens: 5,
      sampling: request.sampling,
      seed: 11,
      policy: request.policy,
      stop: ['\n'],
      adjustments: request.adjustments,
      logprobs: 2,
      eosTokenIds: [],
      signal,
      scheduler,
    });
    assert.equal(engineArguments({ ...request, ignoreEos: false }, { signal }).options.eosTokenIds, undefined, "the target's EOS ids");
  });

  test('a planned request converts as it is', () => {
    const [planned] = plan(chat({ ignore_eos: true, seed: 2 }), context()).requests;
    const { options } = engineArguments(planned!, {});
    assert.deepEqual(options.eosTokenIds, []);
    assert.equal(options.seed, 2);
    assert.deepEqual(options.policy, parsePolicy('fixed:4'));
  });
});
