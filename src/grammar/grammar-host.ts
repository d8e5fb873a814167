/**
 * A grammar thread (worker_threads): it compiles grammars with xgrammar (compiler.ts) and runs
 * the matchers built from them, answering an engine worker's requests for token masks
 * (grammar-host-protocol.ts). Compiling runs here so that the engine worker's rounds go on
 * while a schema compiles; the matchers live here too because a compiled grammar cannot leave
 * the WebAssembly instance it was compiled in (xgrammar's JavaScript binding has no
 * serialization).
 *
 * Requests are handled one at a time, in the order they arrive, so an `accept` always lands
 * before the next `mask` of its matcher. A matcher that refuses an accepted token keeps the
 * error and reports it on its next `mask`.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { GrammarCompiler } from './compiler.js';
import type { GrammarConstraint } from './constraint.js';
import { GrammarError } from './errors.js';
import type { GrammarHostData, GrammarHostReply, GrammarHostRequest } from './grammar-host-protocol.js';

const data = workerData as GrammarHostData;
const port = parentPort!;
const post = (reply: GrammarHostReply, transfer: ArrayBuffer[] = []) => port.postMessage(reply, transfer);

/** Open matchers by id, with the error an `accept` met, if any. */
const matchers = new Map<number, { constraint: GrammarConstraint; error?: string }>();

const compiler = GrammarCompiler.forModelDir(data.modelDir, data.vocabSize, data.stopTokenIds);
compiler.then(
  () => post({ op: 'ready', vocabSize: data.vocabSize }),
  (err: unknown) => post({ op: 'load-failed', message: messageOf(err) }),
);

let queue: Promise<void> = Promise.resolve();
port.on('message', (request: GrammarHostRequest) => {
  queue = queue.then(() => handle(request));
});

async function handle(request: GrammarHostRequest): Promise<void> {
  switch (request.op) {
    case 'open': {
      const grammars = await compiler;
      if (!request.compile && !grammars.isKnown(request.spec)) return post({ op: 'miss', req: request.req });
      const compiled = !grammars.isKnown(request.spec);
      try {
        matchers.set(request.id, { constraint: await grammars.constraint(request.spec) });
        return post({ op: 'opened', req: request.req, compiled });
      } catch (err) {
        return post({ op: 'error', req: request.req, message: messageOf(err), compiled });
      }
    }
    case 'mask': {
      const matcher = matchers.get(request.id);
      if (!matcher) return post({ op: 'error', req: request.req, message: `grammar matcher ${request.id} is not open` });
      if (matcher.error !== undefined) return post({ op: 'error', req: request.req, message: matcher.error });
      try {
        await matcher.constraint.prepare(request.pending);
        const mask = matcher.constraint.maskAt(request.pending).slice(); // a copy: the matcher keeps its own
        return post({ op: 'mask', req: request.req, mask }, [mask.buffer as ArrayBuffer]);
      } catch (err) {
        return post({ op: 'error', req: request.req, message: messageOf(err) });
      }
    }
    case 'accept': {
      const matcher = matchers.get(request.id);
      if (!matcher || matcher.error !== undefined) return;
      try {
        matcher.constraint.accept(request.tokens);
      } catch (err) {
        matcher.error = messageOf(err);
      }
      return;
    }
    case 'release':
      matchers.get(request.id)?.constraint.release();
      matchers.delete(request.id);
      return;
  }
}

function messageOf(err: unknown): string {
  return err instanceof GrammarError || err instanceof Error ? err.message : String(err);
}
