/**
 * `specd serve` as a child process, for tests and the soak run: start it on a free port, wait
 * for the URL it prints (and, unless told otherwise, for /health to turn 200), watch its
 * stderr and exit code, and read its resident memory.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** bin/specd.js (this file is dist/test/support/serve-process.js). */
export const SPECD_BIN = fileURLToPath(new URL('../../../bin/specd.js', import.meta.url));

export interface ServeProcess {
  child: ChildProcess;
  url: string;
  /** The exit code (null when killed by a signal). */
  exit: Promise<number | null>;
  stderr(): string;
  stdout(): string;
  /** SIGTERM, then the exit code. */
  stop(): Promise<number | null>;
}

export interface ServeOptions {
  /** Wait until /health is 200 (default true). */
  waitReady?: boolean;
  env?: NodeJS.ProcessEnv;
}

/** Starts `specd serve --port 0 ARGS` (one worker unless ARGS says otherwise). */
export async function startServe(args: string[], opts: ServeOptions = {}): Promise<ServeProcess> {
  const workers = args.includes('--workers') ? [] : ['--workers', '1'];
  const child = spawn(process.execPath, [SPECD_BIN, 'serve', '--port', '0', ...workers, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: opts.env ?? process.env,
  });
  let stderr = '';
  let stdout = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  const exit = once(child, 'exit').then(([code]) => code as number | null);
  const url = await new Promise<string>((resolve, reject) => {
    const look = () => {
      const m = /specd: listening on (http:\/\/\S+)/.exec(stdout);
      if (m) resolve(m[1]!);
    };
    child.stdout!.on('data', look);
    exit.then((code) => reject(new Error(`specd serve exited (${code}) before listening: ${stderr}`)));
  });
  const server: ServeProcess = {
    child,
    url,
    exit,
    stderr: () => stderr,
    stdout: () => stdout,
    stop: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exit;
    },
  };
  if (opts.waitReady ?? true) await waitHealthy(url, exit);
  return server;
}

/** Polls /health until it is 200 (listening comes first, the models load meanwhile). */
export async function waitHealthy(url: string, exit?: Promise<unknown>, timeoutMs = 60_000): Promise<void> {
  let exited = false;
  exit?.then(() => (exited = true));
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (exited) throw new Error('specd serve exited before it was ready');
    const res = await fetch(`${url}/health`).catch(() => undefined);
    if (res?.status === 200) return;
    await res?.body?.cancel();
    if (Date.now() > end) throw new Error(`${url}/health not 200 after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Resident memory of a process in bytes (Linux: VmRSS in /proc/PID/status). */
export function residentBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for process ${pid}`);
  return Number(m[1]) * 1024;
}

/** Resolves once the server's stderr contains `text` (e.g. its acknowledgement of a signal). */
export async function waitForStderr(server: Pick<ServeProcess, 'stderr'>, text: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!server.stderr().includes(text)) {
    if (Date.now() > deadline) throw new Error(`no "${text}" on the server's stderr within ${timeoutMs} ms: ${server.stderr()}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
