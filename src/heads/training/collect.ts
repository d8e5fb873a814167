/**
 * Collecting the acceptance head's training data (SpecDec++, arXiv 2405.19715, section 4.2,
 * with candidates judged where they are drafted; see head-graph.ts).
 *
 * Each prompt is decoded at one temperature T of the collection's list (promptTemperature);
 * T = 0 is greedy decoding. The head learns P(accept) as a function of T
 * (candidate-features.ts), so the list covers the temperatures it will be used at. Per
 * training prompt:
 * 1. The target decodes a response r_1..r_n at T (through speculative decoding with a fixed K,
 *    whose output is distributed exactly as the target's own, only faster), ending with EOS
 *    when it ends.
 * 2. A teacher-forced draft pass over prompt + response gives q_i, the draft's distribution
 *    for position i; one draft token d_i ~ q_i is drawn per position (the argmax when greedy).
 * 3. Token mixing: z_i = r_i with probability `mixRatio`, else d_i. The paper keeps 15% of
 *    the target's tokens; the default here keeps all of them (see DEFAULT_MIX_RATIO).
 * 4. Draft and target passes over prompt + z give q'_i and p'_i, both models' distributions
 *    after z_1..z_{i-1}. At every position one candidate y_i ~ q'_i (the argmax when greedy) is
 *    drawn and becomes a row: features = the draft's last_hidden_state at the position before
 *    (the one that produced q'_i) and y_i's candidate features at T (candidate-features.ts);
 *    label a_i = the probability that the acceptance rule keeps y_i: min(1, p'_i(y_i) / q'_i(y_i))
 *    with both at temperature T, or, greedy, 1 when y_i is the target's argmax and 0 otherwise.
 *
 * Everything random comes from one seeded RNG per prompt, so a prompt's data is reproducible
 * and a resumed collection equals an uninterrupted one.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DecoderModel } from '../../engine/model.js';
import { candidateFeatures, CANDIDATE_FEATURES, TEMPERATURE_KNOTS } from '../../engine/candidate-features.js';
import { Rng } from '../../engine/rng.js';
import { argmax, sample, softmax } from '../../engine/sampling.js';
import { SpeculativeDecoder } from '../../engine/speculative.js';
import type { TextTokenizer } from '../../text/tokenizer.js';
import {
  type CollectSettings,
  DATA_FORMAT,
  type DataManifest,
  type DataRecord,
  HeadDataWriter,
  MANIFEST,
  readManifest,
} from './head-data.js';
import type { ModelIdentity } from '../runtime/head-file.js';
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
/** Default decoding temperatures of a collection: the knots the head's candidate weights live on. */
export const DEFAULT_COLLECT_TEMPERATURES: readonly number[] = TEMPERATURE_KNOTS;
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
  /** y_i ~ q'_i (the argmax when greedy), one per position: the rows' candidates. */
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

/**
 * The temperature of the collection's list that the prompt list's prompt `index` is decoded at:
 * the list in turn, shifted by one every m prompts (m = the list's length), i.e. prompt i takes
 * temperatures[(i + floor(i / m)) mod m]. The shift matters because the prompt list alternates
 * its two sources (training-prompts.ts): taken plainly in turn, an even-length list would give
 * each source only every other temperature (Alpaca all the greedy prompts, GSM8K none).
 */
export function promptTemperature(temperatures: readonly number[], index: number): number {
  const m = temperatures.length;
  return temperatures[(index + Math.floor(index / m)) % m]!;
}

/** Steps 1-4 for one prompt at temperature `settings.temperature` (0: greedy). */
export async function collectPrompt(
  models: CollectModels,
  promptIds: readonly number[],
  settings: { maxTokens: number; temperature: number; mixRatio: number; seed: number },
): Promise<PromptData> {
  const { target, hiddenDraft } = models;
  const T = settings.temperature;
  const greedy = T <= 0;
  const rng = new Rng(settings.seed);
  const pick = (row: Float32Array) => (greedy ? argmax(row) : sample(softmax(row, T), rng));

  // 1. The target's response (EOS kept as its last token).
  const generationSeed = Math.floor(rng.next() * 2 ** 32);
  const eos = new Set(target.info.eosTokenIds);
  const generation = new SpeculativeDecoder(target, models.draft).start(promptIds, {
    maxTokens: settings.maxTokens,
    sampling: { temperature: T, topK: 0, topP: 1 },
    seed: generationSeed,
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

  // 2. Teacher-forced q_i; one draft token per position.
  const vocab = target.info.vocabSize;
  const draftLogits = (await hiddenDraft.score([...promptIds, ...response])).logits;
  const draft: number[] = [];
  for (let i = 0; i < n; i++) {
    const row = (P - 1 + i) * vocab; // logits at the position before r_i predict r_i
    draft.push(pick(draftLogits.subarray(row, row + vocab)));
  }

  // 3. Token mixing.
  const mixed = response.map(() => rng.next() < settings.mixRatio);
  const z = response.map((r, i) => (mixed[i] ? r : draft[i]!));

  // 4. Both models over the mixed sequence; one candidate and its row per position.
  const sequence = [...promptIds, ...z];
  const targetLogits = (await target.score(sequence)).logits;
  const { logits: mixedLogits, hidden } = await hiddenDraft.score(sequence);
  if (!hidden) throw new Error('the draft has no last_hidden_state output');
  const width = hidden.length / (P + n);
  const stride = width + CANDIDATE_FEATURES;
  const features = new Float32Array(n * stride);
  const labels = new Float32Array(n);
  const candidates: number[] = [];
  for (let i = 0; i < n; i++) {
    const at = P - 1 + i;
    const draftRow = mixedLogits.subarray(at * vocab, (at + 1) * vocab);
    const targetRow = targetLogits.subarray(at * vocab, (at + 1) * vocab);
    const y = pick(draftRow);
    candidates.push(y);
    labels[i] = acceptanceLabel(targetRow, draftRow, y, T);
    features.set(hidden.subarray(at * width, (at + 1) * width), i * stride);
    candidateFeatures(draftRow, y, T, features.subarray(i * stride + width, (i + 1) * stride));
  }
  return { response, draft, mixed, candidates, finish, features, labels };
}

/**
 * The probability that verification keeps draft candidate y, given both models' logits at its
 * position: min(1, p_T(y) / q_T(y)) when sampling at T > 0; when greedy, 1 if y is the
 * target's argmax, else 0.
 */
export function acceptanceLabel(targetRow: Float32Array, draftRow: Float32Array, y: number, T: number): number {
  if (T <= 0) return argmax(targetRow) === y ? 1 : 0;
  const p = softmax(targetRow, T);
  const q = softmax(draftRow, T);
  return Math.min(1, p[y]! / q[y]!);
}

export interface CollectOptions {
  out: string;
  /** The prompt list (trainingPrompts); prompts [0, count) are collected. */
  prompts: readonly TrainingPrompt[];
  count: number;
  maxTokens: number;
  /** Decoding temperatures, taken by the prompts in turn (promptTemperature; 0: greedy). */
  temperatures: readonly number[];
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
    temperatures: [...opts.temperatures],
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
  if (opts.temperatures.length === 0 || !opts.temperatures.every((t) => Number.isFinite(t) && t >= 0)) {
    throw new RangeError(`collection temperatures must be numbers >= 0, got ${JSON.stringify(opts.temperatures)}`);
  }
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
    const temperature = promptTemperature(opts.temperatures, index);
    let record: Omit<DataRecord, 'row_start' | 'rows'>;
    if (promptIds.length + opts.maxTokens >= Math.min(context, models.hiddenDraft.info.maxPositions)) {
      record = { index, id: prompt.id, prompt_tokens: promptIds.length, temperature, response: [], draft: [], mixed: '', candidates: [], finish: 'skipped' };
      writer.append(record, new Float32Array(0), new Float32Array(0));
    } else {
      const data = await collectPrompt(models, promptIds, {
        maxTokens: opts.maxTokens,
        temperature,
        mixRatio: opts.mixRatio,
        seed: promptSeed(opts.seed, index),
      });
      record = {
        index,
        id: prompt.id,
        prompt_tokens: promptIds.length,
        temperature,
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
  const { hidden } = await draft.score([0]);
  if (!hidden) throw new Error('the draft has no last_hidden_state output');
  return hidden.length;
}
