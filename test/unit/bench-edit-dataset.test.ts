/**
 * The `edit` prompt set (src/bench/edit-dataset.ts): four kinds in a fixed order, each task's
 * reference answer is the prompt's code with exactly the asked edit (or the quoted question),
 * and `--dataset edit` loads it. No model.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isDataset, loadPrompts } from '../../src/bench/datasets.js';
import { EDIT_KINDS, editTasks } from '../../src/bench/edit-dataset.js';
import { DATASETS_DIR } from '../../src/paths.js';

/** The fenced code block of a prompt. */
const codeOf = (prompt: string) => /```python\n([\s\S]*)\n```/.exec(prompt)![1]!;
const unfence = (ref: string) => /^```python\n([\s\S]*)\n```$/.exec(ref)![1]!;

describe('edit data set', () => {
  const tasks = editTasks(DATASETS_DIR);

  test('656 tasks, the four kinds in turn, ids unique', () => {
    assert.equal(tasks.length, 4 * 164);
    tasks.forEach((t, i) => {
      // A solution without an integer literal gets the docstring edit in the constant slot.
      const fallback = i % 4 === 2 && t.kind === 'docstring';
      assert.equal(fallback ? 'constant' : t.kind, EDIT_KINDS[i % 4], t.id);
      assert.ok(t.id.startsWith(`edit/${EDIT_KINDS[i % 4]}/`), t.id);
    });
    assert.equal(new Set(tasks.map((t) => t.id)).size, tasks.length);
  });

  test('each reference is the code with exactly the asked edit', () => {
    let constants = 0;
    for (const t of tasks) {
      if (t.kind === 'quote') {
        assert.ok(t.prompt.endsWith(t.reference) && t.reference.length > 40, t.id);
        continue;
      }
      const code = codeOf(t.prompt);
      const ref = unfence(t.reference);
      if (t.kind === 'rename') {
        const [, from, to] = /`(\w+)` to `(\w+)`/.exec(t.prompt)!;
        assert.equal(ref.replace(new RegExp(`\\b${to}\\b`, 'g'), from!), code, t.id);
        assert.ok(!new RegExp(`\\b${from}\\b`).test(ref), t.id);
        assert.ok(ref.includes(`def ${to}(`), t.id);
      } else if (t.kind === 'docstring') {
        const line = /comment line `([^`]+)`/.exec(t.prompt)![1]!;
        const lines = ref.split('\n');
        const at = lines.findIndex((l) => l.trim() === line);
        assert.ok(at > 0 && lines.filter((l) => l.trim() === line).length === 1, t.id);
        assert.equal([...lines.slice(0, at), ...lines.slice(at + 1)].join('\n'), code, t.id);
      } else {
        constants++;
        const [, from, to] = /constant (\d+) to (\d+)/.exec(t.prompt)!;
        assert.equal(Number(to), Number(from) + 1, t.id);
        // The code with one occurrence of the old constant replaced by the new one.
        let found = false;
        for (let at = code.indexOf(from!); at >= 0 && !found; at = code.indexOf(from!, at + 1)) {
          found = `${code.slice(0, at)}${to}${code.slice(at + from!.length)}` === ref;
        }
        assert.ok(found, t.id);
      }
    }
    assert.ok(constants > 100, `${constants} constant edits`);
  });

  test('--dataset edit loads the prompts in order', () => {
    assert.ok(isDataset('edit'));
    const prompts = loadPrompts('edit', 8);
    assert.deepEqual(
      prompts.map((p) => p.id.split('/')[1]),
      ['rename', 'docstring', 'constant', 'quote', 'rename', 'docstring', 'constant', 'quote'],
    );
    assert.equal(prompts[0]!.messages[0]!.role, 'user');
  });
});
