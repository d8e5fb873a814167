/** Statistics for the distribution tests: Pearson's chi-square goodness of fit with an exact p-value. */

/** ln Gamma(x) for x > 0 (Lanczos, g = 7, n = 9; ~15 significant digits). */
function lnGamma(x: number): number {
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905,
    -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - lnGamma(1 - x);
  x -= 1;
  let a = c[0]!;
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i]! / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Regularized upper incomplete gamma Q(a, x) (series below a + 1, continued fraction above). */
function gammaQ(a: number, x: number): number {
  if (x <= 0) return 1;
  const gln = lnGamma(a);
  if (x < a + 1) {
    let sum = 1 / a;
    let term = sum;
    for (let n = 1; n < 1000; n++) {
      term *= x / (a + n);
      sum += term;
      if (Math.abs(term) < Math.abs(sum) * 1e-15) break;
    }
    return 1 - sum * Math.exp(-x + a * Math.log(x) - gln);
  }
  // Lentz's continued fraction.
  const tiny = 1e-300;
  let b = x + 1 - a;
  let c = 1 / tiny;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 1000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-15) break;
  }
  return Math.exp(-x + a * Math.log(x) - gln) * h;
}

/** P(X >= x) for X ~ chi-square with `dof` degrees of freedom. */
export function chiSquareSf(x: number, dof: number): number {
  return gammaQ(dof / 2, x / 2);
}

export interface ChiSquare {
  stat: number;
  dof: number;
  pValue: number;
  /** Observations in cells of probability 0 (each one alone refutes the distribution). */
  impossible: number;
}

/**
 * Pearson's chi-square goodness of fit of `counts` to `probs`. Cells with expected count
 * below 5 are pooled into one cell (dropped if the pool is still below 5, by merging it into
 * the smallest remaining cell). Any observation in a zero-probability cell gives p-value 0.
 */
export function chiSquare(counts: ArrayLike<number>, probs: ArrayLike<number>): ChiSquare {
  let n = 0;
  for (let i = 0; i < counts.length; i++) n += counts[i]!;
  let impossible = 0;
  const cells: { obs: number; exp: number }[] = [];
  const pooled = { obs: 0, exp: 0 };
  for (let i = 0; i < counts.length; i++) {
    const exp = n * probs[i]!;
    if (probs[i]! <= 0) {
      impossible += counts[i]!;
      continue;
    }
    if (exp < 5) {
      pooled.obs += counts[i]!;
      pooled.exp += exp;
    } else cells.push({ obs: counts[i]!, exp });
  }
  if (pooled.exp >= 5 || cells.length === 0) cells.push(pooled);
  else if (pooled.exp > 0) {
    const smallest = cells.reduce((a, b) => (b.exp < a.exp ? b : a));
    smallest.obs += pooled.obs;
    smallest.exp += pooled.exp;
  }
  let stat = 0;
  for (const { obs, exp } of cells) stat += (obs - exp) ** 2 / exp;
  const dof = cells.length - 1;
  const pValue = impossible > 0 ? 0 : dof > 0 ? chiSquareSf(stat, dof) : 1;
  return { stat, dof, pValue, impossible };
}
