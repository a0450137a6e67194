/**
 * Coalesced range reads: many byte ranges (the gate, up and down matrices of
 * every expert a layer misses) read with as few source reads as their
 * layout allows. Ranges that touch or overlap are merged into one read and
 * handed back as views of it; the reads of separate spans run in parallel.
 * A source that verifies reads (`IntegritySource`) implements
 * `ByteSource.readRanges` itself, so each original range is still checked
 * on its own (the same first-read records and manifest ranges as single
 * reads).
 *
 * @module
 */

import { StoreError } from "../errors.ts";
import type { ByteRange, ByteSource, RangeTiming } from "./byte_source.ts";

/** A merged read: its span and which input ranges it serves. */
export interface Span {
  /** Start offset. */
  readonly offset: number;
  /** End offset (exclusive). */
  end: number;
  /** Indices of the input ranges inside it. */
  readonly members: number[];
}

/**
 * Merge `ranges` into spans: sorted by offset, a range that starts at or
 * before the end of the span before it joins that span. Throws `StoreError`
 * `"out_of_range"` for a negative, non-integer or empty-source range.
 */
export function mergeRanges(ranges: readonly ByteRange[]): Span[] {
  for (const r of ranges) {
    if (
      !Number.isSafeInteger(r.offset) || !Number.isSafeInteger(r.length) || r.offset < 0 ||
      r.length < 0
    ) {
      throw new StoreError(
        "out_of_range",
        `Cannot read range [${r.offset}, +${r.length}): offset and length must be non-negative integers`,
        { offset: r.offset, length: r.length },
      );
    }
  }
  const order = ranges.map((_, i) => i).sort((a, b) => ranges[a].offset - ranges[b].offset);
  const spans: Span[] = [];
  for (const i of order) {
    const r = ranges[i];
    const last = spans[spans.length - 1];
    if (last && r.offset <= last.end) {
      last.end = Math.max(last.end, r.offset + r.length);
      last.members.push(i);
    } else spans.push({ offset: r.offset, end: r.offset + r.length, members: [i] });
  }
  return spans;
}

/**
 * Read `ranges` from `source` with one read per merged span, all spans in
 * parallel; result `i` holds the bytes of `ranges[i]` (a view of its span's
 * buffer: copy before writing into it). Uses `source.readRanges` when the
 * source has it (verifying sources check each range on its own).
 */
export function readRanges(
  source: ByteSource,
  ranges: readonly ByteRange[],
  signal?: AbortSignal,
  timing?: RangeTiming,
): Promise<Uint8Array[]> {
  if (source.readRanges) return source.readRanges(ranges, signal, timing);
  return readMerged(source, ranges, signal);
}

/** `readRanges` over `source.read` only (what verifying sources build on). */
export async function readMerged(
  source: ByteSource,
  ranges: readonly ByteRange[],
  signal?: AbortSignal,
): Promise<Uint8Array[]> {
  const spans = mergeRanges(ranges);
  const bufs = await Promise.all(
    spans.map((s) => source.read(s.offset, s.end - s.offset, signal)),
  );
  const out = new Array<Uint8Array>(ranges.length);
  spans.forEach((s, j) => {
    for (const i of s.members) {
      const at = ranges[i].offset - s.offset;
      out[i] = bufs[j].subarray(at, at + ranges[i].length);
    }
  });
  return out;
}
