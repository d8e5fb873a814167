/** `specd bench peer`: specd against llama.cpp's llama-server on the same weights at the same quantization (src/bench/peer-llamacpp.ts). */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { DATASETS, type DatasetName, isDataset, loadPrompts, REPETITION_DATASETS } from '../bench/datasets.js';
import { LLAMA_QUANTIZE, LLAMA_SERVER, requireTool } from '../bench/llama-server.js';
import { checkLlamaSpecTypes, formatPeerTable, GGML_QUANT, LLAMA_SPEC_TYPES, peerChartSvg, type PeerQuant, runPeerBench } from '../bench/peer-llamacpp.js';
import { machineInfo } from '../bench/serve/report.js';
import { MAX_DRAFT_LIMIT, type PolicySpec, parsePolicy, policyLabel } from '../engine/stop-policy.js';
import { BUNDLED_DRAFT, BUNDLED_HEAD, BUNDLED_TARGET } from '../paths.js';
import { peerTurns } from './bench-peer-turns.js';
import { intIn, numberIn, policyListArg } from './options.js';

interface PeerFlags {
  target?: string;
  draft?: string;
  head?: string | boolean;
  quant: PeerQuant[];
  dataset: DatasetName;
  prompts: number;
  maxTokens: number;
  rounds: number;
  threads: number;
  draftThreads: number;
  policies?: PolicySpec[];
  k: number;
  specDraftNMax: number;
  specDraftPMin: number;
  llamaSpecType: string[];
  context: number;
  llamaServer?: string;
  llamaQuantize?: string;
  ggufDir?: string;
  json?: string;
  chart?: string;
  multiTurn?: boolean;
  turns: number;
  systemPromptLen: number;
  questionLen: number;
  seed: number;
  serveArgs?: string;
}

function quantListArg(text: string): PeerQuant[] {
  const items = text.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = items.filter((q) => !(q in GGML_QUANT));
  if (items.length === 0 || bad.length) throw new InvalidArgumentError(`expected a comma-separated list of ${Object.keys(GGML_QUANT).join(', ')}${bad.length ? `, got ${bad.join(', ')}` : ''}`);
  return [...new Set(items)] as PeerQuant[];
}

/** --llama-spec-type, repeatable: each value one configuration. */
function llamaSpecTypeArg(text: string, previous: string[]): string[] {
  try {
    return [...previous, checkLlamaSpecTypes(text)];
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

/** The prompt sets offered here: the plain ones and the repetitive one where llama-server's n-gram proposers and specd's draft-free ones pay. */
const PEER_DATASETS = [...DATASETS, ...REPETITION_DATASETS];

function datasetArg(text: string): DatasetName {
  if (!isDataset(text)) throw new InvalidArgumentError(`expected one of ${PEER_DATASETS.join(', ')}`);
  return text;
}

export function benchPeerCommand(): Command {
  return new Command('peer')
    .description("specd against llama.cpp's llama-server on the same weights, both quantized (q8: Q8_0, q4: Q4_0), greedy, interleaved rounds: tokens/s and the ratio to llama-server's target alone")
    .option('--target <dir>', 'target model directory (default: the bundled specd-pair target)')
    .option('--draft <dir>', 'draft model directory (default: the bundled draft with the bundled target)')
    .option('--head <file>', 'acceptance head for specdec++ (default: the bundled head with the bundled pair)')
    .option('--no-head', 'load no acceptance head (no specdec++ run)')
    .option('--quant <list>', `quantizations, comma-separated: ${Object.entries(GGML_QUANT).map(([k, v]) => `${k} (specd --dtype ${k}, llama.cpp ${v})`).join(', ')}`, quantListArg, ['q8', 'q4'] as PeerQuant[])
    .option('--dataset <name>', `prompt set (${PEER_DATASETS.join(', ')})`, datasetArg, 'gsm8k' as DatasetName)
    .option('--prompts <n>', 'number of prompts', intIn(1, 100_000), 10)
    .option('--max-tokens <n>', 'new tokens per prompt (end of text ignored)', intIn(1, 100_000), 128)
    .option('--rounds <n>', 'interleaved rounds of every configuration', intIn(1, 1000), 3)
    .option('--threads <n>', 'threads of the target, both engines (specd intra-op, llama-server -t)', intIn(1, 1024), 2)
    .option('--draft-threads <n>', "intra-op threads of specd's draft", intIn(1, 1024), 1)
    .option('--policies <list>', 'specd policies, comma-separated (default: none, fixed:K, and specdec++ when an acceptance head is loaded)', policyListArg)
    .option('--k <n>', 'K of the default fixed policy', intIn(1, MAX_DRAFT_LIMIT), 4)
    .option('--spec-draft-n-max <n>', "llama-server's --spec-draft-n-max with its draft", intIn(1, MAX_DRAFT_LIMIT), 4)
    .option('--spec-draft-p-min <p>', "llama-server's --spec-draft-p-min with its draft", numberIn(0, 1), 0.6)
    .option(
      '--llama-spec-type <types>',
      `also run llama-server with --spec-type TYPES (comma-separated: ${LLAMA_SPEC_TYPES.join(', ')}; draft-simple adds its draft), e.g. ngram-mod or draft-simple,ngram-mod; repeat for more configurations`,
      llamaSpecTypeArg,
      [] as string[],
    )
    .option('--context <n>', "llama-server's slot context (-c, tokens)", intIn(64, 1 << 20), 2048)
    .option('--llama-server <command>', 'llama-server command line (default: $LLAMA_SERVER, else llama-server on PATH)')
    .option('--llama-quantize <command>', 'llama-quantize command line (default: $LLAMA_QUANTIZE, else llama-quantize on PATH)')
    .option('--gguf-dir <dir>', 'keep the GGUF files written here (default: a temporary folder, removed)')
    .option('--json <file>', 'also write the rounds and the summary as JSON')
    .option('--chart <file>', 'also write median tokens/s per configuration, with ratios, as a bar chart (SVG)')
    .option('--multi-turn', 'instead: one conversation turn by turn on specd serve and llama-server (float32, prompt caches on), TTFT per turn; --rounds conversations')
    .option('--turns <n>', 'multi-turn: turns of the conversation', intIn(1, 1000), 6)
    .option('--system-prompt-len <n>', 'multi-turn: characters of the system prompt', intIn(0, 10_000_000), 300)
    .option('--question-len <n>', 'multi-turn: characters of each question', intIn(1, 10_000_000), 80)
    .option('--seed <n>', 'multi-turn: seeds the conversations (round r: seed + r)', intIn(0, 2 ** 31 - 1), 1)
    .option('--serve-args <args>', "multi-turn: further flags for specd's side, e.g. '--policy fixed --k 4'")
    .action(async (flags: PeerFlags) => {
      const target = flags.target ?? BUNDLED_TARGET;
      if (flags.draft === undefined && flags.target !== undefined) throw new InvalidArgumentError('--draft: a draft model directory is needed with --target (llama-server -md and specd speculation both use it)');
      const draft = flags.draft ?? BUNDLED_DRAFT;
      const bundled = target === BUNDLED_TARGET && draft === BUNDLED_DRAFT;
      const head = flags.head === false ? null : typeof flags.head === 'string' ? flags.head : bundled ? BUNDLED_HEAD : null;
      if (flags.multiTurn) {
        if (flags.policies) throw new InvalidArgumentError("--policies does not apply to --multi-turn (choose specd's policy with --serve-args '--policy NAME')");
        return peerTurns({ ...flags, target, draft, head });
      }
      const policies = flags.policies ?? [parsePolicy('none'), parsePolicy(`fixed:${flags.k}`), ...(head ? [parsePolicy('specdec++')] : [])];
      if (!head && policies.some((p) => p.policy === 'specdec++')) throw new InvalidArgumentError('--policies: specdec++ needs an acceptance head (--head FILE)');
      const draftFree = policies.find((p) => p.policy === 'ngram' || p.policy === 'suffix');
      if (draftFree && flags.llamaSpecType.length === 0) throw new InvalidArgumentError(`--policies: ${policyLabel(draftFree)} is not compared here without --llama-spec-type (llama-server runs with the draft model)`);
      const llamaServer = requireTool(LLAMA_SERVER, flags.llamaServer);
      const llamaQuantize = requireTool(LLAMA_QUANTIZE, flags.llamaQuantize);
      const ggufDir = flags.ggufDir ? resolve(flags.ggufDir) : mkdtempSync(join(tmpdir(), 'specd-peer-'));
      try {
        const result = await runPeerBench({
          target,
          draft,
          head,
          quants: flags.quant,
          prompts: (pair) => {
            const room = Math.min(pair.decoder.contextLength, flags.context) - flags.maxTokens;
            const items = loadPrompts(flags.dataset, flags.prompts, { fits: (p) => pair.tokenizer.encodeChat(p.messages).length <= room });
            if (items.length === 0) throw new InvalidArgumentError(`no ${flags.dataset} prompt fits ${room + flags.maxTokens} tokens with --max-tokens ${flags.maxTokens}`);
            return items.map((p) => pair.tokenizer.encodeChat(p.messages));
          },
          maxTokens: flags.maxTokens,
          rounds: flags.rounds,
          threads: flags.threads,
          draftThreads: flags.draftThreads,
          policies,
          draftMax: flags.specDraftNMax,
          pMin: flags.specDraftPMin,
          llamaSpecTypes: flags.llamaSpecType,
          context: flags.context,
          llamaServer,
          llamaQuantize,
          ggufDir,
          log: (line) => process.stderr.write(`${line}\n`),
        });
        process.stdout.write(formatPeerTable(result.summary));
        const settings = {
          target,
          draft,
          head,
          quant: flags.quant,
          dataset: flags.dataset,
          prompts: result.prompt_tokens.length,
          prompt_tokens: result.prompt_tokens,
          max_tokens: flags.maxTokens,
          rounds: flags.rounds,
          threads: flags.threads,
          draft_threads: flags.draftThreads,
          policies: policies.map(policyLabel),
          spec_draft_n_max: flags.specDraftNMax,
          spec_draft_p_min: flags.specDraftPMin,
          llama_spec_types: flags.llamaSpecType,
          llama_server: llamaServer.join(' '),
          llama_quantize: llamaQuantize.join(' '),
          command: `specd ${process.argv.slice(2).join(' ')}`,
        };
        if (flags.json) {
          writeFileSync(flags.json, `${JSON.stringify({ schema: 'specd-bench-peer/1', created: new Date().toISOString(), machine: machineInfo(), settings, rows: result.rows, summary: result.summary }, null, 2)}\n`);
          process.stderr.write(`wrote ${flags.json}\n`);
        }
        if (flags.chart) {
          const title = `specd vs llama-server, ${result.prompt_tokens.length} ${flags.dataset} prompts x ${flags.maxTokens} tokens, greedy, ${flags.threads} threads, ${flags.rounds} rounds`;
          writeFileSync(flags.chart, peerChartSvg(result.summary, title));
          process.stderr.write(`wrote ${flags.chart}\n`);
        }
      } finally {
        if (!flags.ggufDir) rmSync(ggufDir, { recursive: true, force: true });
      }
    });
}
