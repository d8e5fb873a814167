/** `specd head collect | train | eval`: the SpecDec++ acceptance head's pipeline. */
import { writeFileSync } from 'node:fs';
import { SingleBar } from 'cli-progress';
import { Command, InvalidArgumentError } from 'commander';
import { type Device } from '../engine/device.js';
import { temperatureLabel } from '../engine/sampling.js';
import { DecoderModel } from '../engine/model.js';
import { readModelDir } from '../engine/model-dir.js';
import { ModelPair } from '../pair/model-pair.js';
import { DEFAULT_SPECDEC_K_MAX, DEFAULT_SPECDEC_K_MIN, MAX_DRAFT_LIMIT } from '../engine/stop-policy.js';
import { buildHead, DEFAULT_VAL_FRACTION } from '../heads/training/build-head.js';
import { collectHeadData, DEFAULT_COLLECT_TEMPERATURES, DEFAULT_MIX_RATIO } from '../heads/training/collect.js';
import { evaluatePredictions, formatEvaluation } from '../heads/training/eval.js';
import { HeadData } from '../heads/training/head-data.js';
import { DEFAULT_MISMATCH_WEIGHT } from '../heads/runtime/head-graph.js';
import { headOnnxPath } from '../heads/runtime/head-file.js';
import { AcceptanceHead } from '../heads/runtime/head-runner.js';
import { draftIdentity, preparedDraftBytes } from '../heads/runtime/prepare-draft.js';
import { DEFAULT_TRAIN_OPTIONS } from '../heads/training/train.js';
import { TRAINING_SOURCES, trainingPrompts } from '../heads/training/training-prompts.js';
import { deviceArg, intIn, numberIn } from './options.js';

interface CollectFlags {
  out: string;
  prompts: number;
  maxTokens: number;
  temperatures: number[];
  mixRatio: number;
  seed: number;
  target?: string;
  draft?: string;
  device: Device;
  threads?: number;
  draftThreads: number;
  remeasureCosts?: boolean;
}

interface TrainFlags {
  data: string;
  out: string;
  epochs: number;
  batchSize: number;
  lr: number;
  weightDecay: number;
  mismatchWeight: number;
  valFraction: number;
  seed: number;
  kMin: number;
  kMax: number;
  threads?: number;
}

interface EvalFlags {
  head: string;
  data: string;
  split: 'train' | 'val' | 'all';
  valFraction?: number;
  seed?: number;
  kMin: number;
  kMax: number;
  json?: string;
}

/** `0,0.7,1` -> [0, 0.7, 1]. */
function temperatureList(value: string): number[] {
  const list = value.split(',').map((s) => s.trim());
  const out = list.map(Number);
  if (list.some((s) => s === '') || !out.every((t) => Number.isFinite(t) && t >= 0 && t <= 10)) {
    throw new InvalidArgumentError(`expected a comma-separated list of temperatures in [0, 10], got ${JSON.stringify(value)}`);
  }
  return out;
}

function collectCommand(): Command {
  return new Command('collect')
    .description('collect training data: target-sampled responses to training prompts, soft labels min(1, p/q), draft hidden states (resumable)')
    .requiredOption('--out <dir>', 'data directory (created, or resumed when it holds an earlier run)')
    .option('--prompts <n>', 'prompts to collect (alpaca_5000 and gsm8k train, interleaved)', intIn(1, 100_000), 2000)
    .option('--max-tokens <n>', 'longest response', intIn(1, 4096), 192)
    .option('--temperatures <list>', 'decoding temperatures, taken by the prompts in turn, each source getting every one (0: greedy)', temperatureList, [...DEFAULT_COLLECT_TEMPERATURES])
    .option('--mix-ratio <r>', "token mixing: share of positions that keep the target's token", numberIn(0, 1), DEFAULT_MIX_RATIO)
    .option('--seed <n>', 'seed of the prompt order and of all sampling', intIn(0, 2 ** 31), 0)
    .option('--target <dir>', 'target model directory (default: the bundled specd-pair target)')
    .option('--draft <dir>', 'draft model directory (default: the bundled specd-pair draft)')
    .option('--device <device>', 'execution provider: cpu, cuda or webgpu', deviceArg, 'cpu' as Device)
    .option('--threads <n>', 'intra-op threads of the target (default: all cores)', intIn(1, 1024))
    .option('--draft-threads <n>', 'intra-op threads of the draft', intIn(1, 1024), 1)
    .option('--remeasure-costs', "measure the pair's step costs again (they choose the threshold; best on a quiet machine)")
    .action(async (flags: CollectFlags) => {
      if (flags.target && !flags.draft) throw new InvalidArgumentError('--target needs --draft');
      const pair = await ModelPair.load({ target: flags.target, draft: flags.draft, head: null, device: flags.device, threads: flags.threads, draftThreads: flags.draftThreads });
      const draft = pair.draft!;
      const hiddenDraft = draft.hasHiddenState
        ? draft
        : await DecoderModel.load(draft.info.dir, {
            device: flags.device,
            threads: flags.draftThreads,
            model: preparedDraftBytes(draft.info.onnxPath, readModelDir(draft.info.dir).config.hidden),
          });
      const prompts = trainingPrompts(flags.seed);
      const bar = new SingleBar({
        format: 'collect {bar} {value}/{total} prompts | {rows} rows | {rate} prompts/min | ETA {eta_formatted}',
        stream: process.stderr,
        hideCursor: true,
        etaBuffer: 50,
      });
      const abort = new AbortController();
      const onSigint = () => {
        process.stderr.write('\nstopping after this prompt (run the same command again to resume)\n');
        abort.abort();
      };
      process.once('SIGINT', onSigint);
      const started = performance.now();
      let barStarted = false;
      const result = await collectHeadData(
        { target: pair.target, draft, hiddenDraft, tokenizer: pair.tokenizer, targetIdentity: draftIdentity(pair.target.info.dir), draftIdentity: draftIdentity(draft.info.dir) },
        {
          out: flags.out,
          prompts,
          count: flags.prompts,
          maxTokens: flags.maxTokens,
          temperatures: flags.temperatures,
          mixRatio: flags.mixRatio,
          seed: flags.seed,
          sources: [...TRAINING_SOURCES],
          remeasureCosts: flags.remeasureCosts,
          signal: abort.signal,
          onProgress: (p) => {
            const rate = p.doneThisRun / ((performance.now() - started) / 60_000);
            const payload = { rows: p.rows, rate: Number.isFinite(rate) ? rate.toFixed(1) : '-' };
            if (!barStarted) {
              bar.start(p.total, p.done, payload);
              barStarted = true;
            } else bar.update(p.done, payload);
          },
        },
      );
      bar.stop();
      process.off('SIGINT', onSigint);
      process.stderr.write(`${result.records} prompts (${result.added} this run, ${result.seconds.toFixed(0)} s), ${result.rows} rows in ${flags.out}\n`);
      if (hiddenDraft !== draft) await hiddenDraft.release();
      await pair.release();
    });
}

function trainCommand(): Command {
  const d = DEFAULT_TRAIN_OPTIONS;
  return new Command('train')
    .description('train an acceptance head on collected data; writes NAME.head.onnx and NAME.head.json')
    .requiredOption('--data <dir>', 'data directory from specd head collect')
    .requiredOption('--out <name>', 'output name: NAME.head.onnx and NAME.head.json are written (e.g. models/specd-pair)')
    .option('--epochs <n>', 'passes over the training rows', intIn(1, 1000), d.epochs)
    .option('--batch-size <n>', 'rows per step', intIn(1, 1_000_000), d.batchSize)
    .option('--lr <x>', 'peak learning rate (AdamW; warm-up, then cosine decay)', numberIn(0, 1), d.lr)
    .option('--weight-decay <x>', 'AdamW decoupled weight decay', numberIn(0, 1), d.weightDecay)
    .option('--mismatch-weight <w>', 'loss weight of the reject class', numberIn(0, 1000), DEFAULT_MISMATCH_WEIGHT)
    .option('--val-fraction <x>', 'share of prompts held out for validation', numberIn(0, 0.9), DEFAULT_VAL_FRACTION)
    .option('--seed <n>', 'seed of initialisation, shuffling and the split', intIn(0, 2 ** 31), d.seed)
    .option('--k-min <n>', 'specdec++ K_min assumed when choosing the threshold', intIn(1, MAX_DRAFT_LIMIT), DEFAULT_SPECDEC_K_MIN)
    .option('--k-max <n>', 'specdec++ K_max assumed when choosing the threshold', intIn(1, MAX_DRAFT_LIMIT), DEFAULT_SPECDEC_K_MAX)
    .option('--threads <n>', 'intra-op threads (default: all cores)', intIn(1, 1024))
    .action(async (flags: TrainFlags) => {
      const bar = new SingleBar({ format: 'train {bar} {value}/{total} steps | epoch {epoch} | loss {loss} | ETA {eta_formatted}', stream: process.stderr, hideCursor: true });
      let started = false;
      const result = await buildHead(flags.data, flags.out, {
        epochs: flags.epochs,
        batchSize: flags.batchSize,
        lr: flags.lr,
        weightDecay: flags.weightDecay,
        mismatchWeight: flags.mismatchWeight,
        valFraction: flags.valFraction,
        seed: flags.seed,
        kMin: flags.kMin,
        kMax: flags.kMax,
        threads: flags.threads,
        onStep: ({ epoch, step, steps, loss }) => {
          if (!started) {
            bar.start(steps, 0, { epoch, loss: loss.toFixed(4) });
            started = true;
          }
          bar.update(step, { epoch, loss: loss.toFixed(4) });
        },
        onEpoch: (e) => {
          bar.stop();
          started = false;
          process.stderr.write(`epoch ${e.epoch}: train loss ${e.train_loss.toFixed(4)}, val loss ${e.val_loss.toFixed(4)} (${e.seconds.toFixed(1)} s)\n`);
        },
      });
      const t = result.training;
      process.stderr.write(
        `initial val loss ${t.initialValLoss.toFixed(4)}; kept epoch ${t.bestEpoch}; ${t.steps} steps in ${t.seconds.toFixed(1)} s (${Math.round(t.rowsPerSecond)} rows/s)\n`,
      );
      process.stdout.write(formatEvaluation(result.evaluation));
      process.stderr.write(`wrote ${result.onnxPath} and ${result.jsonPath}\n`);
    });
}

function evalCommand(): Command {
  return new Command('eval')
    .description("measure a head on held-out data: Brier score, AUC, reliability table, acceptance rate and simulated speed against the threshold")
    .requiredOption('--head <file>', 'NAME.head.onnx')
    .requiredOption('--data <dir>', 'data directory from specd head collect')
    .option('--split <name>', 'rows to use: val (held out in training), train or all', 'val')
    .option('--val-fraction <x>', "validation share (default: the head's training setting)", numberIn(0, 0.9))
    .option('--seed <n>', "split seed (default: the head's training seed)", intIn(0, 2 ** 31))
    .option('--k-min <n>', 'specdec++ K_min of the threshold sweep', intIn(1, MAX_DRAFT_LIMIT), DEFAULT_SPECDEC_K_MIN)
    .option('--k-max <n>', 'specdec++ K_max of the threshold sweep', intIn(1, MAX_DRAFT_LIMIT), DEFAULT_SPECDEC_K_MAX)
    .option('--json <file>', 'also write the evaluation as JSON')
    .action(async (flags: EvalFlags) => {
      if (!['train', 'val', 'all'].includes(flags.split)) throw new InvalidArgumentError('--split must be val, train or all');
      const head = AcceptanceHead.load(headOnnxPath(flags.head));
      const data = HeadData.open(flags.data);
      if (data.manifest.draft.onnx_sha256 !== head.meta.draft.onnx_sha256) {
        throw new Error(`${flags.data} was collected with draft ${data.manifest.draft.name}, the head is for ${head.meta.draft.name} (different onnx sha256)`);
      }
      const training = (head.meta.training ?? {}) as { val_fraction?: number; seed?: number };
      const valFraction = flags.valFraction ?? training.val_fraction ?? DEFAULT_VAL_FRACTION;
      const rows = data.splitRows(flags.split, valFraction, flags.seed ?? training.seed ?? 0);
      if (rows.length === 0) throw new Error(`no rows in split ${flags.split}`);
      const probs = await head.predictBatch(data.gatherFeatures(rows), rows.length);
      const evaluation = evaluatePredictions(data, rows, probs, { split: flags.split, kMin: flags.kMin, kMax: flags.kMax });
      process.stdout.write(formatEvaluation(evaluation));
      const perTemperature = head.thresholdsByTemperature.map((t) => `${temperatureLabel(t.temperature)}: ${t.threshold}`).join(', ');
      process.stdout.write(`head's recommended threshold: ${head.recommendedThreshold}${perTemperature ? ` (${perTemperature})` : ''}\n`);
      if (flags.json) {
        writeFileSync(flags.json, `${JSON.stringify({ head: flags.head, data: flags.data, ...evaluation }, null, 2)}\n`);
        process.stderr.write(`wrote ${flags.json}\n`);
      }
      await head.release();
    });
}

export function headCommand(): Command {
  return new Command('head')
    .description('the SpecDec++ acceptance head: collect data, train, evaluate')
    .addCommand(collectCommand())
    .addCommand(trainCommand())
    .addCommand(evalCommand());
}
