/**
 * Text <-> token ids for a model directory: tokenizer.json (via @huggingface/tokenizers) plus
 * tokenizer_config.json (special tokens, chat template rendered via @huggingface/jinja).
 *
 * Special tokens are only ever produced by the chat template. Plain `encode` and the message
 * contents inside `encodeChat` are tokenized with special-token matching switched off, so a user
 * who types `<|im_end|>` gets the tokens of that text, not the control token (the equivalent of
 * `split_special_tokens=True` in transformers).
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import { ChatTemplateError, ModelLoadError } from './errors.js';

export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatOptions {
  /** Append the template's assistant-turn opener (`add_generation_prompt`); default true. */
  addGenerationPrompt?: boolean;
  /** Extra template variables, e.g. `{ enable_thinking: false }`. */
  templateVars?: Record<string, unknown>;
}

export interface DecodeOptions {
  skipSpecialTokens?: boolean;
}

type Json = Record<string, unknown>;

/** tokenizer_config.json fields that name a special token (string or `{content}` object). */
const SPECIAL_TOKEN_FIELDS = [
  'bos_token',
  'eos_token',
  'unk_token',
  'sep_token',
  'pad_token',
  'cls_token',
  'mask_token',
] as const;

export class TextTokenizer {
  /** Ids of every token flagged special in tokenizer.json, plus those tokenizer_config.json names. */
  readonly specialTokenIds: Set<number>;
  /** Values for the chat template: bos_token, eos_token, ... (only those that are set). */
  private readonly templateTokens: Record<string, string | string[]>;
  private readonly specialTexts: string[];
  private readonly cleanUpSpaces: boolean;
  private readonly size: number;
  private fingerprintCache?: string;

  private constructor(
    /** Full tokenizer: matches added/special tokens in its input (used for template text). */
    private readonly full: Tokenizer,
    /** Same tokenizer without the special added tokens: never produces a special token. */
    private readonly plain: Tokenizer,
    config: Json,
    private readonly template: Template | undefined,
    /** The chat template's Jinja source, if the model has one. */
    readonly chatTemplate?: string,
    /** Whether the chat template reads a `tools` variable (tool definitions rendered by the template). */
    readonly templateUsesTools = false,
  ) {
    this.templateTokens = {};
    for (const field of SPECIAL_TOKEN_FIELDS) {
      const text = tokenText(config[field]);
      if (text !== undefined) this.templateTokens[field] = text;
    }
    const additional = config['additional_special_tokens'];
    if (Array.isArray(additional)) {
      this.templateTokens['additional_special_tokens'] = additional
        .map(tokenText)
        .filter((t): t is string => t !== undefined);
    }

    this.specialTokenIds = new Set();
    const specialTexts = new Set<string>();
    for (const [id, token] of full.get_added_tokens_decoder()) {
      if (!token.special) continue;
      this.specialTokenIds.add(id);
      specialTexts.add(token.content);
    }
    for (const value of Object.values(this.templateTokens)) {
      for (const text of Array.isArray(value) ? value : [value]) {
        const id = full.token_to_id(text);
        if (id === undefined) continue;
        this.specialTokenIds.add(id);
        specialTexts.add(text);
      }
    }
    this.specialTexts = [...specialTexts].filter((t) => t.length > 0);

    // The library defaults clean_up_tokenization_spaces to true, which rewrites " ." to "." and
    // so breaks round trips; transformers defaults to false. Only clean up when asked to.
    this.cleanUpSpaces = config['clean_up_tokenization_spaces'] === true;

    let maxId = -1;
    for (const [token, id] of full.get_vocab(true)) {
      if (typeof token === 'string' && id > maxId) maxId = id;
    }
    this.size = maxId + 1;
  }

  /**
   * Load `dir/tokenizer.json` and `dir/tokenizer_config.json` (the chat template may instead be
   * in `dir/chat_template.jinja`). Throws ModelLoadError naming the missing or invalid file.
   */
  static async fromDir(dir: string): Promise<TextTokenizer> {
    const tokenizerPath = join(dir, 'tokenizer.json');
    const configPath = join(dir, 'tokenizer_config.json');
    const tokenizerJson = await readJsonObject(tokenizerPath);
    const config = await readJsonObject(configPath);

    for (const field of SPECIAL_TOKEN_FIELDS) {
      const value = config[field];
      if (value !== undefined && value !== null && tokenText(value) === undefined) {
        throw new ModelLoadError(
          `${configPath}: ${field} must be a string or an object with a string "content"`,
          configPath,
          field,
        );
      }
    }

    let full: Tokenizer;
    let plain: Tokenizer;
    try {
      full = new Tokenizer(tokenizerJson, config);
      const added = Array.isArray(tokenizerJson['added_tokens']) ? tokenizerJson['added_tokens'] : [];
      const ordinary = added.filter((t: unknown) => !(t as { special?: boolean } | null)?.special);
      plain = new Tokenizer({ ...tokenizerJson, added_tokens: ordinary }, config);
    } catch (err) {
      throw new ModelLoadError(`${tokenizerPath}: cannot build tokenizer: ${errorMessage(err)}`, tokenizerPath);
    }

    const { source, file } = await chatTemplateSource(dir, config, configPath);
    let template: Template | undefined;
    if (source !== undefined) {
      try {
        template = new Template(source);
      } catch (err) {
        throw new ModelLoadError(`${file}: chat_template does not parse: ${errorMessage(err)}`, file, 'chat_template');
      }
    }
    return new TextTokenizer(full, plain, config, template, source, source !== undefined && /\btools\b/.test(source));
  }

  /** Number of id slots (largest id + 1), including added tokens. */
  get vocabSize(): number {
    return this.size;
  }

  get hasChatTemplate(): boolean {
    return this.template !== undefined;
  }

  /** The tokenizer_config.json eos_token text, if any. */
  get eosToken(): string | undefined {
    const v = this.templateTokens['eos_token'];
    return typeof v === 'string' ? v : undefined;
  }

  /** The tokenizer_config.json bos_token text, if any. */
  get bosToken(): string | undefined {
    const v = this.templateTokens['bos_token'];
    return typeof v === 'string' ? v : undefined;
  }

  /** Id of a token string (vocabulary or added token), or undefined. */
  idOf(token: string): number | undefined {
    return this.full.token_to_id(token);
  }

  /** Token string of an id, or undefined. */
  tokenOf(id: number): string | undefined {
    return this.full.id_to_token(id);
  }

  /**
   * Tokenize plain text. Special-token strings in `text` are ordinary text; no BOS/EOS or other
   * post-processor tokens are added.
   */
  encode(text: string): number[] {
    return text.length === 0 ? [] : this.plain.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    if (ids.length === 0) return '';
    return this.full.decode(ids as number[], {
      skip_special_tokens: opts.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: this.cleanUpSpaces,
    });
  }

  /** Render messages with the chat template (tokenizer_config special tokens are in scope). */
  renderChat(messages: readonly ChatMessage[], opts: ChatOptions = {}): string {
    if (!this.template) throw new ChatTemplateError('the tokenizer has no chat_template');
    try {
      return this.template.render({
        ...this.templateTokens,
        ...opts.templateVars,
        messages: messages.map((m) => ({ ...m })),
        add_generation_prompt: opts.addGenerationPrompt ?? true,
      });
    } catch (err) {
      throw new ChatTemplateError(`chat template failed: ${errorMessage(err)}`);
    }
  }

  /**
   * Render and tokenize a chat so that only the template's own markers become special tokens.
   *
   * Message contents: the template is rendered a second time with each content replaced by a
   * unique sentinel. The template text between sentinels is tokenized with special-token
   * matching on; the contents are tokenized as plain text. If the template rewrites contents
   * (e.g. `| trim`), substituting them back does not reproduce the real rendering; the real
   * rendering is then tokenized as a whole, which is safe when no content contains special-token
   * text or when the special tokens found are exactly the template's own; otherwise
   * ChatTemplateError is thrown.
   *
   * Every other string the template may print (tool definitions in `templateVars`, earlier
   * `tool_calls` and their arguments, object keys such as parameter names) has each special-token
   * text replaced by a sentinel before rendering; the sentinels are tokenized as plain text. So
   * `<|im_end|>` in a tool description or in earlier call arguments stays text.
   */
  encodeChat(messages: readonly ChatMessage[], opts: ChatOptions = {}): number[] {
    const prefix = sentinelPrefix(messages, opts.templateVars);
    const escape = this.specialEscaper(prefix);
    const escaped = messages.map((m) => {
      const out: Record<string, unknown> = {};
      for (const [key, value] of Object.entries(m)) out[key] = key === 'content' || key === 'role' ? value : escape(value);
      return out as unknown as ChatMessage;
    });
    const escapedOpts: ChatOptions = { ...opts, ...(opts.templateVars ? { templateVars: escape(opts.templateVars) as Record<string, unknown> } : {}) };
    const rendered = this.renderChat(escaped, escapedOpts);
    const masked = this.renderChat(
      escaped.map((m, i) => ({ ...m, content: `${prefix}${i}\uE001` })),
      escapedOpts,
    );

    const pieces: { text: string; content: boolean }[] = [];
    const re = new RegExp(`${escapeRegExp(prefix)}(\\d+)\uE001`, 'g');
    let last = 0;
    for (const m of masked.matchAll(re)) {
      pieces.push({ text: masked.slice(last, m.index), content: false });
      pieces.push({ text: messages[Number(m[1])]?.content ?? '', content: true });
      last = m.index + m[0].length;
    }
    pieces.push({ text: masked.slice(last), content: false });
    const template = (text: string) => this.encodeTemplateText(text, prefix);

    if (pieces.map((p) => p.text).join('') === rendered) {
      return pieces.flatMap((p) => (p.content ? this.encode(p.text) : template(p.text)));
    }

    const ids = template(rendered);
    const injectable = messages.some((m) => this.specialTexts.some((s) => m.content.includes(s)));
    if (!injectable) return ids;
    const expected = pieces.flatMap((p) => (p.content ? [] : template(p.text)));
    if (sameIds(this.specials(ids), this.specials(expected))) return ids;
    throw new ChatTemplateError(
      'the chat template rewrites message contents and a message contains special-token text; ' +
        'refusing to tokenize it as control tokens',
    );
  }

  /**
   * A stable hash of the vocabulary (every id's token string) and of which ids are special.
   * Equal fingerprints mean token ids mean the same text in both tokenizers.
   */
  fingerprint(): string {
    if (this.fingerprintCache === undefined) {
      const vocab = [...this.full.get_vocab(true)]
        .filter(([token]) => typeof token === 'string')
        .sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
      const specials = [...this.specialTokenIds].sort((a, b) => a - b);
      this.fingerprintCache = createHash('sha256').update(JSON.stringify({ vocab, specials })).digest('hex');
    }
    return this.fingerprintCache;
  }

  /** Tokenize template text: added and special tokens in it are matched. */
  private encodeWithSpecials(text: string): number[] {
    return text.length === 0 ? [] : this.full.encode(text, { add_special_tokens: false }).ids;
  }

  /**
   * A deep copy of a value with every special-token text in its strings and object keys
   * replaced by `${prefix}s${k}\uE001`, k the text's index in specialTexts.
   */
  private specialEscaper(prefix: string): (value: unknown) => unknown {
    if (this.specialTexts.length === 0) return (value) => value;
    const order = this.specialTexts.map((text, k) => ({ text, k })).sort((a, b) => b.text.length - a.text.length);
    const re = new RegExp(order.map((o) => escapeRegExp(o.text)).join('|'), 'g');
    const index = new Map(order.map((o) => [o.text, o.k]));
    const str = (s: string) => s.replace(re, (t) => `${prefix}s${index.get(t)}\uE001`);
    const walk = (value: unknown): unknown => {
      if (typeof value === 'string') return str(value);
      if (Array.isArray(value)) return value.map(walk);
      if (value && typeof value === 'object') {
        const out: Record<string, unknown> = {};
        for (const [key, v] of Object.entries(value)) out[str(key)] = walk(v);
        return out;
      }
      return value;
    };
    return walk;
  }

  /** Template text: special tokens in it are matched, except escaped special-token texts (specialEscaper), which stay text. */
  private encodeTemplateText(text: string, prefix: string): number[] {
    const re = new RegExp(`${escapeRegExp(prefix)}s(\\d+)\uE001`, 'g');
    const ids: number[] = [];
    let last = 0;
    for (const m of text.matchAll(re)) {
      ids.push(...this.encodeWithSpecials(text.slice(last, m.index)), ...this.encode(this.specialTexts[Number(m[1])]!));
      last = m.index + m[0].length;
    }
    ids.push(...this.encodeWithSpecials(text.slice(last)));
    return ids;
  }

  private specials(ids: number[]): number[] {
    return ids.filter((id) => this.specialTokenIds.has(id));
  }
}

/** A sentinel prefix (private-use characters plus a random nonce) found in no message. */
function sentinelPrefix(messages: readonly ChatMessage[], templateVars?: Record<string, unknown>): string {
  const inputs = JSON.stringify([messages, templateVars ?? null]);
  for (;;) {
    const prefix = `\uE000specd-${randomBytes(8).toString('hex')}-`;
    if (!inputs.includes(prefix)) return prefix;
  }
}

/** A special-token value from tokenizer_config.json: a string or an AddedToken-like object. */
function tokenText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return undefined;
}

async function chatTemplateSource(
  dir: string,
  config: Json,
  configPath: string,
): Promise<{ source?: string; file: string }> {
  const value = config['chat_template'];
  if (typeof value === 'string') return { source: value, file: configPath };
  if (Array.isArray(value)) {
    // [{name, template}, ...]: use "default", else the first.
    const named = value as { name?: unknown; template?: unknown }[];
    const entry = named.find((t) => t?.name === 'default') ?? named[0];
    if (typeof entry?.template !== 'string') {
      throw new ModelLoadError(`${configPath}: chat_template list has no usable template`, configPath, 'chat_template');
    }
    return { source: entry.template, file: configPath };
  }
  if (value !== undefined && value !== null) {
    throw new ModelLoadError(`${configPath}: chat_template must be a string or a list`, configPath, 'chat_template');
  }
  const jinjaPath = join(dir, 'chat_template.jinja');
  try {
    return { source: await readFile(jinjaPath, 'utf8'), file: jinjaPath };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { file: configPath };
    throw new ModelLoadError(`${jinjaPath}: cannot read: ${errorMessage(err)}`, jinjaPath);
  }
}

async function readJsonObject(path: string): Promise<Json> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw new ModelLoadError(missing ? `${path} not found` : `${path}: cannot read: ${errorMessage(err)}`, path);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ModelLoadError(`${path} is not valid JSON: ${errorMessage(err)}`, path);
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) {
    throw new ModelLoadError(`${path} must contain a JSON object`, path);
  }
  return value as Json;
}

function sameIds(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
