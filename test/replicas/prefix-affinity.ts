/**
 * Prefix-cache hit rate of three replicas behind HAProxy, with the shipped config
 * (deploy/haproxy/haproxy.cfg: a conversation's `x-session-id` hashed to one replica) against the
 * same config balancing by plain round-robin. Each run starts three fresh `specd serve` replicas
 * (bundled pair, one worker each, prefix caching on) and drives the same multi-turn chat
 * workload through HAProxy with the `openai` client: C conversations of T turns, each a shared
 * system prompt plus its own questions, every turn resending the conversation with the previous
 * answer. The hit rate is measured two ways: the replicas' `specd_prefix_cache_hits_total` /
 * `specd_prefix_cache_queries_total` (deltas summed over the replicas, scraped from each
 * replica's /metrics directly), and the client's summed `usage.prompt_tokens_details.cached_tokens`
 * / `prompt_tokens`.
 *
 *   npm run replicas:affinity -- [--conversations 6] [--turns 4] [--max-tokens 16] [--json FILE]
 *
 * Loopback only; every port is chosen free by the kernel.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';
import { toolPath } from '../support/debian-tools.js';
import { metricValue } from '../support/http-client.js';
import { freePort } from '../support/prometheus.js';
import { type ServeProcess, startServe, waitHealthy } from '../support/serve-process.js';
import { HAPROXY_CONFIG, haproxyConfig } from './rolling-restart.js';

const MODEL = 'specd-pair-target';
const SYSTEM_PROMPT =
  'You are a careful assistant for a small bakery. Answer in one short sentence, name the ingredient or step asked about, ' +
  'give quantities in grams, and never invent prices. If a question is unclear, ask which recipe it concerns.';
const TOPICS = ['rye bread', 'croissants', 'lemon tart', 'focaccia', 'brioche', 'apple pie', 'bagels', 'scones', 'baguettes', 'cinnamon rolls', 'pretzels', 'shortbread'];
const ASKS = ['How much flour goes into', 'How long should I proof', 'What temperature bakes', 'Which fat works best for', 'How do I store', 'What goes wrong most often with'];

export type Balancing = 'session-hash' | 'roundrobin';

export interface PrefixAffinityOptions {
  haproxy: string;
  conversations: number;
  turns: number;
  maxTokens: number;
  /** Extra `specd serve` flags of every replica. */
  serveArgs?: string[];
  log?: (line: string) => void;
}

export interface BalancingReport {
  balancing: Balancing;
  requests: number;
  /** Per replica (HAProxy's server name): prompt tokens looked up / found in its prefix cache. */
  replicas: { server: string; queries: number; hits: number }[];
  /** Sum of hits / sum of queries over the replicas (their /metrics). */
  metricsHitRate: number;
  /** Sum of usage.prompt_tokens_details.cached_tokens / sum of usage.prompt_tokens (the client's). */
  promptTokens: number;
  cachedTokens: number;
  clientHitRate: number;
  durationS: number;
}

export interface PrefixAffinityReport {
  conversations: number;
  turns: number;
  maxTokens: number;
  runs: BalancingReport[];
}

/** Replaces the one line matching `pattern` in `text`; throws unless exactly one matches. */
function replaceOnce(text: string, pattern: RegExp, replacement: string): string {
  const hits = text.match(new RegExp(pattern.source, 'gm'))?.length ?? 0;
  if (hits !== 1) throw new Error(`${HAPROXY_CONFIG}: expected one match of ${pattern} (the balancing lines), found ${hits}`);
  return text.replace(new RegExp(pattern.source, 'm'), replacement);
}

/** The shipped config with both backends balancing by plain round-robin: no session hashing. */
export function roundRobinConfig(template: string): string {
  let text = replaceOnce(template, /^(\s*)balance hash var\(txn\.session_key\)\n\s*hash-type consistent$/, '$1balance roundrobin');
  text = replaceOnce(text, /^(\s*)balance leastconn$/, '$1balance roundrobin');
  if (/balance (hash|leastconn)|hash-type/.test(text)) throw new Error(`${HAPROXY_CONFIG}: hashing left after the rewrite`);
  return text;
}

/** The user's question of turn `turn` of conversation `c`. */
function question(c: number, turn: number): string {
  return `${ASKS[(c + turn) % ASKS.length]} ${TOPICS[c % TOPICS.length]} (conversation ${c + 1}, question ${turn + 1})?`;
}

/** One conversation: T turns, each resending the whole conversation; the usage seen. */
async function converse(baseURL: string, c: number, opts: PrefixAffinityOptions): Promise<{ prompt: number; cached: number }> {
  const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0, defaultHeaders: { 'x-session-id': `conversation-${c + 1}` } });
  const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [{ role: 'system', content: SYSTEM_PROMPT }];
  let prompt = 0;
  let cached = 0;
  for (let turn = 0; turn < opts.turns; turn++) {
    messages.push({ role: 'user', content: question(c, turn) });
    const res = await client.chat.completions.create({ model: MODEL, messages, max_tokens: opts.maxTokens, temperature: 0 });
    if (!res.usage) throw new Error(`conversation ${c + 1}, turn ${turn + 1}: no usage`);
    prompt += res.usage.prompt_tokens;
    cached += res.usage.prompt_tokens_details?.cached_tokens ?? 0;
    messages.push({ role: 'assistant', content: res.choices[0]?.message.content ?? '' });
  }
  return { prompt, cached };
}

async function prefixCounters(replica: ServeProcess): Promise<{ queries: number; hits: number }> {
  return { queries: await metricValue(replica.url, 'specd_prefix_cache_queries_total'), hits: await metricValue(replica.url, 'specd_prefix_cache_hits_total') };
}

/** Three fresh replicas behind HAProxy balancing one way; the workload through it. */
async function runOnce(balancing: Balancing, opts: PrefixAffinityOptions): Promise<BalancingReport> {
  const log = opts.log ?? (() => {});
  const dir = mkdtempSync(join(tmpdir(), 'specd-affinity-'));
  const ports = [await freePort(), await freePort(), await freePort()];
  const frontend = await freePort();
  const replicas: ServeProcess[] = [];
  let haproxy: ChildProcess | undefined;
  try {
    const started = await Promise.allSettled(ports.map((p) => startServe(['--threads', '1', '--log-level', 'warn', ...(opts.serveArgs ?? []), '--port', String(p)])));
    for (const s of started) if (s.status === 'fulfilled') replicas.push(s.value);
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason as Error;
    const shipped = readFileSync(HAPROXY_CONFIG, 'utf8');
    const { text, servers } = haproxyConfig(balancing === 'roundrobin' ? roundRobinConfig(shipped) : shipped, frontend, ports);
    writeFileSync(join(dir, 'haproxy.cfg'), text);
    haproxy = spawn(opts.haproxy, ['-db', '-f', join(dir, 'haproxy.cfg')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let haproxyErr = '';
    haproxy.stderr!.on('data', (d: Buffer) => (haproxyErr += d.toString()));
    const url = `http://127.0.0.1:${frontend}`;
    await waitHealthy(url, once(haproxy, 'exit'), 10_000).catch((err: Error) => {
      throw new Error(`haproxy: ${err.message}: ${haproxyErr}`);
    });
    // Every replica through its health checks (rise 2, 1 s apart) before the workload.
    await new Promise((r) => setTimeout(r, 2500));
    log(`${balancing}: replicas on ${ports.join(', ')}, haproxy on ${url}`);

    const before = await Promise.all(replicas.map(prefixCounters));
    const start = Date.now();
    const usage = await Promise.all(Array.from({ length: opts.conversations }, (_, c) => converse(`${url}/v1`, c, opts)));
    const durationS = (Date.now() - start) / 1000;
    const after = await Promise.all(replicas.map(prefixCounters));
    const perReplica = servers.map((server, i) => ({ server, queries: after[i]!.queries - before[i]!.queries, hits: after[i]!.hits - before[i]!.hits }));
    const queries = perReplica.reduce((s, r) => s + r.queries, 0);
    const hits = perReplica.reduce((s, r) => s + r.hits, 0);
    const promptTokens = usage.reduce((s, u) => s + u.prompt, 0);
    const cachedTokens = usage.reduce((s, u) => s + u.cached, 0);
    haproxy.kill('SIGUSR1'); // soft stop
    await once(haproxy, 'exit');
    return {
      balancing,
      requests: opts.conversations * opts.turns,
      replicas: perReplica,
      metricsHitRate: queries > 0 ? hits / queries : 0,
      promptTokens,
      cachedTokens,
      clientHitRate: promptTokens > 0 ? cachedTokens / promptTokens : 0,
      durationS,
    };
  } finally {
    if (haproxy && haproxy.exitCode === null && haproxy.signalCode === null) haproxy.kill('SIGKILL');
    await Promise.all(replicas.map((r) => r.stop()));
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The workload with session hashing (the shipped config), then with round-robin. */
export async function runPrefixAffinity(opts: PrefixAffinityOptions): Promise<PrefixAffinityReport> {
  const runs: BalancingReport[] = [];
  for (const balancing of ['session-hash', 'roundrobin'] as const) runs.push(await runOnce(balancing, opts));
  return { conversations: opts.conversations, turns: opts.turns, maxTokens: opts.maxTokens, runs };
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

export function summary(report: PrefixAffinityReport): string[] {
  const lines = [`${report.conversations} conversations x ${report.turns} turns, max_tokens ${report.maxTokens}, 3 replicas`, 'balancing     | hit rate (/metrics) | cached/prompt (client) | tokens looked up per replica | s'];
  for (const r of report.runs) {
    lines.push(`${r.balancing.padEnd(13)} | ${pct(r.metricsHitRate).padStart(19)} | ${`${pct(r.clientHitRate)} (${r.cachedTokens}/${r.promptTokens})`.padStart(22)} | ${r.replicas.map((x) => `${x.queries}`).join(' / ').padStart(28)} | ${r.durationS.toFixed(1)}`);
  }
  return lines;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      conversations: { type: 'string', default: '6' },
      turns: { type: 'string', default: '4' },
      'max-tokens': { type: 'string', default: '16' },
      json: { type: 'string' },
      haproxy: { type: 'string' },
    },
  });
  const haproxy = values.haproxy ?? toolPath('haproxy');
  if (!haproxy) throw new Error('haproxy not installed (apt-get install haproxy)');
  const report = await runPrefixAffinity({
    haproxy,
    conversations: Number(values.conversations),
    turns: Number(values.turns),
    maxTokens: Number(values['max-tokens']),
    log: (line) => process.stderr.write(`${line}\n`),
  });
  const lines = summary(report);
  process.stdout.write(`${lines.join('\n')}\n`);
  if (values.json) writeFileSync(values.json, `${JSON.stringify({ ...report, summary: lines }, null, 2)}\n`);
}

// Run as a script (npm run replicas:affinity), not when a test imports it.
if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  main().catch((err: Error) => {
    process.stderr.write(`replicas:affinity: ${err.message}\n`);
    process.exitCode = 1;
  });
}
