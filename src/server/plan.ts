/**
 * Planning: from a schema-valid OpenAI request to the engine requests that serve it
 * (`GenerationPlan`), on the main thread, before anything reaches a worker. A pure function of
 * the body and the plan context (model facts, the server's policy): the checks that need the
 * model or several fields at once, the prompt rendered and tokenized, the defaults.
 *
 * By job: fields specd cannot honour (unsupported.ts), messages (chat-messages.ts), tools
 * (tool-plan.ts `planTools`: the grammar and how outputs are read) apart from the prompt
 * (tool-prompt.ts `toolConversation`, prompts.ts: rendering), output length (length-limits.ts),
 * sampling and logits adjustments (sampling-plan.ts), the draft policy (speculation.ts through
 * the policy registry), `response_format` (response-format.ts), and what every endpoint shares
 * (generation-plan.ts). The Responses API's own fields are read in responses-api.ts.
 *
 * A bad field throws an ApiError (errors.ts) naming it.
 */
import { chatMessages } from './chat-messages.js';
import { apiErrors } from './errors.js';
import { checkCommon, type GenerationPlan, type PlanContext, planMessages, planPrompts } from './generation-plan.js';
import { COMPLETIONS_DEFAULT_MAX_TOKENS } from './length-limits.js';
import { completionPromptCount, completionPrompts } from './prompts.js';
import type { ChatBody, CompletionBody } from './requests.js';
import { responseFormatGrammar } from './response-format.js';
import { planResponse, type ResponsesBody } from './responses-api.js';
import { MAX_CHOICES } from './schemas.js';
import { planTools } from './tool-plan.js';
import { toolConversation } from './tool-prompt.js';
import { CHAT_UNSUPPORTED, checkUnsupported, COMPLETION_UNSUPPORTED, given } from './unsupported.js';

export type { GenerationPlan, PlanContext } from './generation-plan.js';

/** A request as its route received it: the endpoint and the body. */
export type ApiRequest =
  | { endpoint: 'chat.completions'; body: ChatBody }
  | { endpoint: 'completions'; body: CompletionBody }
  | { endpoint: 'responses'; body: ResponsesBody };

/**
 * The plan of any generating endpoint's request.
 * @throws ApiError (400, or 404 for another model) naming the field at fault
 */
export function plan(request: ApiRequest, ctx: PlanContext): GenerationPlan {
  switch (request.endpoint) {
    case 'chat.completions':
      return planChat(request.body, ctx);
    case 'completions':
      return planCompletion(request.body, ctx);
    case 'responses':
      return planResponse(request.body, ctx);
  }
}

/** POST /v1/chat/completions. */
export function planChat(body: ChatBody, ctx: PlanContext): GenerationPlan {
  checkUnsupported(body, CHAT_UNSUPPORTED);
  checkCommon(body, ctx);
  if (given(body.top_logprobs) && body.logprobs !== true) {
    throw apiErrors.invalidValue('top_logprobs', "Invalid 'top_logprobs': it requires 'logprobs' to be true.");
  }
  // Tools: the grammar of the calls and how outputs are read.
  const tools = planTools(body, ctx.facts.toolCallFormat);
  const format = responseFormatGrammar(body.response_format);
  if (format && tools && tools.mode !== 'none') {
    throw apiErrors.unsupported('response_format', "a response format together with tools the model may call; set 'tool_choice' to 'none' or leave out one of them.");
  }
  // The prompt: the messages with the tools as the chat template takes them.
  const conversation = toolConversation(chatMessages(body.messages), tools, ctx.facts.tokenizer.templateUsesTools);
  const maxParam = given(body.max_completion_tokens) ? 'max_completion_tokens' : 'max_tokens';
  const requested = body.max_completion_tokens ?? body.max_tokens ?? undefined;
  const logprobs = body.logprobs === true ? (body.top_logprobs ?? 0) : undefined;
  // The request's template variables first, so that what specd sets (the tool definitions) wins.
  const templateVars = body.chat_template_kwargs ? { ...body.chat_template_kwargs, ...conversation.templateVars } : conversation.templateVars;
  const out = planMessages(conversation.messages, body, ctx, { param: 'messages', maxParam, requested, fallback: Infinity }, logprobs, {
    templateVars,
    grammar: format ?? tools?.grammar,
  });
  if (tools && tools.mode !== 'none') out.tools = tools;
  return out;
}

/** POST /v1/completions: every prompt of a batch times `n` choices. */
export function planCompletion(body: CompletionBody, ctx: PlanContext): GenerationPlan {
  checkUnsupported(body, COMPLETION_UNSUPPORTED);
  checkCommon(body, ctx);
  const n = body.n ?? 1;
  const promptCount = completionPromptCount(body.prompt);
  if (promptCount * n > MAX_CHOICES) {
    throw apiErrors.invalidValue(promptCount > 1 ? 'prompt' : 'n', `At most ${MAX_CHOICES} choices per request (prompts x n); this one asks for ${promptCount * n}.`);
  }
  const prompts = completionPrompts(body.prompt, ctx.facts);
  const requested = body.max_tokens ?? undefined;
  const grammar = responseFormatGrammar(body.response_format);
  return planPrompts(body, ctx, prompts, n, { param: 'prompt', maxParam: 'max_tokens', requested, fallback: COMPLETIONS_DEFAULT_MAX_TOKENS }, body.logprobs ?? undefined, grammar);
}
