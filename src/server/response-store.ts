/**
 * Stored responses for the Responses API (OpenAI's `store`, true unless a request says false):
 * a bounded in-memory store per server, so that a request can continue a stored response with
 * `previous_response_id` and `GET` / `DELETE /v1/responses/{id}` find it.
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

  constructor(readonly options: ResponseStoreOptions) {
    if (!(options.maxBytes >= 1) || !(options.ttlMs >= 1)) throw new RangeError(`response store bounds must be positive: maxBytes ${options.maxBytes}, ttlMs ${options.ttlMs}`);
    this.cache = new LRUCache<string, Entry>({
      maxSize: options.maxBytes,
      sizeCalculation: (entry) => Math.max(1, Buffer.byteLength(JSON.stringify(entry))),
      ttl: options.ttlMs,
    });
  }

  /** How many responses are stored now. */
  get size(): number {
    return this.cache.size;
  }

  /**
   * The request with a `previous_response_id` resolved: the stored conversation before its
   * `input`, and `previous_response_id` taken out (the body as planning takes it).
   * @throws ApiError 404 naming `previous_response_id` when nothing is stored under it
   */
  continued(body: ResponsesBody): ResponsesBody {
    const previous = body.previous_response_id;
    if (previous === undefined || previous === null) return body;
    const entry = this.cache.get(String(previous));
    if (!entry) throw responseNotFound(String(previous), 'previous_response_id', this.options);
    const { previous_response_id: _, ...rest } = body;
    return { ...rest, input: [...entry.items, ...inputItems(body.input)] };
  }

  /**
   * Stores a finished response. `planned` is the request as it was planned (with the
   * continued conversation in its `input`: `continued`), so the entry's items are the whole
   * conversation. An entry larger than the whole store is not kept.
   */
  put(planned: ResponsesBody, response: StorableResponse): void {
    const items = [...inputItems(planned.input), ...response.output.flatMap(outputAsInput)];
    this.cache.set(response.id, { response, items });
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
