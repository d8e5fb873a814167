/**
 * Plain HTTP for the reliability tests and the soak run: raw requests through node:http (any
 * bytes, any headers, any method), the OpenAI error shape, server-sent events, streamed chats
 * that report their time to first token, and Prometheus values from /metrics.
 */
import assert from 'node:assert/strict';
import { Agent, request } from 'node:http';

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

export interface RawRequest {
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  agent?: Agent;
}

/** One request; the body is sent as given, with its Content-Length (no Content-Type unless in `headers`). */
export function rawRequest(base: string, req: RawRequest): Promise<RawResponse> {
  const { hostname, port } = new URL(base);
  const headers = req.body === undefined ? req.headers : { 'content-length': String(Buffer.byteLength(req.body)), ...req.headers };
  return new Promise((resolve, reject) => {
    const r = request({ host: hostname, port, method: req.method ?? 'POST', path: req.path, headers, agent: req.agent }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(parts).toString('utf8') }));
      res.on('error', reject);
    });
    r.on('error', reject);
    r.end(req.body);
  });
}

export const jsonHeaders = (apiKey?: string): Record<string, string> => ({
  'content-type': 'application/json',
  ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}),
});

export interface ErrorObject {
  message: string;
  type: string;
  param: string | null;
  code: string | null;
}

/** Whether a value is OpenAI's error shape, `{error: {message, type, param, code}}`, and nothing else. */
export function isOpenAIError(value: unknown): value is { error: ErrorObject } {
  if (typeof value !== 'object' || value === null || Object.keys(value).join() !== 'error') return false;
  const e = (value as { error: Record<string, unknown> }).error;
  return (
    typeof e === 'object' &&
    e !== null &&
    Object.keys(e).sort().join() === 'code,message,param,type' &&
    typeof e.message === 'string' &&
    e.message.length > 0 &&
    typeof e.type === 'string' &&
    (e.param === null || typeof e.param === 'string') &&
    (e.code === null || typeof e.code === 'string')
  );
}

/** The `data:` payloads of a server-sent event stream, `[DONE]` included. */
export function sseData(body: string): string[] {
  return body
    .split('\n\n')
    .filter((e) => e.startsWith('data: '))
    .map((e) => e.slice('data: '.length));
}

/** Polls `cond` every few milliseconds until it holds (fails after `timeoutMs`). */
export async function until(cond: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) assert.fail(`${what} not reached in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** The value of a sample in /metrics with no labels but specd's `model_name`. */
export async function metricValue(base: string, name: string, headers: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${base}/metrics`, { headers })).text();
  const m = new RegExp(`^${name}(?:\\{model_name="[^"]*"\\})? (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`no sample ${name} in /metrics`);
  return Number(m[1]);
}

/** The bundled pair's EOS ids biased away, so generations run to max_tokens. */
export const NO_EOS = { '256': -100, '258': -100 };

export interface StreamOutcome {
  status: number;
  /** Milliseconds from sending to the first content chunk (undefined when none came). */
  ttftMs?: number;
  /** The response body (the error body for a non-200). */
  body: string;
  /** The Retry-After header, if any. */
  retryAfter?: string;
}

/** A streamed chat through fetch; aborts after the first content chunk when `abortAfterFirst`. */
export async function streamChat(base: string, payload: object, opts: { apiKey?: string; abortAfterFirst?: boolean } = {}): Promise<StreamOutcome> {
  const controller = new AbortController();
  const t0 = performance.now();
  const res = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: jsonHeaders(opts.apiKey),
    body: JSON.stringify({ ...payload, stream: true }),
    signal: controller.signal,
  });
  const outcome: StreamOutcome = { status: res.status, body: '', retryAfter: res.headers.get('retry-after') ?? undefined };
  if (res.status !== 200) {
    outcome.body = await res.text();
    return outcome;
  }
  const decoder = new TextDecoder();
  try {
    for await (const part of res.body!) {
      outcome.body += decoder.decode(part as Uint8Array, { stream: true });
      if (outcome.ttftMs === undefined && outcome.body.includes('"content":"') && /"content":"[^"]/.test(outcome.body)) {
        outcome.ttftMs = performance.now() - t0;
        if (opts.abortAfterFirst) {
          controller.abort();
          break;
        }
      }
    }
  } catch (err) {
    if (!opts.abortAfterFirst || (err as Error).name !== 'AbortError') throw err;
  }
  return outcome;
}
