/**
 * The server's errors, in OpenAI's shape: `{error: {message, type, param, code}}`.
 *
 * Every error a route can answer with is built by one of the functions in `apiErrors`, so the
 * statuses, types and codes live in this one table. Invalid client input is always a 4xx that
 * names the parameter at fault; 5xx means the server could not do what a valid request asked.
 */

export type ApiErrorType = 'invalid_request_error' | 'rate_limit_error' | 'server_error';

export interface ApiErrorBody {
  error: { message: string; type: ApiErrorType; param: string | null; code: string | null };
}

/** Seconds a client should wait before retrying when the server is busy or still loading. */
export const RETRY_AFTER_S = 1;

export class ApiError extends Error {
  override name = 'ApiError';
  /** Fastify reads (and, for validation errors, writes) `statusCode`; it always equals `status`. */
  statusCode: number;
  constructor(
    /** HTTP status. */
    readonly status: number,
    readonly type: ApiErrorType,
    message: string,
    /** The request parameter at fault, in OpenAI's notation (`messages[0].content`). */
    readonly param: string | null = null,
    /** A machine-readable code (`context_length_exceeded`, `model_not_found`, ...). */
    readonly code: string | null = null,
    /** Extra response headers (`Retry-After`). */
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.statusCode = status;
  }

  toBody(): ApiErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

const retryAfter = { 'Retry-After': String(RETRY_AFTER_S) };

/** The error table. */
export const apiErrors = {
  /** A parameter with a wrong value. */
  invalidValue: (param: string, message: string, code = 'invalid_value') => new ApiError(400, 'invalid_request_error', message, param, code),
  /** A parameter of the wrong JSON type. */
  invalidType: (param: string, expected: string) =>
    new ApiError(400, 'invalid_request_error', `Invalid type for '${param}': expected ${expected}.`, param, 'invalid_type'),
  missing: (param: string) => new ApiError(400, 'invalid_request_error', `Missing required parameter: '${param}'.`, param, 'missing_required_parameter'),
  /** A known OpenAI parameter that specd cannot honour. */
  unsupported: (param: string, why: string) =>
    new ApiError(400, 'invalid_request_error', `'${param}' is not supported by this server: ${why}`, param, 'unsupported_parameter'),
  /** The request body is not usable at all (not JSON, not an object, wrong content type). */
  badBody: (message: string, code = 'invalid_body') => new ApiError(400, 'invalid_request_error', message, null, code),
  contextLength: (param: string, context: number, promptTokens: number, maxTokens: number | undefined) =>
    new ApiError(
      400,
      'invalid_request_error',
      maxTokens === undefined
        ? `This model's maximum context length is ${context} tokens. However, your ${param} resulted in ${promptTokens} tokens. Please reduce the length of the ${param}.`
        : `This model's maximum context length is ${context} tokens. However, you requested ${promptTokens + maxTokens} tokens (${promptTokens} in the ${param}, ${maxTokens} in the completion). Please reduce the length of the ${param} or completion.`,
      param,
      'context_length_exceeded',
    ),
  /** A prompt so long that it cannot fit, judged from its length in characters. */
  promptTooLong: (param: string, context: number) =>
    new ApiError(
      400,
      'invalid_request_error',
      `This model's maximum context length is ${context} tokens. However, '${param}' is far longer than that. Please shorten it.`,
      param,
      'context_length_exceeded',
    ),
  unauthorized: (given: boolean) =>
    new ApiError(
      401,
      'invalid_request_error',
      given ? 'Incorrect API key provided.' : "You didn't provide an API key. Provide it as a Bearer token in the Authorization header (Authorization: Bearer YOUR_KEY).",
      null,
      'invalid_api_key',
    ),
  modelNotFound: (model: string) =>
    new ApiError(404, 'invalid_request_error', `The model \`${model}\` does not exist or you do not have access to it.`, 'model', 'model_not_found'),
  /** GET /v1/responses/:id: responses are never stored. */
  routeNotFound: (method: string, url: string) => new ApiError(404, 'invalid_request_error', `Invalid URL (${method} ${url})`, null, 'not_found'),
  bodyTooLarge: (limit: number) => new ApiError(413, 'invalid_request_error', `The request body exceeds the limit of ${limit} bytes.`, null, 'request_too_large'),
  queueFull: () =>
    new ApiError(429, 'rate_limit_error', 'The server is at capacity: every engine worker is busy and the queue is full. Retry later.', null, 'queue_full', retryAfter),
  loading: () => new ApiError(503, 'server_error', 'The models are still loading. Retry later.', null, 'model_loading', retryAfter),
  queueTimeout: (message: string) => new ApiError(503, 'server_error', message, null, 'queue_timeout', retryAfter),
  /** The request ran past its deadline (the openai clients' APITimeoutError is its client-side twin). */
  requestTimeout: (message: string) => new ApiError(408, 'server_error', message, null, 'request_timeout'),
  workerStalled: (message: string) => new ApiError(503, 'server_error', message, null, 'worker_stalled', retryAfter),
  shuttingDown: () => new ApiError(503, 'server_error', 'The server is shutting down.', null, 'shutting_down', retryAfter),
  unavailable: (message: string) => new ApiError(503, 'server_error', message, null, 'engine_unavailable'),
  internal: (message: string) => new ApiError(500, 'server_error', message, null, 'internal_error'),
} as const;
