/**
 * Collecting the acceptance head's training data (SpecDec++, arXiv 2405.19715, section 4.2,
 * with candidates judged where they are drafted; see head-graph.ts).
 *
 * Per training prompt:
 * 1. The target samples a response r_1..r_n at temperature T (through speculative sampling
 *    with a fixed K, whose output is distributed exactly as the target's own, only faster),
 *    ending with EOS when it ends.
 * 2. A teacher-forced draft pass over prompt + response gives q_i, the draft's distribution
 *    for position i; one draft token d_i ~ q_i is sampled per position.
 * 3. Token mixing: z_i = r_i with probability `mixRatio`, else d_i. The paper keeps 15% of
 *    the target's tokens; the default here keeps all of them (see DEFAULT_MIX_RATIO).
 * 4. Draft and target passes over prompt + z give q'_i and p'_i, both models' distributions
 *    after z_1..z_{i-1}. At every position one candidate y_i ~ q'_i is drawn and becomes a row:
 *    features = the draft's last_hidden_state at the position before (the one that produced
 *    q'_i) and y_i's candidate features (candidate-features.ts); label
 *    a_i = min(1, p'_i(y_i) / q'_i(y_i)), the probability that the acceptance rule keeps y_i.
 *
 * Everything random comes from one seeded RNG per prompt, so a prompt's data is reproducible
 * and a resumed collection equals an uninterrupted one.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DecoderModel } from '../engine/model.js';
import { candidateFeatures, CANDIDATE_FEATURES } from '../engine/candidate-features.js';
import { Rng } from '../engine/rng.js';
import { sample, softmax } from '../engine/sampling.js';
import { SpeculativeDecoder } from '../engine/speculative.js';
import type { TextTokenizer } from '../text/tokenizer.js';
import {
  type CollectSettings,
  DATA_FORMAT,
  type DataManifest,
  type DataRecord,
  HeadDataWriter,
  MANIFEST,
  readManifest,
} from './head-data.js';
import type { ModelIdentity } from './head-file.js';
import { measureStepCosts } from './step-costs.js';
import type { TrainingPrompt } from './training-prompts.js';

/**
 * Default share of positions that keep the target's token: all of them. The paper mixes in 85%
 * draft tokens (r = 0.15) because its head reads the hidden state at the draft token itself;
 * this head judges a candidate from the context before it, which in decoding is verified text
 * plus earlier candidates that were judged likely to be accepted. Measured on the bundled pair
 * (greedy GSM8K, best threshold against the best fixed K): heads trained on r = 0.15 data stop
 * far too early (-14%, with w = 6); with w = 1, r = 0.85 gives +2.7% and r = 1 +7.3%.
 */
export const DEFAULT_MIX_RATIO = 1;
/** Candidates per round when sampling the target's responses speculatively. */
const RESPONSE_K = 4;
/** Training prompts the step costs are measured on. */
const COST_PROMPTS = 4;

export interface CollectModels {
  target: DecoderModel;
  /** The draft as it is (proposes candidates while sampling responses). */
  draft: DecoderModel;
  /** The same draft with a `last_hidden_state` output (see prepare-draft.ts). */
  hiddenDraft: DecoderModel;
  tokenizer: TextTokenizer;
  targetIdentity: ModelIdentity;
  draftIdentity: ModelIdentity;
}

/** One prompt's data. */
export interface PromptData {
  response: number[];
  draft: number[];
  /** mixed[i]: position i of the mixed sequence holds r_i. */
  mixed: boolean[];
  /** y_i ~ q'_i, one per position: the rows' candidates. */
  candidates: number[];
  finish: 'stop' | 'length';
  /** Hidden states and candidate features of the rows // [rows, width + CANDIDATE_FEATURES] */
  features: Float32Array;
  /** Soft labels of the rows // [rows] */
  labels: Float32Array;
}

/** The per-prompt seed: prompt i of a collection with seed s. */
export function promptSeed(seed: number, index: number): number {
  return (seed * 1_000_003 + index) % Number.MAX_SAFE_INTEGER;
}

/** Steps 1-3 for one prompt. */
export async function collectPrompt(
  models: CollectModels,
  promptIds: readonly number[],
  settings: { maxTokens: number; temperature: number; mixRatio: number; seed: number },
): Promise<PromptData> {
  const { target, hiddenDraft } = models;
  const T = settings.temperature;
  const rng = new Rng(settings.seed);

  // 1. The target's response (EOS kept as its last token).
  const eos = new Set(target.info.eosTokenIds);
  const generation = new SpeculativeDecoder(target, models.draft).start(promptIds, {
    maxTokens: settings.maxTokens,
    sampling: { temperature: T, topK: 0, topP: 1 },
    seed: Math.floor(rng.next() * 2 ** 32),
    policy: { policy: 'fixed', k: RESPONSE_K },
    eosTokenIds: [],
  });
  let finish: PromptData['finish'] = 'length';
  while (!generation.done) {
    await generation.step();
    const end = generation.tokenIds.findIndex((t) => eos.has(t));
    if (end >= 0) {
      generation.tokenIds.length = end + 1;
      finish = 'stop';
      generation.finish('stop');
    }
  }
  const response = generation.tokenIds.slice(0, settings.maxTokens);
  const n = response.length;
  const P = promptIds.length;

  // 2. Teacher-forced q_i; one draft sample per position.
  const vocab = target.info.vocabSize;
  const draftLogits = await hiddenDraft.forward(hiddenDraft.newCache(), [...promptIds, ...response]);
  const draft: number[] = [];
  for (let i = 0; i < n; i++) {
    const row = (P - 1 + i) * vocab; // logits at the position before r_i predict r_i
    draft.push(sample(softmax(draftLogits.subarray(row, row + vocab), T), rng));
  }

  // 3. Token mixing.
  const mixed = response.map(() => rng.next() < settings.mixRatio);
  const z = response.map((r, i) => (mixed[i] ? r : draft[i]!));

  // 4. Both models over the mixed sequence; one candidate and its row per position.
  const sequence = [...promptIds, ...z];
  const targetLogits = await target.forward(target.newCache(), sequence);
  const { logits: mixedLogits, hidden } = await hiddenDraft.forwardWithHidden(hiddenDraft.newCache(), sequence);
  if (!hidden) throw new Error('the draft has no last_hidden_state output');
  const width = hidden.length / (P + n);
  const stride = width + CANDIDATE_FEATURES;
  const features = new Float32Array(n * stride);
  const labels = new Float32Array(n);
  const candidates: number[] = [];
  for (let i = 0; i < n; i++) {
    const at = P - 1 + i;
    const draftRow = mixedLogits.subarray(at * vocab, (at + 1) * vocab);
    const p = softmax(targetLogits.subarray(at * vocab, (at + 1) * vocab), T);
    const q = softmax(draftRow, T);
    const y = sample(q, rng);
    candidates.push(y);
    labels[i] = Math.min(1, p[y]! / q[y]!);
    features.set(hidden.subarray(at * width, (at + 1) * width), i * stride);
    candidateFeatures(draftRow, y, features.subarray(i * stride + width, (i + 1) * stride));
  }
  return { response, draft, mixed, candidates, finish, features, labels };
}

export interface CollectOptions {
  out: string;
  /** The prompt list (trainingPrompts); prompts [0, count) are collected. */
  prompts: readonly TrainingPrompt[];
  count: number;
  maxTokens: number;
  temperature: number;
  mixRatio: number;
  seed: number;
  sources: string[];
  /** Measure and record step costs (skipped when the manifest has them, unless `remeasureCosts`). */
  measureCosts?: boolean;
  /** Measure the step costs again even when the manifest has them (e.g. on a quieter machine). */
  remeasureCosts?: boolean;
  onProgress?: (progress: CollectProgress) => void;
  signal?: AbortSignal;
}

export interface CollectProgress {
  /** Prompts done, including those of earlier runs. */
  done: number;
  total: number;
  /** Prompts done by this run (for the rate and ETA). */
  doneThisRun: number;
  rows: number;
  responseTokens: number;
}

export interface CollectResult {
  records: number;
  rows: number;
  /** Prompts this run added. */
  added: number;
  seconds: number;
}

/** Collects prompts [0, count) into `out`, resuming after the prompts already there. */
export async function collectHeadData(models: CollectModels, opts: CollectOptions): Promise<CollectResult> {
  const started = performance.now();
  const width = await probeWidth(models.hiddenDraft);
  const settings: CollectSettings = {
    prompts: opts.count,
    max_tokens: opts.maxTokens,
    temperature: opts.temperature,
    mix_ratio: opts.mixRatio,
    seed: opts.seed,
    sources: opts.sources,
  };
  const manifest: DataManifest = {
    format: DATA_FORMAT,
    width,
    candidate_features: CANDIDATE_FEATURES,
    draft: models.draftIdentity,
    target: models.targetIdentity,
    settings,
    created: new Date().toISOString(),
  };
  const { writer, records } = HeadDataWriter.open(opts.out, manifest);
  const count = Math.min(opts.count, opts.prompts.length);
  let responseTokens = records.reduce((a, r) => a + r.response.length, 0);
  const first = records.length ? records.at(-1)!.index + 1 : 0;
  const context = models.target.info.maxPositions;
  if (opts.measureCosts !== false && (opts.remeasureCosts || readManifest(opts.out).costs === undefined)) {
    const room = Math.min(models.target.info.maxPositions, models.draft.info.maxPositions) - 80;
    const costPrompts = opts.prompts
      .map((p) => models.tokenizer.encodeChat(p.messages))
      .filter((ids) => ids.length < room)
      .slice(0, COST_PROMPTS);
    const costs = await measureStepCosts(models.target, models.draft, costPrompts);
    writeFileSync(join(opts.out, MANIFEST), `${JSON.stringify({ ...readManifest(opts.out), costs }, null, 2)}\n`);
  }
  let added = 0;
  opts.onProgress?.({ done: first, total: count, doneThisRun: 0, rows: writer.rows, responseTokens });
  for (let index = first; index < count; index++) {
    if (opts.signal?.aborted) break;
    const prompt = opts.prompts[index]!;
    const promptIds = models.tokenizer.encodeChat(prompt.messages);
    let record: Omit<DataRecord, 'row_start' | 'rows'>;
    if (promptIds.length + opts.maxTokens >= Math.min(context, models.hiddenDraft.info.maxPositions)) {
      record = { index, id: prompt.id, prompt_tokens: promptIds.length, response: [], draft: [], mixed: '', candidates: [], finish: 'skipped' };
      writer.append(record, new Float32Array(0), new Float32Array(0));
    } else {
      const data = await collectPrompt(models, promptIds, {
        maxTokens: opts.maxTokens,
        temperature: opts.temperature,
        mixRatio: opts.mixRatio,
        seed: promptSeed(opts.seed, index),
      });
      record = {
        index,
        id: prompt.id,
        prompt_tokens: promptIds.length,
        response: data.response,
        draft: data.draft,
        mixed: data.mixed.map((m) => (m ? '1' : '0')).join(''),
        candidates: data.candidates,
        finish: data.finish,
      };
      writer.append(record, data.features, data.labels);
      responseTokens += data.response.length;
    }
    added++;
    opts.onProgress?.({ done: index + 1, total: count, doneThisRun: added, rows: writer.rows, responseTokens });
  }
  return { records: first + added, rows: writer.rows, added, seconds: (performance.now() - started) / 1000 };
}

/** Width of the draft's hidden state, from a one-token pass. */
async function probeWidth(draft: DecoderModel): Promise<number> {
  const { hidden } = await draft.forwardWithHidden(draft.newCache(), [0]);
  if (!hidden) throw new Error('the draft has no last_hidden_state output');
  return hidden.length;
}
