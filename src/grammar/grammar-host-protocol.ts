/**
 * Messages between an engine worker and one of its grammar threads (grammar-host.ts), which
 * owns an xgrammar compiler and the matchers built from its grammars. Every request carries a
 * number `req` that its reply repeats; `accept` and `release` have no reply.
 *
 *   engine worker                        grammar thread
 *    |<-------------------------- ready ---|  compiler built (vocabulary tables)
 *    |-- open {req, id, spec, compile} --->|  a matcher `id` for spec; compile only when allowed
 *    |<------------ opened | miss | error -|  miss: not cached and compile was false; opened and
 *                                          |  error say whether this open compiled the spec
 *    |-- mask {req, id, pending} --------->|  the mask after the verified output + pending
 *    |<-------------------- mask | error --|  the mask's buffer is transferred
 *    |-- accept {id, tokens} ------------->|  tokens appended to the verified output
 *    |-- release {id} -------------------->|  matcher freed
 */
import type { GrammarSpec } from './compiler.js';

/** `workerData` of a grammar thread: the model directory whose tokenizer.json gives the vocabulary. */
export interface GrammarHostData {
  modelDir: string;
  /** The model's logits width (config.json's vocab_size). */
  vocabSize: number;
  /** EOS ids: the only tokens allowed once a grammar is complete. */
  stopTokenIds: number[];
}

export type GrammarHostRequest =
  | { op: 'open'; req: number; id: number; spec: GrammarSpec; compile: boolean }
  | { op: 'mask'; req: number; id: number; pending: number[] }
  | { op: 'accept'; id: number; tokens: number[] }
  | { op: 'release'; id: number };

export type GrammarHostReply =
  | { op: 'ready'; vocabSize: number }
  | { op: 'load-failed'; message: string }
  | { op: 'opened'; req: number; /** The spec was compiled for this open (false: from the thread's cache). */ compiled: boolean }
  | { op: 'miss'; req: number }
  | { op: 'mask'; req: number; mask: Int32Array }
  | { op: 'error'; req: number; message: string; /** On `open`: a compile was tried and failed (false: a remembered failure, or not a compile). */ compiled?: boolean };
