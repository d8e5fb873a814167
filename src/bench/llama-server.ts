/**
 * llama.cpp's tools as child processes: `llama-server` started on a GGUF file and asked for
 * greedy completions of token ids, and `llama-quantize`. A tool is given as a command line
 * (a flag, else an environment variable such as `LLAMA_SERVER`, else its name on PATH), split on
 * spaces, so that `scripts/llama-server-debian.sh`'s loader-prefixed commands work as printed.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';

/** A llama.cpp tool that cannot be run (shown to the user as one line). */
export class LlamaCppToolError extends Error {
  override name = 'LlamaCppToolError';
}

/** How a user names a llama.cpp tool. */
export interface LlamaCppTool {
  /** The tool's name on PATH and in messages: `llama-server`, `llama-quantize`. */
  name: string;
  /** The environment variable holding its command: `LLAMA_SERVER`, `LLAMA_QUANTIZE`. */
  env: string;
}

export const LLAMA_SERVER: LlamaCppTool = { name: 'llama-server', env: 'LLAMA_SERVER' };
export const LLAMA_QUANTIZE: LlamaCppTool = { name: 'llama-quantize', env: 'LLAMA_QUANTIZE' };

/** Where the commands come from, for messages. */
const HOW_TO_GET = 'eval "$(bash scripts/llama-server-debian.sh)" sets both from Debian\'s llama.cpp-tools';

/** The tool's command line: `given` (a flag), else $env, else the name on PATH; undefined when blank. */
export function toolCommand(tool: LlamaCppTool, given?: string, env: NodeJS.ProcessEnv = process.env): string[] {
  return (given ?? env[tool.env] ?? tool.name).split(' ').filter(Boolean);
}

/**
 * The tool's command line after checking that it starts (`--version` for llama-server, `--help`
 * for llama-quantize, which has no --version; both exit promptly).
 * @throws LlamaCppToolError naming the tool, the command tried and how to set it
 */
export function requireTool(tool: LlamaCppTool, given?: string, env: NodeJS.ProcessEnv = process.env): string[] {
  const command = toolCommand(tool, given, env);
  const source = given !== undefined ? `--${tool.name}` : env[tool.env] !== undefined ? `$${tool.env}` : 'PATH';
  if (command.length === 0) throw new LlamaCppToolError(`${tool.name}: ${source} is empty; ${HOW_TO_GET}`);
  const r = spawnSync(command[0]!, [...command.slice(1), tool === LLAMA_QUANTIZE ? '--help' : '--version'], { encoding: 'utf8', timeout: 30_000 });
  if (r.error) throw new LlamaCppToolError(`${tool.name} not found: ${command.join(' ')} (from ${source}) cannot be run (${(r.error as NodeJS.ErrnoException).code ?? r.error.message}); set ${tool.env} or --${tool.name}; ${HOW_TO_GET}`);
  if (tool !== LLAMA_QUANTIZE && r.status !== 0) {
    const why = (r.stderr || r.stdout).trim().split('\n').pop() ?? '';
    throw new LlamaCppToolError(`${tool.name}: ${command.join(' ')} (from ${source}) exited with ${r.status}${why ? `: ${why}` : ''}`);
  }
  return command;
}

/**
 * Quantizes a GGUF file with llama-quantize: `input` (float32) to `output` of ggml type `type`
 * (`Q8_0`, `Q4_0`, ...), on `threads` threads.
 * @throws LlamaCppToolError with the tail of its output when it fails
 */
export function quantizeGguf(command: string[], input: string, output: string, type: string, threads: number): void {
  const r = spawnSync(command[0]!, [...command.slice(1), input, output, type, String(threads)], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    const why = r.error?.message ?? (r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ');
    throw new LlamaCppToolError(`llama-quantize ${type} of ${input} failed: ${why}`);
  }
}

/** A free TCP port on 127.0.0.1 (the kernel's choice; free when this returns). */
export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export interface LlamaServerOptions {
  /** Intra-op threads (`-t`). */
  threads: number;
  /** Context of a slot in tokens (`-c`). */
  context: number;
  /** Further arguments: `-m FILE`, `-md FILE`, speculation flags. */
  args: string[];
  /** Seconds to wait for /health (default 60). */
  startTimeoutS?: number;
}

/** A running llama-server on 127.0.0.1. */
export class LlamaServer {
  private constructor(
    readonly url: string,
    private readonly proc: ChildProcess,
  ) {}

  /**
   * Starts llama-server with `options` on a free port and waits until /health answers 200.
   * @throws LlamaCppToolError with the tail of its log when it exits or does not answer in time
   */
  static async start(command: string[], options: LlamaServerOptions): Promise<LlamaServer> {
    const port = await freePort();
    const args = [...options.args, '--host', '127.0.0.1', '--port', String(port), '-t', String(options.threads), '-c', String(options.context), '--no-warmup'];
    const proc = spawn(command[0]!, [...command.slice(1), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    proc.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
    let spawnError: Error | undefined;
    proc.once('error', (e) => (spawnError = e));
    const server = new LlamaServer(`http://127.0.0.1:${port}`, proc);
    const deadline = performance.now() + (options.startTimeoutS ?? 60) * 1000;
    while (!(await fetch(`${server.url}/health`).then((r) => r.ok, () => false))) {
      if (spawnError || proc.exitCode !== null || performance.now() > deadline) {
        await server.stop();
        const last = log.trim().split('\n').slice(-3).join(' | ');
        throw new LlamaCppToolError(`llama-server ${args.join(' ')} did not start${spawnError ? `: ${spawnError.message}` : proc.exitCode !== null ? ` (exit ${proc.exitCode})` : ' in time'}: ${last}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    return server;
  }

  /**
   * The greedy continuation of `prompt` (token ids): `maxTokens` ids, end of text ignored, no
   * prompt cache, through /completion (temperature 0, top_k 1).
   * @throws Error naming the status when the server answers with an error
   */
  async greedy(prompt: number[], maxTokens: number): Promise<number[]> {
    const res = await fetch(`${this.url}/completion`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt, n_predict: maxTokens, temperature: 0, top_k: 1, ignore_eos: true, cache_prompt: false, return_tokens: true }),
    });
    if (!res.ok) throw new Error(`llama-server /completion: HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`);
    return ((await res.json()) as { tokens: number[] }).tokens;
  }

  /**
   * `text` as the served model's tokenizer splits it (/tokenize, no special tokens added).
   * @throws Error naming the status when the server answers with an error
   */
  async tokenize(text: string): Promise<number[]> {
    const res = await fetch(`${this.url}/tokenize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ content: text }) });
    if (!res.ok) throw new Error(`llama-server /tokenize: HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`);
    return ((await res.json()) as { tokens: number[] }).tokens;
  }

  /** Stops the process and waits for it to exit. */
  async stop(): Promise<void> {
    if (this.proc.pid === undefined || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill();
    await exited;
  }
}
