/** GET /v1/models and GET /v1/models/:model. */
import type { FastifyInstance } from 'fastify';
import { apiErrors } from '../errors.js';
import type { ModelFacts } from '../model-facts.js';

function modelObject(facts: ModelFacts) {
  return {
    id: facts.name,
    object: 'model' as const,
    created: facts.created,
    owned_by: 'specd',
    /** vLLM's field: the longest prompt + completion. */
    max_model_len: Number.isFinite(facts.contextLength) ? facts.contextLength : null,
  };
}

export async function modelRoutes(app: FastifyInstance): Promise<void> {
  app.get('/v1/models', async () => ({ object: 'list' as const, data: [modelObject(app.specd.facts)] }));
  app.get<{ Params: { model: string } }>('/v1/models/:model', async (request) => {
    const { facts } = app.specd;
    if (request.params.model !== facts.name) throw apiErrors.modelNotFound(request.params.model);
    return modelObject(facts);
  });
}
