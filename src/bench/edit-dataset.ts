/**
 * The `edit` prompt set: work whose answer repeats most of its prompt, where draft-free
 * proposers (src/proposers) pay. Built on load, deterministically, from two shipped sets (see
 * bench/datasets/edit/SOURCE.md): HumanEval's canonical solutions and GSM8K's test questions.
 *
 * Prompt i is of kind i mod 4 and uses HumanEval problem floor(i / 4) (GSM8K question
 * floor(i / 4) for `quote`):
 * The code is the problem's prompt without its docstrings, then its canonical solution.
 * - `rename`: rename the function (`f` -> `f_v2`), reply with the whole code;
 * - `docstring`: add a comment line at the top of the body, reply with the whole code;
 * - `constant`: change the first integer literal of the solution to the next integer (a problem
 *   without one gets a `docstring` edit), reply with the whole code;
 * - `quote`: repeat a GSM8K problem word for word, then solve it.
 * Each task carries the answer a model following the instruction writes (its `reference`, the
 * whole of it for code, the quoted part for `quote`), for checks and simulations.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';

export const EDIT_KINDS = ['rename', 'docstring', 'constant', 'quote'] as const;
export type EditKind = (typeof EDIT_KINDS)[number];

export interface EditTask {
  id: string;
  kind: EditKind;
  /** The user's message. */
  prompt: string;
  /** What an answer that follows the instruction repeats or writes (see the module comment). */
  reference: string;
}

interface HumanEvalProblem {
  task_id: string;
  prompt: string;
  canonical_solution: string;
  entry_point: string;
}

/** The comment the `docstring` edit adds (a line a model can only copy from the instruction). */
const ADDED_COMMENT = '# Reviewed: behaviour unchanged.';

/** Every task of the set, in order (4 x 164 = 656; `dir` is the data sets' folder). */
export function editTasks(dir: string): EditTask[] {
  const problems = gunzipSync(readFileSync(join(dir, 'humaneval', 'HumanEval.jsonl.gz')))
    .toString('utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as HumanEvalProblem);
  const questions = readFileSync(join(dir, 'gsm8k', 'test.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => (JSON.parse(l) as { question: string }).question);
  const tasks: EditTask[] = [];
  problems.forEach((p, n) => {
    const head = withoutDocstrings(p.prompt);
    const code = `${head}${p.canonical_solution}`.trimEnd();
    const fence = (c: string) => `\`\`\`python\n${c}\n\`\`\``;
    tasks.push({
      id: `edit/rename/${p.task_id}`,
      kind: 'rename',
      prompt: `Rename the function \`${p.entry_point}\` to \`${p.entry_point}_v2\` everywhere in this code. Reply with the whole code and nothing else.\n\n${fence(code)}`,
      // Whole words only: HumanEval/106's function is `f`.
      reference: fence(code.replace(new RegExp(`\\b${p.entry_point}\\b`, 'g'), `${p.entry_point}_v2`)),
    });
    tasks.push(docstringTask(p, head, code, fence));
    const literal = /(?<![\w.])(\d+)(?![\w.])/.exec(p.canonical_solution);
    if (literal) {
      const from = literal[1]!;
      const to = String(Number(from) + 1);
      const at = head.length + literal.index;
      tasks.push({
        id: `edit/constant/${p.task_id}`,
        kind: 'constant',
        prompt: `In the body of \`${p.entry_point}\`, change the first constant ${from} to ${to}. Reply with the whole code and nothing else.\n\n${fence(code)}`,
        reference: fence(`${code.slice(0, at)}${to}${code.slice(at + from.length)}`),
      });
    } else tasks.push({ ...docstringTask(p, head, code, fence), id: `edit/constant/${p.task_id}` });
    const q = questions[n]!;
    tasks.push({
      id: `edit/quote/gsm8k-test-${n}`,
      kind: 'quote',
      prompt: `Repeat the following problem word for word, then solve it step by step.\n\n${q}`,
      reference: q,
    });
  });
  return tasks;
}

/**
 * The problem's code without its docstrings (the task statement; the edits do not need it), so
 * that prompts fit small models' contexts: the bundled pair's is 1,024 byte-level tokens.
 */
function withoutDocstrings(code: string): string {
  // A docstring is the string that opens a function's body (a `def` line ending in a colon).
  return code.replace(/(\ndef [^\n]*:\n)[ \t]*("""|''')[\s\S]*?\2[ \t]*\n/g, '$1');
}

function docstringTask(p: HumanEvalProblem, head: string, code: string, fence: (c: string) => string): EditTask {
  const body = head.length;
  const indent = /^[ \t]*/.exec(p.canonical_solution.split('\n').find((l) => l.trim() !== '') ?? '    ')![0];
  return {
    id: `edit/docstring/${p.task_id}`,
    kind: 'docstring',
    prompt: `Add the comment line \`${ADDED_COMMENT}\` as the first line of the body of \`${p.entry_point}\`. Reply with the whole code and nothing else.\n\n${fence(code)}`,
    reference: fence(`${code.slice(0, body)}${indent}${ADDED_COMMENT}\n${code.slice(body)}`),
  };
}
