/**
 * Histogram bucket bounds on the R10 series of preferred numbers (ISO 3 / IEC 60063's Renard
 * series: 1, 1.25, 1.6, 2, 2.5, 3.15, 4, 5, 6.3, 8 per decade, each about 10^(1/10) = 1.26x the
 * last, 1.28x at most where the series rounds). With bounds in a near-constant ratio, histogram_quantile()'s linear interpolation inside a
 * bucket is off by less than that ratio wherever the quantile falls.
 */

/** One decade of the R10 series. */
export const R10 = [1, 1.25, 1.6, 2, 2.5, 3.15, 4, 5, 6.3, 8] as const;

/**
 * The R10 values from `lo` to `hi` inclusive, ascending.
 * @param lo smallest bound (> 0), itself an R10 value times a power of ten
 * @param hi largest bound (>= lo)
 * @throws RangeError when lo is not positive or hi < lo
 */
export function preferredBuckets(lo: number, hi: number): number[] {
  if (!(lo > 0) || !(hi >= lo)) throw new RangeError(`preferredBuckets: need 0 < lo <= hi, got ${lo}, ${hi}`);
  const out: number[] = [];
  for (let exp = Math.floor(Math.log10(lo)); ; exp++) {
    for (const m of R10) {
      // Rounded to 12 significant digits so that 0.001 * 1.25 prints as 0.00125.
      const v = Number((m * 10 ** exp).toPrecision(12));
      if (v > hi * (1 + 1e-9)) return out;
      if (v >= lo * (1 - 1e-9)) out.push(v);
    }
  }
}
