/**
 * Grammars for constrained decoding, compiled once per model and cached: JSON schemas
 * (`response_format`), JSON objects, EBNF and xgrammar's structural tags (tool calls), all
 * compiled by xgrammar against the model's vocabulary.
 *
 * JSON is generated compactly on one line with Python's `json.dumps` separators (`", "`,
 * `": "`), and objects hold only the properties their schema lists (xgrammar's strict mode).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CompiledGrammar, GrammarCompiler as XGrammarCompiler, TokenizerInfo } from '@mlc-ai/web-xgrammar';
import { ModelLoadError } from '../errors.js';
import { GrammarConstraint } from './constraint.js';
import { type ToolCallMode, toolCallsStructuralTag } from './tool-call-format.js';
import { takePrintedErrors, xgrammar } from './xgrammar.js';

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
  /** Tool calls in specd's format (tool-call-format.ts), each function's arguments valid against its schema (JSON text). */
  | { type: 'tool_calls'; functions: { name: string; parameters: string }[]; mode: ToolCallMode; parallel: boolean };

/** A grammar xgrammar cannot compile; the message carries xgrammar's reason. */
export class GrammarError extends Error {
  override name = 'GrammarError';
}

/** Compiled grammars kept per model (each holds its per-token tables; a JSON schema's are small). */
export const GRAMMAR_CACHE_SIZE = 64;

/** The schema of `json_object`: any object, with any properties. */
const ANY_OBJECT = JSON.stringify({ type: 'object', additionalProperties: true });

export class GrammarCompiler {
  private readonly cache = new Map<string, CompiledGrammar>();

  private constructor(
    private readonly compiler: XGrammarCompiler,
    readonly info: TokenizerInfo,
    /** Tokens that end a complete output (the model's EOS ids). */
    readonly stopTokenIds: readonly number[],
  ) {}

  /**
   * The compiler for a model directory's tokenizer (`dir/tokenizer.json`).
   * @param vocabSize the model's logits width (config.json's vocab_size; may exceed the tokenizer's)
   * @param stopTokenIds EOS ids: the only tokens allowed once the grammar is complete
   * @throws ModelLoadError when tokenizer.json has no vocabulary xgrammar can use
   */
  static async forModelDir(dir: string, vocabSize: number, stopTokenIds: readonly number[]): Promise<GrammarCompiler> {
    const file = join(dir, 'tokenizer.json');
    const json = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    const vocab = encodedVocab(json, vocabSize, file);
    const xg = xgrammar();
    const info = await xg.TokenizerInfo.createTokenizerInfo(vocab, vocabType(json), prependsSpace(json), vocabSize, [...stopTokenIds]);
    return new GrammarCompiler(await xg.GrammarCompiler.createGrammarCompiler(info), info, stopTokenIds);
  }

  /**
   * The compiled grammar of a spec, from the cache when it was compiled before.
   * @throws GrammarError naming what xgrammar could not compile (e.g. `Unsupported type "foo"`)
   */
  async compile(spec: GrammarSpec): Promise<CompiledGrammar> {
    const key = `${spec.type}\u0000${specText(spec)}`;
    const hit = this.cache.get(key);
    if (hit) {
      this.cache.delete(key); // re-inserted: the map's order is least recently used first
      this.cache.set(key, hit);
      return hit;
    }
    takePrintedErrors();
    let compiled: CompiledGrammar;
    try {
      switch (spec.type) {
        case 'json_object':
          compiled = await this.compiler.compileJSONSchema(ANY_OBJECT, false, -1);
          break;
        case 'json_schema':
          compiled = await this.compiler.compileJSONSchema(spec.schema, false, -1);
          break;
        case 'ebnf':
          compiled = await this.compiler.compileGrammar(spec.grammar);
          break;
        case 'structural_tag':
          compiled = await this.compiler.compileStructuralTag(spec.tag);
          break;
        case 'tool_calls':
          compiled = await this.compiler.compileStructuralTag(JSON.stringify(await toolCallsTag(spec)));
          break;
      }
    } catch (err) {
      throw new GrammarError(abortReason(err));
    }
    // A warning means part of the grammar would not be enforced (e.g. allOf with several schemas).
    const warnings = takePrintedErrors()
      .map((line) => /\[WARNING\] [^\s:]+:\d+: (.*)/s.exec(line)?.[1])
      .filter((m): m is string => m !== undefined);
    if (warnings.length > 0) {
      compiled.dispose();
      throw new GrammarError(warnings.join('; ').trim());
    }
    this.cache.set(key, compiled);
    if (this.cache.size > GRAMMAR_CACHE_SIZE) {
      const [oldest, grammar] = this.cache.entries().next().value as [string, CompiledGrammar];
      this.cache.delete(oldest);
      grammar.dispose();
    }
    return compiled;
  }

  /** A fresh matcher for one sequence (see constraint.ts). */
  async constraint(spec: GrammarSpec): Promise<GrammarConstraint> {
    const compiled = await this.compile(spec);
    const matcher = await xgrammar().GrammarMatcher.createGrammarMatcher(compiled, [...this.stopTokenIds]);
    return new GrammarConstraint(matcher, this.info.getVocabSize(), this.stopTokenIds);
  }

  /** Grammars in the cache. */
  get cached(): number {
    return this.cache.size;
  }
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
async function toolCallsTag(spec: Extract<GrammarSpec, { type: 'tool_calls' }>): Promise<object> {
  const functions = [];
  for (const f of spec.functions) {
    try {
      functions.push({ name: f.name, argumentsEbnf: await xgrammar().Testings._jsonSchemaToEBNF(f.parameters, false, -1) });
    } catch (err) {
      throw new GrammarError(`function ${f.name}: ${abortReason(err)}`);
    }
  }
  return toolCallsStructuralTag(functions, spec.mode, spec.parallel);
}

/** xgrammar's reason for an abort, from what it printed ("[FATAL] file.cc:902: Unsupported type ..."). */
function abortReason(err: unknown): string {
  const fatal = takePrintedErrors()
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
