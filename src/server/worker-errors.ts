/**
 * How an engine worker reports a generation's failure (protocol.ts `error`): errors the engine
 * throws for what the client got wrong carry their code and parameter as data; anything else is
 * `internal` (a 500), whatever its class: an invariant an engine module checks with a RangeError
 * is a bug, not a bad request.
 */
import { KvBudgetError } from '../engine/kv-budget.js';
import { ContextLengthError } from '../engine/speculative.js';
import { PolicySpecError } from '../engine/stop-policy.js';
import { RequestError } from '../errors.js';
import { GrammarError } from '../grammar/errors.js';
import type { GenerationRequest, WorkerMessage } from './protocol.js';

/** The `error` message for what a generation threw. */
export function errorReply(err: unknown, request: Pick<GenerationRequest, 'grammarParam'>): Extract<WorkerMessage, { type: 'error' }> {
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof GrammarError) return { type: 'error', code: 'invalid_grammar', message, param: request.grammarParam };
  if (err instanceof ContextLengthError) return { type: 'error', code: 'context_length_exceeded', message };
  if (err instanceof KvBudgetError) return { type: 'error', code: 'invalid_request', message, param: 'max_tokens' };
  if (err instanceof PolicySpecError) return { type: 'error', code: 'invalid_request', message, param: err.knob === undefined ? 'speculative.policy' : `speculative.${err.knob}` };
  if (err instanceof RequestError) return { type: 'error', code: 'invalid_request', message, ...(err.param ? { param: err.param } : {}) };
  return { type: 'error', code: 'internal', message };
}
