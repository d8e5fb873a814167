/**
 * Size and shape bounds on a JSON schema, checked before it is compiled: they bound the time and
 * memory a compile takes, and keep out schemas xgrammar (0.1.27, WebAssembly) faults on.
 *
 * - Nesting: at most MAX_SCHEMA_DEPTH levels of objects and arrays in the schema's JSON text
 *   (xgrammar faults with "memory access out of bounds" at about 75 nested `items`).
 * - OpenAI's structured-outputs limits (platform.openai.com/docs/guides/structured-outputs,
 *   "Supported schemas"): at most 1,000 enum values and 120,000 characters of property names,
 *   definition names, enum and const string values in all; object properties at most 1,000
 *   (OpenAI allows 5,000, but xgrammar's compile time grows with the square of an object's
 *   optional properties: 5,000 take 20 s on one core). A schema at these limits compiles in
 *   about a second on one core; the compile runs on an engine worker's thread.
 * - `$ref`: only local references (`#`, `#/$defs/...`), each pointing to a part of the schema.
 */

/** Levels of nested objects and arrays in a schema's JSON. */
export const MAX_SCHEMA_DEPTH = 48;
/** Object properties across the schema (OpenAI: 5,000; see above). */
export const MAX_SCHEMA_PROPERTIES = 1000;
/** Enum values across the schema (OpenAI: 1,000). */
export const MAX_SCHEMA_ENUM_VALUES = 1000;
/** Characters of property and definition names, enum and const strings across the schema (OpenAI: 120,000). */
export const MAX_SCHEMA_STRING_CHARS = 120_000;

/** Keywords whose value is a map of name -> subschema (the names count towards the characters). */
const NAMED_SCHEMAS = ['properties', '$defs', 'definitions', 'patternProperties'];

/**
 * Why `schema` is beyond the bounds above, or undefined when it is within them.
 * Walks iteratively: any depth of nesting is measured without recursion.
 * @returns a sentence naming the bound and where it is passed (a JSON pointer)
 */
export function schemaLimitProblem(schema: unknown): string | undefined {
  let properties = 0;
  let enumValues = 0;
  let chars = 0;
  const refs: { ref: string; at: string }[] = [];
  const stack: { value: unknown; path: string; depth: number }[] = [{ value: schema, path: '#', depth: 1 }];
  while (stack.length > 0) {
    const { value, path, depth } = stack.pop()!;
    if (!value || typeof value !== 'object') continue;
    if (depth > MAX_SCHEMA_DEPTH) return `it nests objects and arrays more than ${MAX_SCHEMA_DEPTH} levels deep (at ${shortPointer(path)})`;
    if (Array.isArray(value)) {
      value.forEach((item, i) => stack.push({ value: item, path: `${path}/${i}`, depth: depth + 1 }));
      continue;
    }
    const s = value as Record<string, unknown>;
    for (const key of NAMED_SCHEMAS) {
      const map = s[key];
      if (!map || typeof map !== 'object' || Array.isArray(map)) continue;
      const names = Object.keys(map);
      if (key === 'properties') properties += names.length;
      for (const name of names) chars += name.length;
    }
    if (Array.isArray(s['enum'])) {
      enumValues += s['enum'].length;
      for (const v of s['enum']) if (typeof v === 'string') chars += v.length;
    }
    if (typeof s['const'] === 'string') chars += s['const'].length;
    if (typeof s['$ref'] === 'string') refs.push({ ref: s['$ref'], at: `${path}/$ref` });
    if (properties > MAX_SCHEMA_PROPERTIES) return `it has more than ${MAX_SCHEMA_PROPERTIES} object properties`;
    if (enumValues > MAX_SCHEMA_ENUM_VALUES) return `it has more than ${MAX_SCHEMA_ENUM_VALUES} enum values`;
    if (chars > MAX_SCHEMA_STRING_CHARS) return `its property names, definition names, enum and const strings come to more than ${MAX_SCHEMA_STRING_CHARS} characters`;
    for (const [key, sub] of Object.entries(s)) {
      // enum and const are data: counted above, not walked for refs (but their nesting counts).
      if (key === 'enum' || key === 'const' || key === 'default' || key === 'examples') {
        if (jsonDepth(sub, MAX_SCHEMA_DEPTH - depth + 1) > MAX_SCHEMA_DEPTH - depth) return `it nests objects and arrays more than ${MAX_SCHEMA_DEPTH} levels deep (at ${path}/${key})`;
        continue;
      }
      stack.push({ value: sub, path: `${path}/${escapePointer(key)}`, depth: depth + 1 });
    }
  }
  for (const { ref, at } of refs) {
    if (!ref.startsWith('#')) return `the $ref at ${at} points outside the schema (${JSON.stringify(ref)}); only local references ("#/$defs/...") are supported`;
    if (resolvePointer(schema, ref.slice(1)) === undefined) return `the $ref at ${at} points to nothing (${JSON.stringify(ref)})`;
  }
  return undefined;
}

/** Levels of nested objects and arrays in `value`, counted up to `cap + 1`. */
function jsonDepth(value: unknown, cap: number): number {
  if (!value || typeof value !== 'object') return 0;
  if (cap <= 0) return 1;
  let deepest = 0;
  for (const v of Object.values(value)) deepest = Math.max(deepest, jsonDepth(v, cap - 1));
  return deepest + 1;
}

/** The value at a JSON pointer (RFC 6901, without the leading "#"), or undefined. */
function resolvePointer(root: unknown, pointer: string): unknown {
  if (pointer === '') return root;
  if (!pointer.startsWith('/')) return undefined;
  let at: unknown = root;
  for (const raw of pointer.slice(1).split('/')) {
    const part = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    if (!at || typeof at !== 'object' || !Object.hasOwn(at, part)) return undefined;
    at = (at as Record<string, unknown>)[part];
  }
  return at;
}

/** A JSON pointer cut to its first and last parts when long. */
function shortPointer(path: string): string {
  const parts = path.split('/');
  return parts.length <= 8 ? path : `${parts.slice(0, 4).join('/')}/.../${parts.slice(-3).join('/')}`;
}

/** RFC 6901: "~" and "/" in a name. */
function escapePointer(name: string): string {
  return name.replace(/~/g, '~0').replace(/\//g, '~1');
}
