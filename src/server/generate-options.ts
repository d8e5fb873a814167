/**
 * A planned request (`GenerationRequest`, protocol.ts) as the engine's arguments: the one place
 * where the request's plain data meets what the worker adds (the compiled grammar, the abort
 * signal, its batch scheduler, the round callback), and where a wire name differs from the
 * engine's: `ignoreEos` becomes `eosTokenIds: []` (no token ends the output; the grammar's end
 * still does). Every other field has the engine's name and type, and `tsc` checks that here.
 */
import type { GenerateOptions } from '../engine/speculative.js';
import type { PromptInput, TextGenerateOptions } from '../engine/text-generation.js';
import type { GenerationRequest } from './protocol.js';

/** What the worker adds to a request: not data, so not sent across the thread boundary. */
export type WorkerRuntime = Pick<TextGenerateOptions, 'constraint' | 'signal' | 'scheduler' | 'onRound'>;

/** Fields that are not engine options under their own name: read below, one by one. */
type Converted = 'promptIds' | 'ignoreEos' | 'grammar' | 'grammarParam';
type Shared = Omit<GenerationRequest, Converted>;
// Every other request field is an engine option of the same name: a new one that is not fails to compile here.
const SHARED_FIELDS_ARE_ENGINE_OPTIONS: [Exclude<keyof Shared, keyof GenerateOptions>] extends [never] ? true : never = true;
void SHARED_FIELDS_ARE_ENGINE_OPTIONS;

/**
 * The arguments of the engine's generateText for a request.
 * @param request the plan's request (grammar and grammarParam are the worker's: it compiles the
 *   grammar into `runtime.constraint` and names grammarParam in the error when it does not compile)
 * @returns the prompt as token ids and the options
 */
export function engineArguments(request: GenerationRequest, runtime: WorkerRuntime): { input: PromptInput; options: TextGenerateOptions } {
  const { promptIds, ignoreEos, grammar: _grammar, grammarParam: _grammarParam, ...shared } = request;
  const options: TextGenerateOptions = { ...(shared satisfies Shared), ...runtime };
  if (ignoreEos) options.eosTokenIds = [];
  return { input: { tokenIds: promptIds }, options };
}
