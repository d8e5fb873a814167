/**
 * JSON Schema keywords xgrammar accepts but does not enforce (checked against xgrammar 0.1.27:
 * output that breaks them is generated), and number bounds, which it enforces exactly on
 * integers only. A schema using one is refused rather than answered with output that might not
 * validate. xgrammar reports most other problems itself (compiler.ts).
 */

/** Keywords refused, each with what it would have required. */
export const UNENFORCED_KEYWORDS: Readonly<Record<string, string>> = {
  multipleOf: 'numbers that are multiples of a value',
  uniqueItems: 'arrays without repeated items',
  not: 'values that do not match a schema',
  if: 'conditional subschemas',
  then: 'conditional subschemas',
  else: 'conditional subschemas',
  dependentRequired: 'properties required by other properties',
  dependentSchemas: 'subschemas applied by other properties',
  dependencies: 'properties required by other properties',
};

/** Bounds xgrammar enforces on integers only: on other numbers it bounds the integer part (maximum 1 lets 1.75 through). */
const NUMBER_BOUNDS = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'];

/** Keywords whose value is a map of name -> subschema. */
const SCHEMA_MAPS = ['properties', 'patternProperties', '$defs', 'definitions'];
/** Keywords whose value is a subschema. */
const SCHEMA_VALUES = ['items', 'additionalProperties', 'contains', 'propertyNames', 'unevaluatedProperties', 'unevaluatedItems', 'additionalItems'];
/** Keywords whose value is a list of subschemas. */
const SCHEMA_LISTS = ['anyOf', 'oneOf', 'allOf', 'prefixItems', 'items'];

/**
 * The first keyword in `schema` that constrained decoding cannot enforce, with its JSON pointer
 * (`#/properties/total/multipleOf`); undefined when there is none. Values of `const`, `enum`,
 * `default` and `examples` are data and are not looked into.
 */
export function unenforcedKeyword(schema: unknown, path = '#'): { keyword: string; path: string; why: string } | undefined {
  if (!schema || typeof schema !== 'object' || Array.isArray(schema)) return undefined;
  const s = schema as Record<string, unknown>;
  for (const keyword of Object.keys(s)) {
    if (Object.hasOwn(UNENFORCED_KEYWORDS, keyword)) return { keyword, path: `${path}/${keyword}`, why: UNENFORCED_KEYWORDS[keyword]! };
    if (NUMBER_BOUNDS.includes(keyword) && s['type'] !== 'integer') {
      return { keyword, path: `${path}/${keyword}`, why: 'bounds on non-integer numbers, which are enforced on their integer part only; bound an "integer" instead' };
    }
  }
  for (const key of SCHEMA_MAPS) {
    const map = s[key];
    if (!map || typeof map !== 'object') continue;
    for (const [name, sub] of Object.entries(map)) {
      const found = unenforcedKeyword(sub, `${path}/${key}/${escapePointer(name)}`);
      if (found) return found;
    }
  }
  for (const key of SCHEMA_VALUES) {
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

/** RFC 6901: "~" and "/" in a name. */
function escapePointer(name: string): string {
  return name.replace(/~/g, '~0').replace(/\//g, '~1');
}
