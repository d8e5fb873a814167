/**
 * The OpenAI request bodies of /v1/chat/completions and /v1/completions as the schemas
 * (schemas.ts) admit them: what planning (plan.ts) starts from. Fields specd does not know are
 * kept (`[field: string]: unknown`) so that the planner can refuse those it cannot honour by
 * name (unsupported.ts); the rest are ignored, as OpenAI's API does.
 */
import type { SpeculativeField } from './speculation.js';

export type Opt<T> = T | null | undefined;

/** Fields both endpoints take (see schemas.ts). */
export interface CommonBody {
  model?: Opt<string>;
  stream?: Opt<boolean>;
  stream_options?: Opt<{ include_usage?: Opt<boolean>; continuous_usage_stats?: Opt<boolean> }>;
  max_tokens?: Opt<number>;
  temperature?: Opt<number>;
  top_p?: Opt<number>;
  top_k?: Opt<number>;
  seed?: Opt<number>;
  stop?: Opt<string | string[]>;
  n?: Opt<number>;
  presence_penalty?: Opt<number>;
  frequency_penalty?: Opt<number>;
  logit_bias?: Opt<Record<string, number>>;
  user?: Opt<string>;
  ignore_eos?: Opt<boolean>;
  speculative?: Opt<SpeculativeField>;
  /** `{"type": "text" | "json_object" | "json_schema", ...}` (response-format.ts). */
  response_format?: unknown;
  [field: string]: unknown;
}

export type ContentPart = { type: string; text?: string; refusal?: string };
export interface MessageBody {
  role: string;
  content?: Opt<string | ContentPart[]>;
  name?: string;
  [field: string]: unknown;
}

export interface ChatBody extends CommonBody {
  messages: MessageBody[];
  tools?: unknown;
  tool_choice?: unknown;
  /** Extra variables for the chat template (vLLM's field), e.g. `{ "enable_thinking": false }`. */
  chat_template_kwargs?: Record<string, unknown> | null;
  parallel_tool_calls?: Opt<boolean>;
  max_completion_tokens?: Opt<number>;
  logprobs?: Opt<boolean>;
  top_logprobs?: Opt<number>;
}

export interface CompletionBody extends CommonBody {
  prompt: string | string[] | number[] | number[][];
  logprobs?: Opt<number>;
  echo?: Opt<boolean>;
  suffix?: Opt<string>;
  best_of?: Opt<number>;
}

