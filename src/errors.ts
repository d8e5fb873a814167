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

/**
 * Something a request asked for that the engine cannot serve: the client's fault, answered as a
 * 400 (never a 500). `param` names the request parameter in the API's notation when the engine
 * knows it (`speculative.policy`); without one the server points at the prompt.
 */
export class RequestError extends Error {
  override name = 'RequestError';
  constructor(
    message: string,
    readonly param?: string,
  ) {
    super(message);
  }
}
