/**
 * Prompt lookup decoding (vLLM's `ngram` method; Saxena 2023, "Prompt Lookup Decoding";
 * transformers' `prompt_lookup_num_tokens`): find the last n tokens of the sequence (prompt and
 * output so far) earlier in the sequence, n from `prompt_lookup_max` down to
 * `prompt_lookup_min`, and propose the tokens that followed that occurrence, up to
 * `num_speculative_tokens`. Of several occurrences of the longest matching n-gram, the latest
 * wins (as in vLLM, whose search runs backwards from the end).
 *
 * Incremental: the sequence only grows (verified tokens are never taken back), so every n-gram
 * that has a follower is indexed once, when its follower arrives: a map per n from the n-gram's
 * hash to the end of its latest occurrence. A round costs O(prompt_lookup_max + k) whatever the
 * context's length, a verified token O(prompt_lookup_max). A hash hit is confirmed token by
 * token, so a collision can only cost a match, never propose tokens that did not follow.
 *
 * When the occurrence's continuation runs into the end of the sequence (a period: the match
 * ends `p` tokens before the end), the proposal continues periodically, as the text would if
 * the repetition goes on (`a b c a b c a b` proposes `c a b c ...`).
 */
import { checkInteger, type DraftFreeProposal, emptyProposal, ProposerOptionError } from './proposal.js';

/** The knobs of prompt lookup, with vLLM's names. */
export interface PromptLookupOptions {
  /** Longest n-gram matched (`prompt_lookup_max`), >= prompt_lookup_min. */
  promptLookupMax: number;
  /** Shortest n-gram matched (`prompt_lookup_min`), >= 1. */
  promptLookupMin: number;
  /** Most tokens proposed per round (`num_speculative_tokens`), >= 1. */
  numSpeculativeTokens: number;
}

/**
 * Defaults. vLLM sets both n-gram bounds to 5 ("arbitrarily chosen", its config says) when
 * neither is given; here matches of 2-4 tokens are looked for as well, since on repetitive
 * text a short match that continues is common, and beside a draft model the online acceptance
 * by match length (acceptance-by-match.ts) decides whether a short match is worth verifying.
 * 8 tokens a round: a 9-token verification costs the bundled target about 1.3 one-token passes
 * on the 2-core CPU.
 */
export const PROMPT_LOOKUP_DEFAULTS: Readonly<PromptLookupOptions> = { promptLookupMax: 5, promptLookupMin: 2, numSpeculativeTokens: 8 };

/** Largest n-gram the index accepts (each verified token costs O(n) hash updates). */
export const MAX_PROMPT_LOOKUP = 64;

/** Validated options: defaults for what is absent, a ProposerOptionError naming the first bad one. */
export function promptLookupOptions(given: Partial<PromptLookupOptions> = {}): PromptLookupOptions {
  const max = checkInteger('prompt_lookup_max', given.promptLookupMax ?? Math.max(PROMPT_LOOKUP_DEFAULTS.promptLookupMax, given.promptLookupMin ?? 0), 1, MAX_PROMPT_LOOKUP);
  const min = checkInteger('prompt_lookup_min', given.promptLookupMin ?? Math.min(PROMPT_LOOKUP_DEFAULTS.promptLookupMin, max), 1, MAX_PROMPT_LOOKUP);
  if (min > max) throw new ProposerOptionError(`prompt_lookup_min (${min}) must not exceed prompt_lookup_max (${max})`, 'prompt_lookup_min');
  const k = checkInteger('num_speculative_tokens', given.numSpeculativeTokens ?? PROMPT_LOOKUP_DEFAULTS.numSpeculativeTokens, 1);
  return { promptLookupMax: max, promptLookupMin: min, numSpeculativeTokens: k };
}

/** 2^21: the second hash's 21 high bits sit below the first's 32 in a 53-bit key. */
const KEY_SHIFT = 2 ** 21;
const SEED_A = 0x811c9dc5;
const SEED_B = 0x2545f491;

/** One step of an n-gram's first hash (multiply-xorshift, over the tokens from the last backwards). */
function mixA(h: number, token: number): number {
  h = Math.imul(h ^ token, 0x9e3779b1);
  return h ^ (h >>> 15);
}

/** One step of the second, independent hash. */
function mixB(h: number, token: number): number {
  h = Math.imul(h + token, 0x85ebca77) ^ 0x27d4eb2f;
  return h ^ (h >>> 13);
}

/** Prompt lookup over one sequence: `extend` it with verified tokens, `propose` each round. */
export class PromptLookup {
  readonly options: PromptLookupOptions;
  private readonly tokens: number[] = [];
  /** Per n (index n - min): the hash key of an n-gram -> end (exclusive) of its latest occurrence with a follower. */
  private readonly latest: Map<number, number>[];
  /** Scratch: keys of the sequence's last n tokens, [max + 1]. */
  private readonly tailKeys: Float64Array;

  /**
   * @param prompt the prompt's token ids (the sequence starts with them)
   * @param options knobs; defaults in PROMPT_LOOKUP_DEFAULTS
   * @throws ProposerOptionError for an option out of range
   */
  constructor(prompt: readonly number[] = [], options: Partial<PromptLookupOptions> = {}) {
    this.options = promptLookupOptions(options);
    const { promptLookupMin: min, promptLookupMax: max } = this.options;
    this.latest = Array.from({ length: max - min + 1 }, () => new Map<number, number>());
    this.tailKeys = new Float64Array(max + 1);
    this.extend(prompt);
  }

  /** Tokens in the sequence (prompt and output so far). */
  get length(): number {
    return this.tokens.length;
  }

  /** Append verified tokens (the round's accepted candidates and its recovered or bonus token). */
  extend(tokens: readonly number[]): void {
    for (const t of tokens) {
      // The n-grams that end at the current last token now have a follower: index them.
      this.indexEndingAt(this.tokens.length);
      this.tokens.push(t);
    }
  }

  /**
   * The tokens that followed the latest earlier occurrence of the longest matching n-gram.
   * @param maxTokens most tokens to propose (default and cap: num_speculative_tokens)
   * @returns up to maxTokens candidates and the n matched; no candidates when nothing matched
   */
  propose(maxTokens = this.options.numSpeculativeTokens): DraftFreeProposal {
    const { promptLookupMin: min, promptLookupMax: max } = this.options;
    const k = Math.min(maxTokens, this.options.numSpeculativeTokens);
    const n0 = Math.min(max, this.tokens.length - 1);
    if (k <= 0 || n0 < min) return emptyProposal();
    this.hashTail(n0);
    for (let n = n0; n >= min; n--) {
      const end = this.latest[n - min]!.get(this.tailKeys[n]!);
      if (end === undefined || !this.sameGram(end, this.tokens.length, n)) continue;
      // end < length: an n-gram is indexed only once its follower is in the sequence.
      const period = this.tokens.length - end;
      const out = new Array<number>(k);
      for (let j = 0; j < k; j++) out[j] = this.tokens[end + (j % period)]!;
      return { tokens: out, matchLength: n };
    }
    return emptyProposal();
  }

  /** Index the n-grams (min <= n <= max) that end just before position `end`. */
  private indexEndingAt(end: number): void {
    const { promptLookupMin: min, promptLookupMax: max } = this.options;
    let a = SEED_A;
    let b = SEED_B;
    for (let n = 1; n <= max && n <= end; n++) {
      const t = this.tokens[end - n]!;
      a = mixA(a, t);
      b = mixB(b, t);
      if (n >= min) this.latest[n - min]!.set(key(a, b), end);
    }
  }

  /** tailKeys[n] = key of the sequence's last n tokens, n = 1..upTo. */
  private hashTail(upTo: number): void {
    const end = this.tokens.length;
    let a = SEED_A;
    let b = SEED_B;
    for (let n = 1; n <= upTo; n++) {
      const t = this.tokens[end - n]!;
      a = mixA(a, t);
      b = mixB(b, t);
      this.tailKeys[n] = key(a, b);
    }
  }

  /** Whether the n tokens before `endA` equal the n tokens before `endB`. */
  private sameGram(endA: number, endB: number, n: number): boolean {
    for (let i = 1; i <= n; i++) if (this.tokens[endA - i] !== this.tokens[endB - i]) return false;
    return true;
  }
}

/** A 53-bit map key from two 32-bit hashes. */
function key(a: number, b: number): number {
  return (a >>> 0) * KEY_SHIFT + (b >>> 11);
}
