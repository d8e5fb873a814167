/**
 * One conversation's turns, turn by turn, on specd and on llama.cpp's llama-server
 * (`specd bench peer --multi-turn`): the time to first token of each turn when both keep the
 * conversation's prefix (specd's prefix cache; llama-server's prompt cache, `cache_prompt`, on by
 * default).
 *
 * Both serve the same weights: the target written as a float32 GGUF (src/gguf) for llama-server
 * (one slot, `-np 1`), the model directory for `specd serve` (float32); the same threads. Each
 * turn's prompt is the whole conversation so far rendered by the target's chat template (ChatML
 * for the bundled pair) and tokenized by specd's tokenizer, and both get those token ids on
 * `/v1/completions` (streamed, greedy, `max_tokens`; an end of text ends a turn). The
 * conversation's answers are specd's (a turn's prompt is the same for both whatever llama-server
 * wrote; whether their answers agree is recorded per turn). TTFT is from sending the request to
 * the first chunk with text, on the client.
 *
 * Turns interleave: turn t goes to one server, then the other (which goes first alternates by
 * turn), so that a shared machine's bursts hit both alike. Each round is a new conversation
 * (another seed: nothing of an earlier round is cached); per turn the figures are the median over
 * rounds.
 */
import http from 'node:http';
import { Rng } from '../engine/rng.js';
import { writeGguf } from '../gguf/gguf-file.js';
import { modelToGguf } from '../gguf/model-to-gguf.js';
import type { ChatMessage, TextTokenizer } from '../text/tokenizer.js';
import { lineChartSvg } from './line-chart.js';
import { LlamaServer } from './llama-server.js';
import { percentile } from './serve/latency-stats.js';
import { startServer } from './serve/server-process.js';
import { requestJson, streamRequest } from './serve/stream-request.js';
import { servedModel } from './serve/sweep-runner.js';
import { randomText } from './serve/workload.js';

export const PEER_ENGINES = ['llama-server', 'specd'] as const;
export type PeerEngine = (typeof PEER_ENGINES)[number];

export interface PeerTurnsOptions {
  /** Target model directory (specd serves it; llama-server its float32 GGUF). */
  target: string;
  /** The target's tokenizer: renders and tokenizes every turn's prompt. */
  tokenizer: TextTokenizer;
  /** `specd serve` flags besides the port: models, threads, policy. */
  specdArgs: string[];
  llamaServer: string[];
  /** Threads of llama-server (-t). */
  threads: number;
  /** llama-server's slot context (-c, tokens). */
  context: number;
  turns: number;
  /** Characters of the system prompt and of each question (random words). */
  systemPromptLen: number;
  questionLen: number;
  maxTokens: number;
  /** Conversations, one per round, each seeded `seed + round`. */
  rounds: number;
  seed: number;
  /** Where the GGUF file is written. */
  ggufPath: string;
  log?: (line: string) => void;
}

/** One turn on one engine in one round. */
export interface PeerTurnRow {
  round: number;
  turn: number;
  engine: PeerEngine;
  prompt_tokens: number;
  /** Prompt tokens the server reports it took from its cache (usage.prompt_tokens_details.cached_tokens). */
  cached_tokens: number;
  ttft_ms: number;
  output_tokens: number;
  /** llama-server's rows: whether its answer equals specd's (greedy on the same weights); null for specd's. */
  same_answer: boolean | null;
}

/** Per turn over the rounds. */
export interface PeerTurnSummary {
  turn: number;
  prompt_tokens: number;
  ttft_ms: Record<PeerEngine, number>;
  cached_tokens: Record<PeerEngine, number>;
  /** specd's TTFT over llama-server's (median of the rounds' TTFTs each). */
  ratio: number;
}

export interface PeerTurnsResult {
  rows: PeerTurnRow[];
  summary: PeerTurnSummary[];
}

const median = (xs: number[]) => percentile([...xs].sort((a, b) => a - b), 50);

/** The turns' system prompt and questions of one round's conversation. */
export function peerConversation(seed: number, turns: number, systemPromptLen: number, questionLen: number): { system: string; questions: string[] } {
  const rng = new Rng(seed);
  return { system: randomText(rng, systemPromptLen), questions: Array.from({ length: turns }, () => `${randomText(rng, questionLen)}?`) };
}

/**
 * Runs the comparison (module comment): writes the GGUF, starts both servers, runs the rounds
 * and stops the servers.
 * @throws LlamaCppToolError when llama-server does not start; Error when specd serve does not, or
 *   when a turn fails on either (its message names the engine, round and turn)
 */
export async function runPeerTurns(o: PeerTurnsOptions): Promise<PeerTurnsResult> {
  const log = o.log ?? (() => {});
  log(`writing ${o.ggufPath}`);
  writeGguf(o.ggufPath, modelToGguf(o.target));
  const llama = await LlamaServer.start(o.llamaServer, { threads: o.threads, context: o.context, args: ['-m', o.ggufPath, '-np', '1'] });
  let specd: Awaited<ReturnType<typeof startServer>> | undefined;
  const agents: http.Agent[] = [];
  try {
    specd = await startServer(o.specdArgs);
    const urls: Record<PeerEngine, string> = { 'llama-server': llama.url, specd: specd.url };
    const agentOf = {} as Record<PeerEngine, http.Agent>;
    // A new connection per request on both (llama-server's HTTP library closes idle keep-alive connections after a few seconds).
    for (const engine of PEER_ENGINES) agents.push((agentOf[engine] = new http.Agent({ keepAlive: false })));
    const model = await servedModel({ url: specd.url, agent: agentOf.specd });
    // The room a turn has: llama-server's slot and specd's model (/info max_model_len), the smaller.
    const info = await requestJson(new URL('/info', specd.url), agentOf.specd);
    const maxModelLen = (JSON.parse(info.body) as { max_model_len?: number | null }).max_model_len ?? Infinity;
    const room = Math.min(o.context, maxModelLen);
    const turn = async (engine: PeerEngine, prompt: number[], where: string) => {
      const r = await streamRequest(new URL('/v1/completions', urls[engine]), agentOf[engine], { model, prompt, max_tokens: o.maxTokens, temperature: 0 });
      if (!r.ok) throw new Error(`${engine}, ${where}: ${r.error}`);
      const usage = r.usage as { completion_tokens?: number; prompt_tokens_details?: { cached_tokens?: number } } | undefined;
      return { text: r.text, ttftMs: r.contentMs.length ? r.contentMs[0]! - r.sentMs : NaN, cached: usage?.prompt_tokens_details?.cached_tokens ?? 0, output: usage?.completion_tokens ?? 0 };
    };
    // Warm-up: a short prompt of its own on each (shares at most the template's opening with the rounds).
    const warm = o.tokenizer.encodeChat([{ role: 'user', content: 'warm up' }]);
    for (const engine of PEER_ENGINES) await turn(engine, warm, 'warm-up');

    const rows: PeerTurnRow[] = [];
    for (let round = 0; round < o.rounds; round++) {
      const { system, questions } = peerConversation(o.seed + round, o.turns, o.systemPromptLen, o.questionLen);
      const messages: ChatMessage[] = [{ role: 'system', content: system }];
      for (let t = 0; t < o.turns; t++) {
        messages.push({ role: 'user', content: questions[t]! });
        const prompt = o.tokenizer.encodeChat(messages);
        if (prompt.length + o.maxTokens > room) throw new Error(`round ${round + 1}, turn ${t + 1}: the conversation (${prompt.length} prompt tokens + ${o.maxTokens}) outgrows the context of ${room} tokens; use fewer --turns or shorter texts`);
        const order = t % 2 === 0 ? PEER_ENGINES : [...PEER_ENGINES].reverse();
        const got = {} as Record<PeerEngine, Awaited<ReturnType<typeof turn>>>;
        for (const engine of order) got[engine] = await turn(engine, prompt, `round ${round + 1}, turn ${t + 1}`);
        for (const engine of PEER_ENGINES) {
          rows.push({
            round,
            turn: t + 1,
            engine,
            prompt_tokens: prompt.length,
            cached_tokens: got[engine].cached,
            ttft_ms: +got[engine].ttftMs.toFixed(1),
            output_tokens: got[engine].output,
            same_answer: engine === 'specd' ? null : got[engine].text === got.specd.text,
          });
        }
        log(`round ${round + 1}/${o.rounds} turn ${t + 1}/${o.turns}: ${prompt.length} prompt tokens, TTFT llama-server ${got['llama-server'].ttftMs.toFixed(0)} ms, specd ${got.specd.ttftMs.toFixed(0)} ms`);
        messages.push({ role: 'assistant', content: got.specd.text });
      }
    }
    return { rows, summary: summarizePeerTurns(rows) };
  } finally {
    for (const agent of agents) agent.destroy();
    await specd?.stop();
    await llama.stop();
  }
}

/** Per turn: the median over rounds of each engine's TTFT and cached tokens, and specd's TTFT over llama-server's. */
export function summarizePeerTurns(rows: readonly PeerTurnRow[]): PeerTurnSummary[] {
  const turns = [...new Set(rows.map((r) => r.turn))].sort((a, b) => a - b);
  return turns.map((turn) => {
    const of = (engine: PeerEngine) => rows.filter((r) => r.turn === turn && r.engine === engine);
    const ttft = Object.fromEntries(PEER_ENGINES.map((e) => [e, +median(of(e).map((r) => r.ttft_ms).filter(Number.isFinite)).toFixed(1)])) as Record<PeerEngine, number>;
    const cached = Object.fromEntries(PEER_ENGINES.map((e) => [e, median(of(e).map((r) => r.cached_tokens))])) as Record<PeerEngine, number>;
    return { turn, prompt_tokens: median(of('specd').map((r) => r.prompt_tokens)), ttft_ms: ttft, cached_tokens: cached, ratio: +(ttft.specd / ttft['llama-server']).toFixed(3) };
  });
}

/** A terminal table: per turn, prompt tokens, each engine's TTFT (cached tokens) and the ratio. */
export function formatPeerTurns(summary: readonly PeerTurnSummary[]): string {
  const head = ['turn', 'prompt', 'llama-server TTFT ms (cached)', 'specd TTFT ms (cached)', 'specd / llama'];
  const rows = summary.map((s) => [String(s.turn), String(s.prompt_tokens), `${s.ttft_ms['llama-server'].toFixed(0)} (${s.cached_tokens['llama-server']})`, `${s.ttft_ms.specd.toFixed(0)} (${s.cached_tokens.specd})`, `${s.ratio.toFixed(2)}x`]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return `${[head, ...rows].map((r) => r.map((c, i) => c.padStart(widths[i]!)).join('  ')).join('\n')}\n`;
}

/** An SVG: TTFT per turn for each engine, and the prompt tokens each took from its cache. */
export function peerTurnsChartSvg(summary: readonly PeerTurnSummary[], title: string): string {
  return lineChartSvg({
    title,
    series: [...PEER_ENGINES],
    xLabel: 'turn',
    panels: [
      { title: 'time to first token, median over rounds', yLabel: 'ms', points: PEER_ENGINES.map((e) => summary.map((s) => ({ x: s.turn, y: s.ttft_ms[e] }))) },
      { title: 'prompt tokens from the cache', yLabel: 'tokens', points: PEER_ENGINES.map((e) => summary.map((s) => ({ x: s.turn, y: s.cached_tokens[e] }))) },
    ],
  });
}
