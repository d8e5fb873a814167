/**
 * A server on the tiny Qwen3-shaped pair (real-vocab-pair.ts: V = 151,936, Qwen3's tokenizer and
 * chat template) on a free local port, with the real `openai` client pointed at it: what the
 * system suites at the real vocabulary share. `close()` stops the server and removes the pair.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import OpenAI from 'openai';
import { buildApp, type ServerOptions } from '../../src/server/app.js';
import { TextTokenizer } from '../../src/text/tokenizer.js';
import { writeTinyQwen3Pair } from './real-vocab-pair.js';

/** The model name the server answers to. */
export const TINY_QWEN3_MODEL = 'qwen3-tiny';

export interface RealVocabServer {
  app: FastifyInstance;
  client: OpenAI;
  tokenizer: TextTokenizer;
  close(): Promise<void>;
}

/**
 * Writes the pair into a new temporary directory named from `prefix` and serves it with one worker,
 * no head, one thread and the `qwen3` reasoning parser; `options` overrides or adds server options
 * (policy default `fixed:3`).
 */
export async function serveTinyQwen3(prefix: string, options: ServerOptions = {}): Promise<RealVocabServer> {
  const root = mkdtempSync(join(tmpdir(), prefix));
  let app: FastifyInstance | undefined;
  const close = async (): Promise<void> => {
    await app?.close();
    rmSync(root, { recursive: true, force: true });
  };
  try {
    const pair = writeTinyQwen3Pair(join(root, 'pair'));
    const tokenizer = await TextTokenizer.fromDir(pair.targetDir);
    app = await buildApp({
      workers: 1,
      modelName: TINY_QWEN3_MODEL,
      pair: { target: pair.targetDir, draft: pair.draftDir, head: null, threads: 1 },
      policy: { policy: 'fixed', k: 3 },
      reasoningParser: 'qwen3',
      ...options,
    });
    await app.specd.engine.ready;
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
    return { app, client, tokenizer, close };
  } catch (err) {
    await close();
    throw err;
  }
}
