/**
 * A generation from text to text: tokenize (plain prompt or chat), run speculative rounds and
 * hand on, after each round, the text and tokens that became final. Which tokens are the
 * output, their text and why it ended are decided token by token (output-decider.ts): never
 * half a UTF-8 character, never part of a stop string, and the same whatever the rounds were.
 */
import type { ChatMessage, TextTokenizer } from '../text/tokenizer.js';
import type { TokenLogprob } from './logprobs.js';
import type { FinishReason, GenerateOptions, SpeculativeDecoder } from './speculative.js';
import type { BatchScheduler } from './scheduler.js';
import type { GenerationStats } from './stats.js';

/**
 * What a text generation needs of the loaded models: the decoder and the tokenizer its models
 * share. A `ModelPair` (pair/model-pair.ts, which loads them) is one.
 */
export interface TextModels {
  readonly decoder: SpeculativeDecoder;
  readonly tokenizer: TextTokenizer;
}

/** What to continue: plain text, a chat (rendered with the model's chat template) or token ids. */
export type PromptInput = { prompt: string } | { messages: ChatMessage[] } | { tokenIds: number[] };

export interface TextGenerateOptions extends GenerateOptions {
  /** Checked between rounds; when aborted the generation ends with what it has. */
  signal?: AbortSignal;
  /** Run the rounds in this scheduler's batches (continuous batching) instead of alone. */
  scheduler?: BatchScheduler;
}

export interface TextGenerationResult {
  text: string;
  /** Output tokens; after a stop string, up to the one holding its first character. */
  token_ids: number[];
  /** Offset of each output token's text in `text`, in UTF-16 code units (output-decider.ts). */
  text_offsets: number[];
  prompt_tokens: number;
  /** Prompt tokens whose KV rows came from the prefix cache (not computed): OpenAI's `prompt_tokens_details.cached_tokens`. */
  cached_tokens: number;
  finish_reason: FinishReason;
  stats: GenerationStats;
  /** With `logprobs`: one record per token of `token_ids`. */
  logprobs?: TokenLogprob[];
}

/** Called after every round with the text and tokens that became final (and, with `logprobs`, their records). */
export type DeltaListener = (delta: { text: string; tokenIds: number[]; textOffsets: number[]; logprobs?: TokenLogprob[] }) => void;

export function encodePrompt(pair: TextModels, input: PromptInput): number[] {
  if ('tokenIds' in input) return input.tokenIds;
  if ('messages' in input) return pair.tokenizer.encodeChat(input.messages);
  return pair.tokenizer.encode(input.prompt);
}

export async function generateText(
  pair: TextModels,
  input: PromptInput,
  opts: TextGenerateOptions,
  onDelta?: DeltaListener,
): Promise<TextGenerationResult> {
  const promptIds = encodePrompt(pair, input);
  const generation = pair.decoder.start(promptIds, { ...opts, tokenizer: pair.tokenizer });
  const { output } = generation;
  const deliver = () => {
    const delta = output.take();
    if (!onDelta || !(delta.text || delta.tokenIds.length)) return;
    const logprobs = opts.logprobs === undefined ? undefined : generation.logprobs.slice(delta.from, delta.from + delta.tokenIds.length);
    onDelta({ text: delta.text, tokenIds: delta.tokenIds, textOffsets: delta.textOffsets, logprobs });
  };

  while (!generation.done) {
    if (opts.signal?.aborted) {
      generation.finish('abort');
      break;
    }
    await (opts.scheduler ? opts.scheduler.step(generation) : generation.step());
    deliver();
  }
  deliver();
  const tokenIds = output.tokenIds;
  return {
    text: output.text,
    token_ids: tokenIds,
    text_offsets: output.textOffsets,
    prompt_tokens: promptIds.length,
    cached_tokens: generation.cachedPromptTokens,
    finish_reason: generation.finishReason!,
    stats: generation.stats,
    logprobs: opts.logprobs === undefined ? undefined : generation.logprobs.slice(0, tokenIds.length),
  };
}
