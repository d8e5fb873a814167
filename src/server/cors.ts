/**
 * CORS, so that browser pages can call the API (`specd serve --allowed-origins`), as vLLM's and
 * llama-server's options do, through @fastify/cors. Preflights (`OPTIONS` with `Origin` and
 * `Access-Control-Request-Method`) are answered before the API key is checked: a browser never
 * sends credentials on a preflight. Every other response, errors included, carries
 * `Access-Control-Allow-Origin` for an allowed origin.
 */
import cors, { type FastifyCorsOptions } from '@fastify/cors';
import type { FastifyInstance, FastifyRequest } from 'fastify';

export interface CorsOptions {
  /** Origins allowed to read responses (`*`: any); empty: no CORS headers at all. */
  allowedOrigins: string[];
  /** Methods a preflight allows (`*`: any). */
  allowedMethods: string[];
  /** Request headers a preflight allows; empty: those the preflight asks for (Authorization included). */
  allowedHeaders: string[];
}

/** vLLM's defaults (any origin and method), with the asked-for headers allowed, since `*` does not cover Authorization. */
export const DEFAULT_CORS: CorsOptions = { allowedOrigins: ['*'], allowedMethods: ['*'], allowedHeaders: [] };

/** How long a browser may reuse a preflight's answer. */
const PREFLIGHT_MAX_AGE_S = 600;
/** Headers a browser page may read from responses. */
const EXPOSED_HEADERS = ['x-request-id', 'retry-after'];

/** Register CORS; call before any hook that may refuse a request (the API key's). */
export async function registerCors(app: FastifyInstance, opts: CorsOptions): Promise<void> {
  if (opts.allowedOrigins.length === 0) return;
  const options: FastifyCorsOptions = {
    origin: opts.allowedOrigins.includes('*') ? '*' : opts.allowedOrigins,
    methods: opts.allowedMethods.includes('*') ? '*' : opts.allowedMethods,
    ...(opts.allowedHeaders.length > 0 ? { allowedHeaders: opts.allowedHeaders } : {}),
    exposedHeaders: EXPOSED_HEADERS,
    maxAge: PREFLIGHT_MAX_AGE_S,
  };
  // Only a real preflight is answered here; any other OPTIONS request is an ordinary (keyed) one.
  await app.register(cors, {
    delegator: (request: FastifyRequest, callback) => callback(null, { ...options, preflight: isPreflight(request) }),
  });
}

/** A CORS preflight, as the Fetch standard defines it: OPTIONS with Origin and Access-Control-Request-Method. */
function isPreflight(request: FastifyRequest): boolean {
  return request.method === 'OPTIONS' && request.headers.origin !== undefined && request.headers['access-control-request-method'] !== undefined;
}
