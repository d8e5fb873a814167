/**
 * A depth-bounded suffix tree with frequency counts over several token sequences, the
 * structure of SuffixDecoding (Oliaro et al., arXiv 2411.04975, section 4; the Arctic
 * Inference implementation keeps the same invariants).
 *
 * Every suffix of every sequence is inserted, but only its first `maxDepth` tokens: the tree
 * holds each window of up to maxDepth tokens with the number of times it occurs (a node's
 * `count` is the number of inserted suffixes whose path reaches the node). Given the last
 * tokens of a request, `speculate` finds them in the tree and follows the most frequent
 * continuation, estimating each continuation token's probability as the product of
 * count(child) / count(parent) along the way (the most frequent child next; of equally
 * frequent ones the smallest token id).
 *
 * Compressed edges: a node holds a run of tokens by reference into one sequence that contains
 * them (`ref`, `refIdx`, `length`) instead of one node per token, so the tree has O(total
 * tokens) nodes, not O(total tokens x maxDepth). A suffix being inserted always ends at the
 * end of a node ("active" node): appending a token moves each active suffix one token on,
 * which either extends a leaf only that suffix reaches, enters (or splits off the first token
 * of) a child, or opens a new leaf.
 *
 * Sequences are appended to token by token (`append`) and removed whole (`remove`, for the
 * bounded cache of earlier responses). A node keeps a reference to its token array, so a
 * removed sequence's array lives on while a node still reads from it.
 */

interface Node {
  /** Suffixes (inserted windows) whose path reaches this node. */
  count: number;
  parent: Node | undefined;
  /** Children by their first token; undefined while there are none. */
  children: Map<number, Node> | undefined;
  /** The sequence this node's tokens are read from, and where: ref[refIdx .. refIdx + length). */
  ref: number[];
  refIdx: number;
  /** Tokens on the edge into this node (0 for the root only). */
  length: number;
}

/** A matched position: inside `node`'s edge, after `idx` of its tokens (1 <= idx <= length). */
interface Position {
  node: Node;
  idx: number;
}

/** What `speculate` proposes (a path: one candidate per depth). */
export interface SuffixDraft {
  /** The proposed continuation, [k]. */
  tokens: number[];
  /** Estimated probability of each token (the path's product of count ratios up to it), [k]. */
  probs: number[];
  /** Sum of `probs`: the expected number of proposed tokens that continue the text, by the counts. */
  score: number;
  /** Length of the context suffix that was matched (0: none). */
  matchLength: number;
}

/** The knobs of a speculation (SuffixDecoding's; vLLM's `suffix_decoding_*` options). */
export interface SpeculateOptions {
  /** Most tokens proposed, >= 0. */
  maxSpecTokens: number;
  /** At most floor(maxSpecFactor * matchLength + maxSpecOffset) tokens are proposed. */
  maxSpecFactor: number;
  maxSpecOffset: number;
  /** A token is proposed only while the path's estimated probability is >= this. */
  minTokenProb: number;
}

/** Added before flooring factor x match + offset, so that e.g. 0.1 x 30 counts as 3 (as Arctic Inference does). */
const FLOOR_EPSILON = 1e-6;

export class SuffixTree {
  private readonly root: Node = { count: 0, parent: undefined, children: undefined, ref: [], refIdx: 0, length: 0 };
  /** Per sequence id: its tokens and the active nodes of the suffixes still being inserted (oldest first). */
  private readonly seqs = new Map<number, { tokens: number[]; active: Node[] }>();

  /** @param maxDepth longest window inserted per suffix (suffix_decoding_max_tree_depth), >= 1 */
  constructor(readonly maxDepth: number) {
    if (!Number.isInteger(maxDepth) || maxDepth < 1) throw new RangeError(`the suffix tree's depth must be an integer >= 1, got ${maxDepth}`);
  }

  /** Sequences in the tree. */
  get sequenceCount(): number {
    return this.seqs.size;
  }

  /** Ids of the sequences in the tree, in the order they were first appended to. */
  sequenceIds(): IterableIterator<number> {
    return this.seqs.keys();
  }

  /** The tokens of sequence `id` (empty when absent); the tree reads them, do not change them. */
  tokensOf(id: number): readonly number[] {
    return this.seqs.get(id)?.tokens ?? [];
  }

  /** Append tokens to sequence `id` (a new one when absent), inserting the suffixes they extend or start. */
  extend(id: number, tokens: readonly number[]): void {
    for (const t of tokens) this.append(id, t);
  }

  /** Append one token to sequence `id`. */
  append(id: number, token: number): void {
    let seq = this.seqs.get(id);
    if (!seq) this.seqs.set(id, (seq = { tokens: [], active: [] }));
    // A new suffix starts here; the oldest stops growing once it holds maxDepth tokens.
    seq.active.push(this.root);
    this.root.count++;
    if (seq.active.length > this.maxDepth) seq.active.shift();
    seq.tokens.push(token);
    const pos = seq.tokens.length; // the sequence's length with the token
    for (let i = 0; i < seq.active.length; i++) seq.active[i] = this.step(seq.active[i]!, token, seq.tokens, pos);
  }

  /**
   * Move a suffix that ends at the end of `node` on by `token` (the last of `tokens`, whose
   * length is now `pos`); returns the node it now ends at.
   */
  private step(node: Node, token: number, tokens: number[], pos: number): Node {
    const child = node.children?.get(token);
    if (!child) {
      if (node !== this.root && node.count === 1) {
        // Only this suffix reaches the node, so it is a leaf on this suffix's own tokens: extend it.
        node.ref = tokens;
        node.refIdx = pos - 1 - node.length;
        node.length++;
        return node;
      }
      const leaf: Node = { count: 1, parent: node, children: undefined, ref: tokens, refIdx: pos - 1, length: 1 };
      (node.children ??= new Map()).set(token, leaf);
      return leaf;
    }
    if (child.length === 1) {
      child.count++;
      return child;
    }
    // Split the child's first token off into a node of its own; the child object keeps the rest
    // (a suffix that ends at the child's end still ends at the same object's end).
    const head: Node = { count: child.count + 1, parent: node, children: new Map(), ref: child.ref, refIdx: child.refIdx, length: 1 };
    head.children!.set(child.ref[child.refIdx + 1]!, child);
    node.children!.set(token, head);
    child.parent = head;
    child.refIdx++;
    child.length--;
    return head;
  }

  /**
   * Remove sequence `id` (it must not be appended to again): every window it inserted is
   * counted out, and nodes no window reaches any more are dropped.
   * @throws RangeError when the tree has no sequence `id`
   */
  remove(id: number): void {
    const seq = this.seqs.get(id);
    if (!seq) throw new RangeError(`the suffix tree has no sequence ${id}`);
    const tokens = seq.tokens;
    for (let start = 0; start < tokens.length; start++) {
      const depth = Math.min(this.maxDepth, tokens.length - start);
      this.root.count--;
      let node = this.root;
      let done = 0;
      while (done < depth) {
        const child = node.children!.get(tokens[start + done]!)!;
        if (--child.count === 0) {
          node.children!.delete(tokens[start + done]!);
          break;
        }
        done += child.length;
        node = child;
      }
    }
    this.seqs.delete(id);
  }

  /** Where `context` (a run of tokens) ends in the tree, or undefined when it does not occur. */
  private match(context: readonly number[], from: number): Position | undefined {
    let node = this.root;
    let idx = 0;
    for (let i = from; i < context.length; i++) {
      const t = context[i]!;
      if (idx === node.length) {
        const child = node.children?.get(t);
        if (!child) return undefined;
        node = child;
        idx = 0;
      }
      if (node.ref[node.refIdx + idx] !== t) return undefined;
      idx++;
    }
    return { node, idx };
  }

  /**
   * Propose a continuation of `context` (the request's last tokens, at most maxDepth of them
   * matter): for every match length m = 1, 2, ... (up to context.length - 1 and maxDepth) whose
   * last m tokens occur in the tree, follow the most frequent path for at most
   * min(maxSpecTokens, floor(maxSpecFactor x m + maxSpecOffset)) tokens while its estimated
   * probability stays >= minTokenProb; the path with the highest score (sum of probabilities)
   * wins, the longer match on a tie.
   */
  speculate(context: readonly number[], opts: SpeculateOptions): SuffixDraft {
    let best: SuffixDraft = { tokens: [], probs: [], score: 0, matchLength: 0 };
    const longest = Math.min(context.length - 1, this.maxDepth);
    for (let m = 1; m <= longest; m++) {
      const at = this.match(context, context.length - m);
      if (!at) break; // a longer suffix cannot occur where this one does not
      const cap = Math.max(0, Math.min(opts.maxSpecTokens, Math.floor(m * opts.maxSpecFactor + opts.maxSpecOffset + FLOOR_EPSILON)));
      const draft = this.followPath(at, cap, opts.minTokenProb);
      if (draft.score >= best.score) best = { ...draft, matchLength: m };
    }
    return best;
  }

  /** The most frequent path from `at`: up to `cap` tokens while the path's probability >= minProb. */
  private followPath(at: Position, cap: number, minProb: number): Omit<SuffixDraft, 'matchLength'> {
    const tokens: number[] = [];
    const probs: number[] = [];
    let score = 0;
    let prob = 1;
    let { node, idx } = at;
    while (tokens.length < cap && prob >= minProb) {
      if (idx < node.length) {
        tokens.push(node.ref[node.refIdx + idx]!);
        probs.push(prob);
        score += prob;
        idx++;
        continue;
      }
      // The most frequent continuation; of equally frequent ones the smallest token, so that
      // a proposal does not depend on the order the text arrived in.
      let next: Node | undefined;
      let nextToken = 0;
      for (const [t, c] of node.children ?? []) {
        if (!next || c.count > next.count || (c.count === next.count && t < nextToken)) {
          next = c;
          nextToken = t;
        }
      }
      if (!next) break;
      prob *= next.count / node.count;
      node = next;
      idx = 0;
    }
    return { tokens, probs, score };
  }

  /**
   * The tree's invariants, for tests: every count is the number of windows that reach the
   * node, every edge reads the tokens its windows hold, children are keyed by their first
   * token. Returns the first violation found, or undefined.
   */
  checkIntegrity(): string | undefined {
    const visits = new Map<Node, number>([[this.root, 0]]);
    for (const [id, { tokens }] of this.seqs) {
      for (let start = 0; start < tokens.length; start++) {
        const depth = Math.min(this.maxDepth, tokens.length - start);
        visits.set(this.root, visits.get(this.root)! + 1);
        let node = this.root;
        let done = 0;
        while (done < depth) {
          const child = node.children?.get(tokens[start + done]!);
          if (!child) return `sequence ${id}: the window at ${start} has no child for token ${tokens[start + done]} after ${done} tokens`;
          if (child.parent !== node) return `sequence ${id}: a child's parent is wrong`;
          if (done + child.length > depth) return `sequence ${id}: the window at ${start} ends inside an edge (${done} + ${child.length} > ${depth})`;
          for (let j = 0; j < child.length; j++) {
            if (child.ref[child.refIdx + j] !== tokens[start + done + j]) return `sequence ${id}: an edge reads ${child.ref[child.refIdx + j]} where the window has ${tokens[start + done + j]}`;
          }
          visits.set(child, (visits.get(child) ?? 0) + 1);
          done += child.length;
          node = child;
        }
      }
    }
    const stack = [this.root];
    let nodes = 0;
    while (stack.length) {
      const node = stack.pop()!;
      nodes++;
      if ((visits.get(node) ?? 0) !== node.count) return `a node's count is ${node.count}, but ${visits.get(node) ?? 0} windows reach it`;
      for (const [t, c] of node.children ?? []) {
        if (c.ref[c.refIdx] !== t) return `a child keyed ${t} starts with ${c.ref[c.refIdx]}`;
        if (c.length < 1) return 'an edge has no tokens';
        stack.push(c);
      }
    }
    if (nodes !== visits.size) return `${visits.size - nodes} visited nodes are not in the tree`;
    return undefined;
  }

  /** Nodes in the tree, the root included (for tests and memory estimates). */
  nodeCount(): number {
    let n = 0;
    const stack = [this.root];
    while (stack.length) {
      const node = stack.pop()!;
      n++;
      for (const c of node.children?.values() ?? []) stack.push(c);
    }
    return n;
  }
}
