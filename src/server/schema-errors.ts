/**
 * Turns ajv's schema validation errors into OpenAI-shaped 400s that name the parameter at
 * fault in OpenAI's notation (`messages[0].content`, `stop`, `speculative.k`).
 */
import type { FastifySchemaValidationError } from 'fastify';
import { ApiError, apiErrors } from './errors.js';

/** ajv's error object with `verbose: true` (the schema and data at the failing place). */
interface VerboseError extends FastifySchemaValidationError {
  parentSchema?: { description?: string };
  data?: unknown;
}

/** ajv options for the request schemas: no type coercion, no silent rewriting of the body. */
export const AJV_OPTIONS = {
  coerceTypes: false,
  removeAdditional: false,
  useDefaults: false,
  allErrors: false,
  allowUnionTypes: true,
  verbose: true,
} as const;

/** fastify's `schemaErrorFormatter`. */
export function formatSchemaErrors(errors: FastifySchemaValidationError[]): ApiError {
  const error = pickError(errors as VerboseError[]);
  if (!error) return apiErrors.badBody('The request body is not valid.');
  const segments = pointerSegments(error.instancePath);
  const params = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case 'required':
      return apiErrors.missing(paramName([...segments, String(params.missingProperty)]));
    case 'additionalProperties':
      return apiErrors.invalidValue(paramName([...segments, String(params.additionalProperty)]), `Unknown parameter: '${paramName([...segments, String(params.additionalProperty)])}'.`, 'unknown_parameter');
  }
  if (segments.length === 0) return apiErrors.badBody('The request body must be a JSON object.');
  const param = paramName(segments);
  switch (error.keyword) {
    case 'type':
      return apiErrors.invalidType(param, describeTypes(String(params.type)));
    case 'anyOf':
    case 'oneOf':
      return apiErrors.invalidType(param, error.parentSchema?.description ?? 'another type');
    case 'minItems':
    case 'maxItems': {
      const count = Array.isArray(error.data) ? `, got ${error.data.length}` : '';
      return apiErrors.invalidValue(param, `Invalid '${param}': expected ${error.keyword === 'minItems' ? 'at least' : 'at most'} ${params.limit} item(s)${count}.`);
    }
    case 'propertyNames':
    case 'pattern':
      return apiErrors.invalidValue(param, `Invalid '${param}': keys must be token ids (decimal integers).`);
    default:
      return apiErrors.invalidValue(param, `Invalid '${param}': ${error.message ?? 'invalid value'}${gotValue(error)}.`);
  }
}

/**
 * The error that says most: the deepest place in the body (a missing or unknown property counts
 * one level below its object); at equal depth a branch of an `anyOf` whose type matched and
 * whose value did not (17 stop strings: the array branch's `maxItems`), then the `anyOf` itself
 * (whose description says what is expected), then the branches' type mismatches.
 */
function pickError(errors: VerboseError[]): VerboseError | undefined {
  const depth = (e: VerboseError) => pointerSegments(e.instancePath).length + (e.keyword === 'required' || e.keyword === 'additionalProperties' ? 1 : 0);
  const says = (e: VerboseError) => (e.keyword === 'type' ? 0 : e.keyword === 'anyOf' || e.keyword === 'oneOf' ? 1 : 2);
  let best: VerboseError | undefined;
  for (const e of errors) {
    if (!best || depth(e) > depth(best) || (depth(e) === depth(best) && says(e) > says(best))) best = e;
  }
  return best;
}

function pointerSegments(pointer: string): string[] {
  if (!pointer) return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

/** `["messages", "0", "content"]` -> `messages[0].content`. */
export function paramName(segments: string[]): string {
  let out = '';
  for (const s of segments) out += /^\d+$/.test(s) ? `[${s}]` : out ? `.${s}` : s;
  return out;
}

function describeTypes(types: string): string {
  const names: Record<string, string> = { integer: 'an integer', number: 'a number', string: 'a string', boolean: 'a boolean', object: 'an object', array: 'an array', null: 'null' };
  return types
    .split(',')
    .map((t) => names[t] ?? t)
    .join(' or ');
}

function gotValue(error: VerboseError): string {
  const v = error.data;
  return typeof v === 'number' || typeof v === 'boolean' ? `, got ${v}` : '';
}
