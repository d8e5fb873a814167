/**
 * A small parser for the Prometheus text exposition format (what `GET /metrics` returns): one
 * sample per line, `name{label="value",...} value [timestamp]`, with `#` comment lines. Enough
 * to read counters and histogram series; prom-client writes but does not read this format.
 */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export class PrometheusParseError extends Error {
  override name = 'PrometheusParseError';
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;

/** A sample value; the special values in any case (prom-client writes NaN as `Nan`). */
function parseValue(text: string, lineNo: number): number {
  switch (text.toLowerCase()) {
    case '+inf':
    case 'inf':
      return Infinity;
    case '-inf':
      return -Infinity;
    case 'nan':
      return NaN;
  }
  const v = Number(text);
  if (text === '' || Number.isNaN(v)) throw new PrometheusParseError(`line ${lineNo}: bad sample value "${text}"`);
  return v;
}

/** Every sample in `text`, in order. */
export function parsePrometheusText(text: string): Sample[] {
  const samples: Sample[] = [];
  text.split('\n').forEach((raw, i) => {
    const lineNo = i + 1;
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const name = NAME.exec(line)?.[0];
    if (!name) throw new PrometheusParseError(`line ${lineNo}: expected a metric name`);
    let pos = name.length;
    const labels: Record<string, string> = {};
    if (line[pos] === '{') {
      pos++;
      for (;;) {
        while (line[pos] === ' ') pos++;
        if (line[pos] === '}') break;
        const key = LABEL_NAME.exec(line.slice(pos))?.[0];
        if (!key || line.slice(pos + key.length, pos + key.length + 2) !== '="') throw new PrometheusParseError(`line ${lineNo}: bad label at column ${pos + 1}`);
        pos += key.length + 2;
        let value = '';
        for (;;) {
          const c = line[pos++];
          if (c === undefined) throw new PrometheusParseError(`line ${lineNo}: unterminated label value`);
          if (c === '"') break;
          if (c === '\\') {
            const e = line[pos++];
            value += e === 'n' ? '\n' : e === '\\' ? '\\' : e === '"' ? '"' : `\\${e ?? ''}`;
          } else value += c;
        }
        labels[key] = value;
        while (line[pos] === ' ') pos++;
        if (line[pos] === ',') pos++;
        else if (line[pos] !== '}') throw new PrometheusParseError(`line ${lineNo}: expected , or } after label ${key}`);
      }
      pos++;
    }
    const rest = line.slice(pos).trim().split(/\s+/);
    if (rest.length < 1 || rest.length > 2 || pos === line.length) throw new PrometheusParseError(`line ${lineNo}: expected a value after ${name}`);
    samples.push({ name, labels, value: parseValue(rest[0]!, lineNo) });
  });
  return samples;
}

/** The sum of the samples named `name` whose labels include `match` (0 when there are none). */
export function sumSamples(samples: readonly Sample[], name: string, match: Record<string, string> = {}): number {
  let total = 0;
  for (const s of samples) {
    if (s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v)) total += s.value;
  }
  return total;
}

/** The distinct values label `label` takes on the samples named `name`. */
export function labelValues(samples: readonly Sample[], name: string, label: string): string[] {
  return [...new Set(samples.filter((s) => s.name === name && s.labels[label] !== undefined).map((s) => s.labels[label]!))];
}
