/**
 * What the server is, for tools and operators (what llama-server's /props and TGI's /info give):
 *
 *   GET /version   {version}                                       (open, like /health)
 *   GET /info      model, context length, vocabulary, chat template, sampling defaults, the
 *                  models' directories, device and graph, the default speculation policy and
 *                  its settings, the acceptance head, workers, max_num_seqs (vLLM's: generations
 *                  that run at once, workers x --max-batch), max_queue, and the engine's state
 */
import type { FastifyInstance } from 'fastify';
import { defaultGraph } from '../../engine/graph-choice.js';
import { policyLabel } from '../../engine/stop-policy.js';
import { BUNDLED_DRAFT, BUNDLED_HEAD, BUNDLED_TARGET, SPECD_VERSION } from '../../paths.js';
import { speculativeField } from '../speculation.js';

export async function infoRoutes(app: FastifyInstance): Promise<void> {
  app.get('/version', async () => ({ version: SPECD_VERSION }));

  app.get('/info', async () => {
    const { facts, engine, defaultPolicy, hasHead } = app.specd;
    const pair = engine.options.pair;
    const bundled = pair.target === undefined;
    const d = facts.generationDefaults;
    return {
      model: facts.name,
      version: SPECD_VERSION,
      max_model_len: Number.isFinite(facts.contextLength) ? facts.contextLength : null,
      vocab_size: facts.vocabSize,
      eos_token_ids: facts.eosTokenIds,
      chat_template: facts.tokenizer.chatTemplate ?? null,
      /** generation_config.json's sampling defaults (a request's fields override them). */
      generation_defaults: { temperature: d.temperature ?? null, top_p: d.topP ?? null, top_k: d.topK ?? null },
      target: pair.target ?? BUNDLED_TARGET,
      draft: pair.draft === undefined ? (bundled ? BUNDLED_DRAFT : null) : pair.draft,
      device: pair.device ?? 'cpu',
      draft_device: pair.draftDevice ?? pair.device ?? 'cpu',
      graph: pair.graph ?? defaultGraph(pair.device ?? 'cpu'),
      speculative: { ...speculativeField(defaultPolicy), label: policyLabel(defaultPolicy) },
      head: { loaded: hasHead ?? null, path: pair.head === undefined ? (bundled ? BUNDLED_HEAD : null) : pair.head },
      workers: engine.options.workers,
      workers_ready: engine.loadedWorkers,
      threads_per_worker: pair.threads ?? null,
      max_num_seqs: engine.options.workers * engine.options.batching.maxBatch,
      max_queue: engine.options.maxQueue,
      state: engine.state,
    };
  });
}
