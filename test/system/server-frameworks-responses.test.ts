/**
 * Agent frameworks in their Responses API modes against specd on a real port, each running an
 * agent with a function tool: the OpenAI Agents SDK's default (Responses) provider, the AI SDK's
 * `openai(model)` with `tool()` (and a next turn referring to its stored answer by item reference),
 * and LangChain's ChatOpenAI with `useResponsesApi: true`. The
 * bundled model's text is noise, so the first turn forces the call (tool_choice); the tool runs
 * with arguments that satisfy its zod schema, its output goes back as a `function_call_output`
 * item, and the run ends with a text answer.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createOpenAI } from '@ai-sdk/openai';
import { tool as langchainTool } from '@langchain/core/tools';
import { AIMessage, HumanMessage, ToolMessage, type BaseMessage } from '@langchain/core/messages';
import { ChatOpenAI } from '@langchain/openai';
import { Agent, OpenAIProvider, Runner, tool as agentsTool } from '@openai/agents';
import { generateText, stepCountIs, tool as aiTool } from 'ai';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { buildApp } from '../../src/server/app.js';

const MODEL = 'specd-pair-target';

let app: FastifyInstance;
let baseURL: string;
/** Every /v1/responses body the server received, to check what each framework sent. */
const bodies: Record<string, unknown>[] = [];

before(async () => {
  app = await buildApp({ workers: 1, maxQueue: 16 });
  app.addHook('preHandler', async (request) => {
    if (request.url === '/v1/responses') bodies.push(request.body as Record<string, unknown>);
  });
  await app.specd.engine.ready;
  baseURL = `${await app.listen({ host: '127.0.0.1', port: 0 })}/v1`;
});
after(() => app?.close());

const Weather = z.object({ city: z.string().max(20), unit: z.enum(['celsius', 'fahrenheit']) });
type WeatherArgs = z.infer<typeof Weather>;
const weatherText = (args: WeatherArgs) => `It is 18 degrees ${args.unit} and clear in ${args.city}.`;

function checkCalls(calls: WeatherArgs[]): void {
  assert.ok(calls.length >= 1, 'the tool was called');
  for (const c of calls) assert.deepEqual(Weather.parse(c), c);
}

/** The bodies sent since `from` held a function_call_output item answering a call. */
function sentToolOutput(from: number): boolean {
  return bodies.slice(from).some((b) => Array.isArray(b.input) && (b.input as { type?: string }[]).some((i) => i.type === 'function_call_output'));
}

describe('agent frameworks on /v1/responses', () => {
  test('OpenAI Agents SDK, default (Responses) provider: the agent calls its tool, then answers', async () => {
    const from = bodies.length;
    const runner = new Runner({ modelProvider: new OpenAIProvider({ baseURL, apiKey: 'unused' }), tracingDisabled: true });
    const calls: WeatherArgs[] = [];
    const getWeather = agentsTool({
      name: 'get_weather',
      description: 'Weather in a city.',
      parameters: Weather,
      execute: async (args) => {
        calls.push(args);
        return weatherText(args);
      },
    });
    const agent = new Agent({
      name: 'weather',
      instructions: 'Answer questions about the weather.',
      model: MODEL,
      tools: [getWeather],
      // The first turn must call (once); after a call the SDK resets the choice to auto. The
      // Agents SDK fails a run on an incomplete response, so the answer has the context to end in.
      modelSettings: { toolChoice: 'required', parallelToolCalls: false, temperature: 0 },
    });
    const result = await runner.run(agent, 'What is the weather in Paris?', { maxTurns: 3 });
    checkCalls(calls);
    assert.equal(calls.length, 1, 'parallel_tool_calls false: one call');
    // Streamed: the SDK reads the call from the function_call_arguments events.
    const streamed = await runner.run(agent, 'What is the weather in Paris?', { maxTurns: 3, stream: true });
    for await (const _ of streamed.toTextStream()) void _;
    await streamed.completed;
    assert.equal(calls.length, 2, 'the streamed run called the tool once too');
    assert.deepEqual(calls[1], calls[0]);
    assert.equal(streamed.finalOutput, result.finalOutput, 'streamed and non-streamed runs agree (greedy)');
    assert.ok(bodies.length > from && bodies.slice(from).every((b) => Array.isArray(b.tools)), 'the Responses API was used');
    assert.ok(sentToolOutput(from));
    assert.equal(typeof result.finalOutput, 'string');
    assert.ok((result.finalOutput as string).length > 0);
  });

  test("AI SDK, openai(model) with tool(): a forced call, its result, then a text answer", async () => {
    const from = bodies.length;
    const openai = createOpenAI({ baseURL, apiKey: 'unused' });
    const calls: WeatherArgs[] = [];
    const result = await generateText({
      model: openai(MODEL),
      prompt: 'What is the weather in Paris?',
      tools: {
        get_weather: aiTool({
          description: 'Weather in a city.',
          inputSchema: Weather,
          execute: async (args) => {
            calls.push(args);
            return weatherText(args);
          },
        }),
      },
      // specd stores no responses: the SDK then sends earlier items whole instead of item references.
      providerOptions: { openai: { store: false } },
      prepareStep: ({ stepNumber }) => ({ toolChoice: stepNumber === 0 ? { type: 'tool', toolName: 'get_weather' } : 'none' }),
      stopWhen: stepCountIs(2),
      temperature: 0,
      maxOutputTokens: 200,
      maxRetries: 0,
    });
    checkCalls(calls);
    assert.equal(result.steps.length, 2);
    assert.equal(result.steps[0]!.toolCalls.length, calls.length);
    assert.equal(result.steps[0]!.toolCalls[0]!.toolName, 'get_weather');
    assert.ok(sentToolOutput(from));
    assert.equal(typeof result.text, 'string');
    assert.ok(result.text.length > 0);
  });

  test("AI SDK, openai(model) with its default store: the next turn refers to the stored answer by item reference and writes what the answer sent whole gives", async () => {
    const from = bodies.length;
    const openai = createOpenAI({ baseURL, apiKey: 'unused' });
    const settings = { model: openai(MODEL), temperature: 0, maxOutputTokens: 12, maxRetries: 0 } as const;
    const first = await generateText({ ...settings, prompt: 'Name a city by the sea.' });
    const next = [...first.response.messages, { role: 'user' as const, content: 'And one in the mountains?' }];
    const stored = await generateText({ ...settings, messages: next });
    const sent = bodies.slice(from + 1).find((b) => Array.isArray(b.input))!.input as { type?: string; id?: string }[];
    assert.ok(sent.some((i) => i.type === 'item_reference' && i.id?.startsWith('msg_')), JSON.stringify(sent));
    const whole = await generateText({ ...settings, messages: next, providerOptions: { openai: { store: false } } });
    assert.ok(!(bodies.at(-1)!.input as { type?: string }[]).some((i) => i.type === 'item_reference'));
    assert.equal(stored.text, whole.text);
  });

  test('LangChain ChatOpenAI with useResponsesApi: bound tool called, ToolMessage sent back, then an answer', async () => {
    const from = bodies.length;
    const calls: WeatherArgs[] = [];
    const getWeather = langchainTool(
      async (args: WeatherArgs) => {
        calls.push(args);
        return weatherText(args);
      },
      { name: 'get_weather', description: 'Weather in a city.', schema: Weather },
    );
    const llm = new ChatOpenAI({ model: MODEL, apiKey: 'unused', configuration: { baseURL }, useResponsesApi: true, temperature: 0, maxTokens: 200, maxRetries: 0 });
    const messages: BaseMessage[] = [new HumanMessage('What is the weather in Paris?')];
    const first = await llm.bindTools([getWeather], { tool_choice: 'get_weather' }).invoke(messages);
    assert.ok(first.tool_calls && first.tool_calls.length >= 1);
    messages.push(first);
    for (const call of first.tool_calls) {
      assert.equal(call.name, 'get_weather');
      const output = await getWeather.invoke(call.args as WeatherArgs);
      messages.push(new ToolMessage({ content: output, tool_call_id: call.id! }));
    }
    checkCalls(calls);
    const answer = await llm.bindTools([getWeather], { tool_choice: 'none' }).invoke(messages);
    assert.ok(answer instanceof AIMessage);
    assert.equal(answer.tool_calls?.length ?? 0, 0);
    assert.ok(answer.text.length > 0);
    assert.ok(sentToolOutput(from));
  });
});
