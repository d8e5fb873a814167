/**
 * A frequency prior for random-weight Llama-family pairs (llama-random.ts): the target's logits
 * get `strength x log(count + SMOOTHING)` added per token, so that its greedy and sampled outputs
 * concentrate on the tokens real text uses most, as a trained model's do, instead of spreading
 * evenly over a 151,936-token vocabulary.
 *
 * Construction (one hidden channel, {@link PRIOR_CHANNEL}, carries it; Llama has no lm_head bias):
 * - every token's embedding holds `BASE + SPREAD x r_j` on the channel, r_j in [0, 1] the token's
 *   log count rescaled (0 for the rarest, 1 for the most frequent); with tied embeddings the same
 *   value is the lm_head's weight, untied the lm_head's row of the channel is set alike;
 * - no block reads the channel (its input and post-attention norm gains are 0) and none writes it
 *   (its o_proj and down_proj columns are 0), so at the final norm the channel holds the current
 *   token's `BASE + SPREAD x r_cur`, within SPREAD / BASE = 10% of BASE whatever the token;
 * - the final norm's gain on the channel is `strength x (lmax - lmin) / (BASE x SPREAD)`, so the
 *   channel adds `strength x (log(count_j + SMOOTHING) - lmin) / rms` to logit j, where rms is the
 *   final residual's root mean square (about 1 after one block, growing with each full-size
 *   block): so `strength` is per unit rms, and a pair with more draft blocks needs a larger one
 *   for the same concentration (measured figures: docs/models.md).
 *
 * Draft and target share the embeddings, final norm and lm_head, so both carry the same prior;
 * how often they agree is still set by the target's later blocks (`deepScale`).
 */

/** The hidden channel that carries the prior. */
export const PRIOR_CHANNEL = 0;
/** Added to every count before its log: an unseen token's log count is log(0.5), once seen log(1.5). */
export const SMOOTHING = 0.5;
/** Value of the channel in every embedding (a unit, like one coordinate of an untied embedding). */
const BASE = 1;
/** Range of the token-dependent part on the channel (r_j x SPREAD): small beside BASE. */
const SPREAD = 0.1;

/**
 * Default `strength`: logit units per nat of count. Measured with the shipped prompts' counts on
 * a Qwen3-vocabulary pair of width 256, 8 blocks, a 2-block draft (4 gsm8k prompts x 48 greedy
 * tokens, 384 in all): at 1, 177 distinct tokens and 86.5% of them among the 32,768 most counted;
 * at 1.5, 55 distinct and 99%; real text through Qwen3's tokenizer puts 94-96% of its tokens in
 * such a map (docs/benchmarks.md), between the two.
 */
export const DEFAULT_FREQUENCY_STRENGTH = 1.25;

export interface FrequencyPrior {
  /** Occurrences per token id (`counts[id]`); ids past its end count 0. // [<= vocab] */
  counts: ArrayLike<number>;
  /** Logit units added per nat of log count (default {@link DEFAULT_FREQUENCY_STRENGTH}). */
  strength?: number;
}

/** What the weights carry on {@link PRIOR_CHANNEL}. */
export interface PriorChannel {
  /** The channel's value in each token's embedding (and lm_head weight). // [vocab] */
  values: Float32Array;
  /** The final norm's gain on the channel. */
  gain: number;
}

/**
 * The channel values and final-norm gain of `prior` for a vocabulary of `vocab` ids.
 * @throws RangeError for a negative or non-finite count, a negative strength, or counts longer than the vocabulary
 */
export function priorChannel(prior: FrequencyPrior, vocab: number): PriorChannel {
  const strength = prior.strength ?? DEFAULT_FREQUENCY_STRENGTH;
  if (!(strength >= 0) || !Number.isFinite(strength)) throw new RangeError(`frequency strength must be a finite number >= 0, not ${strength}`);
  if (prior.counts.length > vocab) throw new RangeError(`${prior.counts.length} token counts for a vocabulary of ${vocab}`);
  const logs = new Float64Array(vocab);
  let lmin = Infinity;
  let lmax = -Infinity;
  for (let j = 0; j < vocab; j++) {
    const c = j < prior.counts.length ? prior.counts[j]! : 0;
    if (!(c >= 0) || !Number.isFinite(c)) throw new RangeError(`token ${j} has count ${c}; counts must be finite and >= 0`);
    logs[j] = Math.log(c + SMOOTHING);
    lmin = Math.min(lmin, logs[j]!);
    lmax = Math.max(lmax, logs[j]!);
  }
  const range = lmax - lmin;
  const values = new Float32Array(vocab);
  for (let j = 0; j < vocab; j++) values[j] = BASE + (range > 0 ? (SPREAD * (logs[j]! - lmin)) / range : 0);
  return { values, gain: range > 0 ? (strength * range) / (BASE * SPREAD) : 0 };
}
