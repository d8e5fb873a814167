/**
 * specd against llama.cpp's llama-server on the same weights at the same quantization: the
 * target and draft model directories are written as float32 GGUF (src/gguf), quantized with the
 * user's `llama-quantize` (Q8_0, Q4_0), and decoded on the same prompt token ids (GSM8K chat
 * prompts), greedy, a fixed number of tokens each (end of text ignored on both sides), the same
 * threads. Per round and quantization, in turn: llama-server with the target alone, llama-server
 * with the draft (`-md`, `--spec-draft-n-max`, `--spec-draft-p-min`), then specd in-process
 * (`--dtype` q8 / q4 for both models) under each policy; rounds repeat the whole sequence, so
 * that a shared machine's bursts hit every configuration alike. tokens/s = output tokens / wall
 * time of the requests (prefill included; server start and model loads excluded). Ratios are
 * against llama-server's target alone at the same quantization, per round and as the median.
 *
 *   npm run build && node dist/bench/peer-llamacpp.js [--target DIR --draft DIR] [--quant q8,q4]
 *     [--prompts 10] [--max-tokens 128] [--rounds 3] [--threads 2] [--policies none,specdec++]
 *     [--k 4] [--p-min 0.6] [--port 18400] [--json FILE]
 *
 * LLAMA_SERVER and LLAMA_QUANTIZE give the commands (default: llama-server, llama-quantize on PATH).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadPrompts } from '../src/bench/datasets.js';
import { machineInfo } from '../src/bench/serve/report.js';
import { ModelPair } from '../src/pair/model-pair.js';
import { GREEDY } from '../src/engine/sampling.js';
import { parsePolicy, policyLabel } from '../src/engine/stop-policy.js';
import { writeGguf } from '../src/gguf/gguf-file.js';
import { modelToGguf } from '../src/gguf/model-to-gguf.js';
import { BUNDLED_DRAFT, BUNDLED_HEAD, BUNDLED_TARGET } from '../src/paths.js';

const { values: a } = parseArgs({
  options: {
    target: { type: 'string', default: BUNDLED_TARGET },
    draft: { type: 'string', default: BUNDLED_DRAFT },
    quant: { type: 'string', default: 'q8,q4' },
    prompts: { type: 'string', default: '10' },
    'max-tokens': { type: 'string', default: '128' },
    rounds: { type: 'string', default: '3' },
    threads: { type: 'string', default: '2' },
    policies: { type: 'string', default: 'none,specdec++' },
    k: { type: 'string', default: '4' },
    'p-min': { type: 'string', default: '0.6' },
    port: { type: 'string', default: '18400' },
    json: { type: 'string' },
  },
});
const GGML_TYPE = { q8: 'Q8_0', q4: 'Q4_0' } as const;
type Quant = keyof typeof GGML_TYPE;
const quants = a.quant.split(',').map((q) => {
  if (!(q in GGML_TYPE)) throw new Error(`--quant: ${q} is not q8 or q4`);
  return q as Quant;
});
const MAX_TOKENS = Number(a['max-tokens']);
const THREADS = Number(a.threads);
const command = (env: string, name: string) => (process.env[env] ?? name).split(' ').filter(Boolean);
const server = command('LLAMA_SERVER', 'llama-server');
const quantize = command('LLAMA_QUANTIZE', 'llama-quantize');
const url = `http://127.0.0.1:${a.port}`;

const work = mkdtempSync(join(tmpdir(), 'specd-peer-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

// 1. GGUF files: float32 from the model directories, then llama.cpp's own quantization.
const gguf: Record<string, Record<Quant, string>> = {};
for (const [role, dir] of [
  ['target', a.target],
  ['draft', a.draft],
] as const) {
  const f32 = join(work, `${role}-f32.gguf`);
  writeGguf(f32, modelToGguf(dir));
  gguf[role] = {} as Record<Quant, string>;
  for (const q of quants) {
    const out = join(work, `${role}-${GGML_TYPE[q]}.gguf`);
    const r = spawnSync(quantize[0]!, [...quantize.slice(1), f32, out, GGML_TYPE[q]], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${quantize.join(' ')} failed: ${r.error?.message ?? r.stderr.slice(-500)}`);
    gguf[role]![q] = out;
  }
}

// 2. The prompts' token ids, as specd's chat template renders them.
const pairs: Record<string, ModelPair> = {};
for (const q of quants) {
  const bundled = a.target === BUNDLED_TARGET && a.draft === BUNDLED_DRAFT;
  pairs[q] = await ModelPair.load({ target: a.target, draft: a.draft, dtype: q, threads: THREADS, draftThreads: 1, head: bundled ? BUNDLED_HEAD : null });
}
const first = pairs[quants[0]!]!;
const prompts = loadPrompts('gsm8k', Number(a.prompts)).map((item) => first.tokenizer.encodeChat(item.messages));
const policies = a.policies.split(',').map(parsePolicy);

async function llamaServer(args: string[], run: () => Promise<number>): Promise<number> {
  const proc = spawn(server[0]!, [...server.slice(1), ...args, '--port', a.port, '--host', '127.0.0.1', '-t', String(THREADS), '-c', '2048', '--no-warmup'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-2000)));
  try {
    for (let i = 0; !(await fetch(`${url}/health`).then((r) => r.ok, () => false)); i++) {
      if (i > 300 || proc.exitCode !== null) throw new Error(`llama-server did not start: ${log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    return await run();
  } finally {
    proc.kill();
    await new Promise((r) => proc.once('exit', r));
  }
}

/** tokens/s of the prompts through llama-server's /completion. */
async function viaServer(): Promise<number> {
  let tokens = 0;
  const t0 = performance.now();
  for (const prompt of prompts) {
    const res = await fetch(`${url}/completion`, {
      method: 'POST',
      body: JSON.stringify({ prompt, n_predict: MAX_TOKENS, temperature: 0, top_k: 1, ignore_eos: true, cache_prompt: false, return_tokens: true }),
    });
    tokens += ((await res.json()) as { tokens: number[] }).tokens.length;
  }
  return tokens / ((performance.now() - t0) / 1000);
}

async function viaSpecd(pair: ModelPair, policy: ReturnType<typeof parsePolicy>): Promise<number> {
  let tokens = 0;
  const t0 = performance.now();
  for (const prompt of prompts) tokens += (await pair.decoder.start(prompt, { maxTokens: MAX_TOKENS, sampling: GREEDY, eosTokenIds: [], policy }).run()).length;
  return tokens / ((performance.now() - t0) / 1000);
}

// 3. Interleaved rounds.
const results: { round: number; quant: Quant; config: string; tokens_per_s: number }[] = [];
for (let round = 0; round < Number(a.rounds); round++) {
  for (const q of quants) {
    const rec = (config: string, tps: number) => {
      results.push({ round, quant: q, config, tokens_per_s: +tps.toFixed(1) });
      process.stderr.write(`round ${round} ${GGML_TYPE[q]} ${config}: ${tps.toFixed(1)} tok/s\n`);
    };
    rec('llama-server target only', await llamaServer(['-m', gguf.target![q]], viaServer));
    rec(`llama-server -md (k ${a.k}, p-min ${a['p-min']})`, await llamaServer(['-m', gguf.target![q], '-md', gguf.draft![q], '--spec-draft-n-max', a.k, '--spec-draft-p-min', a['p-min']], viaServer));
    for (const p of policies) rec(`specd --dtype ${q} ${policyLabel(p)}`, await viaSpecd(pairs[q]!, p));
  }
}

const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
const summary = quants.flatMap((q) => {
  const configs = [...new Set(results.filter((r) => r.quant === q).map((r) => r.config))];
  const base = (round: number) => results.find((r) => r.quant === q && r.round === round && r.config === 'llama-server target only')!.tokens_per_s;
  return configs.map((config) => {
    const rows = results.filter((r) => r.quant === q && r.config === config);
    return { quant: GGML_TYPE[q], config, median_tokens_per_s: median(rows.map((r) => r.tokens_per_s)), ratio_per_round: rows.map((r) => +(r.tokens_per_s / base(r.round)).toFixed(2)) };
  });
});
console.log('weights | configuration | median tok/s | x llama-server target only, per round');
for (const s of summary) console.log(`${s.quant} | ${s.config} | ${s.median_tokens_per_s} | ${s.ratio_per_round.join(' ')}`);
if (a.json) {
  writeFileSync(a.json, `${JSON.stringify({ schema: 'specd-peer-llamacpp/1', created: new Date().toISOString(), machine: machineInfo(), settings: { ...a, llama_server: server.join(' ') }, results, summary }, null, 2)}\n`);
}
for (const p of Object.values(pairs)) await p.release();
