/**
 * Grouped bar charts as standalone SVG: one or more panels side by side (wrapping into rows),
 * each with its own y axis from zero, groups along x, and one bar per series in every group.
 * The series (and their colours and legend) are shared by all panels.
 */
import { esc, legendRows, num, PALETTE, svgOpen, ticks } from './svg.js';

export interface BarPanel {
  title: string;
  yLabel: string;
  groups: string[];
  /** values[group][series]; null draws no bar. */
  values: (number | null)[][];
  /** Text above each bar, lines separated by \n (default: the value, rounded). */
  labels?: (string | null)[][];
  /** A dashed horizontal line at this value (e.g. 1 for speedups). */
  reference?: number;
}

export interface BarChart {
  title: string;
  series: string[];
  panels: BarPanel[];
  /** Panels per row (default: all in one row). */
  columns?: number;
  panelWidth?: number;
}

const PANEL_H = 280;
const MARGIN = { left: 56, right: 12, top: 30, bottom: 36 };
const HEADER_H = 24;

/** A bar's value in at most four or five characters: 0.25, 7.32, 45.1, 237, 6.9k, 25k. */
export function shortNumber(v: number): string {
  const a = Math.abs(v);
  if (a >= 9999.5) return `${(v / 1000).toFixed(0)}k`;
  if (a >= 999.5) return `${(v / 1000).toFixed(1)}k`;
  return a >= 99.5 ? v.toFixed(0) : a >= 9.995 ? v.toFixed(1) : v.toFixed(2);
}

function legend(series: readonly string[], width: number): { svg: string[]; height: number } {
  return legendRows(series, { width, top: HEADER_H, keyWidth: 14, gap: 10 }, (i, x, y) => [`<rect x="${x}" y="${y - 8}" width="10" height="10" fill="${PALETTE[i % PALETTE.length]}"/>`]);
}

function panel(p: BarPanel, nSeries: number, ox: number, oy: number, w: number): string[] {
  const out: string[] = [];
  const plotW = w - MARGIN.left - MARGIN.right;
  const plotH = PANEL_H - MARGIN.top - MARGIN.bottom;
  const all = p.values.flat().filter((v): v is number => v !== null && Number.isFinite(v));
  const top = Math.max(...all, p.reference ?? 0, 1e-9) * (p.labels?.flat().some((l) => l?.includes('\n')) ? 1.25 : 1.15);
  const sy = (v: number) => oy + MARGIN.top + plotH - (v / top) * plotH;
  const x0 = ox + MARGIN.left;
  out.push(`<text x="${num(x0 + plotW / 2)}" y="${oy + 16}" text-anchor="middle" font-size="12" font-weight="bold">${esc(p.title)}</text>`);
  for (const t of ticks(0, top)) {
    if (t > top) continue;
    out.push(`<line x1="${x0}" x2="${x0 + plotW}" y1="${num(sy(t))}" y2="${num(sy(t))}" stroke="#eee"/>`);
    out.push(`<text x="${x0 - 6}" y="${num(sy(t) + 4)}" text-anchor="end">${num(t)}</text>`);
  }
  out.push(`<text transform="translate(${ox + 14},${num(oy + MARGIN.top + plotH / 2)}) rotate(-90)" text-anchor="middle">${esc(p.yLabel)}</text>`);
  const groupW = plotW / Math.max(p.groups.length, 1);
  const barW = Math.min(28, (groupW * 0.8) / Math.max(nSeries, 1));
  p.groups.forEach((g, gi) => {
    const gx = x0 + gi * groupW + (groupW - barW * nSeries) / 2;
    out.push(`<text x="${num(x0 + (gi + 0.5) * groupW)}" y="${oy + MARGIN.top + plotH + 16}" text-anchor="middle">${esc(g)}</text>`);
    (p.values[gi] ?? []).forEach((v, si) => {
      if (v === null || !Number.isFinite(v)) return;
      const x = gx + si * barW;
      out.push(`<rect x="${num(x)}" y="${num(sy(v))}" width="${num(barW - 1)}" height="${num(sy(0) - sy(v))}" fill="${PALETTE[si % PALETTE.length]}"><title>${esc(`${g}: ${v}`)}</title></rect>`);
      const label = p.labels?.[gi]?.[si] ?? shortNumber(v);
      // Multi-line labels stack upwards from the top of the bar.
      label
        .split('\n')
        .reverse()
        .forEach((text, li) => out.push(`<text x="${num(x + barW / 2)}" y="${num(sy(v) - 3 - li * 10)}" text-anchor="middle" font-size="9">${esc(text)}</text>`));
    });
  });
  if (p.reference !== undefined) out.push(`<line x1="${x0}" x2="${x0 + plotW}" y1="${num(sy(p.reference))}" y2="${num(sy(p.reference))}" stroke="#333" stroke-dasharray="4 3"/>`);
  out.push(`<rect x="${x0}" y="${oy + MARGIN.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#333"/>`);
  return out;
}

export function barChartSvg(chart: BarChart): string {
  const columns = Math.max(1, Math.min(chart.columns ?? chart.panels.length, chart.panels.length));
  const rowsN = Math.ceil(chart.panels.length / columns);
  const panelW = chart.panelWidth ?? 320;
  const width = panelW * columns;
  const leg = legend(chart.series, width);
  const top = HEADER_H + leg.height + 6;
  const height = top + PANEL_H * rowsN;
  const parts = [svgOpen(width, height)];
  parts.push(`<text x="${width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">${esc(chart.title)}</text>`);
  parts.push(...leg.svg);
  chart.panels.forEach((p, i) => parts.push(...panel(p, chart.series.length, (i % columns) * panelW, top + Math.floor(i / columns) * PANEL_H, panelW)));
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
