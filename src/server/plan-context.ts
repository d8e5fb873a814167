/**
 * What planning reads besides the request: a part of the model facts (model-facts.ts) and the
 * server's policy. Plain values and a tokenizer, so that tests plan with fake facts and no
 * engine worker.
 */
import type { PolicySpec } from '../engine/policy-registry.js';
import type { TextTokenizer } from '../text/tokenizer.js';
import type { ModelFacts } from './model-facts.js';
import type { ToolCallFormat } from '../grammar/tool-call-common.js';

/** The tokenizer as planning uses it: to render and count prompts. */
export type PlanTokenizer = Pick<TextTokenizer, 'encode' | 'encodeChat' | 'hasChatTemplate' | 'templateUsesTools'>;

/** The model facts planning reads (ModelFacts is one). */
export type PlanFacts = Pick<ModelFacts, 'name' | 'contextLength' | 'maxTokenChars' | 'vocabSize' | 'generationDefaults' | 'hasDraft'> & {
  tokenizer: PlanTokenizer;
  /** How the model writes tool calls (tool-plan.ts `toolCallFormatOf`); default Hermes. */
  toolCallFormat?: ToolCallFormat;
};

export interface PlanContext {
  facts: PlanFacts;
  /** The server's draft policy (`--policy`). */
  defaultPolicy: PolicySpec;
  /** Whether the engine has an acceptance head; undefined while its models load. */
  readonly hasHead: boolean | undefined;
}
