/**
 * Rotary-embedding frequencies of Llama-family decoders, as transformers computes them
 * (`transformers/modeling_rope_utils.py`): the plain ones and Llama 3.x's `rope_scaling` type
 * `llama3`, which divides the low frequencies by `factor` and blends the middle band.
 */

/** config.json `rope_scaling` of type `llama3` (Llama 3.1, 3.2, 3.3). */
export interface Llama3RopeScaling {
  ropeType: 'llama3';
  /** How much longer the context is than the one trained on (`factor`, 8 for 3.1, 32 for 3.2). */
  factor: number;
  /** `low_freq_factor` (1 in Llama 3.x). */
  lowFreqFactor: number;
  /** `high_freq_factor` (4 in Llama 3.x). */
  highFreqFactor: number;
  /** `original_max_position_embeddings` (8192 in Llama 3.x). */
  originalMaxPositions: number;
}

/**
 * The `llama3` scaling in `rope_scaling`, or undefined when `raw` is not of that type.
 * @throws Error naming the field that is missing or not a positive number
 */
export function parseLlama3RopeScaling(raw: unknown): Llama3RopeScaling | undefined {
  if (!raw || typeof raw !== 'object') return undefined;
  const r = raw as Record<string, unknown>;
  if ((r.rope_type ?? r.type) !== 'llama3') return undefined;
  const field = (name: string): number => {
    const v = r[name];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new Error(`rope_scaling.${name} must be a positive number, got ${JSON.stringify(v)}`);
    return v;
  };
  const scaling: Llama3RopeScaling = {
    ropeType: 'llama3',
    factor: field('factor'),
    lowFreqFactor: field('low_freq_factor'),
    highFreqFactor: field('high_freq_factor'),
    originalMaxPositions: field('original_max_position_embeddings'),
  };
  if (scaling.highFreqFactor <= scaling.lowFreqFactor) throw new Error(`rope_scaling.high_freq_factor ${scaling.highFreqFactor} must exceed low_freq_factor ${scaling.lowFreqFactor}`);
  return scaling;
}

/** The same scaling as config.json writes it. */
export function llama3RopeScalingJson(s: Llama3RopeScaling): Record<string, unknown> {
  return {
    rope_type: 'llama3',
    factor: s.factor,
    low_freq_factor: s.lowFreqFactor,
    high_freq_factor: s.highFreqFactor,
    original_max_position_embeddings: s.originalMaxPositions,
  };
}

/**
 * The rotary frequencies [head_dim / 2] as float32: inv_freq_j = theta^(-2j / head_dim)
 * (transformers' `_compute_default_rope_parameters`), and with a `llama3` scaling
 * (`_compute_llama3_parameters`), wavelength w_j = 2 pi / inv_freq_j:
 * - w_j < original / high_freq_factor (high frequencies): unchanged;
 * - w_j > original / low_freq_factor (low frequencies): inv_freq_j / factor;
 * - between: (1 - s) inv_freq_j / factor + s inv_freq_j, s = (original / w_j - low) / (high - low).
 * The attention scaling of `llama3` is 1, so nothing else changes.
 */
export function ropeInverseFrequencies(theta: number, headDim: number, scaling?: Llama3RopeScaling): Float32Array {
  const plain = Float32Array.from({ length: headDim / 2 }, (_, j) => theta ** ((-2 * j) / headDim));
  if (!scaling) return plain;
  const { factor, lowFreqFactor: low, highFreqFactor: high, originalMaxPositions: original } = scaling;
  const lowFreqWavelen = original / low;
  const highFreqWavelen = original / high;
  return plain.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highFreqWavelen) return f;
    if (wavelen > lowFreqWavelen) return f / factor;
    const smooth = (original / wavelen - low) / (high - low);
    return (1 - smooth) * (f / factor) + smooth * f;
  });
}
