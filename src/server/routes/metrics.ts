/** GET /metrics: Prometheus text exposition (metrics.ts). */
import type { FastifyInstance } from 'fastify';

export async function metricsRoutes(app: FastifyInstance): Promise<void> {
  app.get('/metrics', async (_request, reply) => {
    const { metrics } = app.specd;
    return reply.header('Content-Type', metrics.contentType).send(await metrics.text());
  });
}
