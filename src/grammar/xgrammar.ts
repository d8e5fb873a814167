/**
 * Loads `@mlc-ai/web-xgrammar` (xgrammar compiled to WebAssembly, https://github.com/mlc-ai/xgrammar),
 * one independent WebAssembly instance per call.
 *
 * The package declares `"type": "module"` but ships a UMD bundle, so `import` fails in Node and
 * the bundle has to run as CommonJS: it is compiled here as a CommonJS module of its own path
 * (so its `require` and its one dynamic `import('module')` resolve as usual). Each compilation
 * is a new module with its own WebAssembly instance and memory.
 *
 * Why fresh instances: xgrammar reports a schema it cannot compile by aborting (C++ `abort()`,
 * "Aborted()" in JavaScript). The abort unwinds nothing inside the instance, so its state is
 * left half-way (the compiler's cache keeps a lock taken: the next compile in that instance
 * spins for ever), and a fault such as "memory access out of bounds" leaves its memory in an
 * unknown state. After any fault the caller drops the instance and loads a new one.
 *
 * Its `console` is replaced by one that keeps what xgrammar prints instead of printing it: the
 * reason for an abort ("[FATAL] ...: Unsupported type ...") is only printed, as are its warnings
 * about schema parts it does not enforce ("[WARNING] ..."). `takePrinted()` hands those lines to
 * the caller, which turns them into errors.
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
  xgrammarWebAssembly?: WasmApi;
  _compile(source: string, filename: string): void;
}
/** The parts of the `WebAssembly` global used here (the project's lib settings do not declare it). */
interface WasmMemory {
  buffer: ArrayBuffer;
}
interface WasmApi {
  Memory: new (...args: never[]) => WasmMemory;
  instantiate(...args: unknown[]): Promise<{ instance: { exports: Record<string, unknown> } }>;
}
const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

type ModuleCtor = { new (id: string): CjsModule; _nodeModulePaths(dir: string): string[] };

/** Lines of xgrammar output kept until taken. */
const MAX_KEPT_LINES = 20;

/** One xgrammar WebAssembly instance. */
export interface XGrammarInstance {
  /** The package's API, bound to this instance. */
  readonly module: XGrammarModule;
  /** Bytes of WebAssembly memory the instance holds now (0 before its first call). It only grows: WebAssembly memory is never given back. */
  memoryBytes(): number;
  /** What xgrammar printed since the last call (its reasons for an abort, its warnings). */
  takePrinted(): string[];
}

let bundle: { path: string; source: string } | undefined;

/** A new xgrammar instance (~30 ms to load; its WebAssembly starts on the first call). */
export function loadXGrammar(): XGrammarInstance {
  bundle ??= (() => {
    const path = createRequire(import.meta.url).resolve('@mlc-ai/web-xgrammar');
    return { path, source: readFileSync(path, 'utf8') };
  })();
  const { path, source } = bundle;
  const Ctor = Module as unknown as ModuleCtor;
  const mod = new Ctor(path);
  mod.filename = path;
  mod.paths = Ctor._nodeModulePaths(dirname(path));
  let printed: string[] = [];
  const keep = (...args: unknown[]) => {
    printed.push(args.map(String).join(' '));
    if (printed.length > MAX_KEPT_LINES) printed = printed.slice(-MAX_KEPT_LINES);
  };
  mod.xgrammarConsole = { log: keep, warn: keep, error: keep, info: keep, debug: keep };
  // The instance's memory, seen by wrapping the one `WebAssembly.instantiate` the bundle calls.
  let memory: WasmMemory | undefined;
  const instantiate = async (...args: unknown[]) => {
    const result = await wasm.instantiate(...args);
    memory = Object.values(result.instance.exports).find((e): e is WasmMemory => e instanceof wasm.Memory);
    return result;
  };
  mod.xgrammarWebAssembly = Object.assign(Object.create(wasm) as WasmApi, { instantiate });
  // The bundle reads `console` and `WebAssembly` as free variables: those declared here shadow the globals.
  mod._compile(`const console = module.xgrammarConsole; const WebAssembly = module.xgrammarWebAssembly;${source}`, path);
  return {
    module: mod.exports as XGrammarModule,
    memoryBytes: () => memory?.buffer.byteLength ?? 0,
    takePrinted: () => {
      const out = printed;
      printed = [];
      return out;
    },
  };
}
