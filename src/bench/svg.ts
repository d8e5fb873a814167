/** Small helpers shared by the hand-written SVG charts of the benchmarks. */

/** Tick values covering [lo, hi] with a 1-2-5 step. */
export function ticks(lo: number, hi: number, count = 5): number[] {
  const span = Math.max(hi - lo, 1e-9);
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-6; v += step) out.push(Math.round(v / step) * step);
  return out;
}

/** Text escaped for SVG content and attribute values. */
export const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** A coordinate or value rounded to two decimals. */
export const num = (x: number): string => (Math.round(x * 100) / 100).toString();

/** The opening tag of a standalone SVG document with a white background. */
export function svgOpen(width: number, height: number): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
  ].join('\n');
}

/** A categorical palette (matplotlib's tab10). */
export const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

/**
 * A legend laid out in rows: each entry is a key (drawn by `key` with its left edge at x and
 * the text baseline at y), its name `keyWidth` px right of x, and `gap` px after the name (6.5 px
 * a character); a row wraps 16 px lower when the next entry would pass `width`. Returns the SVG
 * elements and the height taken below `top`, in px.
 */
export function legendRows(
  names: readonly string[],
  layout: { width: number; top: number; keyWidth: number; gap: number },
  key: (i: number, x: number, y: number) => string[],
): { svg: string[]; height: number } {
  const svg: string[] = [];
  let x = 12;
  let y = layout.top + 10;
  names.forEach((name, i) => {
    const w = layout.keyWidth + layout.gap + name.length * 6.5;
    if (x + w > layout.width && x > 12) {
      x = 12;
      y += 16;
    }
    svg.push(...key(i, x, y), `<text x="${x + layout.keyWidth}" y="${y + 1}">${esc(name)}</text>`);
    x += w;
  });
  return { svg, height: y + 10 - layout.top };
}
