/** A grammar that cannot be used: xgrammar cannot compile it, or it faulted, or it admits no output. The message says why. */
export class GrammarError extends Error {
  override name = 'GrammarError';
}
