/** The `specd` command line. Errors end in one line on stderr and a non-zero exit. */
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { SPECD_VERSION } from '../paths.js';
import { benchCommand } from './bench.js';
import { doctorCommand } from './doctor.js';
import { generateCommand } from './generate.js';
import { serveCommand } from './serve.js';
import { headCommand } from './head.js';
import { modelsCommand } from './models.js';

const program = new Command('specd')
  .description('speculative-decoding inference on ONNX Runtime')
  .version(SPECD_VERSION)
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();
program.addCommand(generateCommand());
program.addCommand(benchCommand());
program.addCommand(serveCommand());
program.addCommand(doctorCommand());
program.addCommand(modelsCommand());
program.addCommand(headCommand());
for (const cmd of program.commands) {
  cmd.exitOverride();
  for (const sub of cmd.commands) sub.exitOverride();
}

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError && !(err instanceof InvalidArgumentError)) {
    // Commander has printed its message already (usage errors, --help, --version); an
    // InvalidArgumentError thrown by a command's action has not been printed.
    process.exitCode = err.exitCode;
  } else {
    process.stderr.write(`specd: error: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}
