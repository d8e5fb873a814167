/**
 * Automatic prefix caching (engine/prefix-cache.ts, kv-pool.ts): a conversation's next turn
 * starts from the rows its last turn left, and the outputs are those of a pair without the
 * cache, token for token (greedy, every stop policy, rollbacks included) and draw for draw
 * (seeded sampling), alone and batched; a prefix held by a running sequence is copied to a new
 * one; parked slots leave least recently used first, for a slot or for the KV budget, whose
 * bound holds under a long random multi-turn workload; making room for a turn never evicts its own
 * prefix (lookup before admission).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadPrompts } from '../../src/bench/datasets.js';
import { KvBudget, kvBytesPerPosition } from '../../src/engine/kv-budget.js';
import { MIN_PARKED_SLOTS, type PooledKVCache } from '../../src/engine/kv-pool.js';
import { DecoderModel } from '../../src/engine/model.js';
import { ModelPair } from '../../src/pair/model-pair.js';
import { PREFIX_BLOCK_SIZE, PrefixCache } from '../../src/engine/prefix-cache.js';
import type { SamplingParams } from '../../src/engine/sampling.js';
import { BatchScheduler } from '../../src/engine/scheduler.js';
import type { GenerateOptions } from '../../src/engine/speculative.js';
import type { PolicySpec } from '../../src/engine/stop-policy.js';
import { writeFixtureModelDir, writeFixturePair } from '../../src/testing/decoder-fixture.js';
import { Rng } from '../../src/engine/rng.js';
import type { ChatMessage } from '../../src/text/tokenizer.js';

const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1 };
const SAMPLED: SamplingParams = { temperature: 0.8, topK: 0, topP: 0.95 };
const POLICIES: PolicySpec[] = [{ policy: 'none' }, { policy: 'fixed', k: 4 }, { policy: 'confidence', pMin: 0.4, kMax: 6 }, { policy: 'specdec++', kMin: 2, kMax: 12 }];

interface Turn {
  tokens: number[];
  cached: number;
  promptLength: number;
}

/** One generation on `pair`, alone or through `scheduler`. */
async function generate(pair: ModelPair, prompt: number[], opts: GenerateOptions, scheduler?: BatchScheduler): Promise<Turn & { text: string }> {
  const g = pair.decoder.start(prompt, { ...opts, tokenizer: pair.tokenizer });
  const cached = g.sequence.cachedPromptTokens;
  while (!g.done) await (scheduler ? scheduler.step(g) : g.step());
  return { tokens: [...g.output.tokenIds], text: g.output.text, cached, promptLength: prompt.length };
}

/** A chat of `questions.length` turns, each prompt the whole conversation so far (as chat clients send it). */
async function converse(pair: ModelPair, system: string, questions: string[], opts: (turn: number) => GenerateOptions, scheduler?: BatchScheduler): Promise<Turn[]> {
  const messages: ChatMessage[] = [{ role: 'system', content: system }];
  const turns: Turn[] = [];
  for (const [t, q] of questions.entries()) {
    messages.push({ role: 'user', content: q });
    const turn = await generate(pair, pair.tokenizer.encodeChat(messages), opts(t), scheduler);
    messages.push({ role: 'assistant', content: turn.text });
    turns.push(turn);
  }
  return turns;
}

describe('prefix caching on the bundled pair', () => {
  let cached: ModelPair;
  let plain: ModelPair;
  let questions: string[];
  const system = 'You are a careful assistant. Answer in one short paragraph, show the arithmetic step by step, and say when a question cannot be answered from what it gives.';

  before(async () => {
    cached = await ModelPair.load({ threads: 2, prefixCaching: true });
    plain = await ModelPair.load({ threads: 2 });
    // Short questions: three turns of a conversation fit the bundled pair's 1,024 positions.
    questions = loadPrompts('gsm8k', 12).map((item) => (item.messages.at(-1)!.content as string).slice(0, 110));
  });
  after(async () => {
    await cached?.release();
    await plain?.release();
  });

  test('a conversation: greedy output equals the pair without the cache at every turn, for every policy, and later turns start from the last one', async () => {
    for (const [i, policy] of POLICIES.entries()) {
      const qs = questions.slice(i * 3, i * 3 + 3);
      const opts = () => ({ maxTokens: 24, sampling: GREEDY, policy });
      const withCache = await converse(cached, system, qs, opts);
      const without = await converse(plain, system, qs, opts);
      withCache.forEach((turn, t) => {
        assert.deepEqual(turn.tokens, without[t]!.tokens, `${policy.policy}, turn ${t + 1}`);
        assert.equal(without[t]!.cached, 0, 'no cache, no cached tokens');
        assert.ok(turn.cached < turn.promptLength, 'the last prompt token is always fed');
        // The system prompt is shared with the previous policy's conversation; later turns hold the whole previous turn.
        if (i > 0 || t > 0) assert.ok(turn.cached >= PREFIX_BLOCK_SIZE, `${policy.policy}, turn ${t + 1}: ${turn.cached} cached`);
        if (t > 0) assert.ok(turn.cached >= withCache[t - 1]!.promptLength, `${policy.policy}, turn ${t + 1}: ${turn.cached} cached of ${turn.promptLength}, the previous prompt had ${withCache[t - 1]!.promptLength}`);
      });
    }
  });

  test('seeded sampling: the same draws with and without the cache', async () => {
    for (const policy of [POLICIES[1]!, POLICIES[3]!]) {
      const opts = (t: number) => ({ maxTokens: 24, sampling: SAMPLED, seed: 40 + t, policy });
      const withCache = await converse(cached, system, questions.slice(0, 3), opts);
      const without = await converse(plain, system, questions.slice(0, 3), opts);
      withCache.forEach((turn, t) => assert.deepEqual(turn.tokens, without[t]!.tokens, `${policy.policy}, turn ${t + 1}`));
      assert.ok(withCache.slice(1).every((turn) => turn.cached > 0));
    }
  });

  test('conversations batched together equal each conversation alone without the cache', async () => {
    const scheduler = new BatchScheduler({ maxBatchTokens: 512 });
    const convs = [0, 1, 2, 3].map((c) => questions.slice(c * 2, c * 2 + 3));
    const opts = (c: number) => () => ({ maxTokens: 20, sampling: GREEDY, policy: POLICIES[c]! });
    const batched = await Promise.all(convs.map((qs, c) => converse(cached, `${system} Conversation ${c}.`, qs, opts(c), scheduler)));
    for (const [c, qs] of convs.entries()) {
      const alone = await converse(plain, `${system} Conversation ${c}.`, qs, opts(c));
      batched[c]!.forEach((turn, t) => assert.deepEqual(turn.tokens, alone[t]!.tokens, `conversation ${c}, turn ${t + 1}`));
      assert.ok(batched[c]!.slice(1).every((turn, t) => turn.cached >= batched[c]![t]!.promptLength));
    }
  });

  test('a prefix a running sequence holds is copied to a new one, which prefills only the rest', async () => {
    const shared = `${system} Today's topic: trains and their timetables.`;
    const a = cached.tokenizer.encodeChat([{ role: 'system', content: shared }, { role: 'user', content: questions[0]! }]);
    const b = cached.tokenizer.encodeChat([{ role: 'system', content: shared }, { role: 'user', content: questions[1]! }]);
    let common = 0;
    while (a[common] === b[common]) common++;
    const opts: GenerateOptions = { maxTokens: 16, sampling: GREEDY, policy: POLICIES[1]! };
    const first = cached.decoder.start(a, opts);
    await first.step(); // its prompt and a first round
    assert.ok(!first.done);
    const second = cached.decoder.start(b, opts);
    assert.equal(second.sequence.cachedPromptTokens, common, 'the shared system prompt comes from the running sequence');
    assert.notEqual((second.sequence.targetCache as PooledKVCache).slot, (first.sequence.targetCache as PooledKVCache).slot, 'copied into a slot of its own');
    const [ta, tb] = [await first.run(), await second.run()];
    assert.deepEqual(ta, await plain.decoder.start(a, opts).run());
    assert.deepEqual(tb, await plain.decoder.start(b, opts).run());
  });

  test('requests sharing a new prefix, started together: the prefix is computed once, each copying what the other computed', async () => {
    const shared = `Coastal line desk. ${system} ${'The timetable of the coastal line, station by station. '.repeat(5)}`;
    const prompts = [0, 1].map((i) => cached.tokenizer.encodeChat([{ role: 'system', content: shared }, { role: 'user', content: questions[4 + i]! }]));
    let common = 0;
    while (prompts[0]![common] === prompts[1]![common]) common++;
    assert.ok(common > 2 * 128, `${common} tokens in common`);
    const passes: { kind: string; tokens: number }[] = [];
    const scheduler = new BatchScheduler({ maxBatchTokens: 128, onPass: (p) => passes.push(p) });
    const opts: GenerateOptions = { maxTokens: 12, sampling: GREEDY, policy: POLICIES[1]! };
    const gens = prompts.map((p) => cached.decoder.start(p, opts));
    // When they start, at most the chat template's opening (which every chat shares) is cached.
    const [c0, c1] = gens.map((g) => g.sequence.cachedPromptTokens);
    assert.ok(c0! < 2 * PREFIX_BLOCK_SIZE && c1 === c0, `${c0} and ${c1} cached at the start`);
    const outputs = await Promise.all(gens.map(async (g) => {
      while (!g.done) await scheduler.step(g);
      return g.tokenIds;
    }));
    // Their pieces go in by turns (the prompt with fewer positions in first), so each copies the
    // shared pieces the other computed.
    const cachedTotal = gens.reduce((n, g) => n + g.sequence.cachedPromptTokens, 0);
    assert.ok(cachedTotal >= c0! + common - 1, `${cachedTotal - 2 * c0!} of ${common - c0!} shared positions copied`);
    const prefilled = passes.filter((p) => p.kind === 'prefill').reduce((n, p) => n + p.tokens, 0);
    assert.equal(prefilled, prompts[0]!.length - 1 + prompts[1]!.length - 1 - cachedTotal, 'every position not copied was fed once');
    assert.ok(prefilled <= prompts[0]!.length - 1 - c0! + prompts[1]!.length - common, 'prompt pieces fed the shared prefix once');
    for (const [i, p] of prompts.entries()) assert.deepEqual(outputs[i], await plain.decoder.start(p, opts).run(), `request ${i}`);
  });
});

describe('prefix caching: the pool and the budget (fixtures)', () => {
  const root = mkdtempSync(join(tmpdir(), 'specd-prefix-'));
  let model: DecoderModel;
  /** The same model without prefix caching: reference logits. */
  let reference: DecoderModel;
  const vocab = 48;
  const seq = (n: number, salt: number) => Array.from({ length: n }, (_, i) => (i * 7 + salt * 13 + ((i * i) % 5)) % vocab);

  before(async () => {
    writeFixtureModelDir(join(root, 'm'), { style: 'gpt2', seed: 5, maxPositions: 600, vocabSize: vocab });
    model = await DecoderModel.load(join(root, 'm'), { threads: 1, prefixCaching: true });
    reference = await DecoderModel.load(join(root, 'm'), { threads: 1 });
  });
  after(async () => {
    await model?.release();
    await reference?.release();
    rmSync(root, { recursive: true, force: true });
  });

  test('a finished sequence parks its slot; the next prompt extending it takes the slot over; a diverging one copies the prefix', async () => {
    const pool = model.kvPool!;
    const a = seq(100, 1);
    const first = model.newCache(a);
    assert.equal(first.length, 0);
    const own = await model.forward(first, a);
    first.release();
    assert.equal(pool.parkedSlots, 1);
    assert.equal(pool.reclaimableBytes, 100 * kvBytesPerPosition(model.info));

    // The same tokens and more: the slot is taken over, rows 0..99 are not recomputed, and the logits equal a fresh pass.
    const extended = [...a, ...seq(30, 2)];
    const next = model.newCache(extended) as PooledKVCache;
    assert.equal(next.length, 100);
    assert.equal(next.slot, (first as PooledKVCache).slot);
    assert.equal(pool.parkedSlots, 0);
    const tail = await model.forward(next, extended.slice(100));
    const whole = (await reference.score(extended)).logits;
    assert.ok(maxAbsDiff(tail, whole.subarray(100 * vocab)) < 1e-4);
    assert.ok(maxAbsDiff(own, whole.subarray(0, 100 * vocab)) < 1e-4);
    next.release();

    // Diverging after 40 tokens: 40 positions copied into another slot; the parked slot stays for its own continuation.
    const other = [...a.slice(0, 40), ...seq(20, 3)];
    const copy = model.newCache(other) as PooledKVCache;
    assert.equal(copy.length, 40);
    assert.notEqual(copy.slot, next.slot);
    assert.equal(pool.parkedSlots, 1);
    const copied = await model.forward(copy, other.slice(40));
    const whole2 = (await reference.score(other)).logits;
    assert.ok(maxAbsDiff(copied, whole2.subarray(40 * vocab)) < 1e-4);
    copy.release();
    // Less than a block in common: no match.
    const short = model.newCache([...a.slice(0, PREFIX_BLOCK_SIZE - 1), 47, 46, 45]);
    assert.equal(short.length, 0);
    short.release();
    while (pool.evictOldest() > 0);
    assert.equal(pool.slotsInUse, 0);
  });

  test('a rollback takes the cropped rows out of the index', async () => {
    const pool = model.kvPool!;
    const a = seq(64, 4);
    const cache = model.newCache();
    await model.forward(cache, a);
    await cache.crop(20);
    cache.release();
    const again = model.newCache([...a, 1]);
    assert.equal(again.length, 20, 'only the rows kept after the crop match');
    again.release();
    while (pool.evictOldest() > 0);
  });

  test('with no free slot and MIN_PARKED_SLOTS parked, the least recently used parked slot is given to a new sequence', async () => {
    const pool = model.kvPool!;
    const live = [model.newCache(), model.newCache()];
    const prompts = Array.from({ length: MIN_PARKED_SLOTS }, (_, i) => seq(40, 5 + i));
    const parked = [];
    for (const p of prompts) {
      const c = model.newCache();
      await model.forward(c, p);
      parked.push(c);
    }
    for (const c of parked) c.release();
    const slots = pool.slots;
    // Touch the first (a lookup counts as a use), then ask for fresh slots: the second leaves first.
    const hit = model.newCache([...prompts[0]!, 9]);
    assert.equal(hit.length, 40);
    hit.release();
    const fresh = Array.from({ length: pool.slots - pool.slotsInUse }, () => model.newCache());
    assert.equal(pool.parkedSlots, MIN_PARKED_SLOTS);
    fresh.push(model.newCache());
    assert.equal(pool.slots, slots, 'a parked slot was reused instead of growing the pool');
    assert.equal(pool.parkedSlots, MIN_PARKED_SLOTS - 1);
    // Fewer than MIN_PARKED_SLOTS parked: the pool grows instead.
    fresh.push(model.newCache());
    assert.equal(pool.slots, 2 * slots);
    assert.equal(pool.parkedSlots, MIN_PARKED_SLOTS - 1);
    const evicted = model.newCache([...prompts[1]!, 9]);
    assert.equal(evicted.length, 0, 'evicted');
    const kept = model.newCache([...prompts[0]!, 9]);
    assert.equal(kept.length, 40, 'the most recently used stayed');
    for (const c of [...live, ...fresh, evicted, kept]) c.release();
    while (pool.evictOldest() > 0);
  });

  test('the index never trusts a hash alone, and rows are keyed by the model identity', () => {
    const a = new PrefixCache('model A');
    const b = new PrefixCache('model B');
    const tokens = seq(40, 8);
    for (const cache of [a, b]) {
      cache.track(0, tokens);
      cache.park(0);
    }
    assert.equal(a.lookup(tokens)!.length, 40);
    // Same tokens, another model: a separate index (each pool has its own), and different block hashes.
    const hashes = (c: PrefixCache) => (c as unknown as { records: Map<number, { hashes: string[] }> }).records.get(0)!.hashes;
    assert.notDeepEqual(hashes(a), hashes(b));
    // A forged index entry (a colliding hash) pointing at a slot with other tokens is refused by the token comparison.
    a.track(1, seq(40, 9));
    a.park(1);
    a.lookup([]);
    const index = (a as unknown as { index: Map<string, Set<number>> }).index;
    for (const holders of index.values()) holders.add(1);
    const m = a.lookup(tokens)!;
    assert.equal(m.slot, 0);
    assert.equal(m.length, 40);
  });
});

describe('prefix caching under a KV budget: a long random multi-turn workload', () => {
  const root = mkdtempSync(join(tmpdir(), 'specd-prefix-soak-'));
  let cached: ModelPair;
  let plain: ModelPair;

  before(async () => {
    const { targetDir, draftDir } = writeFixturePair(root, { vocabSize: 48, target: { maxPositions: 512 }, draft: { maxPositions: 512 } });
    cached = await ModelPair.load({ target: targetDir, draft: draftDir, head: null, threads: 1, prefixCaching: true });
    plain = await ModelPair.load({ target: targetDir, draft: draftDir, head: null, threads: 1 });
  });
  after(async () => {
    await cached?.release();
    await plain?.release();
    rmSync(root, { recursive: true, force: true });
  });

  test('reserved + cached bytes stay within the budget, cached rows leave before a generation waits, and outputs equal the pair without the cache', async () => {
    const perPosition = kvBytesPerPosition(cached.target.info) + kvBytesPerPosition(cached.draft!.info);
    const budget = new KvBudget(1500 * perPosition);
    for (const m of [cached.target, cached.draft!]) budget.addReclaimable(m.kvPool!);
    const scheduler = new BatchScheduler({ maxBatchTokens: 256 });
    const rng = new Rng(2026);
    const check = (where: string) => {
      const used = budget.usage * budget.budgetBytes + budget.reclaimableBytes;
      assert.ok(used <= budget.budgetBytes + 1e-6, `${where}: ${used} bytes of ${budget.budgetBytes}`);
    };
    const conversations = 10;
    const history: number[][] = Array.from({ length: conversations }, (_, c) => Array.from({ length: 20 + c * 3 }, (_, i) => (i * 5 + c) % 40));
    let hits = 0;
    const runs: { prompt: number[]; opts: GenerateOptions; tokens: number[] }[] = [];
    const turnOf = async (c: number) => {
      const prompt = [...history[c]!, ...Array.from({ length: 3 + Math.floor(rng.next() * 20) }, () => Math.floor(rng.next() * 40))];
      const maxTokens = 4 + Math.floor(rng.next() * 16);
      const opts: GenerateOptions = { maxTokens, sampling: GREEDY, policy: POLICIES[c % POLICIES.length]!.policy === 'specdec++' ? { policy: 'fixed', k: 3 } : POLICIES[c % POLICIES.length]!, eosTokenIds: [] };
      const release = await budget.reserve((prompt.length + maxTokens) * perPosition);
      check('admitted');
      try {
        const g = cached.decoder.start(prompt, opts);
        if (g.sequence.cachedPromptTokens > 0) hits++;
        while (!g.done) await scheduler.step(g);
        runs.push({ prompt, opts, tokens: [...g.tokenIds] });
        history[c] = prompt.length + g.tokenIds.length < 400 ? [...prompt, ...g.tokenIds] : history[c]!.slice(0, 20);
      } finally {
        release();
        check('released');
      }
    };
    // 10 conversations, 4 at a time, 60 turns in all.
    let next = 0;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (next < 60) await turnOf(next++ % conversations);
      }),
    );
    check('end');
    assert.ok(hits >= 20, `${hits} of 60 turns started from cached rows`);
    assert.ok(cached.target.kvPool!.slots <= 16, `the pool has ${cached.target.kvPool!.slots} slots for 4 concurrent sequences`);
    for (const [i, r] of runs.entries()) assert.deepEqual(r.tokens, await plain.decoder.start(r.prompt, r.opts).run(), `run ${i}`);
  });

  test('lookup before admission: making room for a turn under a tight budget never evicts the prefix it starts from', async () => {
    const pools = [cached.target.kvPool!, cached.draft!.kvPool!];
    const perPosition = kvBytesPerPosition(cached.target.info) + kvBytesPerPosition(cached.draft!.info);
    const opts: GenerateOptions = { maxTokens: 8, sampling: GREEDY, policy: { policy: 'fixed', k: 3 }, eosTokenIds: [] };
    const conversationA = Array.from({ length: 100 }, (_, i) => (i * 11 + 3) % 40);
    const conversationB = Array.from({ length: 100 }, (_, i) => (i * 7 + 5) % 40);
    /** Conversation A's second turn after A's and B's first (A's rows the least recently used), on a budget of 300 positions. */
    const secondTurn = async (withPrompt: boolean) => {
      for (const pool of pools) while (pool.evictOldest() > 0);
      const budget = new KvBudget(300 * perPosition);
      for (const pool of pools) budget.addReclaimable(pool);
      const run = async (prompt: number[]) => {
        const reservation = await budget.reserve((prompt.length + opts.maxTokens!) * perPosition, withPrompt ? prompt : undefined);
        const used = budget.usage * budget.budgetBytes + budget.reclaimableBytes;
        assert.ok(used <= budget.budgetBytes, `admitted: ${used} bytes of ${budget.budgetBytes}`);
        const g = cached.decoder.start(prompt, opts);
        reservation.unprotect();
        while (!g.done) await g.step();
        reservation();
        return { tokens: [...g.tokenIds], cached: g.sequence.cachedPromptTokens };
      };
      const a1 = await run(conversationA);
      await run(conversationB);
      // A's next turn needs 136 positions beside the 2 x ~107 parked: one conversation's rows must leave.
      const prompt = [...conversationA, ...a1.tokens, ...Array.from({ length: 20 }, (_, i) => (i * 3 + 1) % 40)];
      const a2 = await run(prompt);
      assert.deepEqual(a2.tokens, await plain.decoder.start(prompt, opts).run(), 'the output equals the pair without the cache');
      return { a1, a2, prompt };
    };
    // Admitted blind (no prompt), the least recently used rows leave: A's own.
    const blind = await secondTurn(false);
    assert.equal(blind.a2.cached, 0, 'without the lookup, the turn lost its prefix to its own admission');
    // Admitted with its prompt, A's rows are held for it and B's leave instead.
    const looked = await secondTurn(true);
    assert.ok(looked.a2.cached >= conversationA.length, `${looked.a2.cached} of ${looked.prompt.length} prompt tokens cached`);
    assert.deepEqual(looked.a2.tokens, blind.a2.tokens);
  });
});

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
