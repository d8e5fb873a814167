/**
 * One streamed OpenAI request (chat or text completion) over node:http, timed chunk by chunk:
 * when it was sent, when each chunk carrying text arrived, when the stream ended, and the
 * server's usage from the last chunk (`stream_options.include_usage`). node:http rather than
 * fetch because fetch gives up on response headers after 300 s, and a server with a long queue
 * sends them only once a request's first output is ready.
 */
import http from 'node:http';
import https from 'node:https';
import { SseParser } from './sse.js';

export interface StreamedResponse {
  ok: boolean;
  /** Why it failed: the HTTP status and the server's message, an error event, or a network error. */
  error?: string;
  sentMs: number;
  contentMs: number[];
  endMs: number;
  text: string;
  usage?: { prompt_tokens?: number; completion_tokens?: number; speculative?: Record<string, unknown> };
}

interface Chunk {
  choices?: { delta?: { content?: string | null }; text?: string }[];
  usage?: StreamedResponse['usage'] | null;
  error?: { message?: string; code?: string };
}

/** A keep-alive agent with no cap on sockets, for `url`'s protocol. */
export function benchAgent(url: URL): http.Agent {
  return url.protocol === 'https:' ? new https.Agent({ keepAlive: true, maxSockets: Infinity }) : new http.Agent({ keepAlive: true, maxSockets: Infinity });
}

/** The message of an OpenAI-shaped error body, or the body itself, shortened. */
function errorMessage(body: string): string {
  try {
    const parsed = JSON.parse(body) as { error?: { message?: string } };
    if (parsed.error?.message) return parsed.error.message;
  } catch {
    // not JSON
  }
  return body.trim().slice(0, 200);
}

/** A JSON request to `url`; the whole body as text with the status. */
export function requestJson(url: URL, agent: http.Agent, init: { method?: string; body?: object; apiKey?: string } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const mod = url.protocol === 'https:' ? https : http;
    const req = mod.request(url, { method: init.method ?? 'GET', agent, headers: headers(init.apiKey, init.body !== undefined) }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(init.body === undefined ? undefined : JSON.stringify(init.body));
  });
}

function headers(apiKey: string | undefined, json: boolean): Record<string, string> {
  return { ...(json ? { 'content-type': 'application/json' } : {}), ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}) };
}

/** Send `body` (with `stream: true`) to `url` and time its stream. Never throws: failures come back with `ok: false`. */
export function streamRequest(url: URL, agent: http.Agent, body: object, apiKey?: string): Promise<StreamedResponse> {
  return new Promise((resolve) => {
    const mod = url.protocol === 'https:' ? https : http;
    const sentMs = performance.now();
    const r: StreamedResponse = { ok: false, sentMs, contentMs: [], endMs: sentMs, text: '' };
    let settled = false;
    const finish = (error?: string) => {
      if (settled) return;
      settled = true;
      r.endMs = performance.now();
      r.ok = error === undefined;
      if (error !== undefined) r.error = error;
      resolve(r);
    };
    const req = mod.request(url, { method: 'POST', agent, headers: headers(apiKey, true) }, (res) => {
      res.setEncoding('utf8');
      if (res.statusCode !== 200) {
        let text = '';
        res.on('data', (d: string) => (text += d));
        res.on('end', () => finish(`HTTP ${res.statusCode}: ${errorMessage(text)}`));
        res.on('error', (err) => finish(err.message));
        return;
      }
      const sse = new SseParser();
      let done = false;
      let failure: string | undefined;
      res.on('data', (d: string) => {
        const now = performance.now();
        for (const data of sse.push(d)) {
          if (data === '[DONE]') {
            done = true;
            continue;
          }
          let chunk: Chunk;
          try {
            chunk = JSON.parse(data) as Chunk;
          } catch {
            failure ??= `bad JSON in the stream: ${data.slice(0, 100)}`;
            continue;
          }
          if (chunk.error) failure ??= `error event: ${chunk.error.message ?? chunk.error.code ?? 'unknown'}`;
          const choice = chunk.choices?.[0];
          const content = choice?.delta?.content ?? choice?.text ?? '';
          if (content) {
            r.contentMs.push(now);
            r.text += content;
          }
          if (chunk.usage) r.usage = chunk.usage;
        }
      });
      res.on('end', () => finish(failure ?? (done ? undefined : 'the stream ended before [DONE]')));
      res.on('error', (err) => finish(err.message));
      res.on('close', () => finish(failure ?? (done ? undefined : 'the connection closed before [DONE]')));
    });
    req.on('error', (err) => finish(err.message || String(err)));
    req.end(JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }));
  });
}
