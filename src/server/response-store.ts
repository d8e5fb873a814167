/**
 * Stored responses for the Responses API (OpenAI's `store`, true unless a request says false):
 * a bounded in-memory store per server, so that a request can continue a stored response with
 * `previous_response_id` and `GET` / `DELETE /v1/responses/{id}` find it.
 *
 * `item_reference` input items (what the AI SDK sends for earlier outputs when it stores) are
 * replaced by the stored output items they name.
 *
 * Each entry keeps the response object and the conversation up to and including its output as
 * input items (the previous response's items, the request's `input`, the output's message and
 * `function_call` items). Continuing a response puts those items before the new request's
 * `input`, so the prompt is the one the whole conversation sent explicitly renders, and its
 * beginning is the prompt (and output) the prefix cache already holds. `instructions` are not
 * carried over (as OpenAI documents it: a continued request sends its own).
 *
 * Bounds (lru-cache): entries take their JSON size in bytes from `maxBytes` and the least recently
 * used leave first when it is full; each leaves `ttlMs` after it was stored. An entry holds its
 * whole conversation, so a long chain of turns counts each earlier turn once per stored response.
 */
import { LRUCache } from 'lru-cache';
import { ApiError } from './errors.js';
import type { InputItem, ResponsesBody } from './responses-api.js';

/** Default bounds: 64 MiB of stored responses, each kept an hour (`specd serve --responses-store-size`, `--responses-store-ttl`). */
export const DEFAULT_RESPONSE_STORE_BYTES = 64 * 2 ** 20;
export const DEFAULT_RESPONSE_STORE_TTL_S = 3600;

export interface ResponseStoreOptions {
  /** Bytes of JSON the store holds at most (response objects and their conversations). */
  maxBytes: number;
  /** Milliseconds an entry stays after it was stored. */
  ttlMs: number;
}

/** A response object as far as the store reads it. */
export interface StorableResponse {
  id: string;
  output: readonly { type: string; [field: string]: unknown }[];
}

interface Entry {
  response: StorableResponse;
  /** The conversation up to and including this response's output, as input items. */
  items: InputItem[];
}

/** An input item that names a stored output item by its id (`msg_...`, `fc_...`, `rs_...`). */
interface ItemReference {
  type: 'item_reference';
  id?: unknown;
}

/** The 404 for an `item_reference` naming no stored output item. */
function itemNotFound(id: string, param: string): ApiError {
  return new ApiError(404, 'invalid_request_error', `Item with id '${id}' not found: it is not an output item of a stored response (store: false, deleted, or left the store).`, param, 'not_found');
}

/** The 404 for a `previous_response_id` (or a path id) that names nothing stored. */
export function responseNotFound(id: string, param: string | null, options: ResponseStoreOptions): ApiError {
  const bounds = `the server keeps ${Math.round(options.maxBytes / 2 ** 20)} MiB of responses for ${Math.round(options.ttlMs / 1000)} s`;
  return new ApiError(404, 'invalid_request_error', `Response with id '${id}' not found: it was never stored (store: false), was deleted, or has left the store (${bounds}).`, param, 'not_found');
}

/** A request's `input` as input items (a string is one user message). */
function inputItems(input: ResponsesBody['input']): InputItem[] {
  if (typeof input === 'string') return [{ type: 'message', role: 'user', content: input }];
  return input ? [...input] : [];
}

/** An output item as the input item that sends it back (reasoning items are left out, as the prompt leaves them out). */
function outputAsInput(item: StorableResponse['output'][number]): InputItem[] {
  if (item.type === 'message') {
    const parts = (item.content as { type: string; text?: string }[] | undefined) ?? [];
    return [{ type: 'message', role: 'assistant', content: parts.map((p) => ({ type: 'output_text', text: p.text ?? '' })) }];
  }
  if (item.type === 'function_call') return [{ type: 'function_call', call_id: item.call_id, name: item.name, arguments: item.arguments }];
  return [];
}

export class ResponseStore {
  private readonly cache: LRUCache<string, Entry>;
  /** Output item id -> the id of the stored response holding it (for `item_reference` input items). */
  private readonly itemOwners = new Map<string, string>();

  constructor(readonly options: ResponseStoreOptions) {
    if (!(options.maxBytes >= 1) || !(options.ttlMs >= 1)) throw new RangeError(`response store bounds must be positive: maxBytes ${options.maxBytes}, ttlMs ${options.ttlMs}`);
    this.cache = new LRUCache<string, Entry>({
      maxSize: options.maxBytes,
      sizeCalculation: (entry) => Math.max(1, Buffer.byteLength(JSON.stringify(entry))),
      ttl: options.ttlMs,
      dispose: (entry) => {
        for (const item of entry.response.output) if (typeof item.id === 'string') this.itemOwners.delete(item.id);
      },
    });
  }

  /** How many responses are stored now. */
  get size(): number {
    return this.cache.size;
  }

  /**
   * The request as planning takes it: `item_reference` input items replaced by the stored output
   * items they name (a reasoning item by nothing, as prompts leave reasoning out), and with a
   * `previous_response_id`, the stored conversation before its `input` (the id taken out).
   * @throws ApiError 404 naming `previous_response_id` when nothing is stored under it, or
   *   `input[i].id` for an item reference to no stored item
   */
  continued(body: ResponsesBody): ResponsesBody {
    let resolved = body;
    if (Array.isArray(body.input) && body.input.some((item) => item?.type === 'item_reference')) {
      resolved = { ...body, input: body.input.flatMap((item, i) => (item?.type === 'item_reference' ? this.referenced(item as ItemReference, `input[${i}].id`) : [item])) };
    }
    const previous = body.previous_response_id;
    if (previous === undefined || previous === null) return resolved;
    const entry = this.cache.get(String(previous));
    if (!entry) throw responseNotFound(String(previous), 'previous_response_id', this.options);
    const { previous_response_id: _, ...rest } = resolved;
    return { ...rest, input: [...entry.items, ...inputItems(resolved.input)] };
  }

  /** The input items an `item_reference` stands for. */
  private referenced(reference: ItemReference, param: string): InputItem[] {
    const id = String(reference.id ?? '');
    const owner = this.itemOwners.get(id);
    const item = owner === undefined ? undefined : this.cache.get(owner)?.response.output.find((o) => o.id === id);
    if (!item) throw itemNotFound(id, param);
    return outputAsInput(item);
  }

  /**
   * Stores a finished response. `planned` is the request as it was planned (with the
   * continued conversation in its `input`: `continued`), so the entry's items are the whole
   * conversation. An entry larger than the whole store is not kept.
   */
  put(planned: ResponsesBody, response: StorableResponse): void {
    const items = [...inputItems(planned.input), ...response.output.flatMap(outputAsInput)];
    this.cache.set(response.id, { response, items });
    if (!this.cache.has(response.id)) return; // larger than the whole store
    for (const item of response.output) if (typeof item.id === 'string') this.itemOwners.set(item.id, response.id);
  }

  /** The stored response object, or undefined (never stored, deleted, or evicted). */
  get(id: string): StorableResponse | undefined {
    return this.cache.get(id)?.response;
  }

  /** Deletes a stored response; false when there was none. */
  delete(id: string): boolean {
    return this.cache.delete(id);
  }
}
