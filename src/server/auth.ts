/**
 * Optional API key: every request then needs `Authorization: Bearer KEY`, except the routes on
 * an explicit open list: `/health` (probes), `/version` and `/metrics` (scrapers) unless metrics
 * are keyed too (CORS preflights are answered before this hook runs: cors.ts). The decision follows the route the request was matched to, not the text of its URL, so
 * no spelling of a path (`/v1//x`, `/V1/x`, `/%761/models`, a query string) reaches a keyed
 * handler without the key; unknown paths need the key as well.
 *
 * Keys are compared through their SHA-256 digests with `timingSafeEqual`, so the comparison
 * takes the same time whatever the key's length or how much of it matches. Neither the key nor
 * the Authorization header is ever logged (fastify's request serializer leaves headers out).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { apiErrors } from './errors.js';

const digest = (text: string) => createHash('sha256').update(text, 'utf8').digest();

export interface ApiKeyOptions {
  /** Whether /metrics needs the key too (default: open). */
  metrics?: boolean;
}

/** The routes (as registered) that need no key. */
export function openRoutes(opts: ApiKeyOptions = {}): ReadonlySet<string> {
  return new Set(opts.metrics ? ['/health', '/version'] : ['/health', '/version', '/metrics']);
}

/** An `onRequest` hook that rejects requests to keyed routes without the key (401). */
export function apiKeyHook(key: string, opts: ApiKeyOptions = {}): (request: FastifyRequest) => Promise<void> {
  const expected = digest(key);
  const open = openRoutes(opts);
  return async (request) => {
    // `routeOptions.url` is the matched route's pattern; undefined when no route matched.
    const route = request.routeOptions.url;
    if (route !== undefined && open.has(route)) return;
    const match = /^Bearer\s+(.+)$/i.exec(request.headers.authorization ?? '');
    if (!match) throw apiErrors.unauthorized(false);
    if (!timingSafeEqual(digest(match[1]!.trim()), expected)) throw apiErrors.unauthorized(true);
  };
}
