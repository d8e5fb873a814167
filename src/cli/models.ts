/** `specd models prepare-draft`: a copy of a draft that also outputs its last hidden state. */
import { Command } from 'commander';
import { compareDraftLogits, prepareDraftDir } from '../heads/prepare-draft.js';

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
  return models;
}
