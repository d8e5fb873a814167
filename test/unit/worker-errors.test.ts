/**
 * Typed errors across the worker boundary, without a worker: each error the engine throws for a
 * bad request becomes an `error` message with its code and parameter as data, anything else
 * (a RangeError from an engine invariant included) is `internal`; and every code of the one list
 * (protocol.ts) maps to an OpenAI error with its status, the parameter taken from the message,
 * never from its text.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { KvBudgetError } from '../../src/engine/kv-budget.js';
import { ContextLengthError } from '../../src/engine/speculative.js';
import { PolicySpecError } from '../../src/engine/stop-policy.js';
import { RequestError } from '../../src/errors.js';
import { GrammarError } from '../../src/grammar/errors.js';
import { workerError } from '../../src/server/generation-run.js';
import { WORKER_ERROR_CODES, type WorkerErrorCode } from '../../src/server/protocol.js';
import { errorReply } from '../../src/server/worker-errors.js';

describe('what a worker reports', () => {
  const request = { grammarParam: 'response_format.json_schema.schema' };

  test('request errors carry their code and parameter', () => {
    assert.deepEqual(errorReply(new RequestError('policy fixed needs a draft model', 'speculative.policy'), request), {
      type: 'error',
      code: 'invalid_request',
      message: 'policy fixed needs a draft model',
      param: 'speculative.policy',
    });
    assert.deepEqual(errorReply(new RequestError('the prompt has no tokens'), request), { type: 'error', code: 'invalid_request', message: 'the prompt has no tokens' });
    assert.equal(errorReply(new GrammarError('Unclosed'), request).param, 'response_format.json_schema.schema');
    assert.equal(errorReply(new GrammarError('Unclosed'), request).code, 'invalid_grammar');
    assert.equal(errorReply(new ContextLengthError('too long'), request).code, 'context_length_exceeded');
    assert.deepEqual(errorReply(new PolicySpecError('k must be an integer'), request).param, 'speculative.policy');
    assert.deepEqual(errorReply(new KvBudgetError('needs more KV cache'), request).param, 'max_tokens');
  });

  test('anything else is internal, a RangeError included, even when its text mentions a policy', () => {
    assert.equal(errorReply(new RangeError('a cache appears twice in one batch'), request).code, 'internal');
    assert.equal(errorReply(new RangeError('policy specdec++: no acceptance probability'), request).code, 'internal');
    assert.equal(errorReply('thrown text', request).code, 'internal');
  });
});

describe('the API error of every code', () => {
  const expected: Record<WorkerErrorCode, { status: number; code: string }> = {
    invalid_request: { status: 400, code: 'invalid_value' },
    invalid_grammar: { status: 400, code: 'invalid_schema' },
    context_length_exceeded: { status: 400, code: 'context_length_exceeded' },
    queue_full: { status: 429, code: 'queue_full' },
    queue_timeout: { status: 503, code: 'queue_timeout' },
    request_timeout: { status: 408, code: 'request_timeout' },
    worker_stalled: { status: 503, code: 'worker_stalled' },
    shutting_down: { status: 503, code: 'shutting_down' },
    internal: { status: 500, code: 'internal_error' },
  };

  test('one entry per code of the list, with its status; the parameter comes from the message', () => {
    assert.deepEqual(Object.keys(expected).sort(), [...WORKER_ERROR_CODES].sort());
    for (const code of WORKER_ERROR_CODES) {
      const err = workerError({ type: 'error', code, message: 'm', param: code.startsWith('invalid') || code === 'context_length_exceeded' ? 'speculative.policy' : undefined }, 'messages');
      assert.equal(err.status, expected[code].status, code);
      assert.equal(err.code, expected[code].code, code);
      if (err.status === 400) assert.equal(err.param, 'speculative.policy', code);
      if (err.status >= 500) assert.equal(err.type, 'server_error', code);
    }
    // Without a parameter, a request error points at the prompt.
    assert.equal(workerError({ type: 'error', code: 'invalid_request', message: 'the prompt has no tokens' }, 'messages').param, 'messages');
  });
});
