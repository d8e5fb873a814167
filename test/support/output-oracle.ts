/**
 * The output rules of output-decider.ts computed the slow, obvious way from a whole token
 * sequence of a byte-level tokenizer (every token one byte, ids 0-255; others are special and
 * have no text): decode every prefix in full, search every prefix for the stop strings. Tests
 * compare the engine's incremental, round-by-round decisions with this.
 */

export interface OracleOutput {
  text: string;
  tokenIds: number[];
  textOffsets: number[];
  finishReason: 'stop' | 'length' | undefined;
}

/** Complete characters of `bytes` (an incomplete UTF-8 character at the end left out). */
function completeText(bytes: readonly number[]): string {
  return new TextDecoder('utf-8').decode(Uint8Array.from(bytes), { stream: true });
}

/**
 * @param tokens the generated tokens, in order (the engine may have stopped earlier)
 * @returns the output; finishReason undefined when `tokens` ends before any rule ends the output
 */
export function oracleOutput(tokens: readonly number[], rules: { maxTokens: number; eosTokenIds: readonly number[]; stop: readonly string[] }): OracleOutput {
  const bytes: number[] = [];
  const sequence: number[] = [];
  const offsets: number[] = [];
  const stops = rules.stop.filter((s) => s.length > 0);
  const firstStop = (text: string) => {
    let at = -1;
    for (const s of stops) {
      const i = text.indexOf(s);
      if (i !== -1 && (at === -1 || i < at)) at = i;
    }
    return at;
  };
  const cut = (text: string, at: number): OracleOutput => {
    const n = offsets.filter((o) => o <= at).length;
    return { text: text.slice(0, at), tokenIds: sequence.slice(0, n), textOffsets: offsets.slice(0, n), finishReason: 'stop' };
  };
  const ended = (finishReason: 'stop' | 'length'): OracleOutput => {
    const text = Buffer.from(bytes).toString('utf8'); // an incomplete character at the end as U+FFFD
    const at = firstStop(text);
    if (at !== -1) return cut(text, at);
    return { text, tokenIds: [...sequence], textOffsets: [...offsets], finishReason };
  };
  for (const token of tokens) {
    if (rules.eosTokenIds.includes(token)) return ended('stop');
    offsets.push(completeText(bytes).length);
    sequence.push(token);
    if (token < 256) bytes.push(token);
    const text = completeText(bytes);
    const at = firstStop(text);
    if (at !== -1) return cut(text, at);
    if (sequence.length >= rules.maxTokens) return ended('length');
  }
  const text = completeText(bytes);
  return { text, tokenIds: [...sequence], textOffsets: [...offsets], finishReason: undefined };
}
