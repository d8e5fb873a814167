/** Errors shared by the engine and the text layer. */

/**
 * A model directory file that cannot be used. `file` is the path of the file at fault and
 * `field`, when set, the JSON field inside it (e.g. `chat_template`).
 */
export class ModelLoadError extends Error {
  override name = 'ModelLoadError';
  constructor(
    message: string,
    readonly file: string,
    readonly field?: string,
  ) {
    super(message);
  }
}
