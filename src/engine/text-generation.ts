/**
 * A generation from text to text: tokenize (plain prompt or chat), run speculative rounds,
 * detokenize incrementally (never splitting a UTF-8 character) and end at stop strings
 * (never emitting part of one, nor counting the tokens of its round past its start).
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
  /** Output tokens; after a stop string, up to the one holding its first character. */
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
  /** Output tokens whose text was emitted: after a stop string, the rest of its round is not. */
  let kept = 0;
  const emit = (piece: string, tokenIds: number[]) => {
    text += piece;
    const from = kept;
    kept += tokenIds.length;
    if (!onDelta || !(piece || tokenIds.length)) return;
    const logprobs = opts.logprobs === undefined ? undefined : generation.logprobs.slice(from, kept);
    onDelta({ text: piece, tokenIds, logprobs });
  };

  while (!generation.done) {
    if (opts.signal?.aborted) {
      generation.finish('abort');
      break;
    }
    const tokens = await generation.step();
    if (opts.stop?.length) {
      const round = stopRound(detokenizer, stops, tokens, text.length);
      emit(round.emit, tokens.slice(0, round.kept));
    } else {
      emit(stops.push(detokenizer.push(tokens)).emit, tokens);
    }
    if (stops.stopped) generation.finish('stop');
  }
  if (!stops.stopped) {
    const tail = stops.push(detokenizer.flush());
    emit(tail.emit + (tail.stopped ? '' : stops.flush()), []);
  }
  return {
    text,
    token_ids: generation.tokenIds.slice(0, kept),
    prompt_tokens: promptIds.length,
    finish_reason: generation.finishReason!,
    stats: generation.stats,
    logprobs: opts.logprobs === undefined ? undefined : generation.logprobs.slice(0, kept),
  };
}

/**
 * One round's tokens through the detokenizer and the stop matcher, a token at a time, so that a
 * stop string can be traced to the token its first character came from. That token and those
 * before it are kept (their text, up to the stop string, was emitted); the round's later tokens
 * are not output. A stop string that began in an earlier round keeps none of this round's.
 * @param emitted characters of text emitted before this round
 */
function stopRound(detokenizer: IncrementalDetokenizer, stops: StopStringMatcher, tokens: readonly number[], emitted: number): { emit: string; kept: number } {
  let piece = '';
  const roundStart = detokenizer.text.length;
  /** ends[i]: characters the detokenizer has produced up to and including token i. */
  const ends: number[] = [];
  for (const token of tokens) {
    const matched = stops.push(detokenizer.push([token]));
    ends.push(detokenizer.text.length);
    piece += matched.emit;
    if (!matched.stopped) continue;
    // The emitted text ends where the stop string starts.
    const stopAt = emitted + piece.length;
    return { emit: piece, kept: stopAt < roundStart ? 0 : ends.findIndex((end) => end > stopAt) + 1 };
  }
  return { emit: piece, kept: tokens.length };
}
