/**
 * A real Prometheus server for tests: started on a free loopback port with a scrape config of
 * the test's choosing and a temporary data directory, queried through its HTTP API
 * (/api/v1/query, /api/v1/rules), stopped with SIGTERM.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** One series of an instant vector. */
export interface VectorSample {
  metric: Record<string, string>;
  value: number;
}

export interface PrometheusProcess {
  url: string;
  /** The instant vector of `query` now (a scalar comes back as one sample with no labels). */
  query(query: string): Promise<VectorSample[]>;
  /** /api/v1/rules: every rule with its health and last error. */
  rules(): Promise<{ name: string; type: string; health: string; lastError?: string; query: string }[]>;
  /** Resolves after the target has been scraped `n` more times (`up` samples counted). */
  scrapes(n: number, timeoutMs?: number): Promise<void>;
  logs(): string;
  stop(): Promise<void>;
}

/** A free loopback TCP port, chosen by the kernel (port 0) and released for the caller. */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, 'close');
  return port;
}

/**
 * Starts `prometheus` with `config` (YAML text; rule file paths absolute) and waits until it
 * is ready (/-/ready).
 */
export async function startPrometheus(binary: string, config: string, timeoutMs = 30_000): Promise<PrometheusProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'specd-prometheus-'));
  writeFileSync(join(dir, 'prometheus.yml'), config);
  const port = await freePort();
  const child: ChildProcess = spawn(
    binary,
    [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let logs = '';
  child.stderr!.on('data', (d: Buffer) => (logs += d.toString()));
  const exited = once(child, 'exit');
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`prometheus exited (${child.exitCode}): ${logs}`);
    const res = await fetch(`${url}/-/ready`).catch(() => undefined);
    if (res?.status === 200) break;
    await res?.body?.cancel();
    if (Date.now() > deadline) throw new Error(`prometheus not ready after ${timeoutMs} ms: ${logs}`);
    await new Promise((r) => setTimeout(r, 100));
  }

  const api = async (path: string): Promise<unknown> => {
    const res = await fetch(`${url}${path}`);
    const body = (await res.json()) as { status: string; data: unknown; error?: string };
    if (body.status !== 'success') throw new Error(`Prometheus ${path}: ${body.error ?? res.status}`);
    return body.data;
  };
  const query = async (q: string): Promise<VectorSample[]> => {
    const data = (await api(`/api/v1/query?query=${encodeURIComponent(q)}`)) as { resultType: string; result: unknown };
    if (data.resultType === 'scalar') return [{ metric: {}, value: Number((data.result as [number, string])[1]) }];
    if (data.resultType !== 'vector') throw new Error(`${q}: a ${data.resultType}, not an instant vector`);
    return (data.result as { metric: Record<string, string>; value: [number, string] }[]).map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
  };
  return {
    url,
    query,
    async rules() {
      const data = (await api('/api/v1/rules')) as { groups: { rules: { name: string; type: string; health: string; lastError?: string; query: string }[] }[] };
      return data.groups.flatMap((g) => g.rules);
    },
    async scrapes(n, waitMs = 30_000) {
      const count = async () => (await query('count_over_time(up[1h])'))[0]?.value ?? 0;
      const target = (await count()) + n;
      const end = Date.now() + waitMs;
      while ((await count()) < target) {
        if (Date.now() > end) throw new Error(`fewer than ${n} scrapes in ${waitMs} ms`);
        await new Promise((r) => setTimeout(r, 200));
      }
    },
    logs: () => logs,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
