/**
 * Grammars for constrained decoding, compiled once per model and cached: JSON schemas
 * (`response_format`), JSON objects, EBNF and xgrammar's structural tags (tool calls), all
 * compiled by xgrammar against the model's vocabulary.
 *
 * JSON is generated compactly on one line with Python's `json.dumps` separators (`", "`,
 * `": "`), and objects hold only the properties their schema lists (xgrammar's strict mode).
 *
 * Isolation: xgrammar runs in a WebAssembly instance of its own (xgrammar.ts). Any failure in
 * it (a compile error, which xgrammar reports by aborting; a fault; a matcher that cannot be
 * built) becomes a GrammarError, and the instance is dropped: the next grammar compiles in a
 * fresh one, so nothing a request sends leaves state behind. Matchers already running keep the
 * instance they were built in until they are released. A spec that failed is remembered, so
 * the same spec gets the same error again without being compiled again. Memory is bounded: the
 * cache holds at most GRAMMAR_CACHE_SIZE grammars, and once an instance's memory passes
 * `memoryBudgetBytes` its cache is emptied and later grammars go to a fresh instance
 * (WebAssembly memory never shrinks, so a new instance is the only way to give memory back).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CompiledGrammar, GrammarCompiler as XGrammarCompiler, TokenizerInfo } from '@mlc-ai/web-xgrammar';
import { ModelLoadError } from '../errors.js';
import { GrammarConstraint } from './constraint.js';
import { GrammarError } from './errors.js';
import { toolCallsStructuralTag } from './hermes-format.js';
import { llama3JsonStructuralTag } from './llama3-json-format.js';
import type { ToolCallFormat, ToolCallMode } from './tool-call-common.js';
import { loadXGrammar, type XGrammarInstance } from './xgrammar.js';

export { GrammarError } from './errors.js';

/** What to constrain the output to (plain data: it crosses from the server to its engine workers). */
export type GrammarSpec =
  /** Any JSON object (`response_format: {"type": "json_object"}`). */
  | { type: 'json_object' }
  /** A JSON document valid against `schema` (JSON text). */
  | { type: 'json_schema'; schema: string }
  /** An EBNF grammar in xgrammar's dialect (root rule `root`). */
  | { type: 'ebnf'; grammar: string }
  /** An xgrammar structural tag (JSON text). */
  | { type: 'structural_tag'; tag: string }
  /** Tool calls in a tool-call format (hermes-format.ts), each function's arguments valid against its schema (JSON text). */
  | { type: 'tool_calls'; functions: { name: string; parameters: string }[]; mode: ToolCallMode; parallel: boolean; format?: ToolCallFormat };

/** Compiled grammars kept per model (each holds its per-token tables; a JSON schema's are small). */
export const GRAMMAR_CACHE_SIZE = 64;

/** Specs that failed, remembered with their error (so the same bad request is refused the same way without compiling it again). */
export const FAILED_GRAMMARS_KEPT = 256;

/**
 * WebAssembly memory one xgrammar instance may grow to before its grammars are dropped and a
 * fresh instance takes the next ones: 512 MiB (a 1,000-value enum schema takes a few MiB; the
 * bundled vocabulary's tables well under one).
 */
export const DEFAULT_GRAMMAR_MEMORY_BYTES = 512 * 1024 * 1024;

/** The schema of `json_object`: any object, with any properties. */
const ANY_OBJECT = JSON.stringify({ type: 'object', additionalProperties: true });

/** The vocabulary as xgrammar wants it, kept to build fresh instances. */
interface VocabularySpec {
  encodedVocab: string[];
  vocabType: 'byte_level' | 'byte_fallback' | 'raw';
  prependSpace: boolean;
  vocabSize: number;
  stopTokenIds: number[];
}

/** One xgrammar instance with the vocabulary's tables and a cache of the grammars compiled in it. */
class Runtime {
  readonly cache = new Map<string, CompiledGrammar>();
  /** Set after a fault or when over budget: no more compiles here. */
  retired = false;

  private constructor(
    readonly xg: XGrammarInstance,
    readonly info: TokenizerInfo,
    readonly compiler: XGrammarCompiler,
  ) {}

  static async create(vocab: VocabularySpec): Promise<Runtime> {
    const xg = loadXGrammar();
    const { TokenizerInfo: Info, GrammarCompiler: Compiler } = xg.module;
    const info = await Info.createTokenizerInfo(vocab.encodedVocab, vocab.vocabType, vocab.prependSpace, vocab.vocabSize, vocab.stopTokenIds);
    return new Runtime(xg, info, await Compiler.createGrammarCompiler(info));
  }

  /** Drop every cached grammar (running matchers keep theirs alive). */
  clear(): void {
    for (const grammar of this.cache.values()) grammar.dispose();
    this.cache.clear();
  }
}

/** A compiled grammar and the instance it lives in (its matchers must be built there). */
interface Compiled {
  grammar: CompiledGrammar;
  runtime: Runtime;
}

export interface GrammarCompilerOptions {
  /** See DEFAULT_GRAMMAR_MEMORY_BYTES. */
  memoryBudgetBytes?: number;
}

export class GrammarCompiler {
  private runtime: Runtime;
  private starting: Promise<void> | undefined;
  private readonly failures = new Map<string, string>();
  /** xgrammar instances started, the first included (a fault or the memory budget starts another). */
  instancesStarted = 1;
  private readonly memoryBudgetBytes: number;

  private constructor(
    private readonly vocab: VocabularySpec,
    runtime: Runtime,
    options: GrammarCompilerOptions,
  ) {
    this.runtime = runtime;
    this.memoryBudgetBytes = options.memoryBudgetBytes ?? DEFAULT_GRAMMAR_MEMORY_BYTES;
  }

  /** Tokens that end a complete output (the model's EOS ids). */
  get stopTokenIds(): readonly number[] {
    return this.vocab.stopTokenIds;
  }

  /**
   * The compiler for a model directory's tokenizer (`dir/tokenizer.json`).
   * @param vocabSize the model's logits width (config.json's vocab_size; may exceed the tokenizer's)
   * @param stopTokenIds EOS ids: the only tokens allowed once the grammar is complete
   * @throws ModelLoadError when tokenizer.json has no vocabulary xgrammar can use
   */
  static async forModelDir(dir: string, vocabSize: number, stopTokenIds: readonly number[], options: GrammarCompilerOptions = {}): Promise<GrammarCompiler> {
    const file = join(dir, 'tokenizer.json');
    const json = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    const vocab: VocabularySpec = {
      encodedVocab: encodedVocab(json, vocabSize, file),
      vocabType: vocabType(json),
      prependSpace: prependsSpace(json),
      vocabSize,
      stopTokenIds: [...stopTokenIds],
    };
    return new GrammarCompiler(vocab, await Runtime.create(vocab), options);
  }

  /**
   * The compiled grammar of a spec, from the cache when it was compiled before.
   * @throws GrammarError naming what xgrammar could not compile (e.g. `Unsupported type "foo"`);
   *   a spec that failed once fails again with the same message
   */
  async compile(spec: GrammarSpec): Promise<CompiledGrammar> {
    return (await this.compiled(spec)).grammar;
  }

  /**
   * A fresh matcher for one sequence (see constraint.ts).
   * @throws GrammarError when the grammar does not compile, or admits no output at all (e.g. a
   *   schema whose only `$ref` points to itself)
   */
  async constraint(spec: GrammarSpec): Promise<GrammarConstraint> {
    const { grammar, runtime } = await this.compiled(spec);
    const key = specKey(spec);
    let constraint: GrammarConstraint;
    try {
      const matcher = await runtime.xg.module.GrammarMatcher.createGrammarMatcher(grammar, this.vocab.stopTokenIds);
      constraint = new GrammarConstraint(matcher, runtime.info.getVocabSize(), this.vocab.stopTokenIds);
      await constraint.prepare([]);
    } catch (err) {
      this.fault(runtime);
      throw this.fail(key, err instanceof GrammarError ? err.message : abortReason(runtime.xg, err));
    }
    if (constraint.allowsNothing([])) {
      constraint.release();
      throw this.fail(key, 'the grammar admits no output (a schema whose references only lead back to themselves, or an empty choice)');
    }
    return constraint;
  }

  /** Whether `spec` is answered without compiling: it is in the current instance's cache, or it failed before. */
  isKnown(spec: GrammarSpec): boolean {
    const key = specKey(spec);
    return this.failures.has(key) || (!this.runtime.retired && this.runtime.cache.has(key));
  }

  /** Grammars in the current instance's cache. */
  get cached(): number {
    return this.runtime.retired ? 0 : this.runtime.cache.size;
  }

  private async compiled(spec: GrammarSpec): Promise<Compiled> {
    const key = specKey(spec);
    const failed = this.failures.get(key);
    if (failed !== undefined) throw new GrammarError(failed);
    const runtime = await this.live();
    const hit = runtime.cache.get(key);
    if (hit) {
      runtime.cache.delete(key); // re-inserted: the map's order is least recently used first
      runtime.cache.set(key, hit);
      return { grammar: hit, runtime };
    }
    runtime.xg.takePrinted();
    let grammar: CompiledGrammar;
    try {
      grammar = await compileIn(runtime, spec);
    } catch (err) {
      this.fault(runtime);
      throw this.fail(key, err instanceof GrammarError ? err.message : abortReason(runtime.xg, err));
    }
    // A warning means part of the grammar would not be enforced (e.g. allOf with several schemas).
    const warnings = runtime.xg
      .takePrinted()
      .map((line) => /\[WARNING\] [^\s:]+:\d+: (.*)/s.exec(line)?.[1])
      .filter((m): m is string => m !== undefined);
    if (warnings.length > 0) {
      grammar.dispose();
      throw this.fail(key, warnings.join('; ').trim());
    }
    runtime.cache.set(key, grammar);
    if (runtime.cache.size > GRAMMAR_CACHE_SIZE) {
      const [oldest, old] = runtime.cache.entries().next().value as [string, CompiledGrammar];
      runtime.cache.delete(oldest);
      old.dispose();
    }
    if (runtime.xg.memoryBytes() > this.memoryBudgetBytes) {
      // This grammar is still to be used (it goes when its instance does); the next ones go to a fresh instance.
      runtime.cache.delete(key);
      this.fault(runtime);
    }
    return { grammar, runtime };
  }

  /** The instance new grammars compile in (a fresh one once the last was retired). */
  private async live(): Promise<Runtime> {
    while (this.runtime.retired) {
      this.starting ??= Runtime.create(this.vocab).then(
        (fresh) => {
          this.runtime = fresh;
          this.instancesStarted++;
          this.starting = undefined;
        },
        (err: unknown) => {
          this.starting = undefined;
          throw err;
        },
      );
      await this.starting;
    }
    return this.runtime;
  }

  /** An instance xgrammar failed in, or one over its memory budget: it compiles nothing more. */
  private fault(runtime: Runtime): void {
    runtime.retired = true;
    runtime.clear();
  }

  private fail(key: string, message: string): GrammarError {
    this.failures.set(key, message);
    if (this.failures.size > FAILED_GRAMMARS_KEPT) this.failures.delete(this.failures.keys().next().value as string);
    return new GrammarError(message);
  }
}

async function compileIn(runtime: Runtime, spec: GrammarSpec): Promise<CompiledGrammar> {
  const { compiler } = runtime;
  switch (spec.type) {
    case 'json_object':
      return compiler.compileJSONSchema(ANY_OBJECT, false, -1);
    case 'json_schema':
      return compiler.compileJSONSchema(spec.schema, false, -1);
    case 'ebnf':
      return compiler.compileGrammar(spec.grammar);
    case 'structural_tag':
      return compiler.compileStructuralTag(spec.tag);
    case 'tool_calls':
      return compiler.compileStructuralTag(JSON.stringify(await toolCallsTag(runtime.xg, spec)));
  }
}

/** The cache key of a spec: equal keys compile to the same grammar. */
export function specKey(spec: GrammarSpec): string {
  return `${spec.type}\u0000${specText(spec)}`;
}

function specText(spec: GrammarSpec): string {
  switch (spec.type) {
    case 'json_object':
      return '';
    case 'json_schema':
      return spec.schema;
    case 'ebnf':
      return spec.grammar;
    case 'structural_tag':
      return spec.tag;
    case 'tool_calls':
      return JSON.stringify(spec);
  }
}

/**
 * The structural tag of a tool-calls spec. Arguments are generated as compact one-line JSON, as
 * response formats are: their schemas are converted to EBNF by xgrammar's converter (a structural
 * tag's own json_schema content would allow any whitespace, which small models fill forever).
 */
async function toolCallsTag(xg: XGrammarInstance, spec: Extract<GrammarSpec, { type: 'tool_calls' }>): Promise<object> {
  const functions = [];
  for (const f of spec.functions) {
    try {
      functions.push({ name: f.name, argumentsEbnf: await xg.module.Testings._jsonSchemaToEBNF(f.parameters, false, -1) });
    } catch (err) {
      throw new GrammarError(`function ${f.name}: ${abortReason(xg, err)}`);
    }
  }
  return spec.format === 'llama3_json' ? llama3JsonStructuralTag(functions, spec.mode, spec.parallel) : toolCallsStructuralTag(functions, spec.mode, spec.parallel);
}

/** xgrammar's reason for an abort, from what it printed ("[FATAL] file.cc:902: Unsupported type ..."). */
function abortReason(xg: XGrammarInstance, err: unknown): string {
  const fatal = xg
    .takePrinted()
    .map((line) => /\[FATAL\] [^\s:]+:\d+: (.*)/s.exec(line)?.[1])
    .filter((m): m is string => m !== undefined);
  if (fatal.length > 0) return fatal.join('; ').trim();
  return err instanceof Error ? err.message : String(err);
}

/** Token strings by id as tokenizer.json spells them (BPE / WordPiece maps, Unigram lists, added tokens). */
function encodedVocab(json: Record<string, unknown>, vocabSize: number, file: string): string[] {
  const model = json['model'] as { vocab?: unknown } | undefined;
  const out = new Array<string>(vocabSize).fill('');
  const vocab = model?.vocab;
  if (Array.isArray(vocab)) {
    vocab.forEach((entry: unknown, id) => {
      if (id < vocabSize) out[id] = Array.isArray(entry) ? String(entry[0]) : String(entry);
    });
  } else if (vocab && typeof vocab === 'object') {
    for (const [token, id] of Object.entries(vocab as Record<string, number>)) if (id < vocabSize) out[id] = token;
  } else {
    throw new ModelLoadError(`${file}: no model.vocab to build grammar masks from`, file, 'model.vocab');
  }
  for (const added of (json['added_tokens'] as { id: number; content: string }[] | undefined) ?? []) {
    if (added.id < vocabSize) out[added.id] = added.content;
  }
  return out;
}

/** xgrammar's vocabulary type: how token strings map to bytes (as xgrammar's from_huggingface decides). */
function vocabType(json: Record<string, unknown>): 'byte_level' | 'byte_fallback' | 'raw' {
  const kinds = decoderKinds(json['decoder']);
  if (kinds.includes('ByteFallback')) return 'byte_fallback';
  if (kinds.includes('ByteLevel')) return 'byte_level';
  return 'raw';
}

function decoderKinds(decoder: unknown): string[] {
  if (!decoder || typeof decoder !== 'object') return [];
  const d = decoder as { type?: string; decoders?: unknown[] };
  return [d.type ?? '', ...(d.decoders ?? []).flatMap(decoderKinds)];
}

/** Whether the tokenizer puts a space before the text (SentencePiece's Metaspace, prepend_scheme first/always). */
function prependsSpace(json: Record<string, unknown>): boolean {
  const pre = json['pre_tokenizer'] as { type?: string; prepend_scheme?: string; add_prefix_space?: boolean } | null | undefined;
  if (pre?.type === 'Metaspace') return pre.prepend_scheme !== 'never' && pre.add_prefix_space !== false;
  const normalizer = json['normalizer'] as { type?: string; normalizers?: { type?: string; prepend?: string }[] } | null | undefined;
  return (normalizer?.normalizers ?? [normalizer ?? {}]).some((n) => (n as { type?: string }).type === 'Prepend');
}
