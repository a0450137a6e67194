/**
 * A small binary heap used by the SPM and BPE merge loops.
 *
 * @module
 */

/** Binary heap; `before(a, b)` is true when `a` must pop before `b`. */
export class Heap<T> {
  #items: T[] = [];
  readonly #before: (a: T, b: T) => boolean;

  /** @param before strict priority order: true when `a` pops before `b` */
  constructor(before: (a: T, b: T) => boolean) {
    this.#before = before;
  }

  /** Number of queued items. */
  get size(): number {
    return this.#items.length;
  }

  /** Adds an item. */
  push(item: T): void {
    const a = this.#items;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.#before(a[i], a[p])) break;
      [a[i], a[p]] = [a[p], a[i]];
      i = p;
    }
  }

  /** Removes and returns the first item, or undefined when empty. */
  pop(): T | undefined {
    const a = this.#items;
    if (a.length === 0) return undefined;
    const top = a[0];
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.#before(a[l], a[m])) m = l;
        if (r < a.length && this.#before(a[r], a[m])) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m], a[i]];
        i = m;
      }
    }
    return top;
  }
}
