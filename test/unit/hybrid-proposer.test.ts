/**
 * HybridProposer (src/engine/hybrid-proposer.ts) appending copied candidates to the draft's in
 * one verification (step 3 of src/proposers/hybrid.ts): when the copied proposal continues the
 * draft's candidates, the round verifies the draft's followed by the copied ones (their q rows
 * point masses when sampling), within the round's budget; when it does not, the draft's alone.
 * A stand-in sequence and a stand-in draft, no model.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SequenceDraftFreeProposer } from '../../src/engine/draft-free-proposer.js';
import { HybridProposer } from '../../src/engine/hybrid-proposer.js';
import type { ProposeContext, ProposeRequest, Proposer } from '../../src/engine/proposer.js';
import type { Proposal, Sequence } from '../../src/engine/sequence.js';
import type { RoundCosts } from '../../src/proposers/hybrid.js';

const VOCAB = 64;
/** A prompt whose second half repeats its first, so prompt lookup proposes passage[6..12). */
const passage = Array.from({ length: 20 }, (_, i) => (i * 7) % VOCAB);
const prompt = [...passage, ...passage.slice(0, 6)];

function standIn(greedy: boolean): Sequence {
  const fields = {
    tokens: [...prompt],
    greedy,
    opts: {},
    target: { info: { vocabSize: VOCAB } },
    processor: { constraint: undefined },
    unverified: 0,
    draftCache: undefined,
    finishReason: undefined,
    candidateRoom: () => 16,
    onEnd: () => undefined,
  };
  return fields as unknown as Sequence;
}

/** A draft that proposes `tokens` with the head's P(accept) 0.9 each and q rows uniform. */
function standInDraft(tokens: number[]): Proposer {
  return {
    propose: async (requests: readonly ProposeRequest[]) =>
      requests.map(({ sequence }): Proposal => ({
        tokens: [...tokens],
        draftProbs: sequence.greedy ? [] : tokens.map(() => new Float64Array(VOCAB).fill(1 / VOCAB)),
        acceptProbs: tokens.map(() => 0.9),
      })),
  };
}

async function round(greedy: boolean, drafted: number[], verifyBudget = 64, costs?: RoundCosts): Promise<{ proposal: Proposal; hybrid: HybridProposer }> {
  const sequence = standIn(greedy);
  const hybrid = new HybridProposer(standInDraft(drafted), () => costs);
  hybrid.add(sequence, new SequenceDraftFreeProposer(sequence, { policy: 'ngram', promptLookupMin: 2, promptLookupMax: 4, numSpeculativeTokens: 6 }));
  const ctx = { verifyBudget } as unknown as ProposeContext;
  const [proposal] = await hybrid.propose([{ sequence, plan: { draft: true } as never }], ctx);
  return { proposal: proposal!, hybrid };
}

describe("hybrid: the draft's candidates continued by copied ones", () => {
  for (const greedy of [true, false]) {
    test(`${greedy ? 'greedy' : 'sampled'}: a copy that continues the draft is appended to it`, async () => {
      const { proposal, hybrid } = await round(greedy, passage.slice(6, 8));
      assert.deepEqual(proposal.tokens, passage.slice(6, 12), "the draft's 2, then the copy's 4 after them");
      assert.deepEqual(proposal.acceptProbs, [0.9, 0.9], "the head's view covers the draft's candidates only");
      assert.equal(hybrid.choices['draft+copied'], 1);
      assert.equal(hybrid.choices.draft, 1);
      if (greedy) assert.equal(proposal.draftProbs.length, 0);
      else {
        assert.equal(proposal.draftProbs.length, 6);
        assert.equal(proposal.draftProbs[1]![0], 1 / VOCAB, "the draft's q rows kept");
        proposal.tokens.slice(2).forEach((y, j) => {
          const row = proposal.draftProbs[2 + j]!;
          assert.equal(row[y], 1, `copied candidate ${j} is a point mass`);
          assert.equal(row.reduce((a, b) => a + b, 0), 1);
        });
      }
    });
  }

  test('a copy that leaves the draft is not appended', async () => {
    const { proposal, hybrid } = await round(true, [passage[6]!, (passage[7]! + 1) % VOCAB]);
    assert.deepEqual(proposal.tokens, [passage[6]!, (passage[7]! + 1) % VOCAB]);
    assert.equal(hybrid.choices['draft+copied'], 0);
  });

  test('with measured costs, the copied candidates go as far as they pay', async () => {
    // The copy's rates are the prior's, 0.6 each. Rows nearly free: all 4 after the draft's 2 pay.
    const cheap = await round(true, passage.slice(6, 8), 64, { verifyMs: (n) => 10 + 0.01 * n, draftStepMs: 1 });
    assert.deepEqual(cheap.proposal.tokens, passage.slice(6, 12));
    // A row costing half a pass: (1 + 0.6) / T(2) = 0.08 per ms beats (1 + 0.96) / T(3) = 0.078, so the
    // copy is cut to 1 candidate, which does not run past the draft's 2: nothing appended.
    const dear = await round(true, passage.slice(6, 8), 64, { verifyMs: (n) => 10 + 5 * n, draftStepMs: 1 });
    assert.deepEqual(dear.proposal.tokens, passage.slice(6, 8));
    assert.equal(dear.hybrid.choices['draft+copied'], 0);
  });

  test("the round's budget bounds the copied candidates appended", async () => {
    const { proposal } = await round(true, passage.slice(6, 8), 5);
    assert.deepEqual(proposal.tokens, passage.slice(6, 11), 'a budget of 5: the draft\'s 2 and 3 copied');
  });
});
