/**
 * Planning tools without a model or a server (server/tool-plan.ts): `tool_choice` to a mode and
 * the grammar's functions, `parallel_tool_calls`, and each bad field refused naming its `param`.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ApiError } from '../../src/server/errors.js';
import { functionTool, planTools } from '../../src/server/tool-plan.js';

const weather = { type: 'function', function: { name: 'get_weather', description: 'Weather.', parameters: { type: 'object', properties: { city: { type: 'string' } } } } };
const add = { type: 'function', function: { name: 'add' } };

/** The `param` and `code` of the ApiError `f` throws. */
function refusal(f: () => unknown): { param: string | null; code: string | null } {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof ApiError, String(e));
    assert.equal(e.status, 400);
    return { param: e.param, code: e.code };
  }
  assert.fail('not refused');
}

describe('planTools', () => {
  test('no tools: no plan; tool_choice none or auto alone is accepted', () => {
    assert.equal(planTools({}), undefined);
    assert.equal(planTools({ tools: [] }), undefined);
    assert.equal(planTools({ tool_choice: 'none' }), undefined);
    assert.equal(planTools({ tool_choice: 'auto' }), undefined);
  });

  test('tool_choice to a mode, and the functions the grammar allows', () => {
    const functions = (body: object) => {
      const plan = planTools({ tools: [weather, add], ...body })!;
      const spec = plan.grammar?.spec as { functions: { name: string }[]; mode: string; parallel: boolean } | undefined;
      return { mode: plan.mode, parallel: plan.parallel, called: spec?.functions.map((f) => f.name), specMode: spec?.mode };
    };
    assert.deepEqual(functions({}), { mode: 'auto', parallel: true, called: ['get_weather', 'add'], specMode: 'auto' });
    assert.deepEqual(functions({ tool_choice: 'required', parallel_tool_calls: false }), { mode: 'required', parallel: false, called: ['get_weather', 'add'], specMode: 'required' });
    assert.deepEqual(functions({ tool_choice: { type: 'function', function: { name: 'add' } } }), { mode: 'named', parallel: true, called: ['add'], specMode: 'named' });
    assert.deepEqual(functions({ tool_choice: 'none' }), { mode: 'none', parallel: true, called: undefined, specMode: undefined });
  });

  test('a function without parameters takes no arguments', () => {
    assert.deepEqual(functionTool(add, 0), { name: 'add', parameters: { type: 'object', properties: {}, additionalProperties: false } });
    assert.deepEqual(functionTool(weather, 0), weather.function);
  });

  test('each bad field refused naming its param', () => {
    assert.deepEqual(refusal(() => planTools({ tool_choice: 'required' })), { param: 'tool_choice', code: 'invalid_value' });
    assert.deepEqual(refusal(() => planTools({ tools: {} })).param, 'tools');
    assert.deepEqual(refusal(() => planTools({ tools: [weather, weather] })), { param: 'tools[1].function.name', code: 'invalid_value' });
    assert.deepEqual(refusal(() => planTools({ tools: [weather], tool_choice: { type: 'function', function: { name: 'add' } } })), { param: 'tool_choice.function.name', code: 'invalid_value' });
    assert.deepEqual(refusal(() => planTools({ tools: [weather], tool_choice: { type: 'function', function: {} } })), { param: 'tool_choice.function.name', code: 'missing_required_parameter' });
    assert.deepEqual(refusal(() => planTools({ tools: [weather], tool_choice: 'sometimes' })), { param: 'tool_choice', code: 'invalid_value' });
    assert.deepEqual(refusal(() => planTools({ tools: [{ function: weather.function }] })), { param: 'tools[0].type', code: 'missing_required_parameter' });
    assert.equal(refusal(() => planTools({ tools: [{ type: 'web_search' }] })).param, 'tools[0].type');
    assert.deepEqual(refusal(() => planTools({ tools: [{ type: 'function', function: { name: 'has space' } }] })), { param: 'tools[0].function.name', code: 'invalid_value' });
    assert.deepEqual(refusal(() => planTools({ tools: [add, { type: 'function' }] })), { param: 'tools[1].function', code: 'missing_required_parameter' });
    const multipleOf = { type: 'object', properties: { n: { type: 'integer', multipleOf: 2 } } };
    assert.deepEqual(refusal(() => planTools({ tools: [{ type: 'function', function: { name: 'f', parameters: multipleOf } }] })), { param: 'tools[0].function.parameters', code: 'unsupported_schema' });
  });
});
