/**
 * Suffix decoding (SuffixDecoding, Oliaro et al., arXiv 2411.04975; vLLM's `suffix` method,
 * whose knobs and defaults these are): two suffix trees propose continuations by frequency.
 *
 * - The request's own tree: its prompt and its output so far (one sequence, extended as tokens
 *   are verified). It catches what a request repeats of itself (code edits, quoting answers).
 * - The global tree: the outputs of earlier requests, at most `maxCachedRequests` of them
 *   (the oldest evicted first, FIFO, as vLLM does). It catches what answers repeat across
 *   requests (agent loops, multi-turn rewriting, templated replies).
 *
 * Each round both trees speculate on the request's last tokens (suffix-tree.ts `speculate`:
 * the proposal's length follows the match length and the path's estimated probability), and
 * the proposal with the higher score (the expected number of tokens that continue the text, by
 * the counts) wins; on a tie, the request's own.
 */
import { checkInteger, checkNumber, type DraftFreeProposal } from './proposal.js';
import { type SpeculateOptions, type SuffixDraft, SuffixTree } from './suffix-tree.js';

/** Suffix decoding's options, named as vLLM's `suffix_decoding_*` (and `num_speculative_tokens`). */
export interface SuffixDecodingOptions {
  /** `suffix_decoding_max_tree_depth`: longest window a tree holds, so match + proposal <= this. */
  maxTreeDepth: number;
  /** `suffix_decoding_max_cached_requests`: outputs kept in the global tree (0: no global tree). */
  maxCachedRequests: number;
  /** `suffix_decoding_max_spec_factor`: at most factor x match length (+ offset) tokens a round. */
  maxSpecFactor: number;
  /** Arctic Inference's `max_spec_offset` (vLLM leaves it at 0). */
  maxSpecOffset: number;
  /** `suffix_decoding_min_token_prob`: propose a token only while the path's estimated probability is >= this. */
  minTokenProb: number;
  /** `num_speculative_tokens`: most tokens a round (vLLM's default for suffix: the tree depth). */
  numSpeculativeTokens: number;
}

/** vLLM's defaults (vllm/config/speculative.py): depth 24, 10,000 cached requests, factor 1, min prob 0.1. */
export const SUFFIX_DECODING_DEFAULTS: Readonly<Omit<SuffixDecodingOptions, 'numSpeculativeTokens'>> = {
  maxTreeDepth: 24,
  maxCachedRequests: 10_000,
  maxSpecFactor: 1,
  maxSpecOffset: 0,
  minTokenProb: 0.1,
};

/** Deepest tree accepted: a round costs O(depth^2) matching steps. */
export const MAX_SUFFIX_TREE_DEPTH = 256;

/** Validated options: defaults for what is absent, a ProposerOptionError naming the first bad one. */
export function suffixDecodingOptions(given: Partial<SuffixDecodingOptions> = {}): SuffixDecodingOptions {
  const d = SUFFIX_DECODING_DEFAULTS;
  const maxTreeDepth = checkInteger('suffix_decoding_max_tree_depth', given.maxTreeDepth ?? d.maxTreeDepth, 1, MAX_SUFFIX_TREE_DEPTH);
  return {
    maxTreeDepth,
    maxCachedRequests: checkInteger('suffix_decoding_max_cached_requests', given.maxCachedRequests ?? d.maxCachedRequests, 0),
    maxSpecFactor: checkNumber('suffix_decoding_max_spec_factor', given.maxSpecFactor ?? d.maxSpecFactor, 0, maxTreeDepth),
    maxSpecOffset: checkNumber('suffix_decoding_max_spec_offset', given.maxSpecOffset ?? d.maxSpecOffset, -maxTreeDepth, maxTreeDepth),
    minTokenProb: checkNumber('suffix_decoding_min_token_prob', given.minTokenProb ?? d.minTokenProb, 0, 1),
    numSpeculativeTokens: checkInteger('num_speculative_tokens', given.numSpeculativeTokens ?? maxTreeDepth, 1),
  };
}

/**
 * The global tree of earlier outputs, shared by the requests of one engine; `start` begins a
 * request. The tree's shape (max_tree_depth, max_cached_requests) is the cache's; each request
 * may bring its own proposal knobs (spec factor and offset, min token prob, tokens per round).
 */
export class SuffixDecodingCache {
  readonly options: SuffixDecodingOptions;
  private readonly global: SuffixTree | undefined;
  private nextId = 0;

  /** @throws ProposerOptionError for an option out of range */
  constructor(options: Partial<SuffixDecodingOptions> = {}) {
    this.options = suffixDecodingOptions(options);
    this.global = this.options.maxCachedRequests > 0 ? new SuffixTree(this.options.maxTreeDepth) : undefined;
  }

  /** Outputs in the global tree. */
  get cachedRequests(): number {
    return this.global?.sequenceCount ?? 0;
  }

  /**
   * Begin a request whose prompt is `prompt` (token ids).
   * @param options its knobs (default: the cache's); the tree depth must be the cache's
   * @param readsGlobal whether its proposals consult the global tree (false: its own tree only,
   *   so that they do not depend on earlier requests; its output is cached all the same)
   * @throws RangeError for another tree depth
   */
  start(prompt: readonly number[], options: SuffixDecodingOptions = this.options, readsGlobal = true): SuffixRequest {
    if (options.maxTreeDepth !== this.options.maxTreeDepth) throw new RangeError(`a request of tree depth ${options.maxTreeDepth} in a cache of depth ${this.options.maxTreeDepth}`);
    return new SuffixRequest(this, prompt, options, readsGlobal);
  }

  /** Put a finished request's output in the global tree, evicting the oldest beyond maxCachedRequests. */
  cacheOutput(output: readonly number[]): void {
    if (!this.global || output.length === 0) return;
    this.global.extend(this.nextId++, output);
    while (this.global.sequenceCount > this.options.maxCachedRequests) this.global.remove(this.global.sequenceIds().next().value!);
  }

  /** The global tree's speculation on `context` (none without a global tree). */
  speculateGlobal(context: readonly number[], opts: SpeculateOptions): SuffixDraft | undefined {
    return this.global?.speculate(context, opts);
  }
}

/** One request's suffix decoding: `extend` with verified tokens, `propose` each round, `finish` at the end. */
export class SuffixRequest {
  private readonly tree: SuffixTree;
  private readonly promptLength: number;
  private finished = false;

  constructor(
    private readonly cache: SuffixDecodingCache,
    prompt: readonly number[],
    private readonly options: SuffixDecodingOptions = cache.options,
    private readonly readsGlobal = true,
  ) {
    this.tree = new SuffixTree(options.maxTreeDepth);
    this.tree.extend(0, prompt);
    this.promptLength = prompt.length;
  }

  /** Tokens in the request (prompt and output so far). */
  get length(): number {
    return this.tree.tokensOf(0).length;
  }

  /** Append verified tokens (the round's accepted candidates and its recovered or bonus token). */
  extend(tokens: readonly number[]): void {
    if (this.finished) throw new Error('the request has finished; its output is cached');
    this.tree.extend(0, tokens);
  }

  /**
   * The better of the request's own tree's and the global tree's proposals for what follows.
   * @param maxTokens most tokens to propose (default and cap: num_speculative_tokens)
   */
  propose(maxTokens = this.options.numSpeculativeTokens): DraftFreeProposal {
    const o = this.options;
    const opts: SpeculateOptions = {
      maxSpecTokens: Math.min(maxTokens, o.numSpeculativeTokens),
      maxSpecFactor: o.maxSpecFactor,
      maxSpecOffset: o.maxSpecOffset,
      minTokenProb: o.minTokenProb,
    };
    const context = this.tree.tokensOf(0);
    let best = this.tree.speculate(context, opts);
    const global = this.readsGlobal ? this.cache.speculateGlobal(context, opts) : undefined;
    if (global && global.score > best.score) best = global;
    return { tokens: best.tokens, matchLength: best.tokens.length > 0 ? best.matchLength : 0, probs: best.probs, score: best.score };
  }

  /** End the request: its output (what followed the prompt) goes to the global tree. Idempotent. */
  finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.cache.cacheOutput(this.tree.tokensOf(0).slice(this.promptLength));
  }
}

/** Most tree shapes one engine keeps a global tree for (requests may ask for their own depth and size). */
export const MAX_SHARED_SUFFIX_CACHES = 4;

/**
 * The global trees of one engine's requests, one per tree shape (max_tree_depth,
 * max_cached_requests) asked for, so that a finished output helps every later request of the
 * same shape (vLLM keeps one per server). Beyond MAX_SHARED_SUFFIX_CACHES shapes, the least
 * recently used tree is dropped.
 */
export class SuffixCachePool {
  private readonly caches = new Map<string, SuffixDecodingCache>();

  /** The cache for `options`' tree shape, created on first use. */
  get(options: SuffixDecodingOptions): SuffixDecodingCache {
    const key = `${options.maxTreeDepth}/${options.maxCachedRequests}`;
    let cache = this.caches.get(key);
    if (cache) this.caches.delete(key);
    else cache = new SuffixDecodingCache(options);
    this.caches.set(key, cache);
    while (this.caches.size > MAX_SHARED_SUFFIX_CACHES) this.caches.delete(this.caches.keys().next().value!);
    return cache;
  }

  /** Outputs cached across every tree shape. */
  get cachedRequests(): number {
    let n = 0;
    for (const c of this.caches.values()) n += c.cachedRequests;
    return n;
  }

  /** Forget every earlier output (requests running keep their own trees). */
  clear(): void {
    this.caches.clear();
  }
}
