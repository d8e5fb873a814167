/**
 * The SpecDec++ paper's Pareto figure from offline benchmark results: discard rate (drafted
 * but rejected / drafted) against verification rate (target calls / token), one panel per data
 * set. Fixed K traces one curve as K grows (fewer verifications, more discards); a stop policy
 * that knows when to stop lies below it. Written as a standalone SVG.
 */
import type { OfflineResult } from './offline.js';
import { esc, num, svgOpen, ticks } from './svg.js';

interface Series {
  name: string;
  color: string;
  marker: 'circle' | 'square' | 'triangle';
  /** Which results belong to the series, and the label of each point. */
  pick: (policy: string) => string | undefined;
  /** Draw a line through the points in this order. */
  order: (policy: string) => number;
}

const SERIES: Series[] = [
  { name: 'fixed K', color: '#1f77b4', marker: 'circle', pick: (p) => (p.startsWith('fixed:') ? `K=${p.slice(6)}` : undefined), order: (p) => Number(p.slice(6)) },
  { name: 'SpecDec++ (threshold h)', color: '#d62728', marker: 'square', pick: (p) => (p.startsWith('specdec++:') ? `h=${p.slice(10)}` : undefined), order: (p) => Number(p.slice(10)) },
  { name: 'confidence (p_min)', color: '#7f7f7f', marker: 'triangle', pick: (p) => (p.startsWith('confidence:') ? p.slice(11) : undefined), order: (p) => -Number(p.slice(11)) },
];

const PANEL_W = 380;
const PANEL_H = 320;
const MARGIN = { left: 56, right: 16, top: 28, bottom: 44 };
const LEGEND_H = 28;

function marker(kind: Series['marker'], x: number, y: number, color: string): string {
  if (kind === 'circle') return `<circle cx="${num(x)}" cy="${num(y)}" r="4" fill="${color}"/>`;
  if (kind === 'square') return `<rect x="${num(x - 4)}" y="${num(y - 4)}" width="8" height="8" fill="${color}"/>`;
  return `<path d="M${num(x)},${num(y - 5)} L${num(x + 5)},${num(y + 4)} L${num(x - 5)},${num(y + 4)} Z" fill="${color}"/>`;
}

/** The chart for every data set in `results`; `title` goes on top. */
export function paretoChartSvg(results: readonly OfflineResult[], title: string): string {
  const datasets = [...new Set(results.map((r) => r.dataset))];
  const width = PANEL_W * datasets.length;
  const height = PANEL_H + LEGEND_H + 24;
  const parts: string[] = [];
  parts.push(svgOpen(width, height));
  parts.push(`<text x="${width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">${esc(title)}</text>`);
  // Legend.
  let lx = 12;
  for (const s of SERIES) {
    parts.push(marker(s.marker, lx + 4, 34, s.color));
    parts.push(`<text x="${lx + 14}" y="38">${esc(s.name)}</text>`);
    lx += 24 + s.name.length * 6.5;
  }
  parts.push(`<text x="${width - 12}" y="38" text-anchor="end" fill="#555">lower left is better</text>`);

  datasets.forEach((dataset, d) => {
    const ox = d * PANEL_W;
    const oy = LEGEND_H + 24;
    const rows = results.filter((r) => r.dataset === dataset && r.draft_tokens > 0 && SERIES.some((s) => s.pick(r.policy)));
    if (rows.length === 0) return;
    const xs = rows.map((r) => r.verification_rate);
    const ys = rows.map((r) => r.discard_rate);
    const pad = (lo: number, hi: number) => [lo - (hi - lo) * 0.08 - 1e-3, hi + (hi - lo) * 0.08 + 1e-3] as const;
    const [x0, x1] = pad(Math.min(...xs), Math.max(...xs));
    const [y0, y1] = pad(Math.max(0, Math.min(...ys)), Math.max(...ys));
    const plotW = PANEL_W - MARGIN.left - MARGIN.right;
    const plotH = PANEL_H - MARGIN.top - MARGIN.bottom;
    const sx = (v: number) => ox + MARGIN.left + ((v - x0) / (x1 - x0)) * plotW;
    const sy = (v: number) => oy + MARGIN.top + plotH - ((v - y0) / (y1 - y0)) * plotH;
    parts.push(`<text x="${ox + MARGIN.left + plotW / 2}" y="${oy + 14}" text-anchor="middle" font-size="12" font-weight="bold">${esc(dataset)}</text>`);
    parts.push(`<rect x="${ox + MARGIN.left}" y="${oy + MARGIN.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#333"/>`);
    for (const t of ticks(x0, x1)) {
      if (t < x0 || t > x1) continue;
      parts.push(`<line x1="${num(sx(t))}" x2="${num(sx(t))}" y1="${oy + MARGIN.top}" y2="${oy + MARGIN.top + plotH}" stroke="#eee"/>`);
      parts.push(`<text x="${num(sx(t))}" y="${oy + MARGIN.top + plotH + 14}" text-anchor="middle">${num(t)}</text>`);
    }
    for (const t of ticks(y0, y1)) {
      if (t < y0 || t > y1) continue;
      parts.push(`<line x1="${ox + MARGIN.left}" x2="${ox + MARGIN.left + plotW}" y1="${num(sy(t))}" y2="${num(sy(t))}" stroke="#eee"/>`);
      parts.push(`<text x="${ox + MARGIN.left - 6}" y="${num(sy(t) + 4)}" text-anchor="end">${num(t)}</text>`);
    }
    parts.push(`<text x="${ox + MARGIN.left + plotW / 2}" y="${oy + PANEL_H - 8}" text-anchor="middle">verification rate (target calls / token)</text>`);
    parts.push(
      `<text transform="translate(${ox + 14},${oy + MARGIN.top + plotH / 2}) rotate(-90)" text-anchor="middle">discard rate (rejected / drafted)</text>`,
    );
    for (const s of SERIES) {
      const points = rows.filter((r) => s.pick(r.policy) !== undefined).sort((a, b) => s.order(a.policy) - s.order(b.policy));
      if (points.length === 0) continue;
      if (points.length > 1) {
        const path = points.map((r, i) => `${i ? 'L' : 'M'}${num(sx(r.verification_rate))},${num(sy(r.discard_rate))}`).join(' ');
        parts.push(`<path d="${path}" fill="none" stroke="${s.color}" stroke-width="1.5" opacity="0.8"/>`);
      }
      for (const r of points) {
        parts.push(marker(s.marker, sx(r.verification_rate), sy(r.discard_rate), s.color));
        parts.push(`<text x="${num(sx(r.verification_rate) + 6)}" y="${num(sy(r.discard_rate) - 5)}" fill="${s.color}" font-size="9">${esc(s.pick(r.policy)!)}</text>`);
      }
    }
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
