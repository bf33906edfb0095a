/**
 * A list kept sorted by a comparator, stored as blocks of at most 2 × BLOCK elements: an insert or
 * a removal moves at most one block's elements, not the whole list (a flat array's splice moves
 * half of it on average, which for lists of hundreds of objects costs more than the search).
 * Elements must be distinct under the comparator (break ties with an id).
 */
const BLOCK = 32;

export class SortedList<T> {
  private blocks: T[][] = [];
  private count = 0;

  constructor(private readonly cmp: (a: T, b: T) => number) {}

  /** A list of `sorted`, which must already be in order. */
  static from<T>(sorted: readonly T[], cmp: (a: T, b: T) => number): SortedList<T> {
    const list = new SortedList(cmp);
    for (let i = 0; i < sorted.length; i += BLOCK) list.blocks.push(sorted.slice(i, i + BLOCK));
    list.count = sorted.length;
    return list;
  }

  get size(): number {
    return this.count;
  }

  insert(x: T): void {
    if (this.blocks.length === 0) {
      this.blocks.push([x]);
      this.count = 1;
      return;
    }
    const b = Math.min(this.blockOf(x), this.blocks.length - 1);
    const block = this.blocks[b];
    block.splice(lowerBound(block, x, this.cmp), 0, x);
    this.count++;
    if (block.length > 2 * BLOCK) this.blocks.splice(b + 1, 0, block.splice(BLOCK));
  }

  /** Removes `x`, found under the key it has now: call before anything its key reads changes. */
  remove(x: T): void {
    const b = this.blockOf(x);
    const block = this.blocks[b];
    const i = block ? lowerBound(block, x, this.cmp) : -1;
    if (!block || block[i] !== x) throw new Error("sorted list: element not found under its key");
    block.splice(i, 1);
    this.count--;
    if (block.length === 0) this.blocks.splice(b, 1);
  }

  /** The first element, in order, for which `pred` holds. */
  first(pred: (x: T) => boolean): T | undefined {
    for (const block of this.blocks) {
      for (const x of block) if (pred(x)) return x;
    }
    return undefined;
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (const block of this.blocks) yield* block;
  }

  /** The first block whose last element is not before `x` (blocks.length when there is none). */
  private blockOf(x: T): number {
    let lo = 0;
    let hi = this.blocks.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const block = this.blocks[mid];
      if (this.cmp(block[block.length - 1], x) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/** First index in `arr` (sorted by `cmp`) whose element is not before `x`. */
export function lowerBound<T>(arr: readonly T[], x: T, cmp: (a: T, b: T) => number): number {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cmp(arr[mid], x) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
