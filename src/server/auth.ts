/**
 * Optional API key: `/v1/*` routes then need `Authorization: Bearer KEY`. `/health` and
 * `/metrics` stay open (probes and scrapers). Keys are compared through their SHA-256 digests
 * with `timingSafeEqual`, so the comparison takes the same time whatever the key's length or
 * how much of it matches.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { apiErrors } from './errors.js';

const digest = (text: string) => createHash('sha256').update(text, 'utf8').digest();

/** An `onRequest` hook that rejects `/v1/*` requests without the key (401). */
export function apiKeyHook(key: string): (request: FastifyRequest) => Promise<void> {
  const expected = digest(key);
  return async (request) => {
    if (!request.url.startsWith('/v1/')) return;
    const match = /^Bearer\s+(.+)$/i.exec(request.headers.authorization ?? '');
    if (!match) throw apiErrors.unauthorized(false);
    if (!timingSafeEqual(digest(match[1]!.trim()), expected)) throw apiErrors.unauthorized(true);
  };
}
