/**
 * A generation from text to text: tokenize (plain prompt or chat), run speculative rounds,
 * detokenize incrementally (never splitting a UTF-8 character) and end at stop strings
 * (never emitting part of one).
 */
import { IncrementalDetokenizer } from '../text/detokenizer.js';
import { StopStringMatcher } from '../text/stop-strings.js';
import type { ChatMessage } from '../text/tokenizer.js';
import type { TokenLogprob } from './logprobs.js';
import type { ModelPair } from './pair.js';
import type { FinishReason, GenerateOptions } from './speculative.js';
import type { GenerationStats } from './stats.js';

/** What to continue: plain text, a chat (rendered with the model's chat template) or token ids. */
export type PromptInput = { prompt: string } | { messages: ChatMessage[] } | { tokenIds: number[] };

export interface TextGenerateOptions extends GenerateOptions {
  /** Strings that end generation; the text stops before the first one. */
  stop?: readonly string[];
  /** Checked between rounds; when aborted the generation ends with what it has. */
  signal?: AbortSignal;
}

export interface TextGenerationResult {
  text: string;
  token_ids: number[];
  prompt_tokens: number;
  finish_reason: FinishReason;
  stats: GenerationStats;
  /** With `logprobs`: one record per token of `token_ids`. */
  logprobs?: TokenLogprob[];
}

/** Called after every round with the text and tokens it added (and, with `logprobs`, their records). */
export type DeltaListener = (delta: { text: string; tokenIds: number[]; logprobs?: TokenLogprob[] }) => void;

export function encodePrompt(pair: ModelPair, input: PromptInput): number[] {
  if ('tokenIds' in input) return input.tokenIds;
  if ('messages' in input) return pair.tokenizer.encodeChat(input.messages);
  return pair.tokenizer.encode(input.prompt);
}

export async function generateText(
  pair: ModelPair,
  input: PromptInput,
  opts: TextGenerateOptions,
  onDelta?: DeltaListener,
): Promise<TextGenerationResult> {
  const promptIds = encodePrompt(pair, input);
  const generation = pair.decoder.start(promptIds, opts);
  const detokenizer = new IncrementalDetokenizer(pair.tokenizer, { skipSpecialTokens: true });
  const stops = new StopStringMatcher(opts.stop ?? []);
  let text = '';
  const emit = (piece: string, tokenIds: number[]) => {
    text += piece;
    if (!onDelta || !(piece || tokenIds.length)) return;
    const logprobs = opts.logprobs === undefined ? undefined : generation.logprobs.slice(generation.logprobs.length - tokenIds.length);
    onDelta({ text: piece, tokenIds, logprobs });
  };

  while (!generation.done) {
    if (opts.signal?.aborted) {
      generation.finish('abort');
      break;
    }
    const tokens = await generation.step();
    const matched = stops.push(detokenizer.push(tokens));
    emit(matched.emit, tokens);
    if (matched.stopped) generation.finish('stop');
  }
  if (!stops.stopped) {
    const tail = stops.push(detokenizer.flush());
    emit(tail.emit + (tail.stopped ? '' : stops.flush()), []);
  }
  return {
    text,
    token_ids: generation.tokenIds,
    prompt_tokens: promptIds.length,
    finish_reason: generation.finishReason!,
    stats: generation.stats,
    logprobs: opts.logprobs === undefined ? undefined : generation.logprobs,
  };
}
