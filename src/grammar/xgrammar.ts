/**
 * Loads `@mlc-ai/web-xgrammar` (xgrammar compiled to WebAssembly, https://github.com/mlc-ai/xgrammar).
 *
 * The package declares `"type": "module"` but ships a UMD bundle, so `import` fails in Node and
 * the bundle has to run as CommonJS: it is compiled here as a CommonJS module of its own path
 * (so its `require` and its one dynamic `import('module')` resolve as usual). Its `console` is
 * replaced by one that keeps what xgrammar prints instead of printing it: a schema it cannot
 * compile aborts the call with "Aborted()", and the reason ("[FATAL] ...: Unsupported type ...")
 * is only printed, as are its warnings about schema parts it does not enforce ("[WARNING] ...").
 * `takePrintedErrors()` hands those lines to the caller, which turns them into errors.
 */
import { readFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import { dirname } from 'node:path';
import type * as XGrammar from '@mlc-ai/web-xgrammar';

export type XGrammarModule = typeof XGrammar;

interface CjsModule {
  exports: unknown;
  filename: string;
  paths: string[];
  xgrammarConsole?: Partial<Console>;
  _compile(source: string, filename: string): void;
}
type ModuleCtor = { new (id: string): CjsModule; _nodeModulePaths(dir: string): string[] };

/** Lines of xgrammar output kept until taken. */
const MAX_KEPT_LINES = 20;

let loaded: XGrammarModule | undefined;
let printed: string[] = [];

/** The xgrammar module, loaded on first use (~30 ms; the WebAssembly instance starts on the first call). */
export function xgrammar(): XGrammarModule {
  if (loaded) return loaded;
  const path = createRequire(import.meta.url).resolve('@mlc-ai/web-xgrammar');
  const Ctor = Module as unknown as ModuleCtor;
  const mod = new Ctor(path);
  mod.filename = path;
  mod.paths = Ctor._nodeModulePaths(dirname(path));
  const keep = (...args: unknown[]) => {
    printed.push(args.map(String).join(' '));
    if (printed.length > MAX_KEPT_LINES) printed = printed.slice(-MAX_KEPT_LINES);
  };
  mod.xgrammarConsole = { log: keep, warn: keep, error: keep, info: keep, debug: keep };
  // The bundle reads `console` as a free variable: the one declared here shadows the global.
  mod._compile(`const console = module.xgrammarConsole;${readFileSync(path, 'utf8')}`, path);
  loaded = mod.exports as XGrammarModule;
  return loaded;
}

/** What xgrammar printed since the last call (its reasons for an abort, its warnings). */
export function takePrintedErrors(): string[] {
  const out = printed;
  printed = [];
  return out;
}
