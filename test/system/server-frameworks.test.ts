/**
 * Agent and application frameworks against specd on a real port: LangChain's
 * `withStructuredOutput` (JSON schema and function calling methods) returns objects that satisfy
 * the zod schema, and the OpenAI Agents SDK (chat completions API) runs an agent whose function
 * tool is called with valid arguments and whose run ends with a final answer.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ChatOpenAI } from '@langchain/openai';
import { Agent, OpenAIProvider, Runner, tool } from '@openai/agents';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { buildApp } from '../../src/server/app.js';

const MODEL = 'specd-pair-target';

let app: FastifyInstance;
let baseURL: string;

before(async () => {
  app = await buildApp({ workers: 1, maxQueue: 16 });
  await app.specd.engine.ready;
  baseURL = `${await app.listen({ host: '127.0.0.1', port: 0 })}/v1`;
});
after(() => app?.close());

const Person = z.object({
  name: z.string().max(40),
  age: z.number().int().min(0).max(130),
  city: z.string().max(30),
  role: z.enum(['engineer', 'teacher', 'doctor', 'other']),
});

describe('LangChain withStructuredOutput', () => {
  for (const method of ['jsonSchema', 'functionCalling'] as const) {
    test(`method ${method}: the result satisfies the zod schema`, async () => {
      const llm = new ChatOpenAI({ model: MODEL, apiKey: 'unused', configuration: { baseURL }, temperature: 0, maxTokens: 200, maxRetries: 0 });
      const structured = llm.withStructuredOutput(Person, { name: 'person', method });
      const person = await structured.invoke('Maria Lopez is a 34-year-old engineer who lives in Madrid.');
      assert.deepEqual(Person.parse(person), person);
    });
  }
});

describe('OpenAI Agents SDK', () => {
  test('an agent calls its function tool with valid arguments, then answers', async () => {
    // The chat completions API (specd has no Responses API yet), without tracing (it would upload to OpenAI).
    const runner = new Runner({ modelProvider: new OpenAIProvider({ baseURL, apiKey: 'unused', useResponses: false }), tracingDisabled: true });
    const calls: { city: string; unit: string }[] = [];
    const getWeather = tool({
      name: 'get_weather',
      description: 'Weather in a city.',
      parameters: z.object({ city: z.string().max(30), unit: z.enum(['celsius', 'fahrenheit']) }),
      execute: async (args) => {
        calls.push(args);
        return `It is 18 degrees ${args.unit} and clear in ${args.city}.`;
      },
    });
    const agent = new Agent({
      name: 'weather',
      instructions: 'Answer questions about the weather.',
      model: MODEL,
      tools: [getWeather],
      // The bundled model would not call a tool of its own accord: the first turn must; after a call the choice resets to auto.
      modelSettings: { toolChoice: 'required', temperature: 0, maxTokens: 120 },
    });
    const result = await runner.run(agent, 'What is the weather in Paris?', { maxTurns: 3 });
    assert.equal(calls.length >= 1, true, 'the tool was called');
    for (const c of calls) assert.ok(['celsius', 'fahrenheit'].includes(c.unit) && c.city.length <= 30);
    assert.equal(typeof result.finalOutput, 'string');
    assert.ok((result.finalOutput as string).length > 0);
  });
});
