/**
 * A model file's identity, shared by code that writes derived graphs (a prepared draft, a quantized
 * copy) and by the model-directory reader on the server's main thread, which must not load ONNX
 * Runtime: this module imports only Node built-ins.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** Metadata key a prepared graph carries: the sha256 of the model file it was prepared from. */
export const SOURCE_SHA256_KEY = 'specd.prepared_from_sha256';

/** sha256 of a file, hex. Throws the fs error (ENOENT, EACCES) when the file cannot be read. */
export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}
