/**
 * Every JSON Schema keyword is enforced or refused by name (grammar/schema-check.ts), one test
 * per keyword class, with no model: the enforced ones are checked against xgrammar itself (a
 * value that breaks the keyword is refused by the compiled grammar, one that keeps it is
 * accepted), the refused ones name the keyword and where it is.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ANNOTATIONS, ENFORCED_FORMATS, ENFORCED_KEYWORDS, grammarSchema, MAX_ENUM_INTEGERS_WITH_LARGE_NEGATIVES, MAX_INTEGER_RANGE, MIN_INTEGER_BOUND, UNENFORCED_KEYWORDS, unenforcedKeyword } from '../../src/grammar/schema-check.js';
import { loadXGrammar } from '../../src/grammar/xgrammar.js';

const xg = loadXGrammar();

/** Whether the grammar of a checked schema (as the server compiles it) accepts a JSON text. */
async function accepts(schema: object, text: string): Promise<boolean> {
  assert.equal(unenforcedKeyword(schema), undefined, `${JSON.stringify(schema)} is refused`);
  const grammar = await xg.module.Grammar.fromJSONSchema(JSON.stringify(grammarSchema(schema)), false, -1);
  try {
    return await xg.module.Testings.isGrammarAcceptString(grammar, text);
  } finally {
    grammar.dispose();
  }
}

/** Enforced keywords by class: a schema, values that keep it, values that break it (compact JSON as generated). */
const ENFORCED: Record<string, [object, string[], string[]][]> = {
  'types, enum, const': [
    [{ type: ['integer', 'null'] }, ['1', 'null'], ['"x"']],
    [{ enum: ['a', 1] }, ['"a"', '1'], ['"b"']],
    [{ const: 'x' }, ['"x"'], ['"y"']],
  ],
  objects: [
    [{ type: 'object', properties: { a: { type: 'integer' } }, required: ['a'] }, ['{"a": 1}'], ['{}', '{"a": "x"}', '{"a": 1, "b": 2}']],
    [{ type: 'object', additionalProperties: { type: 'integer' }, minProperties: 1, maxProperties: 1 }, ['{"k": 1}'], ['{}', '{"k": "x"}', '{"a": 1, "b": 2}']],
    [{ type: 'object', patternProperties: { '^a': { type: 'integer' } } }, ['{"a": 1}'], ['{"a": "x"}']],
    [{ type: 'object', additionalProperties: { type: 'integer' }, propertyNames: { pattern: '^a$' } }, ['{"a": 1}'], ['{"b": 1}']],
    [{ type: 'object', properties: { a: { type: 'integer' } }, unevaluatedProperties: false }, ['{"a": 1}'], ['{"a": 1, "b": 1}']],
  ],
  arrays: [
    [{ type: 'array', items: { type: 'integer' }, minItems: 1, maxItems: 2 }, ['[1]', '[1, 2]'], ['[]', '[1, 2, 3]', '["x"]']],
    [{ type: 'array', prefixItems: [{ type: 'string' }], items: false }, ['["x"]'], ['[1]', '["x", 1]']],
  ],
  strings: [
    [{ type: 'string', minLength: 2, maxLength: 3 }, ['"ab"', '"abc"'], ['"a"', '"abcd"']],
    [{ type: 'string', pattern: '^[a-z]{2,3}$' }, ['"ab"', '"abc"'], ['"a"', '"abcd"', '"A1"']],
    ...ENFORCED_FORMATS.filter((f) => f === 'date' || f === 'email' || f === 'uuid').map((format): [object, string[], string[]] => [{ type: 'string', format }, [], ['"not one"']]),
  ],
  'integer bounds (rewritten as an enum)': [
    [{ type: 'integer', minimum: 3, maximum: 120 }, ['3', '120'], ['2', '121', '1']],
    [{ type: 'integer', exclusiveMinimum: 3, exclusiveMaximum: 10 }, ['4', '9'], ['3', '10']],
    [{ type: 'integer', minimum: -99, maximum: 1000 }, ['-99', '-5', '0', '1000'], ['-100', '1001', '10000']],
  ],
  'combinations and references': [
    [{ anyOf: [{ type: 'integer' }, { type: 'string' }] }, ['1', '"x"'], ['true']],
    [{ oneOf: [{ type: 'integer' }, { type: 'string' }] }, ['1', '"x"'], ['true']],
    [{ allOf: [{ type: 'integer' }] }, ['1'], ['"x"']],
    [{ $defs: { n: { type: 'integer' } }, type: 'object', properties: { a: { $ref: '#/$defs/n' } }, required: ['a'] }, ['{"a": 1}'], ['{"a": "x"}']],
  ],
};

describe('enforced keywords: the grammar refuses what breaks them', () => {
  for (const [kind, cases] of Object.entries(ENFORCED)) {
    test(kind, async () => {
      for (const [schema, good, bad] of cases) {
        for (const text of good) assert.ok(await accepts(schema, text), `${JSON.stringify(schema)} refuses ${text}`);
        for (const text of bad) assert.ok(!(await accepts(schema, text)), `${JSON.stringify(schema)} accepts ${text}`);
      }
    });
  }

  test('every keyword of the table is in a case above, or an annotation', () => {
    const used = new Set<string>();
    const walk = (v: unknown) => {
      if (v && typeof v === 'object') for (const [k, sub] of Object.entries(v)) (used.add(k), walk(sub));
    };
    walk(ENFORCED);
    for (const keyword of Object.keys(ENFORCED_KEYWORDS)) assert.ok(used.has(keyword) || keyword === 'definitions', `no case for ${keyword}`);
    assert.ok(ANNOTATIONS.includes('description'));
  });
});

describe('refused keywords: a 400 names them', () => {
  const refused = (schema: object) => unenforcedKeyword(schema);

  test('keywords xgrammar accepts but does not enforce, each by name and pointer', () => {
    for (const keyword of Object.keys(UNENFORCED_KEYWORDS)) {
      const problem = refused({ type: 'object', properties: { a: { [keyword]: true } } });
      assert.equal(problem?.keyword, keyword);
      assert.equal(problem?.path, `#/properties/a/${keyword}`);
    }
  });

  test('unknown keywords (typos included) are refused, not ignored', () => {
    assert.deepEqual(refused({ type: 'string', maxLenght: 3 })?.keyword, 'maxLenght');
  });

  test("'required' naming a property 'properties' does not declare", () => {
    const problem = refused({ type: 'object', required: ['a'] });
    assert.equal(problem?.keyword, 'required');
    assert.match(problem!.why, /"a"/);
  });

  test('a length bound beside a pattern (xgrammar drops it)', () => {
    assert.equal(refused({ type: 'string', pattern: '^a+$', maxLength: 3 })?.keyword, 'maxLength');
  });

  test('formats xgrammar does not enforce', () => {
    assert.equal(refused({ type: 'string', format: 'idn-email' })?.keyword, 'format');
    assert.equal(refused({ type: 'string', format: 'date' }), undefined);
  });

  test('oneOf whose branches can overlap; allOf of several schemas; an items list', () => {
    assert.equal(refused({ oneOf: [{ type: 'integer' }, { type: 'number' }] })?.keyword, 'oneOf');
    const tagged = (kind: string) => ({ type: 'object', properties: { kind: { const: kind }, v: { type: 'integer' } }, required: ['kind'] });
    assert.equal(refused({ oneOf: [tagged('a'), tagged('b')] }), undefined, 'a discriminated union is enforced');
    assert.equal(refused({ oneOf: [tagged('a'), tagged('a')] })?.keyword, 'oneOf');
    assert.equal(refused({ allOf: [{ type: 'integer' }, { minimum: 1 }] })?.keyword, 'allOf');
    assert.equal(refused({ type: 'array', items: [{ type: 'integer' }] })?.keyword, 'items');
  });

  test(`number bounds: on non-integers, one-sided, or wider than ${MAX_INTEGER_RANGE} values`, () => {
    assert.equal(refused({ type: 'number', maximum: 1 })?.keyword, 'maximum');
    assert.equal(refused({ type: 'integer', minimum: 0 })?.keyword, 'minimum');
    assert.equal(refused({ type: 'integer', minimum: 0, maximum: MAX_INTEGER_RANGE })?.keyword, 'minimum');
    assert.equal(refused({ type: 'integer', minimum: 0, maximum: MAX_INTEGER_RANGE - 1 }), undefined);
    assert.equal(refused({ type: 'integer', minimum: MIN_INTEGER_BOUND - 1, maximum: 0 })?.keyword, 'minimum');
  });

  test(`an enum of more than ${MAX_ENUM_INTEGERS_WITH_LARGE_NEGATIVES} integers with one below ${MIN_INTEGER_BOUND}: refused, where xgrammar lets other numbers through`, async () => {
    const steps = Array.from({ length: 11 }, (_, i) => -100 + 10 * i);
    const loose = await xg.module.Grammar.fromJSONSchema(JSON.stringify({ enum: steps }), false, -1);
    try {
      assert.equal(await xg.module.Testings.isGrammarAcceptString(loose, '-1000'), true, 'xgrammar still weakens this enum: the refusal may be lifted');
    } finally {
      loose.dispose();
    }
    assert.equal(refused({ enum: steps })?.keyword, 'enum');
    assert.equal(refused({ enum: [...steps.slice(0, 8), 'a'] }), undefined, 'up to the limit is kept');
    const kept = [-104, -103, -102, -101, -100, -99, -98, -97];
    assert.equal(kept.length, MAX_ENUM_INTEGERS_WITH_LARGE_NEGATIVES);
    for (const text of ['-104', '-97']) assert.equal(await accepts({ enum: kept }, text), true, text);
    for (const text of ['-105', '-96', '-1000', '-1001']) assert.equal(await accepts({ enum: kept }, text), false, text);
    assert.equal(refused({ enum: Array.from({ length: 50 }, (_, i) => i) }), undefined, 'non-negative integers are exact');
  });
});

describe('schema keywords constrained decoding would not enforce', () => {
  test('found with their JSON pointer, not inside data or property names', () => {
    assert.deepEqual(unenforcedKeyword({ type: 'object', properties: { n: { type: 'integer', multipleOf: 2 } } }), {
      keyword: 'multipleOf',
      path: '#/properties/n/multipleOf',
      why: 'numbers that are multiples of a value; use an enum',
    });
    assert.equal(unenforcedKeyword({ type: 'object', properties: { not: { type: 'string' }, if: { const: { not: 1 } } } }), undefined);
    assert.equal(unenforcedKeyword({ type: 'array', items: { anyOf: [{ type: 'integer', minimum: 0, maximum: 3 }] } }), undefined);
    assert.equal(unenforcedKeyword({ type: 'array', items: { anyOf: [{ type: 'number', maximum: 3 }] } })?.path, '#/items/anyOf/0/maximum');
    assert.equal(unenforcedKeyword({ $defs: { a: { uniqueItems: true } } })?.path, '#/$defs/a/uniqueItems');
  });
});
