/**
 * Replicas behind a real load balancer: three `specd serve` processes behind HAProxy
 * (deploy/haproxy/haproxy.cfg with ports of its own, health checks on /health), `specd bench
 * serve` streaming through it, and meanwhile a rolling restart of one replica (SIGTERM, then a
 * new process on its port) and a crash of another (SIGKILL), each while it has streams in
 * flight. Reports what HAProxy logged for every request (replica, status, termination state,
 * retries) with the times of the two events, and the benchmark's report.
 *
 *   npm run replicas -- [--prompts 120] [--concurrency 6] [--max-tokens 96] [--json FILE]
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
import { freePort } from '../support/prometheus.js';
import { metricValue } from '../support/http-client.js';
import { SPECD_BIN, type ServeProcess, startServe, waitHealthy } from '../support/serve-process.js';

export const HAPROXY_CONFIG = 'deploy/haproxy/haproxy.cfg';
/** The bundled pair's EOS ids biased away: every generation runs to max_tokens. */
const NO_EOS = { logit_bias: { '256': -100, '258': -100 } };

export interface RollingRestartOptions {
  haproxy: string;
  prompts: number;
  concurrency: number;
  maxTokens: number;
  /** Extra `specd serve` flags of every replica. */
  serveArgs?: string[];
  /** Everything must be over by then (ms). */
  timeoutMs?: number;
  log?: (line: string) => void;
}

/** One request as HAProxy logged it (log-format of deploy/haproxy/haproxy.cfg). */
export interface LoggedRequest {
  /** Accepted at (epoch ms). */
  acceptedAt: number;
  /** Ended at (epoch ms): accepted + Ta. */
  endedAt: number;
  server: string;
  status: number;
  /** Termination state: `--` for a normal end; first letter C/S = client/server side. */
  termination: string;
  /** Retries; a leading + means redispatched to another replica. */
  retries: string;
  request: string;
}

export interface BenchConfigReport {
  completed: number;
  failed: number;
  errors: string[];
  duration_s: number;
  output_throughput: number;
  request_throughput: number;
  ttft_ms: { median: number; p99: number } | null;
  e2e_ms: { median: number; p99: number } | null;
}

export interface RollingRestartReport {
  /** HAProxy's server names of the replicas, in order. */
  servers: string[];
  /** The replica restarted with SIGTERM, and when (epoch ms), and its exit code. */
  drained: { server: string; sigtermAt: number; runningAtSigterm: number; exitCode: number | null; restartMs: number };
  /** The replica killed with SIGKILL, and when. */
  killed: { server: string; sigkillAt: number; runningAtSigkill: number };
  requests: LoggedRequest[];
  bench: BenchConfigReport;
  /** The machine, as `specd bench serve` reports it. */
  machine: unknown;
}

/** HAProxy's config with the frontend on `frontendPort` and, in each backend, one server line per replica port (checked, or tracking another backend's as the template's first line does). */
export function haproxyConfig(template: string, frontendPort: number, ports: number[]): { text: string; servers: string[] } {
  const servers = ports.map((_, i) => `specd${i + 1}`);
  const lines = template.split('\n');
  const bind = lines.findIndex((l) => /^\s*bind 127\.0\.0\.1:\d+$/.test(l));
  if (bind < 0 || !lines.some((l) => /^\s*server /.test(l))) throw new Error(`${HAPROXY_CONFIG}: no bind or server lines to fill in`);
  lines[bind] = lines[bind]!.replace(/127\.0\.0\.1:\d+/, `127.0.0.1:${frontendPort}`);
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!/^\s*server /.test(lines[i]!)) {
      out.push(lines[i]!);
      continue;
    }
    // A backend's run of server lines becomes one line per port.
    const first = lines[i]!;
    while (i + 1 < lines.length && /^\s*server /.test(lines[i + 1]!)) i++;
    const indent = /^\s*/.exec(first)![0];
    const track = /\btrack (\S+)\//.exec(first)?.[1];
    out.push(...ports.map((p, k) => `${indent}server ${servers[k]} 127.0.0.1:${p} ${track ? `track ${track}/${servers[k]}` : 'check'}`));
  }
  return { text: out.join('\n'), servers };
}

const LOG_LINE = /^(\d+)\.(\d{3}) (\S+) (-?\d+) (\S\S) (\+?\d+) (-?\d+) \d+ "(.*)"$/;

export function parseHaproxyLog(text: string): LoggedRequest[] {
  const out: LoggedRequest[] = [];
  for (const line of text.split('\n')) {
    const m = LOG_LINE.exec(line.trim());
    if (!m) continue;
    const acceptedAt = Number(m[1]) * 1000 + Number(m[2]);
    out.push({ acceptedAt, endedAt: acceptedAt + Math.max(0, Number(m[7])), server: m[3]!.replace(/^specd\//, ''), status: Number(m[4]), termination: m[5]!, retries: m[6]!, request: m[8]! });
  }
  return out;
}

/** Generations running on the replica's engine workers (not those waiting for one). */
async function running(server: ServeProcess): Promise<number> {
  return metricValue(server.url, 'specd_num_requests_running');
}

/** Polls until the replica has a generation running; returns the count. */
async function untilBusy(server: ServeProcess, deadline: number, what: string): Promise<number> {
  for (;;) {
    const n = await running(server);
    if (n > 0) return n;
    if (Date.now() > deadline) throw new Error(`${what}: the replica never had a request in flight`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function runRollingRestart(opts: RollingRestartOptions): Promise<RollingRestartReport> {
  const log = opts.log ?? (() => {});
  const deadline = Date.now() + (opts.timeoutMs ?? 300_000);
  const dir = mkdtempSync(join(tmpdir(), 'specd-replicas-'));
  const ports = [await freePort(), await freePort(), await freePort()];
  const frontend = await freePort();
  const serveArgs = (port: number) => ['--threads', '1', '--log-level', 'warn', ...(opts.serveArgs ?? []), '--port', String(port)];
  const replicas: ServeProcess[] = [];
  let haproxy: ChildProcess | undefined;
  let bench: ChildProcess | undefined;
  try {
    replicas.push(...(await Promise.all(ports.map((p) => startServe(serveArgs(p))))));
    log(`replicas on ${ports.join(', ')}`);
    const { text, servers } = haproxyConfig(readFileSync(HAPROXY_CONFIG, 'utf8'), frontend, ports);
    writeFileSync(join(dir, 'haproxy.cfg'), text);
    haproxy = spawn(opts.haproxy, ['-db', '-f', join(dir, 'haproxy.cfg')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let haproxyLog = '';
    let haproxyErr = '';
    haproxy.stdout!.on('data', (d: Buffer) => (haproxyLog += d.toString()));
    haproxy.stderr!.on('data', (d: Buffer) => (haproxyErr += d.toString()));
    const url = `http://127.0.0.1:${frontend}`;
    await waitHealthy(url, once(haproxy, 'exit'), 10_000).catch((err: Error) => {
      throw new Error(`haproxy: ${err.message}: ${haproxyErr}`);
    });
    log(`haproxy on ${url}`);

    const reportFile = join(dir, 'bench.json');
    bench = spawn(
      process.execPath,
      [SPECD_BIN, 'bench', 'serve', '--url', url, '--dataset', 'gsm8k', '--num-prompts', String(opts.prompts), '--concurrency', String(opts.concurrency), '--max-tokens', String(opts.maxTokens), '--extra-body', JSON.stringify(NO_EOS), '--json', reportFile],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let benchOut = '';
    bench.stdout!.on('data', (d: Buffer) => (benchOut += d.toString()));
    bench.stderr!.on('data', (d: Buffer) => (benchOut += d.toString()));
    const benchExit = once(bench, 'exit').then(([code]) => code as number | null);
    let benchDone = false;
    void benchExit.then(() => (benchDone = true));

    // Rolling restart of replica 1: SIGTERM while it streams, a new process on its port.
    const runningAtSigterm = await untilBusy(replicas[0]!, deadline, 'rolling restart');
    const sigtermAt = Date.now();
    const exitCode = await replicas[0]!.stop();
    log(`${servers[0]}: SIGTERM with ${runningAtSigterm} in flight, exited ${exitCode} after ${Date.now() - sigtermAt} ms`);
    const restartStart = Date.now();
    replicas[0] = await startServe(serveArgs(ports[0]!));
    const restartMs = Date.now() - restartStart;
    log(`${servers[0]}: restarted in ${restartMs} ms`);

    // Crash of replica 2 while it streams.
    const runningAtSigkill = await untilBusy(replicas[1]!, deadline, 'crash');
    const sigkillAt = Date.now();
    replicas[1]!.child.kill('SIGKILL');
    await replicas[1]!.exit;
    log(`${servers[1]}: SIGKILL with ${runningAtSigkill} in flight`);
    if (benchDone) throw new Error(`the benchmark ended before the crash: raise --prompts (${benchOut})`);

    const timer = setTimeout(() => bench?.kill('SIGTERM'), Math.max(0, deadline - Date.now()));
    const benchCode = await benchExit;
    clearTimeout(timer);
    if (benchCode !== 0) throw new Error(`specd bench serve exited ${benchCode}: ${benchOut}`);
    const benchReport = JSON.parse(readFileSync(reportFile, 'utf8')) as { configs: BenchConfigReport[]; machine: unknown };
    haproxy.kill('SIGUSR1'); // soft stop: flushes and exits
    await once(haproxy, 'exit');
    return {
      servers,
      drained: { server: servers[0]!, sigtermAt, runningAtSigterm, exitCode, restartMs },
      killed: { server: servers[1]!, sigkillAt, runningAtSigkill },
      requests: parseHaproxyLog(haproxyLog),
      bench: benchReport.configs[0]!,
      machine: benchReport.machine,
    };
  } finally {
    if (bench && bench.exitCode === null) bench.kill('SIGKILL');
    if (haproxy && haproxy.exitCode === null) haproxy.kill('SIGKILL');
    await Promise.all(replicas.map((r) => r.stop()));
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The generations (chat requests) of a report, split by what happened to them. */
export function classify(report: RollingRestartReport) {
  const chats = report.requests.filter((r) => r.request.startsWith('POST /v1/chat/completions'));
  const normal = (r: LoggedRequest) => r.status === 200 && r.termination === '--';
  return {
    chats,
    /** Streams on the drained replica that were under way at its SIGTERM. */
    drainedInFlight: chats.filter((r) => r.server === report.drained.server && r.acceptedAt < report.drained.sigtermAt && r.endedAt > report.drained.sigtermAt),
    /** Requests that ended abnormally, on any replica. */
    abnormal: chats.filter((r) => !normal(r)),
    /** Requests HAProxy sent to another replica after a failed attempt. */
    redispatched: chats.filter((r) => r.retries.startsWith('+') || Number(r.retries) > 0),
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      prompts: { type: 'string', default: '120' },
      concurrency: { type: 'string', default: '6' },
      'max-tokens': { type: 'string', default: '96' },
      json: { type: 'string' },
      haproxy: { type: 'string', default: '/usr/sbin/haproxy' },
    },
  });
  const report = await runRollingRestart({
    haproxy: values.haproxy!,
    prompts: Number(values.prompts),
    concurrency: Number(values.concurrency),
    maxTokens: Number(values['max-tokens']),
    log: (line) => process.stderr.write(`${line}\n`),
  });
  const c = classify(report);
  const b = report.bench;
  const lines = [
    `requests: ${b.completed} completed, ${b.failed} failed (${b.errors.join('; ') || 'no errors'})`,
    `output throughput ${b.output_throughput.toFixed(1)} tokens/s, TTFT median ${b.ttft_ms?.median.toFixed(0)} ms / p99 ${b.ttft_ms?.p99.toFixed(0)} ms, e2e p99 ${b.e2e_ms?.p99.toFixed(0)} ms`,
    `${report.drained.server}: SIGTERM with ${report.drained.runningAtSigterm} in flight; ${c.drainedInFlight.length} streams under way finished (${c.drainedInFlight.filter((r) => r.status === 200 && r.termination === '--').length} normally); exit ${report.drained.exitCode}; back in ${report.drained.restartMs} ms`,
    `${report.killed.server}: SIGKILL with ${report.killed.runningAtSigkill} in flight; ${c.abnormal.filter((r) => r.server === report.killed.server).length} requests cut there`,
    `abnormal endings elsewhere: ${c.abnormal.filter((r) => r.server !== report.killed.server).length}; redispatched to another replica: ${c.redispatched.length}`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  if (values.json) writeFileSync(values.json, `${JSON.stringify({ ...report, summary: lines }, null, 2)}\n`);
  const ok = c.abnormal.every((r) => r.server === report.killed.server) && b.failed === c.abnormal.length && c.drainedInFlight.length > 0;
  process.exitCode = ok ? 0 : 1;
}

// Run as a script (npm run replicas), not when a test imports it.
if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  main().catch((err: Error) => {
    process.stderr.write(`replicas: ${err.message}\n`);
    process.exitCode = 1;
  });
}
