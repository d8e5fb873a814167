/**
 * Synthetic draft/target pairs of any size with random weights (synthetic/gpt2-random.ts), for
 * measuring devices and speculation where no trained model of that size is at hand. They speak
 * the bundled pair's byte-level vocabulary (its tokenizer and chat template are copied), so every
 * command and data set works with them; their text is noise, their speed is real.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildGpt2Graph } from '../onnx/gpt2-graph.js';
import { randomGpt2Pair, type RandomGpt2Options } from '../synthetic/gpt2-random.js';
import type { Gpt2Weights } from '../onnx/gpt2-weights.js';
import { BUNDLED_TARGET } from '../paths.js';

export type SyntheticPairOptions = Omit<RandomGpt2Options, 'vocab'>;

export interface SyntheticPair {
  targetDir: string;
  draftDir: string;
  /** Parameters of the target and the draft. */
  targetParams: number;
  draftParams: number;
}

/** Write `out/target` and `out/draft`; `out` must be new or empty. */
export function writeSyntheticPair(out: string, options: SyntheticPairOptions): SyntheticPair {
  if (existsSync(out) && readdirSync(out).length > 0) throw new Error(`${out} is not empty`);
  const base = JSON.parse(readFileSync(join(BUNDLED_TARGET, 'config.json'), 'utf8')) as Record<string, unknown>;
  const { target, draft } = randomGpt2Pair({ ...options, vocab: base.vocab_size as number });
  const write = (role: 'target' | 'draft', w: Gpt2Weights): { dir: string; params: number } => {
    const dir = join(out, role);
    mkdirSync(join(dir, 'onnx'), { recursive: true });
    const name = `specd-synthetic-${w.blocks.length}x${w.hidden}`;
    const config = { ...base, _name_or_path: name, role, n_layer: w.blocks.length, n_head: w.heads, n_embd: w.hidden, n_inner: w.inner, n_positions: w.positions };
    writeFileSync(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
    for (const file of ['generation_config.json', 'tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(BUNDLED_TARGET, file), join(dir, file));
    const g = buildGpt2Graph(w, { attention: 'fused', norms: 'fused', gelu: 'fused' });
    g.setMetadata('specd.synthetic', JSON.stringify({ seed: options.seed ?? 0, draft_layers: options.draftLayers ?? 2, deep_scale: options.deepScale ?? 0.04 }));
    g.save(join(dir, 'onnx', 'model.onnx'), { externalData: true });
    return { dir, params: countParams(w) };
  };
  const t = write('target', target);
  const d = write('draft', draft);
  return { targetDir: t.dir, draftDir: d.dir, targetParams: t.params, draftParams: d.params };
}

function countParams(w: Gpt2Weights): number {
  const block = (b: Gpt2Weights['blocks'][number]) =>
    [b.ln1.gain, b.ln1.bias, b.qkv.weight, b.qkv.bias, b.proj.weight, b.proj.bias, b.ln2.gain, b.ln2.bias, b.fc.weight, b.fc.bias, b.out.weight, b.out.bias].reduce((n, a) => n + a.length, 0);
  return w.wte.length + w.wpe.length + w.blocks.reduce((n, b) => n + block(b), 0) + 2 * w.hidden + w.lmHead.length;
}
