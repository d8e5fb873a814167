/** `specd bench peer --multi-turn`: one conversation's turns on specd and on llama-server, TTFT per turn (src/bench/peer-multi-turn.ts). */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { InvalidArgumentError } from 'commander';
import { LLAMA_SERVER, requireTool } from '../bench/llama-server.js';
import { formatPeerTurns, peerTurnsChartSvg, runPeerTurns } from '../bench/peer-multi-turn.js';
import { machineInfo } from '../bench/serve/report.js';
import { splitArgs } from '../bench/serve/server-process.js';
import { TextTokenizer } from '../text/tokenizer.js';

/** The `specd bench peer` flags the multi-turn comparison reads. */
export interface PeerTurnsFlags {
  target: string;
  draft: string;
  head: string | null;
  threads: number;
  draftThreads: number;
  context: number;
  maxTokens: number;
  rounds: number;
  turns: number;
  systemPromptLen: number;
  questionLen: number;
  seed: number;
  serveArgs?: string;
  llamaServer?: string;
  ggufDir?: string;
  json?: string;
  chart?: string;
}

export async function peerTurns(flags: PeerTurnsFlags): Promise<void> {
  const llamaServer = requireTool(LLAMA_SERVER, flags.llamaServer);
  let extra: string[];
  try {
    extra = splitArgs(flags.serveArgs ?? '');
  } catch (err) {
    throw new InvalidArgumentError(`--serve-args: ${(err as Error).message}`);
  }
  const specdArgs = [
    '--target', flags.target, '--draft', flags.draft, ...(flags.head ? ['--head', flags.head] : ['--no-head']),
    '--threads', String(flags.threads), '--draft-threads', String(flags.draftThreads), '--workers', '1', ...extra,
  ];
  const tokenizer = await TextTokenizer.fromDir(flags.target);
  const ggufDir = flags.ggufDir ? resolve(flags.ggufDir) : mkdtempSync(join(tmpdir(), 'specd-peer-turns-'));
  try {
    const result = await runPeerTurns({
      target: flags.target,
      tokenizer,
      specdArgs,
      llamaServer,
      threads: flags.threads,
      context: flags.context,
      turns: flags.turns,
      systemPromptLen: flags.systemPromptLen,
      questionLen: flags.questionLen,
      maxTokens: flags.maxTokens,
      rounds: flags.rounds,
      seed: flags.seed,
      ggufPath: join(ggufDir, 'target-F32.gguf'),
      log: (line) => process.stderr.write(`${line}\n`),
    });
    process.stdout.write(formatPeerTurns(result.summary));
    const settings = {
      target: flags.target,
      specd_serve: specdArgs,
      llama_server: llamaServer.join(' '),
      threads: flags.threads,
      context: flags.context,
      turns: flags.turns,
      system_prompt_len: flags.systemPromptLen,
      question_len: flags.questionLen,
      max_tokens: flags.maxTokens,
      rounds: flags.rounds,
      seed: flags.seed,
      command: `specd ${process.argv.slice(2).join(' ')}`,
    };
    if (flags.json) {
      writeFileSync(flags.json, `${JSON.stringify({ schema: 'specd-bench-peer-turns/1', created: new Date().toISOString(), machine: machineInfo(), settings, rows: result.rows, summary: result.summary }, null, 2)}\n`);
      process.stderr.write(`wrote ${flags.json}\n`);
    }
    if (flags.chart) {
      const title = `one conversation, turn by turn: specd vs llama-server (prompt cache on), system prompt ${flags.systemPromptLen} characters, ${flags.maxTokens} tokens per answer, greedy, ${flags.threads} threads, ${flags.rounds} rounds`;
      writeFileSync(flags.chart, peerTurnsChartSvg(result.summary, title));
      process.stderr.write(`wrote ${flags.chart}\n`);
    }
  } finally {
    if (!flags.ggufDir) rmSync(ggufDir, { recursive: true, force: true });
  }
}
