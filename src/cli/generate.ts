/** `specd generate`: one generation from the command line, streamed to stdout. */
import { existsSync, readFileSync } from 'node:fs';
import { Command, InvalidArgumentError } from 'commander';
import { ModelPair } from '../pair/model-pair.js';
import { isDraftFree, policyLabel } from '../engine/stop-policy.js';
import { generateText, type PromptInput } from '../engine/text-generation.js';
import { GrammarError, type GrammarSpec } from '../grammar/compiler.js';
import { grammarSchema, unenforcedKeyword } from '../grammar/schema-check.js';
import type { ChatMessage } from '../text/tokenizer.js';
import {
  addModelOptions,
  addPolicyOptions,
  addSamplingOptions,
  defaultPolicyName,
  intIn,
  type ModelFlags,
  pairOptions,
  type PolicyFlags,
  policySpec,
  type SamplingFlags,
  samplingParams,
} from './options.js';

interface GenerateFlags extends ModelFlags, PolicyFlags, SamplingFlags {
  prompt?: string;
  raw?: boolean;
  messages?: ChatMessage[];
  maxTokens: number;
  seed?: number;
  stop: string[];
  json?: boolean;
  jsonSchema?: object;
  jsonObject?: boolean;
}

/** A JSON Schema from a file or given as JSON text, without keywords constrained decoding would not enforce. */
function schemaArg(text: string): object {
  let value: unknown;
  try {
    value = JSON.parse(existsSync(text) ? readFileSync(text, 'utf8') : text);
  } catch (err) {
    throw new InvalidArgumentError(`neither a readable file nor JSON text: ${(err as Error).message}`);
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw new InvalidArgumentError('expected a JSON Schema object');
  const unenforced = unenforcedKeyword(value);
  if (unenforced) throw new InvalidArgumentError(`the keyword '${unenforced.keyword}' (at ${unenforced.path}) is not supported in constrained decoding (it would require ${unenforced.why})`);
  return value;
}

function messagesArg(text: string): ChatMessage[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new InvalidArgumentError(`not valid JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(value) || value.length === 0) throw new InvalidArgumentError('expected a non-empty JSON array of {"role", "content"} objects');
  value.forEach((m, i) => {
    if (!m || typeof m !== 'object' || typeof m.role !== 'string' || typeof m.content !== 'string') {
      throw new InvalidArgumentError(`message ${i} must be an object with string "role" and "content"`);
    }
  });
  return value as ChatMessage[];
}

export function generateCommand(): Command {
  const cmd = new Command('generate').description('generate text with speculative decoding');
  cmd
    .option('--prompt <text>', "the prompt: one user message in the model's chat template (continued as is with --raw or when the model has no template)")
    .option('--raw', 'continue --prompt as plain text, without the chat template')
    .option('--messages <json>', 'a chat as a JSON array of {"role", "content"}, formatted with the chat template', messagesArg)
    .option('--max-tokens <n>', 'most new tokens', intIn(1, 1_000_000), 128)
    .option('--stop <text...>', 'stop strings (the output ends before the first one)', [] as string[])
    .option('--json', 'print one JSON object: {text, token_ids, text_offsets, finish_reason, policy, stats}')
    .option('--json-schema <schema>', 'constrain the output to JSON valid against this JSON Schema (a file, or the schema as JSON text)', schemaArg)
    .option('--json-object', 'constrain the output to a JSON object');
  addPolicyOptions(cmd);
  addSamplingOptions(cmd);
  addModelOptions(cmd);
  cmd.action(async (flags: GenerateFlags) => {
    if ((flags.prompt === undefined) === (flags.messages === undefined)) throw new InvalidArgumentError('give exactly one of --prompt or --messages');
    if (flags.raw && flags.messages) throw new InvalidArgumentError('--raw applies to --prompt, not --messages');
    if (flags.jsonSchema && flags.jsonObject) throw new InvalidArgumentError('give at most one of --json-schema or --json-object');
    if (flags.policy !== undefined) policySpec({ ...flags, policy: flags.policy }); // a bad --policy fails before the models load
    const pair = await ModelPair.load(pairOptions(flags));
    const policy = policySpec({ ...flags, policy: flags.policy ?? defaultPolicyName({ draft: Boolean(pair.draft), head: Boolean(pair.head) }) });
    let input: PromptInput;
    if (flags.messages) input = { messages: flags.messages };
    else if (flags.raw || !pair.tokenizer.hasChatTemplate) input = { prompt: flags.prompt! };
    else input = { messages: [{ role: 'user', content: flags.prompt! }] };
    if (policy.policy !== 'none' && !isDraftFree(policy) && !pair.draft) throw new InvalidArgumentError(`--policy ${policy.policy} needs a draft model (use --draft DIR or --policy none)`);
    if (policy.policy === 'specdec++' && !pair.head) throw new InvalidArgumentError('--policy specdec++ needs an acceptance head (--head FILE)');
    const sampling = samplingParams(flags, pair.target.info.generationDefaults);
    const onDelta = flags.json ? undefined : ({ text }: { text: string }) => void process.stdout.write(text);
    const grammar: GrammarSpec | undefined = flags.jsonSchema ? { type: 'json_schema', schema: JSON.stringify(grammarSchema(flags.jsonSchema)) } : flags.jsonObject ? { type: 'json_object' } : undefined;
    let constraint;
    try {
      constraint = grammar ? await (await pair.grammars()).constraint(grammar) : undefined;
    } catch (err) {
      if (err instanceof GrammarError) throw new InvalidArgumentError(`--json-schema cannot be compiled: ${err.message}`);
      throw err;
    }
    const result = await generateText(pair, input, { maxTokens: flags.maxTokens, sampling, seed: flags.seed, policy, stop: flags.stop, constraint }, onDelta);
    if (flags.json) {
      const { text, token_ids, text_offsets, finish_reason, stats } = result;
      process.stdout.write(`${JSON.stringify({ text, token_ids, text_offsets, finish_reason, policy: policyLabel(policy), stats })}\n`);
    } else {
      process.stdout.write('\n');
      const s = result.stats;
      process.stderr.write(
        `[${policyLabel(policy)}: ${result.token_ids.length} tokens, ${result.finish_reason}; ${((result.token_ids.length / s.wall_ms) * 1000).toFixed(1)} tok/s; ` +
          `${s.rounds} rounds, acceptance ${(s.acceptance_rate * 100).toFixed(1)}%, ${s.mean_accepted_per_round.toFixed(2)} accepted/round]\n`,
      );
    }
    await pair.release();
  });
  return cmd;
}
