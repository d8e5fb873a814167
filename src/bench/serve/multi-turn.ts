/**
 * A multi-turn chat workload for `specd bench serve --multi-turn`: N conversations of T turns,
 * each opening with the same system prompt of S characters (tokens for a byte-level tokenizer
 * such as specd-pair's), each turn sending the whole conversation so far (the previous answers
 * and a new question), as chat clients and agents do; conversations run at a given concurrency,
 * each turn waiting for the previous one's answer. Reports the time to first token per turn, the
 * prefix cache's share of the prompt tokens (`usage.prompt_tokens_details.cached_tokens`) and the
 * output tokens/s, per server variant; with several variants their runs interleave round by
 * round, so a shared machine's bursts hit each alike.
 */
import type http from 'node:http';
import { Rng } from '../../engine/rng.js';
import { lineChartSvg } from '../line-chart.js';
import { percentile } from './latency-stats.js';
import { type ServerProcess, shellJoin, startServer } from './server-process.js';
import { benchAgent, streamRequest } from './stream-request.js';
import { servedModel } from './sweep-runner.js';
import { randomText } from './workload.js';

export interface MultiTurnOptions {
  conversations: number;
  turns: number;
  /** Characters of the shared system prompt. */
  systemPromptLen: number;
  /** Characters of each question. */
  questionLen: number;
  /** max_tokens of each turn. */
  maxTokens: number;
  /** Conversations in flight at once. */
  concurrency: number;
  /** Seeds the system prompt and the questions. */
  seed: number;
  temperature: number;
  model: string;
  apiKey?: string;
}

interface Message {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** One turn's measurements. */
export interface TurnRecord {
  conversation: number;
  turn: number;
  ok: boolean;
  error?: string;
  ttftMs: number;
  promptTokens: number;
  cachedTokens: number;
  outputTokens: number;
}

/** The questions of every conversation and the shared system prompt: the same for every variant of a run. */
export function multiTurnScript(opts: Pick<MultiTurnOptions, 'conversations' | 'turns' | 'systemPromptLen' | 'questionLen' | 'seed'>): { system: string; questions: string[][] } {
  const rng = new Rng(opts.seed);
  const system = randomText(rng, opts.systemPromptLen);
  const questions = Array.from({ length: opts.conversations }, () => Array.from({ length: opts.turns }, () => `${randomText(rng, opts.questionLen)}?`));
  return { system, questions };
}

/**
 * Run the workload once against `url` (a server's origin).
 * @returns one record per turn, and the wall time of the whole run in ms
 */
export async function runMultiTurn(url: string, opts: MultiTurnOptions, agent: http.Agent = benchAgent(new URL(url))): Promise<{ turns: TurnRecord[]; wallMs: number }> {
  const { system, questions } = multiTurnScript(opts);
  const endpoint = new URL('/v1/chat/completions', url);
  const records: TurnRecord[] = [];
  let next = 0;
  const start = performance.now();
  const conversation = async (c: number) => {
    const messages: Message[] = [{ role: 'system', content: system }];
    for (let t = 0; t < opts.turns; t++) {
      messages.push({ role: 'user', content: questions[c]![t]! });
      const body = { model: opts.model, messages, max_tokens: opts.maxTokens, temperature: opts.temperature, seed: opts.seed + c * opts.turns + t };
      const r = await streamRequest(endpoint, agent, body, opts.apiKey);
      const usage = r.usage as { prompt_tokens?: number; completion_tokens?: number; prompt_tokens_details?: { cached_tokens?: number } } | undefined;
      records.push({
        conversation: c,
        turn: t + 1,
        ok: r.ok,
        ...(r.error ? { error: r.error } : {}),
        ttftMs: r.contentMs.length ? r.contentMs[0]! - r.sentMs : NaN,
        promptTokens: usage?.prompt_tokens ?? 0,
        cachedTokens: usage?.prompt_tokens_details?.cached_tokens ?? 0,
        outputTokens: usage?.completion_tokens ?? 0,
      });
      if (!r.ok) return;
      messages.push({ role: 'assistant', content: r.text });
    }
  };
  await Promise.all(
    Array.from({ length: Math.min(opts.concurrency, opts.conversations) }, async () => {
      while (next < opts.conversations) await conversation(next++);
    }),
  );
  return { turns: records, wallMs: performance.now() - start };
}

/** Per-turn and overall figures of one variant. */
export interface MultiTurnSummary {
  label: string;
  /** Per turn (1-based index = turn): TTFT median and p90 in ms, mean prompt tokens and the cached share of them. */
  perTurn: { turn: number; ttftMedianMs: number; ttftP90Ms: number; promptTokens: number; cachedShare: number }[];
  /** TTFT median of turns 2..T, ms. */
  laterTurnsTtftMedianMs: number;
  /** Cached prompt tokens / prompt tokens over every turn (the server's prefix cache hit rate). */
  hitRate: number;
  outputTokensPerS: number;
  failed: number;
  errors: string[];
}

/** Summarize the records of one variant's runs (their wall times summed for tokens/s). */
export function summarizeMultiTurn(label: string, runs: { turns: TurnRecord[]; wallMs: number }[]): MultiTurnSummary {
  const all = runs.flatMap((r) => r.turns);
  const ok = all.filter((r) => r.ok);
  const byTurn = new Map<number, TurnRecord[]>();
  for (const r of ok) byTurn.set(r.turn, [...(byTurn.get(r.turn) ?? []), r]);
  const median = (xs: number[]) => percentile([...xs].sort((a, b) => a - b), 50);
  const perTurn = [...byTurn.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([turn, rs]) => {
      // A turn that streamed no text (an answer ending at once) has no TTFT.
      const ttft = rs.map((r) => r.ttftMs).filter(Number.isFinite).sort((a, b) => a - b);
      const prompt = rs.reduce((n, r) => n + r.promptTokens, 0);
      return { turn, ttftMedianMs: percentile(ttft, 50), ttftP90Ms: percentile(ttft, 90), promptTokens: prompt / rs.length, cachedShare: prompt ? rs.reduce((n, r) => n + r.cachedTokens, 0) / prompt : 0 };
    });
  const prompt = ok.reduce((n, r) => n + r.promptTokens, 0);
  const wall = runs.reduce((n, r) => n + r.wallMs, 0);
  return {
    label,
    perTurn,
    laterTurnsTtftMedianMs: median(ok.filter((r) => r.turn > 1).map((r) => r.ttftMs).filter(Number.isFinite)),
    hitRate: prompt ? ok.reduce((n, r) => n + r.cachedTokens, 0) / prompt : 0,
    outputTokensPerS: wall > 0 ? ok.reduce((n, r) => n + r.outputTokens, 0) / (wall / 1000) : 0,
    failed: all.length - ok.length,
    errors: [...new Set(all.flatMap((r) => (r.error ? [r.error] : [])))].slice(0, 5),
  };
}

/** A terminal table: TTFT per turn for each variant, then the later turns' median, hit rate and tokens/s, with ratios to the first variant. */
export function formatMultiTurn(summaries: readonly MultiTurnSummary[]): string {
  const turns = Math.max(0, ...summaries.map((s) => s.perTurn.length));
  const pad = (s: string, n: number) => s.padStart(n);
  const width = Math.max(12, ...summaries.map((s) => s.label.length + 2));
  const lines = [`${'turn'.padEnd(6)}${summaries.map((s) => pad(s.label, width)).join('')}   (TTFT median ms; cached share of the prompt)`];
  for (let t = 0; t < turns; t++) {
    lines.push(`${String(t + 1).padEnd(6)}${summaries.map((s) => {
      const row = s.perTurn[t];
      return pad(row ? `${row.ttftMedianMs.toFixed(0)} (${(row.cachedShare * 100).toFixed(0)}%)` : '-', width);
    }).join('')}`);
  }
  const base = summaries[0];
  const ratio = (v: number, b: number | undefined) => (b && summaries.length > 1 ? ` (${(v / b).toFixed(2)}x)` : '');
  lines.push('');
  for (const s of summaries) {
    lines.push(
      `${s.label}: TTFT median of turns 2+ ${s.laterTurnsTtftMedianMs.toFixed(0)} ms${ratio(s.laterTurnsTtftMedianMs, base?.laterTurnsTtftMedianMs)}, output ${s.outputTokensPerS.toFixed(1)} tok/s${ratio(s.outputTokensPerS, base?.outputTokensPerS)}, prefix cache hit rate ${(s.hitRate * 100).toFixed(1)}%${s.failed ? `, ${s.failed} failed: ${s.errors.join('; ')}` : ''}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

/** An SVG: TTFT median per turn, one line per variant, and the cached share per turn. */
export function multiTurnChartSvg(summaries: readonly MultiTurnSummary[], title: string): string {
  return lineChartSvg({
    title,
    series: summaries.map((s) => s.label),
    xLabel: 'turn',
    panels: [
      { title: 'time to first token, median', yLabel: 'ms', points: summaries.map((s) => s.perTurn.map((r) => ({ x: r.turn, y: r.ttftMedianMs }))) },
      { title: 'prompt tokens from the prefix cache', yLabel: 'share', points: summaries.map((s) => s.perTurn.map((r) => ({ x: r.turn, y: r.cachedShare }))) },
    ],
  });
}

/** Where the multi-turn benchmark runs: a server's URL, or `specd serve` flags per variant (started here). */
export interface MultiTurnTargets {
  url?: string;
  /** With --spawn: one word list per server variant. */
  variants: string[][];
  repeats: number;
  /** The request's model; default: the one /v1/models lists. */
  model?: string;
}

/**
 * Run the workload on every target, `repeats` times, the variants interleaved within each
 * repeat (servers started once, stopped at the end), after one warm-up request each.
 */
export async function runMultiTurnBench(targets: MultiTurnTargets, opts: Omit<MultiTurnOptions, 'model'>): Promise<MultiTurnSummary[]> {
  const slots: { label: string; url: string; server?: ServerProcess; model: string; runs: { turns: TurnRecord[]; wallMs: number }[] }[] = [];
  try {
    const variants = targets.url ? [null] : targets.variants;
    for (const variant of variants) {
      let url = targets.url!;
      let server: ServerProcess | undefined;
      if (variant) {
        process.stderr.write(`starting specd serve ${shellJoin(variant)}\n`);
        server = await startServer(variant);
        url = server.url;
      }
      const agent = benchAgent(new URL(url));
      const model = targets.model ?? (await servedModel({ url, agent, apiKey: opts.apiKey }));
      // Warm-up: one short chat of its own (it shares no more than the chat template's opening with the workload).
      await streamRequest(new URL('/v1/chat/completions', url), agent, { model, messages: [{ role: 'user', content: 'warm up' }], max_tokens: 4 }, opts.apiKey);
      agent.destroy();
      slots.push({ label: variant ? shellJoin(variant) || 'default' : url, url, server, model, runs: [] });
    }
    for (let r = 0; r < targets.repeats; r++) {
      for (const slot of slots) {
        process.stderr.write(`repeat ${r + 1}/${targets.repeats}: ${slot.label}\n`);
        // Each repeat its own seed: new conversations, so that one repeat's cache does not serve the next.
        slot.runs.push(await runMultiTurn(slot.url, { ...opts, seed: opts.seed + 1000 * r, model: slot.model }));
      }
    }
  } finally {
    for (const slot of slots) await slot.server?.stop();
  }
  return slots.map((s) => summarizeMultiTurn(s.label, s.runs));
}
