/**
 * Every PromQL query the project documents: the ```promql blocks of README.md and docs/*.md (one
 * query a line, `#` lines are captions), the rules of deploy/prometheus/rules.yml, the panels of
 * the Grafana dashboard and the prometheus-adapter rule behind the HorizontalPodAutoscaler.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';

export interface DocumentedQuery {
  /** Where it is documented: file and caption or panel title. */
  where: string;
  query: string;
}

/** The markdown files that may hold ```promql blocks. */
export function markdownFiles(): string[] {
  const docs = existsSync('docs') ? readdirSync('docs').filter((f) => f.endsWith('.md')).map((f) => join('docs', f)) : [];
  return ['README.md', ...docs];
}

export function markdownQueries(files = markdownFiles()): DocumentedQuery[] {
  const out: DocumentedQuery[] = [];
  for (const file of files) {
    const text = readFileSync(file, 'utf8');
    for (const block of text.matchAll(/```promql\n([\s\S]*?)```/g)) {
      let caption = '';
      for (const line of block[1]!.split('\n').map((l) => l.trim())) {
        if (line.startsWith('#')) caption = line.slice(1).trim();
        else if (line !== '') out.push({ where: `${file}: ${caption}`, query: line });
      }
    }
  }
  return out;
}

export interface RuleFile {
  groups: { name: string; rules: { record?: string; alert?: string; expr: string }[] }[];
}

export const RULES_FILE = 'deploy/prometheus/rules.yml';
export const DASHBOARD_FILE = 'deploy/grafana/specd-dashboard.json';
export const ADAPTER_FILE = 'deploy/kubernetes/prometheus-adapter-values.yaml';

export function ruleFile(): RuleFile {
  return parse(readFileSync(RULES_FILE, 'utf8')) as RuleFile;
}

interface Panel {
  type: string;
  title: string;
  targets?: { expr: string; refId: string }[];
}

/** Each panel's queries, with Grafana's variables replaced: `$model_name` by `model`, `$__rate_interval` by `rateInterval`. */
export function dashboardQueries(model: string, rateInterval = '1m'): DocumentedQuery[] {
  const dashboard = JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as { panels: Panel[] };
  return dashboard.panels.flatMap((p) =>
    (p.targets ?? []).map((t) => ({
      where: `${DASHBOARD_FILE}: ${p.title} (${t.refId})`,
      query: t.expr.replaceAll('$model_name', model).replaceAll('$__rate_interval', rateInterval),
    })),
  );
}

/** The dashboard's panels that are not rows. */
export function dashboardPanels(): Panel[] {
  const dashboard = JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as { panels: Panel[] };
  return dashboard.panels.filter((p) => p.type !== 'row');
}

/**
 * The prometheus-adapter rules' metrics queries, with the adapter's template fields filled in
 * as it would for one series: `<<.Series>>`, `<<.LabelMatchers>>` (here `matchers`), `<<.GroupBy>>`.
 */
export function adapterQueries(matchers: string, groupBy: string): DocumentedQuery[] {
  const values = parse(readFileSync(ADAPTER_FILE, 'utf8')) as { rules: { custom: { seriesQuery: string; metricsQuery: string; name?: { as?: string } }[] } };
  return values.rules.custom.map((r) => {
    const series = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(r.seriesQuery)![1]!;
    return {
      where: `${ADAPTER_FILE}: ${r.name?.as ?? series}`,
      query: r.metricsQuery.replaceAll('<<.Series>>', series).replaceAll('<<.LabelMatchers>>', matchers).replaceAll('<<.GroupBy>>', groupBy),
    };
  });
}
