/**
 * GET /health: 503 `{status: "loading"}` until every engine worker has loaded its models, then
 * 200 `{status: "ok"}`; 503 again once the models failed to load or the server is shutting down,
 * and 503 `{status: "stalled"}` while a worker found making no progress is being replaced
 * (engine-pool.ts's watchdog). `worker_stalls` counts the stalls since the server started.
 */
import type { FastifyInstance } from 'fastify';

export async function healthRoutes(app: FastifyInstance): Promise<void> {
  app.get('/health', async (_request, reply) => {
    const { engine } = app.specd;
    const workers = { workers: engine.options.workers, workers_ready: engine.loadedWorkers, workers_stalled: engine.stalledWorkers, worker_stalls: engine.workerStalls };
    switch (engine.state) {
      case 'ready':
        if (!engine.accepting) return reply.code(503).send({ status: 'shutting_down', ...workers });
        if (engine.stalledWorkers > 0) return reply.code(503).header('Retry-After', '1').send({ status: 'stalled', ...workers });
        return { status: 'ok', ...workers };
      case 'loading':
        return reply.code(503).header('Retry-After', '1').send({ status: 'loading', ...workers });
      case 'failed':
        return reply.code(503).send({ status: 'error', message: engine.loadError, ...workers });
      case 'closed':
        return reply.code(503).send({ status: 'shutting_down', ...workers });
    }
  });
}
