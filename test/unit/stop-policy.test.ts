/**
 * The stop policies without a model (src/engine/stop-policy.ts): each rule's verdicts on
 * hand-made draft steps (fixed K, confidence's p_min with stop-drop, SpecDec++'s
 * 1 - prod P(accept) > h after K_min and at K_max), the `NAME:VALUE` forms and their errors
 * naming the knob, and the head's threshold by temperature.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  createPolicy,
  type DraftStep,
  DEFAULT_CONFIDENCE_K_MAX,
  DEFAULT_FIXED_K,
  DEFAULT_P_MIN,
  MAX_DRAFT_LIMIT,
  parsePolicy,
  policyLabel,
  PolicySpecError,
  recommendedThresholdAt,
  type StopPolicy,
  validatePolicySpec,
  withDefaultThreshold,
} from '../../src/engine/stop-policy.js';

/** The verdicts of a round whose candidates have these draft probabilities / head probabilities. */
function verdicts(policy: StopPolicy, steps: { prob?: number; acceptProb?: number }[]): string[] {
  policy.begin();
  const out: string[] = [];
  for (const [i, s] of steps.entries()) {
    const step: DraftStep = { index: i + 1, token: 7, prob: s.prob ?? 1, acceptProb: s.acceptProb };
    const v = policy.decide(step);
    out.push(v);
    if (v !== 'continue') break;
  }
  return out;
}

describe('the rules', () => {
  test('none never drafts; fixed:K keeps K candidates', () => {
    assert.equal(createPolicy({ policy: 'none' }).maxDraft, 0);
    const fixed = createPolicy({ policy: 'fixed', k: 3 });
    assert.equal(fixed.maxDraft, 3);
    assert.deepEqual(verdicts(fixed, [{}, {}, {}, {}]), ['continue', 'continue', 'stop']);
    assert.deepEqual(verdicts(fixed, [{}, {}, {}]), ['continue', 'continue', 'stop'], 'begin() starts each round afresh');
  });

  test('confidence drops the first candidate below p_min and stops at k_max', () => {
    const p = createPolicy({ policy: 'confidence', pMin: 0.5, kMax: 3 });
    assert.ok(p.needsDraftProb);
    assert.deepEqual(verdicts(p, [{ prob: 0.9 }, { prob: 0.49 }]), ['continue', 'stop-drop']);
    assert.deepEqual(verdicts(p, [{ prob: 0.5 }, { prob: 0.9 }, { prob: 0.9 }]), ['continue', 'continue', 'stop'], 'p_min itself continues; k_max stops');
    assert.equal(p.graphRule.pMin, 0.5);
  });

  test('specdec++ stops once 1 - prod P(accept) exceeds h, never before K_min, always at K_max', () => {
    const p = createPolicy({ policy: 'specdec++', threshold: 0.3, kMin: 1, kMax: 8 });
    assert.ok(p.needsHead);
    // 1 - 0.9 = 0.1, 1 - 0.81 = 0.19, 1 - 0.405 = 0.595 > 0.3: the third candidate is kept and verified.
    assert.deepEqual(verdicts(p, [{ acceptProb: 0.9 }, { acceptProb: 0.9 }, { acceptProb: 0.5 }, { acceptProb: 1 }]), ['continue', 'continue', 'stop']);
    const kMin = createPolicy({ policy: 'specdec++', threshold: 0.3, kMin: 3, kMax: 8 });
    assert.deepEqual(verdicts(kMin, [{ acceptProb: 0.1 }, { acceptProb: 0.1 }, { acceptProb: 0.1 }]), ['continue', 'continue', 'stop'], 'K_min continues whatever the head says');
    const kMax = createPolicy({ policy: 'specdec++', threshold: 0.99, kMin: 1, kMax: 2 });
    assert.deepEqual(verdicts(kMax, [{ acceptProb: 1 }, { acceptProb: 1 }, { acceptProb: 1 }]), ['continue', 'stop']);
    assert.deepEqual(p.graphRule, { kMin: 1, threshold: 0.3, pMin: 0 });
    assert.throws(() => verdicts(p, [{}]), RangeError, 'a step without the head probability is an engine bug, not a request error');
  });

  test('specdec++ without a threshold cannot run until one is given', () => {
    assert.throws(() => createPolicy({ policy: 'specdec++', threshold: undefined, kMin: 1, kMax: 16 }), PolicySpecError);
    const spec = withDefaultThreshold({ policy: 'specdec++', threshold: undefined, kMin: 1, kMax: 16 }, 0.45);
    assert.equal(createPolicy(spec).name, 'specdec++:0.45');
    assert.deepEqual(withDefaultThreshold({ policy: 'fixed', k: 2 }, 0.45), { policy: 'fixed', k: 2 });
  });
});

describe('NAME:VALUE forms', () => {
  test('defaults and labels', () => {
    assert.deepEqual(parsePolicy('fixed'), { policy: 'fixed', k: DEFAULT_FIXED_K });
    assert.deepEqual(parsePolicy('confidence'), { policy: 'confidence', pMin: DEFAULT_P_MIN, kMax: DEFAULT_CONFIDENCE_K_MAX });
    assert.deepEqual(parsePolicy('specdec++'), { policy: 'specdec++', threshold: undefined, kMin: 1, kMax: 16 }, 'a bare specdec++ is auto');
    assert.deepEqual(parsePolicy('specdec++:auto'), parsePolicy('specdec++'));
    for (const text of ['none', 'fixed:7', 'confidence:0.3', 'specdec++:0.6', 'specdec++']) assert.equal(policyLabel(parsePolicy(text)), text);
  });

  test('bad values are refused naming the knob', () => {
    const refused: [string, RegExp][] = [
      ['fixed:0', /^k must be an integer in \[1, 32\], got 0$/],
      [`fixed:${MAX_DRAFT_LIMIT + 1}`, /^k must be an integer/],
      ['fixed:2.5', /^k must be an integer/],
      ['fixed:x', /bad policy "fixed:x": k must be an integer/],
      ['confidence:1.5', /^p_min must be a number in \[0, 1\]/],
      ['specdec++:-0.1', /^threshold must be a number in \[0, 1\]/],
      ['none:3', /none takes no value/],
      ['fixed:1:2', /expected NAME or NAME:VALUE/],
      ['eagle', /unknown policy "eagle".*none, fixed, confidence, specdec\+\+, ngram, suffix/],
    ];
    for (const [text, message] of refused) assert.throws(() => parsePolicy(text), (err: Error) => err instanceof PolicySpecError && message.test(err.message), text);
    assert.throws(() => validatePolicySpec({ policy: 'specdec++', threshold: 0.5, kMin: 5, kMax: 4 }), /^PolicySpecError: k_min must not exceed k_max \(4\), got 5$/);
  });
});

test("the head's threshold by temperature: interpolated between its knots, held beyond them", () => {
  const head = { recommendedThreshold: 0.5, thresholdsByTemperature: [{ temperature: 1, threshold: 0.6 }, { temperature: 0, threshold: 0.2 }] };
  assert.equal(recommendedThresholdAt(head, 0), 0.2);
  assert.equal(recommendedThresholdAt(head, 0.5), 0.4);
  assert.equal(recommendedThresholdAt(head, 2), 0.6);
  assert.equal(recommendedThresholdAt(head, -1), 0.2, 'a negative temperature counts as greedy');
  assert.equal(recommendedThresholdAt({ recommendedThreshold: 0.5 }, 0.7), 0.5, 'without knots, the single recommendation');
  assert.equal(recommendedThresholdAt(undefined, 0.7), undefined);
});
