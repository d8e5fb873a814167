/**
 * Grammars a client can send to hurt the server, on a real port with one engine worker: every
 * schema xgrammar refuses or faults on (a broken regex, a lookahead, a `$ref` to nothing, a
 * `$ref` that only leads back to itself, deep nesting, schemas beyond the size bounds) is sent
 * twice, on chat and on the Responses API, and each send gets the same 400 naming the
 * parameter; then a normal structured request completes. Below the server: the grammar
 * compiler moves to a fresh xgrammar instance after a fault and past its memory budget, while
 * matchers built before go on working.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import OpenAI, { APIError } from 'openai';
import { ModelPair } from '../../src/pair/model-pair.js';
import { GrammarCompiler, GrammarError } from '../../src/grammar/compiler.js';
import { MAX_SCHEMA_DEPTH, MAX_SCHEMA_ENUM_VALUES, MAX_SCHEMA_PROPERTIES, MAX_SCHEMA_STRING_CHARS } from '../../src/grammar/schema-limits.js';
import { buildApp } from '../../src/server/app.js';

const MODEL = 'specd-pair-target';
/** A hang fails the test instead of holding it: every call gives up after this long. */
const CLIENT_TIMEOUT_MS = 30_000;

function nested(levels: number): object {
  let schema: object = { type: 'integer' };
  for (let i = 1; i < levels; i++) schema = { type: 'array', items: schema };
  return schema;
}

/** Schemas that stopped or broke the engine before, with what the 400 must say. */
const HOSTILE: { name: string; schema: object; message: RegExp }[] = [
  { name: 'an unclosed regex group', schema: { type: 'string', pattern: '([a-z' }, message: /Unclosed/ },
  { name: 'a lookahead', schema: { type: 'string', pattern: '(?=a)b' }, message: /Lookahead/ },
  { name: 'a $ref to a missing definition', schema: { type: 'object', properties: { a: { $ref: '#/$defs/missing' } } }, message: /points to nothing/ },
  { name: 'a $ref that only refers to itself', schema: { $defs: { loop: { $ref: '#/$defs/loop' } }, $ref: '#/$defs/loop' }, message: /admits no output/ },
  { name: '75 nested arrays', schema: nested(75), message: /levels deep/ },
  { name: 'too many enum values', schema: { enum: Array.from({ length: MAX_SCHEMA_ENUM_VALUES + 1 }, (_, i) => i) }, message: /enum values/ },
  {
    name: 'too many properties',
    schema: { type: 'object', properties: Object.fromEntries(Array.from({ length: MAX_SCHEMA_PROPERTIES + 1 }, (_, i) => [`p${i}`, { type: 'integer' }])) },
    message: /object properties/,
  },
  { name: 'too many enum characters', schema: { enum: ['x'.repeat(MAX_SCHEMA_STRING_CHARS + 1)] }, message: /characters/ },
];

describe('hostile grammars on a one-worker server', () => {
  let app: FastifyInstance;
  let client: OpenAI;

  before(async () => {
    app = await buildApp({ workers: 1, maxQueue: 16, bodyLimit: 8 * 1024 * 1024 });
    await app.specd.engine.ready;
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: CLIENT_TIMEOUT_MS });
  });
  after(() => app?.close());

  const chat = (schema: object) =>
    client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'x' }],
      max_tokens: 4,
      response_format: { type: 'json_schema', json_schema: { name: 'p', schema: schema as Record<string, unknown> } },
    });
  const responses = (schema: object) =>
    client.responses.create({ model: MODEL, input: 'x', max_output_tokens: 4, text: { format: { type: 'json_schema', name: 'p', schema: schema as Record<string, unknown> } } });

  async function refusal(send: () => Promise<unknown>): Promise<APIError> {
    try {
      await send();
    } catch (err) {
      if (err instanceof APIError) return err;
      throw err;
    }
    assert.fail('the request was answered');
  }

  test(`5,000 nested arrays (sent as JSON text, which the openai client cannot encode): the same 400 twice`, async () => {
    const deep = `${'{"type":"array","items":'.repeat(4999)}{"type":"integer"}${'}'.repeat(4999)}`;
    const body = `{"model":"${MODEL}","messages":[{"role":"user","content":"x"}],"max_tokens":4,"response_format":{"type":"json_schema","json_schema":{"name":"p","schema":${deep}}}}`;
    const texts: string[] = [];
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${client.baseURL}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(CLIENT_TIMEOUT_MS) });
      const json = (await res.json()) as { error: { param: string; message: string } };
      assert.equal(res.status, 400, json.error.message);
      assert.equal(json.error.param, 'response_format.json_schema.schema');
      assert.match(json.error.message, /levels deep/);
      texts.push(json.error.message);
    }
    assert.equal(texts[1], texts[0]);
  });

  for (const { name, schema, message } of HOSTILE) {
    test(`${name}: the same 400 twice on chat, then on the Responses API`, async () => {
      const first = await refusal(() => chat(schema));
      const second = await refusal(() => chat(schema));
      for (const err of [first, second]) {
        assert.equal(err.status, 400, err.message);
        assert.equal(err.param, 'response_format.json_schema.schema');
        assert.match(err.message, message);
      }
      assert.equal(second.message, first.message);
      for (let i = 0; i < 2; i++) {
        const err = await refusal(() => responses(schema));
        assert.equal(err.status, 400, err.message);
        assert.equal(err.param, 'text.format.schema');
        assert.match(err.message, message);
      }
    });
  }

  test('afterwards a structured request and a plain one complete', async () => {
    const res = await chat({ type: 'object', properties: { n: { type: 'integer' } }, required: ['n'], additionalProperties: false });
    assert.equal(typeof res.choices[0]!.message.content, 'string');
    const json = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 12, response_format: { type: 'json_object' } });
    assert.ok(json.choices[0]!.message.content!.startsWith('{'));
    const plain = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 8 });
    assert.ok(plain.choices[0]!.message.content!.length > 0);
    const health = await fetch(new URL('/health', client.baseURL.replace(/\/v1$/, '')));
    assert.equal(health.status, 200);
  });
});

describe('grammar compiler isolation', () => {
  let pair: ModelPair;
  before(async () => {
    pair = await ModelPair.load({ head: null });
  });
  after(() => pair?.release());

  const bad = { type: 'json_schema', schema: JSON.stringify({ type: 'string', pattern: '([a-z' }) } as const;
  const good = { type: 'json_schema', schema: JSON.stringify({ type: 'object', properties: { a: { type: 'integer' } }, required: ['a'] }) } as const;

  test('a fault moves later grammars to a fresh instance; matchers built before go on; the failure is remembered', async () => {
    const grammars = await GrammarCompiler.forModelDir(pair.targetDir!, pair.target.info.vocabSize, pair.target.info.eosTokenIds);
    const before = await grammars.constraint(good);
    await before.prepare([]);
    await assert.rejects(grammars.compile(bad), (err: Error) => err instanceof GrammarError && /Unclosed/.test(err.message));
    assert.equal(grammars.instancesStarted, 1);
    const after = await grammars.constraint(good);
    assert.equal(grammars.instancesStarted, 2, 'the next grammar compiled in a fresh instance');
    await after.prepare([]);
    await before.prepare([]);
    const brace = pair.tokenizer.encode('{')[0];
    assert.equal(before.forcedToken([]), brace);
    assert.equal(after.forcedToken([]), brace);
    // Sent again, the same error, without compiling (no instance spent on it).
    await assert.rejects(grammars.compile(bad), (err: Error) => err instanceof GrammarError && /Unclosed/.test(err.message));
    await grammars.constraint({ type: 'json_object' });
    assert.equal(grammars.instancesStarted, 2);
    before.release();
    after.release();
  });

  test('past its memory budget an instance takes no more grammars; its matchers still work', async () => {
    const grammars = await GrammarCompiler.forModelDir(pair.targetDir!, pair.target.info.vocabSize, pair.target.info.eosTokenIds, { memoryBudgetBytes: 1 });
    const first = await grammars.constraint(good);
    assert.equal(grammars.cached, 0, 'over budget: the cache was emptied');
    const second = await grammars.constraint(good);
    assert.equal(grammars.instancesStarted, 2);
    for (const c of [first, second]) {
      await c.prepare([]);
      assert.equal(c.forcedToken([]), pair.tokenizer.encode('{')[0]);
      c.release();
    }
  });

  test(`schemas up to ${MAX_SCHEMA_DEPTH} levels deep compile`, async () => {
    const grammars = await pair.grammars();
    await grammars.compile({ type: 'json_schema', schema: JSON.stringify(nested(MAX_SCHEMA_DEPTH)) });
  });
});
