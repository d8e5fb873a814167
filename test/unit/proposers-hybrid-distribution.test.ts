/**
 * `hybrid` keeps sampled output exact: each round verifies either the draft model's candidates
 * (drawn from q, verified with q) or the copied ones (point masses), chosen by the rule of
 * src/proposers/hybrid.ts (skip the draft when the copied proposal is expected to deliver at
 * least the draft's running mean; when sampling, a round that drafted verifies the draft's
 * candidates). Here a toy draft proposes, prompt lookup copies (DraftFreeProposer with its
 * acceptance by match length), a toy head scores the drafted candidates, toy target
 * distributions over 6 tokens verify with the engine's acceptance rule, and the first three
 * tokens' joint distribution is tested against the target's (chi-square). The control: the
 * after-draft choice greedy decoding uses (the copied proposal when it beats the head's
 * expectation of the candidates drawn), applied when sampling, is caught. No model.
 */
import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import { acceptSampled } from '../../src/engine/acceptance.js';
import { Rng } from '../../src/engine/rng.js';
import { sample } from '../../src/engine/sampling.js';
import { expectedAcceptedFromHead } from '../../src/proposers/acceptance-by-match.js';
import { DraftFreeProposer } from '../../src/proposers/draft-free.js';
import { chooseAfterDraft, copiedTail, DraftAcceptanceMean, skipDraft } from '../../src/proposers/hybrid.js';
import { chiSquare } from '../support/statistics.js';
import { normalise, TOY_PROMPT, TOY_V, toyOneHot, toyTargetAt, toyTargetJoint, tripleIndex } from '../support/toy-bigram.js';

const ALPHA = 1e-4;
const TRIALS = 60_000;
/** Candidates per draft round (and most copied per round). */
const K = 3;
/** The toy draft: q(next | last token), close to the target's in places, far in others. */
const DRAFT_BIGRAM = [
  [40, 20, 20, 10, 5, 5],
  [5, 20, 5, 50, 20, 0],
  [10, 30, 10, 10, 10, 30],
  [10, 10, 30, 20, 20, 10],
  [50, 10, 5, 5, 10, 20],
  [5, 25, 15, 25, 15, 15],
].map(normalise);

/** How a round that drafted chooses between the draft's candidates and the copied ones. */
type AfterDraft = (freeExpected: number, draftExpected: number) => 'draft' | 'draft-free';

interface RoundCounts {
  draft: number;
  skipped: number;
  /** Rounds that drafted and then verified the copied candidates. */
  switched: number;
  /** Rounds whose drafted candidates the copied ones continued (step 3). */
  extended?: number;
}

/**
 * Step 3 of the rule: how a round that verifies the draft's candidates appends the copied ones
 * that continue them. `point-mass` is the rule (verified with q = one-hot); `draft-q` is a
 * control that verifies them as if the draft had drawn them (with its row there), which is wrong.
 * With either, the toy draft stops after a candidate it gave less than STOP_BELOW (a stop that
 * depends on the candidates drawn, as the head's does), so that copies can run past it.
 */
type Tail = 'none' | 'point-mass' | 'draft-q';
const STOP_BELOW = 0.5;

/**
 * Generate `want` tokens after TOY_PROMPT with hybrid rounds: the first drafts (the draft's
 * acceptance is not known yet), later ones may skip it. `free`'s acceptance by match length
 * carries over between calls (the rule may depend on anything verified before the round).
 */
function generate(afterDraft: AfterDraft, want: number, rng: Rng, free: DraftFreeProposer, counts: RoundCounts, tail: Tail = 'none'): number[] {
  const mean = new DraftAcceptanceMean();
  free.add(0, TOY_PROMPT);
  const text = [...TOY_PROMPT];
  while (text.length - TOY_PROMPT.length < want) {
    const copied = free.propose([0])[0]!;
    let useDraft = false;
    const drafted: number[] = [];
    const q: Float64Array[] = [];
    if (!skipDraft(copied.expectedAccepted, mean.value)) {
      for (let i = 0; i < K; i++) {
        const row = DRAFT_BIGRAM[(drafted.at(-1) ?? text.at(-1))!]!;
        q.push(row);
        drafted.push(sample(row, rng));
        if (tail !== 'none' && row[drafted.at(-1)!]! < STOP_BELOW) break;
      }
      // The toy head: P(accept y_i) = q_i(y_i), a function of the candidates drawn.
      const headExpected = expectedAcceptedFromHead(drafted.map((y, i) => q[i]![y]!));
      useDraft = copied.tokens.length === 0 || afterDraft(copied.expectedAccepted, headExpected) === 'draft';
      if (useDraft) counts.draft++;
      else counts.switched++;
    } else counts.skipped++;
    if (useDraft && tail !== 'none') {
      const k = drafted.length;
      const t = copiedTail(drafted, copied.tokens, K - k);
      for (const y of copied.tokens.slice(k, k + t)) {
        q.push(tail === 'point-mass' ? toyOneHot(y) : DRAFT_BIGRAM[drafted.at(-1)!]!);
        drafted.push(y);
      }
      if (t > 0) counts.extended = (counts.extended ?? 0) + 1;
    }
    const tokens = useDraft ? drafted : copied.tokens;
    const p: Float64Array[] = [];
    for (let i = 0; i <= tokens.length; i++) p.push(toyTargetAt([...text, ...tokens.slice(0, i)]));
    const r = acceptSampled(tokens, useDraft ? q : tokens.map(toyOneHot), p, rng);
    const verified = [...tokens.slice(0, r.accepted), r.next];
    if (useDraft) mean.observe(r.accepted);
    free.observe(0, useDraft ? undefined : copied, r.accepted, verified);
    text.push(...verified);
  }
  free.remove(0, false);
  return text.slice(TOY_PROMPT.length, TOY_PROMPT.length + want);
}

function jointCounts(afterDraft: AfterDraft, seed: number, counts: RoundCounts, tail: Tail = 'none'): Float64Array {
  const rng = new Rng(seed);
  const free = new DraftFreeProposer({ methods: ['ngram'], ngram: { promptLookupMin: 1, promptLookupMax: 2, numSpeculativeTokens: K } });
  const out = new Float64Array(TOY_V ** 3);
  for (let t = 0; t < TRIALS; t++) {
    const [a, b, c] = generate(afterDraft, 3, rng, free, counts, tail);
    out[tripleIndex(a!, b!, c!)]!++;
  }
  return out;
}

const describeFit = (r: ReturnType<typeof chiSquare>) => `chi2 ${r.stat.toFixed(1)}, dof ${r.dof}, p ${r.pValue.toExponential(2)}, impossible ${r.impossible}`;

describe('hybrid rounds keep sampled output exact', () => {
  test('sampled: the first three tokens are distributed as the target samples them; both proposals are verified', (t: TestContext) => {
    const counts: RoundCounts = { draft: 0, skipped: 0, switched: 0 };
    const r = chiSquare(jointCounts((f, d) => chooseAfterDraft(f, d, false), 11, counts), toyTargetJoint());
    t.diagnostic(`hybrid rule: ${describeFit(r)}; rounds ${JSON.stringify(counts)}`);
    assert.equal(r.impossible, 0, describeFit(r));
    assert.ok(r.pValue > ALPHA, describeFit(r));
    assert.equal(counts.switched, 0, 'when sampling, a round that drafted verifies the draft');
    assert.ok(counts.draft > 0.1 * TRIALS && counts.skipped > 0.1 * TRIALS, JSON.stringify(counts));
  });

  test("sampled: the draft's candidates continued by copied ones in one verification keep the target's distribution", (t: TestContext) => {
    const counts: RoundCounts = { draft: 0, skipped: 0, switched: 0, extended: 0 };
    const r = chiSquare(jointCounts((f, d) => chooseAfterDraft(f, d, false), 11, counts, 'point-mass'), toyTargetJoint());
    t.diagnostic(`draft + copied tail: ${describeFit(r)}; rounds ${JSON.stringify(counts)}`);
    assert.equal(r.impossible, 0, describeFit(r));
    assert.ok(r.pValue > ALPHA, describeFit(r));
    assert.ok(counts.extended! > 0.05 * TRIALS, JSON.stringify(counts));
  });

  test('the chi-square test notices copied candidates verified with the draft\'s q instead of a point mass', (t: TestContext) => {
    const counts: RoundCounts = { draft: 0, skipped: 0, switched: 0, extended: 0 };
    const r = chiSquare(jointCounts((f, d) => chooseAfterDraft(f, d, false), 11, counts, 'draft-q'), toyTargetJoint());
    t.diagnostic(`control, copied tail verified with the draft's q: ${describeFit(r)}; rounds ${JSON.stringify(counts)}`);
    assert.ok(counts.extended! > 0.05 * TRIALS, JSON.stringify(counts));
    assert.ok(r.pValue < ALPHA, describeFit(r));
  });

  test("the chi-square test notices the greedy after-draft choice applied when sampling", (t: TestContext) => {
    const counts: RoundCounts = { draft: 0, skipped: 0, switched: 0 };
    const r = chiSquare(jointCounts((f, d) => chooseAfterDraft(f, d, true), 11, counts), toyTargetJoint());
    t.diagnostic(`after-draft choice by the head when sampling: ${describeFit(r)}; rounds ${JSON.stringify(counts)}`);
    assert.ok(counts.switched > 0.05 * TRIALS, JSON.stringify(counts));
    assert.ok(r.pValue < ALPHA, describeFit(r));
  });
});
