/**
 * Speculative decoding: the engine (`SpeculativeDecoder`) and its generations.
 *
 * A generation is a sequence (sequence.ts: tokens, KV caches, RNG, logits processing, output
 * decisions) with the proposer of its candidates (proposer.ts: the draft model with its stop
 * policy and head, draft-proposer.ts, or a draft-free one, draft-free-proposer.ts) and its policy
 * as the engine's draft controller admitted it (draft-controller.ts). Its rounds run in a batch
 * scheduler (scheduler.ts), the one round driver; a generation alone is a batch of one, in the
 * engine's own scheduler. One round:
 *
 * 1. Propose. The controller decides whether each sequence drafts and with which threshold; the
 *    proposers return the candidates y_1..y_k and what acceptance needs (q rows or point masses).
 * 2. Verify. One target pass over [unseen tokens of x, y_1..y_k] gives p_1..p_{k+1}.
 * 3. Accept (acceptance.ts): the accepted prefix of the candidates plus one token from the
 *    target (recovered or bonus), so every round emits at least one token.
 * 4. Roll back both KV caches to x + accepted candidates; the emitted token is fed to both next round.
 * 5. Account: drafted, accepted, draft and verify time (stats.ts), pass costs (cost-model.ts).
 *
 * Policy `none` never drafts, which makes the same loop plain target-only decoding.
 */
import { RequestError } from '../errors.js';
import { DraftController, type SequencePolicy } from './draft-controller.js';
import { SequenceDraftFreeProposer } from './draft-free-proposer.js';
import type { DraftPhase } from './draft-phase.js';
import { DraftModelProposer } from './draft-proposer.js';
import { HybridProposer } from './hybrid-proposer.js';
import type { TokenLogprob } from './logprobs.js';
import type { DecoderModel } from './model.js';
import type { OutputDecider } from './output-decider.js';
import type { Proposer } from './proposer.js';
import type { PassRecord } from './passes.js';
import { BatchScheduler } from './scheduler.js';
import { ContextLengthError, type FinishReason, type GenerateOptions, Sequence } from './sequence.js';
import type { GenerationStats } from './stats.js';
import { SuffixCachePool } from '../proposers/suffix.js';
import { hybridParts } from './policy-registry.js';
import { type AcceptancePredictor, createPolicy, isDraftFree } from './stop-policy.js';
import type { PassCostModel } from './cost-model.js';

export { ContextLengthError, DRAFT_PHASE_MODES, type DraftPhaseMode, type FinishReason, type GenerateOptions, PREFILL_CHUNK } from './sequence.js';

/**
 * Tokens one iteration of the engine's own scheduler feeds at most (a generation run alone,
 * `Generation.step`): vLLM's max_num_batched_tokens, as `specd serve`'s default.
 */
export const ALONE_MAX_BATCH_TOKENS = 512;

export class SpeculativeDecoder {
  /** Decides how each sequence drafts, each round, from the measured pass costs. */
  readonly controller: DraftController;
  /** The draft model (and the head's draft) as the proposer of every sequence that runs one. */
  readonly draftProposer: DraftModelProposer;
  /** The draft model against a draft-free proposer, per round and sequence (`GenerateOptions.hybrid`). */
  readonly hybridProposer: HybridProposer;
  /** Suffix decoding's global trees: the outputs of this engine's finished requests, for its later ones. */
  readonly suffixCaches = new SuffixCachePool();
  private ownScheduler: BatchScheduler | undefined;

  constructor(
    readonly target: DecoderModel,
    readonly draft?: DecoderModel,
    /** The acceptance head for policies that need one (specdec++). */
    readonly head?: AcceptancePredictor,
    /**
     * The draft as policies that need the head run it: the same weights with
     * `last_hidden_state` (and `accept_logit`, when the head is fused into its graph) as extra
     * outputs. Default: `draft`.
     */
    readonly headDraft?: DecoderModel,
    /** One-run draft phases of `draft` and `headDraft` (draft-phase.ts), used where a round can run one. */
    readonly phases: readonly DraftPhase[] = [],
  ) {
    if (target.logitIds) throw new RangeError("the target's logits hold a token map's columns only; a target's rows must cover the vocabulary");
    if (draft && draft.info.vocabSize !== target.info.vocabSize) {
      throw new RangeError(`draft vocabulary (${draft.info.vocabSize}) differs from the target's (${target.info.vocabSize})`);
    }
    this.controller = new DraftController(head);
    this.draftProposer = new DraftModelProposer(head, phases);
    this.hybridProposer = new HybridProposer(this.draftProposer, () => {
      const draftStepMs = this.controller.costs.draftStepMs;
      return draftStepMs === undefined ? undefined : { verifyMs: (tokens) => this.controller.costs.verifyMs(tokens)!, draftStepMs };
    });
  }

  /** Pass costs at the current load, measured on this engine's passes (the auto threshold of specdec++). */
  get costs(): PassCostModel {
    return this.controller.costs;
  }

  /** The scheduler of generations stepped alone (`Generation.step`); a batch of one when nothing else runs in it. */
  get scheduler(): BatchScheduler {
    this.ownScheduler ??= new BatchScheduler({ maxBatchTokens: ALONE_MAX_BATCH_TOKENS });
    return this.ownScheduler;
  }

  /**
   * Tell `onPass` about every pass of the rounds of generations stepped alone that start after
   * this call (a benchmark's split of a round's time by pass kind, passes.ts `PassRecord`).
   */
  reportPasses(onPass: (pass: PassRecord) => void): void {
    this.ownScheduler = new BatchScheduler({ maxBatchTokens: ALONE_MAX_BATCH_TOKENS, onPass });
  }

  /** Longest sequence both models accept. */
  get contextLength(): number {
    return this.target.info.maxPositions;
  }

  /**
   * Begin a generation; drive it with `step()` (or a scheduler's `step(generation)`) until `done`.
   * @throws RequestError for an empty prompt, a policy needing a draft or head the engine lacks,
   *   a draft-free knob out of range, `hybrid` without a policy that runs the draft (policy `hybrid`
   *   is specdec++ with `GenerateOptions.hybrid`, policy-registry.ts hybridParts); ContextLengthError for a prompt that fills the context
   */
  start(prompt: readonly number[], opts: GenerateOptions): Generation {
    // Policy `hybrid`: the draft's specdec++ with the draft-free proposer beside it.
    if (opts.policy.policy === 'hybrid') {
      const { draft, free } = hybridParts(opts.policy);
      opts = { ...opts, policy: draft, hybrid: free };
    }
    if (prompt.length === 0) throw new RequestError('the prompt has no tokens');
    if (prompt.length >= this.contextLength) {
      throw new ContextLengthError(`the prompt has ${prompt.length} tokens; the model's context is ${this.contextLength}`);
    }
    const admitted = this.controller.admit(opts.policy, opts.sampling, opts.seed);
    const policy = createPolicy(admitted.spec);
    // A policy that never drafts feeds no draft (nor fills its cache with the prompt).
    const draft = policy.maxDraft === 0 ? undefined : policy.needsHead ? (this.headDraft ?? this.draft) : this.draft;
    if (policy.maxDraft > 0 && !draft) throw new RequestError(`policy ${policy.name} needs a draft model`, 'speculative.policy');
    if (policy.needsHead) {
      if (!this.head) throw new RequestError(`policy ${policy.name} needs an acceptance head`, 'speculative.policy');
      if (!draft?.hasAcceptLogit && !draft?.hasHiddenState) {
        throw new RequestError(`policy ${policy.name} needs a draft that outputs last_hidden_state (specd models prepare-draft)`, 'speculative.policy');
      }
    }
    if (opts.hybrid && !draft) throw new RequestError(`hybrid needs a policy that runs the draft model, got ${policy.name}`, 'speculative.policy');
    if (opts.hybrid && !isDraftFree(opts.hybrid)) throw new RequestError('hybrid competes with ngram or suffix', 'speculative.policy');
    const sequence = new Sequence(this.target, draft, prompt, opts);
    let proposer: Proposer = this.draftProposer;
    const free = isDraftFree(admitted.spec) ? admitted.spec : opts.hybrid;
    if (free) {
      let own: SequenceDraftFreeProposer;
      try {
        own = new SequenceDraftFreeProposer(sequence, free, this.suffixCaches, !sequence.greedy && opts.seed !== undefined);
      } catch (err) {
        sequence.discard();
        throw err;
      }
      if (opts.hybrid) this.hybridProposer.add(sequence, own);
      proposer = opts.hybrid ? this.hybridProposer : own;
    }
    const generation = new Generation(this, sequence, proposer, admitted);
    if (sequence.maxNew === 0) sequence.finish('length');
    return generation;
  }
}

/** A request's generation: its sequence, the proposer of its candidates and its admitted policy. */
export class Generation {
  constructor(
    /** The engine it runs on (its target, its draft controller). */
    readonly engine: SpeculativeDecoder,
    readonly sequence: Sequence,
    readonly proposer: Proposer,
    readonly policy: SequencePolicy,
  ) {}

  /** Tokens generated so far (not including the prompt); the output is a prefix of them (`output`). */
  get tokenIds(): number[] {
    return this.sequence.tokenIds;
  }

  /** Prompt tokens whose rows came from the prefix cache instead of being computed (Sequence.cachedPromptTokens): OpenAI's `cached_tokens`. */
  get cachedPromptTokens(): number {
    return this.sequence.cachedPromptTokens;
  }

  /** With `GenerateOptions.logprobs`: one record per generated token, aligned with `tokenIds`. */
  get logprobs(): TokenLogprob[] {
    return this.sequence.logprobs;
  }

  /** Which tokens are the output and why it ended, decided token by token. */
  get output(): OutputDecider {
    return this.sequence.output;
  }

  get done(): boolean {
    return this.sequence.done;
  }

  get finishReason(): FinishReason | undefined {
    return this.sequence.finishReason;
  }

  /** Whether this generation's specdec++ threshold (and whether it drafts) follows the load (`--threshold auto`). */
  get adaptive(): boolean {
    return this.policy.anchor !== undefined;
  }

  /** Prompt tokens not yet in the target's KV cache (Sequence.prefillPending). */
  get prefillPending(): number {
    return this.sequence.prefillPending;
  }

  /**
   * Run one round in the engine's own scheduler (after feeding the prompt, on the first).
   * @returns the tokens it added to the sequence (`output` says which are the output)
   */
  step(): Promise<number[]> {
    return this.engine.scheduler.step(this);
  }

  /** Run to the end; returns the output tokens. */
  async run(): Promise<number[]> {
    while (!this.done) await this.step();
    return this.tokenIds;
  }

  /** End early (the client went away); a no-op once ended. */
  finish(reason: FinishReason): void {
    this.sequence.finish(reason);
  }

  /** Sequence.takePromptFeedShare. */
  takePromptFeedShare(emitted: number): number {
    return this.sequence.takePromptFeedShare(emitted);
  }

  get stats(): GenerationStats {
    return this.sequence.stats;
  }

  /** Free the caches and the grammar after a failed pass (the generation cannot go on). */
  discard(): void {
    this.sequence.discard();
  }
}
