/**
 * GET /health: 503 `{status: "loading"}` until every engine worker has loaded its models, then
 * 200 `{status: "ok"}`; 503 again once the models failed to load or the server is shutting down.
 */
import type { FastifyInstance } from 'fastify';

export async function healthRoutes(app: FastifyInstance): Promise<void> {
  app.get('/health', async (_request, reply) => {
    const { engine } = app.specd;
    const workers = { workers: engine.options.workers, workers_ready: engine.loadedWorkers };
    switch (engine.state) {
      case 'ready':
        return engine.accepting ? { status: 'ok', ...workers } : reply.code(503).send({ status: 'shutting_down', ...workers });
      case 'loading':
        return reply.code(503).header('Retry-After', '1').send({ status: 'loading', ...workers });
      case 'failed':
        return reply.code(503).send({ status: 'error', message: engine.loadError, ...workers });
      case 'closed':
        return reply.code(503).send({ status: 'shutting_down', ...workers });
    }
  });
}
