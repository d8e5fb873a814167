/**
 * Line charts as standalone SVG: panels side by side (wrapping into rows), each with its own y
 * axis from zero and a shared kind of x axis (linear, or logarithmic for sweeps such as
 * concurrency 1, 4, 16, 64), one line with point markers per series. The series (and their
 * colours and legend) are shared by all panels.
 */
import { esc, legendRows, num, PALETTE, svgOpen, ticks } from './svg.js';

export interface LinePoint {
  x: number;
  /** null leaves a gap in the line. */
  y: number | null;
}

export interface LinePanel {
  title: string;
  yLabel: string;
  /** points[series], in any order (drawn by increasing x). */
  points: LinePoint[][];
}

/** How a series is drawn: a colour (default: the palette's, in order) and an SVG stroke-dasharray (default: solid). */
export interface SeriesStyle {
  color?: string;
  dash?: string;
}

export interface LineChart {
  title: string;
  series: string[];
  /** style[series], optional. */
  style?: SeriesStyle[];
  xLabel: string;
  /** A logarithmic x axis (every x must be > 0), ticked at the x values that occur. */
  logX?: boolean;
  panels: LinePanel[];
  /** Panels per row (default: all in one row). */
  columns?: number;
  panelWidth?: number;
}

const PANEL_H = 280;
const MARGIN = { left: 60, right: 16, top: 30, bottom: 40 };
const HEADER_H = 24;
/** Room at each end of the x axis, as a share of the plot's width, so end markers are not cut. */
const X_PAD = 0.06;

const colorOf = (chart: LineChart, i: number) => chart.style?.[i]?.color ?? PALETTE[i % PALETTE.length]!;
const dashOf = (chart: LineChart, i: number) => (chart.style?.[i]?.dash ? ` stroke-dasharray="${chart.style[i].dash}"` : '');

function legend(chart: LineChart, width: number): { svg: string[]; height: number } {
  return legendRows(chart.series, { width, top: HEADER_H, keyWidth: 32, gap: 8 }, (i, x, y) => {
    const color = colorOf(chart, i);
    return [
      `<line x1="${x}" x2="${x + 26}" y1="${y - 3}" y2="${y - 3}" stroke="${color}" stroke-width="2"${dashOf(chart, i)}/>`,
      `<circle cx="${x + 13}" cy="${y - 3}" r="3" fill="${color}"/>`,
    ];
  });
}

function panel(p: LinePanel, chart: LineChart, ox: number, oy: number, w: number): string[] {
  const out: string[] = [];
  const plotW = w - MARGIN.left - MARGIN.right;
  const plotH = PANEL_H - MARGIN.top - MARGIN.bottom;
  const x0 = ox + MARGIN.left;
  const xs = [...new Set(p.points.flat().map((pt) => pt.x))].sort((a, b) => a - b);
  const ys = p.points.flat().flatMap((pt) => (pt.y !== null && Number.isFinite(pt.y) ? [pt.y] : []));
  const tx = (v: number) => (chart.logX ? Math.log(v) : v);
  const lo = tx(xs[0] ?? 1);
  const hi = tx(xs[xs.length - 1] ?? 1);
  const sx = (v: number) => x0 + plotW * (hi > lo ? X_PAD + (1 - 2 * X_PAD) * ((tx(v) - lo) / (hi - lo)) : 0.5);
  const top = Math.max(...ys, 1e-9) * 1.12;
  const sy = (v: number) => oy + MARGIN.top + plotH - (v / top) * plotH;
  out.push(`<text x="${num(x0 + plotW / 2)}" y="${oy + 16}" text-anchor="middle" font-size="12" font-weight="bold">${esc(p.title)}</text>`);
  for (const t of ticks(0, top)) {
    if (t > top) continue;
    out.push(`<line x1="${x0}" x2="${x0 + plotW}" y1="${num(sy(t))}" y2="${num(sy(t))}" stroke="#eee"/>`);
    out.push(`<text x="${x0 - 6}" y="${num(sy(t) + 4)}" text-anchor="end">${num(t)}</text>`);
  }
  const xTicks = chart.logX ? xs : ticks(xs[0] ?? 0, xs[xs.length - 1] ?? 1);
  for (const t of xTicks) {
    out.push(`<line x1="${num(sx(t))}" x2="${num(sx(t))}" y1="${oy + MARGIN.top}" y2="${oy + MARGIN.top + plotH}" stroke="#eee"/>`);
    out.push(`<text x="${num(sx(t))}" y="${oy + MARGIN.top + plotH + 14}" text-anchor="middle">${num(t)}</text>`);
  }
  out.push(`<text x="${num(x0 + plotW / 2)}" y="${oy + PANEL_H - 8}" text-anchor="middle">${esc(chart.xLabel)}${chart.logX ? ' (log scale)' : ''}</text>`);
  out.push(`<text transform="translate(${ox + 14},${num(oy + MARGIN.top + plotH / 2)}) rotate(-90)" text-anchor="middle">${esc(p.yLabel)}</text>`);
  p.points.forEach((series, si) => {
    const color = colorOf(chart, si);
    const sorted = [...series].sort((a, b) => a.x - b.x);
    // A null value breaks the line into runs of consecutive points.
    let path = '';
    let pen = false;
    for (const pt of sorted) {
      if (pt.y === null || !Number.isFinite(pt.y)) {
        pen = false;
        continue;
      }
      path += `${pen ? ' L' : `${path ? ' ' : ''}M`}${num(sx(pt.x))},${num(sy(pt.y))}`;
      pen = true;
    }
    if (path.includes('L')) out.push(`<path d="${path}" fill="none" stroke="${color}" stroke-width="1.8"${dashOf(chart, si)}/>`);
    for (const pt of sorted) {
      if (pt.y === null || !Number.isFinite(pt.y)) continue;
      out.push(`<circle cx="${num(sx(pt.x))}" cy="${num(sy(pt.y))}" r="3" fill="${color}"><title>${esc(`${chart.series[si]}, ${chart.xLabel} ${pt.x}: ${pt.y}`)}</title></circle>`);
    }
  });
  out.push(`<rect x="${x0}" y="${oy + MARGIN.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#333"/>`);
  return out;
}

/**
 * The chart as an SVG document.
 * @throws RangeError when logX is set and some x is not positive
 */
export function lineChartSvg(chart: LineChart): string {
  if (chart.logX && chart.panels.some((p) => p.points.flat().some((pt) => !(pt.x > 0)))) throw new RangeError('a logarithmic x axis needs every x > 0');
  const columns = Math.max(1, Math.min(chart.columns ?? chart.panels.length, chart.panels.length));
  const rowsN = Math.ceil(chart.panels.length / columns);
  const panelW = chart.panelWidth ?? 340;
  const width = panelW * columns;
  const leg = legend(chart, width);
  const top = HEADER_H + leg.height + 6;
  const parts = [svgOpen(width, top + PANEL_H * rowsN)];
  parts.push(`<text x="${width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">${esc(chart.title)}</text>`);
  parts.push(...leg.svg);
  chart.panels.forEach((p, i) => parts.push(...panel(p, chart, (i % columns) * panelW, top + Math.floor(i / columns) * PANEL_H, panelW)));
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
