/**
 * `response_format` (OpenAI's structured outputs) as a grammar for the engine:
 * `{"type": "text"}` (none), `{"type": "json_object"}` (any JSON object) and
 * `{"type": "json_schema", "json_schema": {name, schema, strict, description}}` (a JSON document
 * valid against `schema`). Checked here on the main thread: the shape, the name, and schema
 * keywords constrained decoding cannot enforce (grammar/schema-check.ts); what xgrammar itself
 * cannot compile is refused by the engine worker with its reason, also as a 400.
 */
import type { GrammarSpec } from '../grammar/compiler.js';
import { schemaLimitProblem } from '../grammar/schema-limits.js';
import { grammarSchema, unenforcedKeyword } from '../grammar/schema-check.js';
import { apiErrors } from './errors.js';

/** A grammar and the request parameter it came from (named by errors about it). */
export interface RequestGrammar {
  spec: GrammarSpec;
  param: string;
}

/** OpenAI's rule for `json_schema.name`. */
const SCHEMA_NAME = /^[a-zA-Z0-9_-]{1,64}$/;
/** The fields of OpenAI's `response_format`, of its `json_schema`, and of the Responses API's `text.format` (the two flattened). */
const FORMAT_FIELDS = ['type', 'json_schema'];
const JSON_SCHEMA_FIELDS = ['name', 'schema', 'strict', 'description'];
const TEXT_FORMAT_FIELDS = ['type', ...JSON_SCHEMA_FIELDS];

/**
 * @throws ApiError (400 unsupported_parameter) naming the first field of `value` outside `fields`
 *   (e.g. a `grammar` beside a schema), which would otherwise be dropped without a word
 */
function onlyFields(value: object, fields: readonly string[], param: string): void {
  const extra = Object.keys(value).find((key) => !fields.includes(key));
  if (extra !== undefined) throw apiErrors.unsupported(`${param}.${extra}`, `'${param}' has the fields ${fields.map((f) => `'${f}'`).join(', ')}; a grammar of your own is not accepted (describe the output with a JSON schema).`);
}

/**
 * The grammar of a `response_format` value; undefined for none or `text`.
 * @throws ApiError (400) naming the part of `response_format` at fault
 */
export function responseFormatGrammar(value: unknown, param = 'response_format', fields: readonly string[] = FORMAT_FIELDS): RequestGrammar | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'object' || Array.isArray(value)) throw apiErrors.invalidType(param, 'an object');
  const format = value as { type?: unknown; json_schema?: unknown };
  onlyFields(format, fields, param);
  switch (format.type) {
    case 'text':
      return undefined;
    case 'json_object':
      return { spec: { type: 'json_object' }, param };
    case 'json_schema':
      return { spec: { type: 'json_schema', schema: JSON.stringify(grammarSchema(checkJsonSchema(format.json_schema, `${param}.json_schema`))) }, param: `${param}.json_schema.schema` };
    case undefined:
      throw apiErrors.missing(`${param}.type`);
    default:
      throw apiErrors.invalidValue(`${param}.type`, `Invalid value for '${param}.type': ${JSON.stringify(format.type)}. Supported values are: 'text', 'json_object' and 'json_schema'.`);
  }
}

/**
 * The Responses API's `text.format` as a grammar: `{type: "text"}` (none), `{type:
 * "json_object"}`, or `{type: "json_schema", name, schema, strict}` (chat's `json_schema` object
 * flattened into the format).
 * @throws ApiError (400) naming the field at fault
 */
export function textFormatGrammar(text: unknown, param = 'text'): RequestGrammar | undefined {
  if (text === undefined || text === null) return undefined;
  if (typeof text !== 'object' || Array.isArray(text)) throw apiErrors.invalidType(param, 'an object');
  const format = (text as { format?: unknown }).format;
  const at = `${param}.format`;
  if (format === undefined || format === null) return undefined;
  if (typeof format !== 'object' || Array.isArray(format)) throw apiErrors.invalidType(at, 'an object');
  const type = (format as { type?: unknown }).type;
  if (type === 'json_schema') return { spec: { type: 'json_schema', schema: JSON.stringify(grammarSchema(checkJsonSchema(format, at, TEXT_FORMAT_FIELDS))) }, param: `${at}.schema` };
  return responseFormatGrammar(format, at, TEXT_FORMAT_FIELDS);
}

/**
 * A JSON schema a grammar can be built from: an object (or `true`) within the size bounds
 * (grammar/schema-limits.ts), without keywords that constrained decoding would not enforce.
 * @throws ApiError (400) naming the bound passed, or the keyword and where it is
 */
export function checkSchema(schema: unknown, param: string): object | boolean {
  if (schema === true) return true;
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) throw apiErrors.invalidType(param, 'a JSON Schema object');
  const beyond = schemaLimitProblem(schema);
  if (beyond) throw apiErrors.invalidValue(param, `Invalid schema for '${param}': ${beyond}.`, 'invalid_schema');
  const unenforced = unenforcedKeyword(schema);
  if (unenforced) {
    throw apiErrors.invalidValue(
      param,
      `Invalid schema for '${param}': the keyword '${unenforced.keyword}' (at ${unenforced.path}) is not supported in constrained decoding (it would require ${unenforced.why}).`,
      'unsupported_schema',
    );
  }
  return schema;
}

/** `json_schema` of a `response_format` (or a whole `text.format`, with its fields). */
function checkJsonSchema(value: unknown, param: string, fields: readonly string[] = JSON_SCHEMA_FIELDS): object | boolean {
  if (value === undefined || value === null) throw apiErrors.missing(param);
  if (typeof value !== 'object' || Array.isArray(value)) throw apiErrors.invalidType(param, 'an object');
  const js = value as { name?: unknown; schema?: unknown; strict?: unknown };
  onlyFields(js, fields, param);
  if (typeof js.name !== 'string' || !SCHEMA_NAME.test(js.name)) {
    throw js.name === undefined
      ? apiErrors.missing(`${param}.name`)
      : apiErrors.invalidValue(`${param}.name`, `Invalid '${param}.name': it must be 1 to 64 letters, digits, underscores or dashes.`);
  }
  if (js.strict !== undefined && js.strict !== null && typeof js.strict !== 'boolean') throw apiErrors.invalidType(`${param}.strict`, 'a boolean');
  // OpenAI: without a schema the model may answer any JSON (as json_object).
  if (js.schema === undefined || js.schema === null) return { type: 'object', additionalProperties: true };
  return checkSchema(js.schema, `${param}.schema`);
}
