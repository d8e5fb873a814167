/**
 * Which JSON Schema keywords constrained decoding enforces, checked against xgrammar 0.1.27 (a
 * keyword counts as enforced when the grammar accepts values that satisfy it and refuses values
 * that break it). A schema may use only enforced keywords and annotations; any other keyword is
 * refused by name rather than silently dropped (OpenAI's strict mode does the same). docs/api.md
 * has the table.
 *
 * Integer bounds are enforced by rewriting them: xgrammar's own range check is wrong for some
 * bounds (`minimum: 3` lets 2 through, `maximum: 120` lets 121 through), so an integer with both
 * bounds spanning at most MAX_INTEGER_RANGE values becomes an `enum` of those values
 * (`grammarSchema`); other numeric bounds are refused.
 */

/** String formats xgrammar enforces. */
export const ENFORCED_FORMATS = ['date-time', 'date', 'time', 'duration', 'email', 'hostname', 'ipv4', 'ipv6', 'uri', 'uri-reference', 'uri-template', 'uuid', 'json-pointer', 'relative-json-pointer'];

/** Keywords enforced, with what they constrain. */
export const ENFORCED_KEYWORDS: Readonly<Record<string, string>> = {
  type: 'the JSON type (one or a list)',
  enum: 'one of the listed values',
  const: 'exactly the value',
  properties: "the named properties' schemas",
  required: 'properties that must be present (each one declared in properties)',
  additionalProperties: 'other properties (false when absent: only the declared ones)',
  patternProperties: 'properties whose names match a pattern',
  propertyNames: 'a schema for property names',
  unevaluatedProperties: 'properties no other keyword covers',
  minProperties: 'at least so many properties',
  maxProperties: 'at most so many properties',
  items: 'the schema of array items',
  prefixItems: 'the schemas of the first items, in order',
  minItems: 'at least so many items',
  maxItems: 'at most so many items',
  pattern: 'strings matching a regular expression (no lookaround, no backreferences)',
  minLength: 'strings at least so long (not together with pattern)',
  maxLength: 'strings at most so long (not together with pattern)',
  format: `string formats: ${ENFORCED_FORMATS.join(', ')}`,
  anyOf: 'at least one of the subschemas',
  oneOf: 'exactly one of the subschemas, when they cannot overlap (told apart by type or by a required const property)',
  allOf: 'a single subschema',
  $ref: 'a reference to a part of the same schema (#/$defs/...)',
  $defs: 'definitions for $ref',
  definitions: 'definitions for $ref (older name)',
  minimum: 'integers only, with both bounds, from -99, at most 2,048 values apart',
  maximum: 'integers only, with both bounds, from -99, at most 2,048 values apart',
  exclusiveMinimum: 'integers only, with both bounds, from -99, at most 2,048 values apart',
  exclusiveMaximum: 'integers only, with both bounds, from -99, at most 2,048 values apart',
};

/** Keywords that constrain nothing (documentation, defaults): allowed and ignored. */
export const ANNOTATIONS = ['title', 'description', 'default', 'examples', '$schema', '$id', '$comment', 'deprecated', 'readOnly', 'writeOnly', 'discriminator'];

/** Keywords refused, each with what it would have required and what to use instead. */
export const UNENFORCED_KEYWORDS: Readonly<Record<string, string>> = {
  multipleOf: 'numbers that are multiples of a value; use an enum',
  uniqueItems: 'arrays without repeated items',
  contains: 'arrays holding a matching item; use prefixItems',
  minContains: 'arrays holding so many matching items',
  maxContains: 'arrays holding so few matching items',
  not: 'values that do not match a schema',
  if: 'conditional subschemas; use anyOf',
  then: 'conditional subschemas; use anyOf',
  else: 'conditional subschemas; use anyOf',
  dependentRequired: 'properties required by other properties; use anyOf',
  dependentSchemas: 'subschemas applied by other properties; use anyOf',
  dependencies: 'properties required by other properties; use anyOf',
  unevaluatedItems: 'items no other keyword covers; use items',
  additionalItems: 'items after a tuple (an older keyword); use prefixItems and items',
  contentEncoding: 'encoded string content; use pattern',
  contentMediaType: 'string content of a media type; use pattern',
  contentSchema: 'string content valid against a schema',
  $anchor: 'named anchors; use $defs and $ref',
  $dynamicRef: 'dynamic references; use $ref',
  $dynamicAnchor: 'dynamic anchors; use $defs and $ref',
  $recursiveRef: 'recursive references; use $ref',
  $recursiveAnchor: 'recursive anchors; use $defs and $ref',
  $vocabulary: 'vocabularies',
  nullable: 'null allowed too (an OpenAPI keyword xgrammar ignores); use "type": [..., "null"]',
};

/** Integer bounds become an enum of at most this many values (an enum of 2,048 integers compiles in ~0.4 s). */
export const MAX_INTEGER_RANGE = 2048;
/**
 * The lowest lower bound rewritten: xgrammar 0.1.27 lets other numbers through an enum of
 * a few hundred integers that holds negatives of three digits or more (-100..100 accepts 1000),
 * while -99..1948 and 0..1499 are exact.
 */
export const MIN_INTEGER_BOUND = -99;
/**
 * The most integers a user's `enum` may list when one of them is below MIN_INTEGER_BOUND:
 * xgrammar 0.1.27 lets other numbers through longer such lists ([-100, -90, ..., 0] accepts
 * -1000; -110..-90 accepts -111), while lists of up to 9 were exact in every case tried.
 */
export const MAX_ENUM_INTEGERS_WITH_LARGE_NEGATIVES = 8;

const NUMBER_BOUNDS = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'];

/** Keywords whose value is a map of name -> subschema. */
const SCHEMA_MAPS = ['properties', 'patternProperties', '$defs', 'definitions'];
/** Keywords whose value is a subschema. */
const SCHEMA_VALUES = ['items', 'additionalProperties', 'propertyNames', 'unevaluatedProperties'];
/** Keywords whose value is a list of subschemas. */
const SCHEMA_LISTS = ['anyOf', 'oneOf', 'allOf', 'prefixItems'];

export interface SchemaProblem {
  keyword: string;
  /** JSON pointer of the keyword (`#/properties/total/multipleOf`). */
  path: string;
  /** What it would have required, and what to use instead. */
  why: string;
}

/**
 * The first keyword in `schema` that constrained decoding cannot enforce, with its JSON pointer;
 * undefined when there is none. Values of `const`, `enum`, `default` and `examples` are data
 * and are not looked into.
 */
export function unenforcedKeyword(schema: unknown, path = '#'): SchemaProblem | undefined {
  if (!schema || typeof schema !== 'object' || Array.isArray(schema)) return undefined;
  const s = schema as Record<string, unknown>;
  for (const keyword of Object.keys(s)) {
    const at = `${path}/${escapePointer(keyword)}`;
    if (Object.hasOwn(UNENFORCED_KEYWORDS, keyword)) return { keyword, path: at, why: UNENFORCED_KEYWORDS[keyword]! };
    if (!Object.hasOwn(ENFORCED_KEYWORDS, keyword) && !ANNOTATIONS.includes(keyword)) {
      return { keyword, path: at, why: 'a keyword constrained decoding does not know, so it would be ignored' };
    }
  }
  const problem = keywordUseProblem(s, path);
  if (problem) return problem;
  for (const key of SCHEMA_MAPS) {
    const map = s[key];
    if (!map || typeof map !== 'object') continue;
    for (const [name, sub] of Object.entries(map)) {
      const found = unenforcedKeyword(sub, `${path}/${key}/${escapePointer(name)}`);
      if (found) return found;
    }
  }
  for (const key of SCHEMA_VALUES) {
    if (key === 'items' && Array.isArray(s[key])) return { keyword: 'items', path: `${path}/items`, why: 'a list of item schemas (an older form); use prefixItems' };
    const found = unenforcedKeyword(s[key], `${path}/${key}`);
    if (found) return found;
  }
  for (const key of SCHEMA_LISTS) {
    const list = s[key];
    if (!Array.isArray(list)) continue;
    for (const [i, sub] of list.entries()) {
      const found = unenforcedKeyword(sub, `${path}/${key}/${i}`);
      if (found) return found;
    }
  }
  return undefined;
}

/** Keywords that are enforced only in some uses: required, format, oneOf, allOf, number bounds. */
function keywordUseProblem(s: Record<string, unknown>, path: string): SchemaProblem | undefined {
  if (Array.isArray(s['required'])) {
    const declared = s['properties'] && typeof s['properties'] === 'object' ? Object.keys(s['properties']) : [];
    const missing = s['required'].find((name) => typeof name !== 'string' || !declared.includes(name));
    if (missing !== undefined) {
      return { keyword: 'required', path: `${path}/required`, why: `property ${JSON.stringify(missing)} to be present, which 'properties' does not declare; declare it in 'properties'` };
    }
  }
  if (s['format'] !== undefined && !ENFORCED_FORMATS.includes(s['format'] as string)) {
    return { keyword: 'format', path: `${path}/format`, why: `strings of format ${JSON.stringify(s['format'])}, which is not enforced; enforced formats: ${ENFORCED_FORMATS.join(', ')}; or use pattern` };
  }
  const length = ['minLength', 'maxLength'].find((k) => s[k] !== undefined);
  if (length !== undefined && s['pattern'] !== undefined) {
    return { keyword: length, path: `${path}/${length}`, why: 'a length bound beside a pattern, which xgrammar drops; put the length in the pattern (e.g. ^[a-z]{2,3}$)' };
  }
  if (Array.isArray(s['allOf']) && s['allOf'].length > 1) {
    return { keyword: 'allOf', path: `${path}/allOf`, why: 'values matching several schemas at once; merge them into one schema' };
  }
  if (Array.isArray(s['oneOf']) && !disjoint(s['oneOf'])) {
    return { keyword: 'oneOf', path: `${path}/oneOf`, why: 'values matching exactly one of subschemas that can overlap; use anyOf, or tell the subschemas apart by type or by a required const property' };
  }
  if (Array.isArray(s['enum'])) {
    const integers = s['enum'].filter((v): v is number => Number.isInteger(v));
    if (integers.length > MAX_ENUM_INTEGERS_WITH_LARGE_NEGATIVES && integers.some((v) => v < MIN_INTEGER_BOUND)) {
      return {
        keyword: 'enum',
        path: `${path}/enum`,
        why: `one of ${integers.length} integers, some below ${MIN_INTEGER_BOUND}, which xgrammar does not enforce exactly (other numbers get through); list at most ${MAX_ENUM_INTEGERS_WITH_LARGE_NEGATIVES} such integers, or use strings`,
      };
    }
  }
  const bound = NUMBER_BOUNDS.find((k) => s[k] !== undefined);
  if (bound !== undefined && integerRange(s) === undefined) {
    return {
      keyword: bound,
      path: `${path}/${bound}`,
      why: `bounds on numbers, which are enforced only on an "integer" with a lower bound of at least ${MIN_INTEGER_BOUND} and an upper bound at most ${MAX_INTEGER_RANGE} values above it; use such an integer or an enum`,
    };
  }
  return undefined;
}

/** Whether no value can match two of the subschemas: they differ in type, or in the const of a property they all require. */
function disjoint(branches: unknown[]): boolean {
  const objects = branches.filter((b): b is Record<string, unknown> => !!b && typeof b === 'object' && !Array.isArray(b));
  if (objects.length !== branches.length) return false;
  const types = objects.map((b) => b['type']);
  if (types.every((t) => typeof t === 'string')) {
    const set = new Set(types as string[]);
    if (set.size === types.length && !(set.has('integer') && set.has('number'))) return true;
  }
  const first = objects[0]?.['properties'];
  if (!first || typeof first !== 'object') return false;
  return Object.keys(first).some((name) => {
    const consts = objects.map((b) => {
      const prop = (b['properties'] as Record<string, { const?: unknown }> | undefined)?.[name];
      const required = Array.isArray(b['required']) && b['required'].includes(name);
      return required && prop && typeof prop === 'object' && 'const' in prop ? JSON.stringify(prop.const) : undefined;
    });
    return consts.every((c) => c !== undefined) && new Set(consts).size === consts.length;
  });
}

/** The integers an integer schema's bounds allow, when it has both and they span at most MAX_INTEGER_RANGE values. */
function integerRange(s: Record<string, unknown>): { lo: number; hi: number } | undefined {
  if (s['type'] !== 'integer') return undefined;
  const num = (k: string) => (typeof s[k] === 'number' && Number.isFinite(s[k]) ? (s[k] as number) : undefined);
  const lows = [num('minimum') !== undefined ? Math.ceil(num('minimum')!) : undefined, num('exclusiveMinimum') !== undefined ? Math.floor(num('exclusiveMinimum')!) + 1 : undefined].filter((v) => v !== undefined);
  const highs = [num('maximum') !== undefined ? Math.floor(num('maximum')!) : undefined, num('exclusiveMaximum') !== undefined ? Math.ceil(num('exclusiveMaximum')!) - 1 : undefined].filter((v) => v !== undefined);
  if (lows.length === 0 || highs.length === 0) return undefined;
  const lo = Math.max(...lows);
  const hi = Math.min(...highs);
  if (hi - lo + 1 > MAX_INTEGER_RANGE || lo < MIN_INTEGER_BOUND || !Number.isSafeInteger(hi)) return undefined;
  return { lo, hi };
}

/**
 * The schema xgrammar compiles for a checked schema (`unenforcedKeyword` found nothing): bounded
 * integers become enums of their values (an empty range, an enum that admits nothing).
 */
export function grammarSchema(schema: unknown): unknown {
  if (!schema || typeof schema !== 'object') return schema;
  if (Array.isArray(schema)) return schema.map(grammarSchema);
  const s = schema as Record<string, unknown>;
  const range = integerRange(s);
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(s)) {
    if (range && NUMBER_BOUNDS.includes(key)) continue;
    out[key] = key === 'enum' || key === 'const' || key === 'default' || key === 'examples' ? value : grammarSchema(value);
  }
  if (range) {
    delete out['type'];
    out['enum'] = Array.from({ length: range.hi - range.lo + 1 }, (_, i) => range.lo + i).filter((v) => !Array.isArray(s['enum']) || s['enum'].includes(v));
  }
  return out;
}

/** RFC 6901: "~" and "/" in a name. */
function escapePointer(name: string): string {
  return name.replace(/~/g, '~0').replace(/\//g, '~1');
}
