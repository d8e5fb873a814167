/**
 * `specd models prepare-draft`: a copy of a draft that also outputs its last hidden state.
 * `specd models synth`: a random-weight draft/target pair of a chosen size, for benchmarks.
 * `specd models quantize`: a model's linear layers quantized to 8 or 4 bits (MatMulNBits).
 */
import { Command, InvalidArgumentError } from 'commander';
import { writeSyntheticPair } from '../bench/synthetic-pair.js';
import { compareDraftLogits, prepareDraftDir } from '../heads/prepare-draft.js';
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ONNX_VARIANTS, readModelDir } from '../engine/model-dir.js';
import { isQuantizedDtype, QUANTIZED_DTYPES, quantizeModelFile } from '../engine/quantized-weights.js';
import { intIn, numberIn } from './options.js';

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
    .description('write a synthetic GPT-2 draft/target pair with random weights (OUT/target, OUT/draft) to benchmark a device; the draft is the target\'s first blocks')
    .requiredOption('--out <dir>', 'directory for the pair (new or empty)')
    .option('--layers <n>', 'target blocks', intIn(1, 512), 24)
    .option('--width <n>', 'hidden width', intIn(8, 65536), 2048)
    .option('--heads <n>', 'attention heads (must divide the width)', intIn(1, 1024), 16)
    .option('--draft-layers <n>', "draft blocks (the target's first ones)", intIn(1, 512), 2)
    .option('--deep-scale <s>', "scale of the output projections of the target's blocks beyond the draft's: how far the target strays from the draft", numberIn(0, 10), 0.04)
    .option('--seed <n>', 'random seed', intIn(0, 2 ** 31), 0)
    .action((flags: { out: string; layers: number; width: number; heads: number; draftLayers: number; deepScale: number; seed: number }) => {
      if (flags.width % flags.heads !== 0) throw new InvalidArgumentError(`--width ${flags.width} is not a multiple of --heads ${flags.heads}`);
      if (flags.draftLayers > flags.layers) throw new InvalidArgumentError(`--draft-layers ${flags.draftLayers} exceeds --layers ${flags.layers}`);
      const started = performance.now();
      const pair = writeSyntheticPair(flags.out, { layers: flags.layers, hidden: flags.width, heads: flags.heads, draftLayers: flags.draftLayers, deepScale: flags.deepScale, seed: flags.seed });
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
  return models;
}
