/**
 * Graceful shutdown (SIGTERM / SIGINT): stop accepting, let in-flight requests finish within a
 * grace period, cancel what is still running after it, then release the workers.
 *
 * `app.close()` stops listening at once, answers requests that still arrive on open
 * connections with 503 (the engine is draining) and resolves when every connection has
 * closed; its onClose hook then terminates the engine workers. A connection whose response
 * ends during the drain stays open as an idle keep-alive connection, so idle connections are
 * closed as they appear rather than when the client's keep-alive timer expires. Node counts a
 * connection on which no request has arrived yet (a client's spare connection) as neither idle
 * nor done, so once no response is in flight every remaining connection is closed; and
 * FORCE_CLOSE_MS after the grace period, whatever is left (a client that stopped reading) is.
 * Generations still open ABANDON_MS after the grace period (a stuck worker does not see its
 * cancel) are ended with 503 `shutting_down`, so their clients get an answer before that.
 */
import type { Server } from 'node:http';
import type { FastifyInstance } from 'fastify';

/** How often idle keep-alive connections are closed while draining. */
const IDLE_SWEEP_MS = 50;
/** After the grace period, how long cancelled responses get to end before their connections are closed. */
export const FORCE_CLOSE_MS = 5000;
/** After the grace period, how long cancelled generations get to end before they are answered without their worker. */
export const ABANDON_MS = 1000;

/** Counts the server's responses in flight (from request to the response's end or its socket's close). */
export class ResponseTracker {
  private count = 0;

  constructor(server: Server) {
    server.on('request', (_req, res) => {
      this.count++;
      res.once('close', () => this.count--);
    });
  }

  get inFlight(): number {
    return this.count;
  }
}

export async function shutdown(app: FastifyInstance, graceMs: number): Promise<void> {
  const { engine, responses } = app.specd;
  engine.drain();
  const grace = setTimeout(() => engine.cancelAll(), graceMs);
  const abandon = setTimeout(() => engine.abandonAll(), graceMs + ABANDON_MS);
  const force = setTimeout(() => app.server.closeAllConnections(), graceMs + FORCE_CLOSE_MS);
  const sweep = setInterval(() => {
    if (responses.inFlight === 0 && engine.running + engine.waiting === 0) app.server.closeAllConnections();
    else app.server.closeIdleConnections();
  }, IDLE_SWEEP_MS);
  try {
    await app.close();
  } finally {
    clearTimeout(grace);
    clearTimeout(abandon);
    clearTimeout(force);
    clearInterval(sweep);
  }
}
