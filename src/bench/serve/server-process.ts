/**
 * `specd serve` as a child process for the benchmark: started on a free port, ready once it has
 * printed `specd: listening on URL` and `GET /health` answers 200, stopped with SIGTERM (a
 * graceful shutdown). If it exits before it is ready, the error carries the end of its stderr.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../../paths.js';

const BIN = join(PACKAGE_ROOT, 'bin', 'specd.js');

export interface ServerProcess {
  url: string;
  /** The server's default policy, from its `specd: ready` line. */
  policy: string | undefined;
  /** The exit code once it has exited, else undefined. */
  exitCode(): number | null | undefined;
  /** The last lines of its stderr. */
  stderrTail(lines?: number): string;
  /** SIGTERM, then wait for the exit (SIGKILL after `graceMs`); resolves with the exit code. */
  stop(graceMs?: number): Promise<number | null>;
}

/** Split a command-line string into words: whitespace separates, quotes group, backslash escapes. */
export function splitArgs(text: string): string[] {
  const out: string[] = [];
  let word: string | null = null;
  let quote: '"' | "'" | null = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote) {
      if (c === quote) quote = null;
      else if (c === '\\' && quote === '"' && i + 1 < text.length) word += text[++i]!;
      else word += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      word ??= '';
    } else if (c === '\\' && i + 1 < text.length) {
      word = (word ?? '') + text[++i]!;
    } else if (/\s/.test(c)) {
      if (word !== null) out.push(word);
      word = null;
    } else word = (word ?? '') + c;
  }
  if (quote) throw new Error(`unterminated ${quote} in "${text}"`);
  if (word !== null) out.push(word);
  return out;
}

/** A command line as a POSIX shell would take it back (the inverse of splitArgs). */
export function shellJoin(words: readonly string[]): string {
  return words.map((w) => (/^[\w@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`)).join(' ');
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Start `specd serve --port 0 ...args` and wait until it is ready (at most `timeoutMs`). */
export async function startServer(args: string[], timeoutMs = 180_000): Promise<ServerProcess> {
  const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  if (!exitHookInstalled) {
    // A benchmark stopped early must not leave servers behind.
    process.once('exit', () => live.forEach((c) => c.kill('SIGKILL')));
    for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
      process.once(signal, () => {
        live.forEach((c) => c.kill('SIGTERM'));
        process.exit(code);
      });
    }
    exitHookInstalled = true;
  }
  let stderr = '';
  let stdout = '';
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      live.delete(child);
      exitCode = code;
      resolve(exitCode);
    }),
  );
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const tail = (lines = 5) => stderr.trim().split('\n').slice(-lines).join('\n');
  const handle: Omit<ServerProcess, 'url'> & { url?: string } = {
    policy: undefined,
    exitCode: () => exitCode,
    stderrTail: tail,
    async stop(graceMs = 60_000) {
      if (exitCode !== undefined) return exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
  const failed = (why: string) => new Error(`specd serve ${args.join(' ')}: ${why}${stderr.trim() ? `: ${tail(3).replace(/\n/g, ' | ')}` : ''}`);
  const deadline = Date.now() + timeoutMs;
  try {
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(failed(`no "listening on" line within ${timeoutMs / 1000} s`)), timeoutMs);
      child.stdout!.setEncoding('utf8').on('data', (d: string) => {
        stdout += d;
        const m = /specd: listening on (\S+)/.exec(stdout);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
      void exited.then((code) => {
        clearTimeout(timer);
        reject(failed(`exited (code ${code}) before listening`));
      });
    });
    for (;;) {
      if (exitCode !== undefined) throw failed(`exited (code ${exitCode}) while loading`);
      if (Date.now() > deadline) throw failed(`not ready within ${timeoutMs / 1000} s`);
      const status = await fetch(`${url}/health`).then((r) => r.status, () => 0);
      if (status === 200) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    // The ready line follows /health turning 200 closely; give it a moment to arrive.
    for (let i = 0; i < 20 && !/specd: ready/.test(stderr) && exitCode === undefined; i++) await new Promise((r) => setTimeout(r, 25));
    if (exitCode !== undefined) throw failed(`exited (code ${exitCode}) after loading`);
    handle.policy = /default policy (\S+)/.exec(stderr)?.[1];
    handle.url = url;
    return handle as ServerProcess;
  } catch (err) {
    await handle.stop(5_000);
    throw err;
  }
}
