/**
 * Graceful shutdown (SIGTERM / SIGINT): stop accepting, let in-flight requests finish within a
 * grace period, cancel what is still running after it, then release the workers.
 *
 * `app.close()` stops listening at once, answers requests that still arrive on open
 * connections with 503 (the engine is draining) and resolves when every connection has
 * closed; its onClose hook then terminates the engine workers. A connection whose response
 * ends during the drain stays open as an idle keep-alive connection, so idle connections are
 * closed as they appear rather than when the client's keep-alive timer expires.
 */
import type { FastifyInstance } from 'fastify';

/** How often idle keep-alive connections are closed while draining. */
const IDLE_SWEEP_MS = 50;

export async function shutdown(app: FastifyInstance, graceMs: number): Promise<void> {
  const { engine } = app.specd;
  engine.drain();
  const grace = setTimeout(() => engine.cancelAll(), graceMs);
  const sweep = setInterval(() => app.server.closeIdleConnections(), IDLE_SWEEP_MS);
  try {
    await app.close();
  } finally {
    clearTimeout(grace);
    clearInterval(sweep);
  }
}
