/**
 * The draft-free proposers of one engine's sequences: prompt lookup (`ngram`) and suffix
 * decoding (`suffix`), alone or both (the better proposal per sequence and round), with the
 * online acceptance of their proposals by match length.
 *
 * Lifecycle, per sequence: `add` with its prompt, `propose` each round (for a batch, within a
 * candidate budget), `observe` the round's verification (accepted candidates and every token
 * the round verified, which also extends the sequence), `remove` at the end (a finished
 * sequence's output goes to suffix decoding's global cache).
 *
 * A batch's budget goes to the candidates with the largest expected value: candidate j of a
 * proposal from a match of length m is accepted with probability prod_{i<=j} alpha_i(m)
 * (acceptance-by-match.ts), which falls with j, so taking the best candidates across the batch
 * one at a time takes a prefix of every proposal and maximizes the expected accepted tokens.
 */
import { AcceptanceByMatchLength, type MatchAcceptanceOptions } from './acceptance-by-match.js';
import { PromptLookup, type PromptLookupOptions, promptLookupOptions } from './ngram.js';
import { type DraftFreeProposal, emptyProposal, ProposerOptionError } from './proposal.js';
import { type SuffixCachePool, SuffixDecodingCache, type SuffixDecodingOptions, suffixDecodingOptions, type SuffixRequest } from './suffix.js';

export const DRAFT_FREE_METHODS = ['ngram', 'suffix'] as const;
export type DraftFreeMethod = (typeof DRAFT_FREE_METHODS)[number];

export interface DraftFreeOptions {
  /** The proposers to run (one or both), in order of preference on a tie. */
  methods: readonly DraftFreeMethod[];
  /** The model's vocabulary size: a byte-level one gets the knob defaults of `knobDefaultsFor`. */
  vocabSize?: number;
  ngram?: Partial<PromptLookupOptions>;
  suffix?: Partial<SuffixDecodingOptions>;
  acceptance?: Partial<MatchAcceptanceOptions>;
  /** Where suffix decoding's global tree comes from (shared by an engine's requests); default: a tree of this proposer's own. */
  suffixCaches?: SuffixCachePool;
  /**
   * Whether suffix decoding's proposals consult the global tree (default true). False keeps a
   * sequence's proposals, and so a seeded sampled output, independent of earlier requests; its
   * output is cached all the same.
   */
  readsGlobalCache?: boolean;
}

/**
 * Vocabularies up to this size are taken as byte-level (a token per byte plus a few special
 * tokens; the bundled pair's has 259). vLLM's knob defaults were chosen for subword
 * vocabularies, about 4 bytes a token, and span a quarter as much text on bytes.
 */
export const BYTE_LEVEL_VOCAB_MAX = 512;

/**
 * Knob defaults for a vocabulary of `vocabSize` tokens: none of its own for a subword one (each
 * proposer's defaults, vLLM's); for a byte-level one, prompt lookup of 4-12 tokens proposing up
 * to 16 and suffix trees 64 deep. On the first 40 code edits of the `edit` set with the bundled
 * tokenizer these gave 10.2 and 14.4 tokens per round against an ideal target, the subword
 * defaults 6.3 and 8.9 (bench/proposers.ts --knobs, bench/results/proposers.json).
 */
export function knobDefaultsFor(vocabSize: number | undefined): Pick<DraftFreeOptions, 'ngram' | 'suffix'> {
  if (vocabSize === undefined || vocabSize > BYTE_LEVEL_VOCAB_MAX) return {};
  return { ngram: { promptLookupMin: 4, promptLookupMax: 12, numSpeculativeTokens: 16 }, suffix: { maxTreeDepth: 64 } };
}

/** A sequence's proposal for a round, with where it came from and what it is expected to deliver. */
export interface RoundProposal extends DraftFreeProposal {
  /** The proposer that made it (undefined: nothing matched). */
  method: DraftFreeMethod | undefined;
  /** E[accepted candidates] of `tokens` (acceptance-by-match.ts). */
  expectedAccepted: number;
}

interface SequenceState {
  ngram?: PromptLookup;
  suffix?: SuffixRequest;
}

export class DraftFreeProposer<Key = number> {
  readonly methods: readonly DraftFreeMethod[];
  private readonly ngramOptions: PromptLookupOptions | undefined;
  private readonly suffixOptions: SuffixDecodingOptions | undefined;
  private readonly suffixCache: SuffixDecodingCache | undefined;
  private readonly readsGlobalCache: boolean;
  /** Acceptance by match length, per method (their match lengths mean different things). */
  readonly acceptance: Record<DraftFreeMethod, AcceptanceByMatchLength>;
  private readonly sequences = new Map<Key, SequenceState>();

  /** @throws ProposerOptionError for an unknown method or an option out of range */
  constructor(options: DraftFreeOptions) {
    if (options.methods.length === 0) throw new ProposerOptionError('at least one draft-free method is needed (ngram, suffix)', 'method');
    for (const m of options.methods) {
      if (!(DRAFT_FREE_METHODS as readonly string[]).includes(m)) throw new ProposerOptionError(`unknown draft-free method '${m}' (ngram, suffix)`, 'method');
    }
    this.methods = [...new Set(options.methods)];
    const defaults = knobDefaultsFor(options.vocabSize);
    this.ngramOptions = this.methods.includes('ngram') ? promptLookupOptions({ ...defaults.ngram, ...options.ngram }) : undefined;
    this.suffixOptions = this.methods.includes('suffix') ? suffixDecodingOptions({ ...defaults.suffix, ...options.suffix }) : undefined;
    this.readsGlobalCache = options.readsGlobalCache ?? true;
    this.suffixCache = this.suffixOptions && (options.suffixCaches?.get(this.suffixOptions) ?? new SuffixDecodingCache(this.suffixOptions));
    this.acceptance = { ngram: new AcceptanceByMatchLength(options.acceptance), suffix: new AcceptanceByMatchLength(options.acceptance) };
  }

  /** Most candidates a proposal of this proposer holds (num_speculative_tokens, the largest of its methods). */
  get maxTokens(): number {
    return Math.max(this.ngramOptions?.numSpeculativeTokens ?? 0, this.suffixOptions?.numSpeculativeTokens ?? 0);
  }

  /** Sequences tracked. */
  get size(): number {
    return this.sequences.size;
  }

  /**
   * Start tracking a sequence.
   * @throws RangeError when `key` is already tracked
   */
  add(key: Key, prompt: readonly number[]): void {
    if (this.sequences.has(key)) throw new RangeError(`sequence ${String(key)} is already tracked`);
    this.sequences.set(key, {
      ngram: this.ngramOptions && new PromptLookup(prompt, this.ngramOptions),
      suffix: this.suffixCache?.start(prompt, this.suffixOptions, this.readsGlobalCache),
    });
  }

  /**
   * The round's proposals for `keys`, at most `budget` candidates in all (the batch's
   * iteration budget, less the one token every sequence's verification emits anyway).
   * @returns one proposal per key, in order (no candidates where nothing matched or the budget ran out)
   * @throws RangeError for a key that is not tracked
   */
  propose(keys: readonly Key[], budget = Number.POSITIVE_INFINITY): RoundProposal[] {
    const proposals = keys.map((k) => this.best(this.state(k)));
    const total = proposals.reduce((n, p) => n + p.tokens.length, 0);
    return total <= budget ? proposals : this.withinBudget(proposals, Math.max(0, Math.floor(budget)));
  }

  /**
   * Record a sequence's verified round: `proposal` (as `propose` returned it, possibly cut
   * short by the round) had `accepted` candidates accepted, and `verified` are the tokens the
   * round appended to the sequence (accepted candidates and the recovered or bonus token).
   */
  observe(key: Key, proposal: Pick<RoundProposal, 'method' | 'matchLength' | 'tokens'> | undefined, accepted: number, verified: readonly number[]): void {
    const s = this.state(key);
    if (proposal?.method && proposal.tokens.length > 0) this.acceptance[proposal.method].observe(proposal.matchLength, proposal.tokens.length, accepted);
    this.append(s, verified);
  }

  /**
   * Record, for a greedy round that verified another proposer's candidates, how `proposal`
   * would have fared, and append `verified`: a greedy target accepts candidate j exactly when it
   * equals the j-th verified token, so the proposal's first min(k, |verified|) candidates are
   * judged (accepted up to the first that differs) and later ones are not. Sampled rounds must
   * not use this (a point mass y is accepted with probability min(1, p(y)), not when y is drawn).
   */
  observeUnverified(key: Key, proposal: Pick<RoundProposal, 'method' | 'matchLength' | 'tokens'> | undefined, verified: readonly number[]): void {
    const judged = Math.min(proposal?.tokens.length ?? 0, verified.length);
    if (proposal?.method && judged > 0) {
      let accepted = 0;
      while (accepted < judged && proposal.tokens[accepted] === verified[accepted]) accepted++;
      this.acceptance[proposal.method].observe(proposal.matchLength, judged, accepted);
    }
    this.extend(key, verified);
  }

  /** Append tokens verified outside a draft-free round (a draft's round, a prompt piece). */
  extend(key: Key, tokens: readonly number[]): void {
    this.append(this.state(key), tokens);
  }

  /** Stop tracking a sequence; when it `finished` (not cancelled), its output goes to the global cache. */
  remove(key: Key, finished = true): void {
    const s = this.sequences.get(key);
    if (!s) return;
    if (finished) s.suffix?.finish();
    this.sequences.delete(key);
  }

  private state(key: Key): SequenceState {
    const s = this.sequences.get(key);
    if (!s) throw new RangeError(`sequence ${String(key)} is not tracked`);
    return s;
  }

  private append(s: SequenceState, tokens: readonly number[]): void {
    s.ngram?.extend(tokens);
    s.suffix?.extend(tokens);
  }

  /** The proposal with the larger expected accepted length; on a tie the earlier method's. */
  private best(s: SequenceState): RoundProposal {
    let best: RoundProposal = { ...emptyProposal(), method: undefined, expectedAccepted: 0 };
    for (const method of this.methods) {
      const p = method === 'ngram' ? s.ngram!.propose() : s.suffix!.propose();
      if (p.tokens.length === 0) continue;
      const expectedAccepted = this.acceptance[method].expectedAccepted(p.matchLength, p.tokens.length);
      if (best.method === undefined || expectedAccepted > best.expectedAccepted) best = { ...p, method, expectedAccepted };
    }
    return best;
  }

  /** Cut the proposals to `budget` candidates, keeping those most likely to be accepted. */
  private withinBudget(proposals: RoundProposal[], budget: number): RoundProposal[] {
    const values: { seq: number; value: number }[] = [];
    proposals.forEach((p, seq) => {
      const tracker = p.method && this.acceptance[p.method];
      let chain = 1;
      for (let j = 1; j <= p.tokens.length; j++) {
        chain *= tracker!.rate(p.matchLength, j);
        values.push({ seq, value: chain });
      }
    });
    // Stable sort: of equal values, the earlier sequence's candidates first.
    values.sort((a, b) => b.value - a.value);
    const keep = new Array<number>(proposals.length).fill(0);
    for (let i = 0; i < Math.min(budget, values.length); i++) keep[values[i]!.seq]!++;
    return proposals.map((p, seq) => {
      if (keep[seq] === p.tokens.length) return p;
      const tokens = p.tokens.slice(0, keep[seq]);
      const tracker = p.method && this.acceptance[p.method];
      const probs = p.probs?.slice(0, keep[seq]);
      return {
        ...p,
        tokens,
        probs,
        score: probs?.reduce((a, b) => a + b, 0),
        method: tokens.length ? p.method : undefined,
        matchLength: tokens.length ? p.matchLength : 0,
        expectedAccepted: tracker ? tracker.expectedAccepted(p.matchLength, tokens.length) : 0,
      };
    });
  }
}
