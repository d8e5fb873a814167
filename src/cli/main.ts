/** The `specd` command line. Errors end in one line on stderr and a non-zero exit. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { PACKAGE_ROOT } from '../paths.js';
import { benchCommand } from './bench.js';
import { generateCommand } from './generate.js';

const version = (JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;

const program = new Command('specd')
  .description('speculative-decoding inference on ONNX Runtime')
  .version(version)
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();
program.addCommand(generateCommand());
program.addCommand(benchCommand());
for (const cmd of program.commands) {
  cmd.exitOverride();
  for (const sub of cmd.commands) sub.exitOverride();
}

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Commander has printed its message already (usage errors, --help, --version).
    process.exitCode = err.exitCode;
  } else {
    process.stderr.write(`specd: error: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}
