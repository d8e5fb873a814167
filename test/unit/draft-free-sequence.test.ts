/**
 * A sequence's draft-free proposer inside a round (src/engine/draft-free-proposer.ts) when
 * another proposer's candidates are verified (hybrid's draft won): greedy, the displaced
 * proposal is still judged against the emitted tokens and teaches the acceptance by match
 * length; sampled, only the emitted tokens are appended. A stand-in for the sequence, no model.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SequenceDraftFreeProposer } from '../../src/engine/draft-free-proposer.js';
import type { ProposeContext } from '../../src/engine/proposer.js';
import type { Sequence } from '../../src/engine/sequence.js';

const VOCAB = 64;
/** A prompt whose second half repeats its first, so prompt lookup matches. */
const passage = Array.from({ length: 20 }, (_, i) => (i * 7) % VOCAB);
const prompt = [...passage, ...passage.slice(0, 6)];

function standIn(greedy: boolean): Sequence {
  const tokens = [...prompt];
  const fields = {
    tokens,
    greedy,
    target: { info: { vocabSize: VOCAB } },
    processor: { constraint: undefined },
    unverified: 0,
    finishReason: undefined,
    candidateRoom: () => 16,
    onEnd: () => undefined,
  };
  return fields as unknown as Sequence;
}

const ctx = { verifyBudget: 64 } as unknown as ProposeContext;

for (const greedy of [true, false]) {
  test(`${greedy ? 'greedy' : 'sampled'}: a displaced proposal ${greedy ? 'teaches' : 'does not teach'} its acceptance`, async () => {
    const sequence = standIn(greedy);
    const free = new SequenceDraftFreeProposer(sequence, { policy: 'ngram', promptLookupMin: 2, promptLookupMax: 4, numSpeculativeTokens: 6 });
    const [proposal] = await free.propose([{ sequence, plan: { draft: true } as never }], ctx);
    assert.deepEqual(proposal!.tokens, passage.slice(6, 12));
    const before = free.expectedAccepted;
    free.withdraw();
    // The draft's round emitted the passage's next 5 tokens: the copy's first 5 candidates were right.
    free.observe(sequence, { tokens: [], draftProbs: [] }, { accepted: 4, emitted: passage.slice(6, 11) });
    const after = free.acceptance.ngram.expectedAccepted(4, 6);
    if (greedy) assert.ok(after > before, `E[accepted] ${after} after the round, ${before} before`);
    else assert.equal(after, before);
  });
}
