/** Tables for the terminal. */

/**
 * A header, a rule of dashes and the rows, columns two spaces apart and as wide as their widest
 * cell; the first `leftColumns` columns are left-aligned (names), the others right-aligned (numbers).
 */
export function textTable(head: readonly string[], rows: readonly (readonly string[])[], leftColumns: number): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => (i < leftColumns ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)];
}
