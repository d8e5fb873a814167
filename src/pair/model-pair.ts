/**
 * The models a generation needs, loaded once: the target, the optional draft and the
 * tokenizer they share. Draft and target must agree on the vocabulary and on what every
 * token id means, or the acceptance rule compares unrelated distributions.
 */
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { ModelLoadError } from '../errors.js';
import { GrammarCompiler } from '../grammar/compiler.js';
import { type HeadMode, loadHeadForDraft } from '../heads/runtime/head-loader.js';
import type { AcceptanceHead } from '../heads/runtime/head-runner.js';
import { defaultDraftThreads } from './draft-threads.js';
import { BUNDLED_DRAFT, BUNDLED_HEAD, BUNDLED_TARGET } from '../paths.js';
import { TextTokenizer } from '../text/tokenizer.js';
import type { Device } from '../engine/device.js';
import type { GraphChoice } from '../engine/graph-choice.js';
import { DraftPhase } from '../engine/draft-phase.js';
import { DecoderModel } from '../engine/model.js';
import { readModelDir } from '../engine/model-dir.js';
import { resolveSpinning, type SpinningMode, spinningBesideDraft } from '../engine/session-threads.js';
import { SpeculativeDecoder } from '../engine/speculative.js';
import { type DraftVocabPlan, planDraftVocab } from '../engine/vocab-map.js';

export interface PairOptions {
  /** Target model directory; default: the bundled specd-pair target. */
  target?: string;
  /** Draft model directory; default: the bundled draft when the target is the bundled one. `null`: no draft. */
  draft?: string | null;
  device?: Device;
  deviceId?: number;
  /**
   * Where the draft runs; default: `device`. A small draft on the CPU beside a target on a GPU
   * avoids the GPU's fixed cost per pass for the many cheap draft passes.
   */
  draftDevice?: Device;
  /** Exported graphs or their rebuilds (graph-choice.ts); default: each device's (inplace on the CPU, fused on WebGPU, exported on CUDA). */
  graph?: GraphChoice;
  /** Intra-op threads of the target session; default: all cores. */
  threads?: number;
  /** Whether the sessions' intra-op threads spin-wait between runs (session-threads.ts); default `auto`: only while no other process is busy as they are created. */
  spinning?: boolean | SpinningMode;
  /** Intra-op threads of the draft session; default: 1 for a small draft (it loses more to thread hand-offs than it gains), the target's for a large one (draft-threads.ts). */
  draftThreads?: number;
  /**
   * Weights of the target (and of the draft unless `draftDtype` is given): an ONNX variant as
   * transformers.js names them (fp32, fp16, q8, q4, ...); q8 and q4 quantize model.onnx's linear
   * layers when the model has no such file (engine/quantized-weights.ts).
   */
  dtype?: string;
  /** Weights of the draft; default: `dtype`. */
  draftDtype?: string;
  /**
   * Acceptance head (`*.head.onnx`, for the specdec++ policy); default: the bundled head when
   * the bundled pair is used and the file exists. `null`: none.
   */
  head?: string | null;
  /** `fused` (default): the head runs inside the draft's graph; `session`: as its own session. */
  headMode?: HeadMode;
  /**
   * FR-Spec token map of the draft's lm_head (onnx/token-map.ts, SGLang's `--speculative-token-map`);
   * default: `token_map.json` in the draft's directory when there is one; null: none.
   */
  speculativeTokenMap?: string | null;
  /** Automatic prefix caching in every model's in-place KV pool (model.ts `LoadOptions.prefixCaching`); default false. */
  prefixCaching?: boolean;
}

export class ModelPair {
  readonly decoder: SpeculativeDecoder;
  private grammarCompiler?: Promise<GrammarCompiler>;

  private constructor(
    readonly target: DecoderModel,
    readonly draft: DecoderModel | undefined,
    readonly tokenizer: TextTokenizer,
    readonly head?: AcceptanceHead,
    /** The draft session the specdec++ policy runs (see heads/runtime/head-loader.ts). */
    readonly headDraft?: DecoderModel,
    /** The target's model directory. */
    readonly targetDir?: string,
    /** One-run draft phases of the drafts (draft-phase.ts). */
    private readonly phases: DraftPhase[] = [],
  ) {
    this.decoder = new SpeculativeDecoder(target, draft, head, headDraft, phases);
  }

  static async load(opts: PairOptions = {}): Promise<ModelPair> {
    const targetDir = opts.target ?? BUNDLED_TARGET;
    const draftDir = opts.draft === undefined ? (opts.target === undefined ? BUNDLED_DRAFT : null) : opts.draft;
    readModelDir(targetDir, opts.dtype); // a missing or invalid target is reported before anything else loads
    const threads = opts.threads ?? availableParallelism();
    const tokenizer = await TextTokenizer.fromDir(targetDir);
    let vocab: DraftVocabPlan = {};
    let draftThreads = opts.draftThreads ?? 1;
    if (draftDir !== null) {
      vocab = await planDraftVocab(targetDir, draftDir, tokenizer, opts.speculativeTokenMap);
      draftThreads = opts.draftThreads ?? defaultDraftThreads(draftDir, threads, vocab.map?.ids.length);
    }
    const spinning = await resolveSpinning(spinningBesideDraft(opts.spinning, draftThreads));
    const common = { device: opts.device, deviceId: opts.deviceId, dtype: opts.dtype, graph: opts.graph, prefixCaching: opts.prefixCaching, spinning };
    const draftCommon = { ...common, device: opts.draftDevice ?? opts.device, dtype: opts.draftDtype ?? opts.dtype };

    const target = await DecoderModel.load(targetDir, { ...common, threads });
    let draft: DecoderModel | undefined;
    if (draftDir !== null) {
      // Its rows hold the token map's columns alone (model.ts logitIds), mapped to ids in the round.
      draft = await DecoderModel.load(draftDir, { ...draftCommon, threads: draftThreads, keepGraph: true, vocabMap: vocab.map, logitColumns: 'kept' });
    }
    const bundled = opts.target === undefined && opts.draft === undefined;
    const headPath = opts.head === undefined ? (bundled && existsSync(BUNDLED_HEAD) ? BUNDLED_HEAD : null) : opts.head;
    if (headPath !== null && !draft) throw new ModelLoadError('an acceptance head needs a draft model', headPath);
    const loaded =
      headPath !== null && draft
        ? await loadHeadForDraft(headPath, draft, { ...draftCommon, threads: draftThreads, mode: opts.headMode, vocabMap: vocab.map })
        : undefined;
    // One-run draft phases (draft-phase.ts) of the drafts that can run one; the graphs are not needed after.
    const phases: DraftPhase[] = [];
    for (const model of new Set([draft, loaded?.headDraft])) {
      const phase = model && (await DraftPhase.create(model, draftThreads, spinning));
      if (phase) phases.push(phase);
      model?.dropGraph();
    }
    return new ModelPair(target, draft, tokenizer, loaded?.head, loaded?.headDraft, targetDir, phases);
  }

  /** The grammar compiler for the pair's vocabulary (grammar/compiler.ts), built on first use; compiled grammars are cached in it. */
  grammars(): Promise<GrammarCompiler> {
    if (!this.targetDir) throw new Error('the pair has no target directory to read a grammar vocabulary from');
    this.grammarCompiler ??= GrammarCompiler.forModelDir(this.targetDir, this.target.info.vocabSize, this.target.info.eosTokenIds);
    return this.grammarCompiler;
  }

  async release(): Promise<void> {
    await this.target.release();
    await this.draft?.release();
    if (this.headDraft !== this.draft) await this.headDraft?.release();
    await this.head?.release();
    for (const phase of this.phases) await phase.release();
  }
}
