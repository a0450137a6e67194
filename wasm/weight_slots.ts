/**
 * Weight slots of the WASM backend and the matrices repacked inside them.
 *
 * A matrix used by `matmul` is repacked in place on first use (or when the
 * loader calls `prepareWeights`) into the kernels' packed layout: same
 * bytes, same region, faster kernels, identical results. The table below
 * remembers, per slot, which views are packed (or were refused, so the
 * eligibility scan runs once), and keeps the bytes consistent:
 *
 * - a `writeSlot` that covers a packed matrix entirely just forgets it (the
 *   new bytes are standard); one that covers it partly first unpacks it;
 * - a view that overlaps a packed matrix without being exactly it (another
 *   shape or offset) first unpacks it, and neither is repacked afterwards
 *   (no ping-pong between two views of the same bytes);
 * - `getRows` reads packed matrices directly (`type | PACKED_FLAG`).
 *
 * @module
 */

import type { Slot, WeightView } from "../core/backend/backend.ts";
import { BackendError } from "../core/errors.ts";
import { GgmlType, ggmlTypeName } from "../core/tensor/ggml_type.ts";
import { fail } from "./f32_ops.ts";
import type { KernelMemory } from "./memory.ts";
import { type KernelExports, PACKED_FLAG } from "./pkg/moe_edge_kernels.ts";

/** Weight types the WASM kernels run. */
export const WASM_FORMATS: readonly GgmlType[] = [
  GgmlType.F32,
  GgmlType.F16,
  GgmlType.BF16,
  GgmlType.Q8_0,
  GgmlType.Q4_0,
  GgmlType.Q4_1,
  GgmlType.Q5_0,
  GgmlType.Q5_1,
  GgmlType.Q4_K,
  GgmlType.Q5_K,
  GgmlType.Q6_K,
  GgmlType.Q2_K,
  GgmlType.Q3_K,
  GgmlType.IQ4_NL,
  GgmlType.IQ4_XS,
  GgmlType.MXFP4,
];

/** A matrix inside a slot whose layout the table tracks. */
interface Tracked {
  readonly offset: number;
  readonly bytes: number;
  readonly type: GgmlType;
  readonly rows: number;
  readonly cols: number;
  /** Packed in place, or refused (left standard; never tried again). */
  readonly packed: boolean;
}

interface SlotEntry {
  readonly off: number;
  readonly bytes: number;
  tracked: Tracked[];
  /** Pack matrices at first use (false: only when `prepare` asks). */
  readonly autoPack: boolean;
}

/** Where a weight view lives and how the kernels must read it. */
export interface ResolvedWeight {
  /** Linear-memory address of row 0. */
  readonly ptr: number;
  /** Kernel type id: the ggml type, `| PACKED_FLAG` when packed. */
  readonly kernelType: number;
}

/** Slot table with in-place weight packing. */
export class WeightSlots {
  readonly #k: KernelExports;
  readonly #mem: KernelMemory;
  readonly #pack: boolean;
  readonly #slots = new Map<number, SlotEntry>();
  readonly #nextId: () => number;
  #packs = 0;

  /**
   * @param k kernel exports
   * @param mem the instance's memory
   * @param pack repack matrices for the packed kernels (false: never)
   * @param nextId id source shared with the KV caches (ids are backend-unique)
   */
  constructor(k: KernelExports, mem: KernelMemory, pack: boolean, nextId: () => number) {
    this.#k = k;
    this.#mem = mem;
    this.#pack = pack;
    this.#nextId = nextId;
  }

  /** Allocate a slot of `bytes`; `autoPack` false packs its matrices only when `prepare` asks. */
  alloc(bytes: number, autoPack = true): Slot {
    const off = this.#mem.arena.alloc(bytes);
    const id = this.#nextId();
    this.#slots.set(id, { off, bytes, tracked: [], autoPack });
    return { id, bytes };
  }

  /** Copy `data` into `slot` at `offset` (standard layout bytes). */
  write(slot: Slot, offset: number, data: Uint8Array): void {
    const s = this.#entry(slot);
    if (!Number.isInteger(offset) || offset < 0 || offset + data.length > s.bytes) {
      throw new BackendError(
        "out_of_range",
        `Cannot write slot ${slot.id}: range [${offset}, ${
          offset + data.length
        }) exceeds its ${s.bytes} bytes`,
        { slot: slot.id, offset, length: data.length, bytes: s.bytes },
      );
    }
    const end = offset + data.length;
    for (const t of s.tracked) {
      const overlaps = t.offset < end && offset < t.offset + t.bytes;
      const covered = offset <= t.offset && t.offset + t.bytes <= end;
      if (overlaps && t.packed && !covered) this.#repack(s, t, true);
    }
    s.tracked = s.tracked.filter((t) => !(t.offset < end && offset < t.offset + t.bytes));
    this.#mem.u8.set(data, s.off + offset);
  }

  /**
   * A writable view of `length` bytes of `slot` at `offset` (standard-layout
   * bytes go there, as with `write`: packed matrices in the range are first
   * unpacked when partly covered, forgotten when wholly). The view is over
   * linear memory: growth detaches it.
   */
  view(slot: Slot, offset: number, length: number): Uint8Array {
    const s = this.#entry(slot);
    if (
      !Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 ||
      offset + length > s.bytes
    ) {
      throw new BackendError(
        "out_of_range",
        `Cannot view slot ${slot.id}: range [${offset}, ${
          offset + length
        }) exceeds its ${s.bytes} bytes`,
        { slot: slot.id, offset, length, bytes: s.bytes },
      );
    }
    const end = offset + length;
    for (const t of s.tracked) {
      const overlaps = t.offset < end && offset < t.offset + t.bytes;
      const covered = offset <= t.offset && t.offset + t.bytes <= end;
      if (overlaps && t.packed && !covered) this.#repack(s, t, true);
    }
    s.tracked = s.tracked.filter((t) => !(t.offset < end && offset < t.offset + t.bytes));
    return this.#mem.u8.subarray(s.off + offset, s.off + end);
  }

  /** Release a slot. */
  free(slot: Slot): void {
    const s = this.#entry(slot);
    this.#mem.arena.free(s.off);
    this.#slots.delete(slot.id);
  }

  /** Linear-memory address of a slot. */
  address(slot: Slot): number {
    return this.#entry(slot).off;
  }

  /** Validate a weight view for `op`; returns its byte size. */
  check(w: WeightView, op: string): number {
    const slotBytes = this.#entry(w.slot).bytes;
    if (!WASM_FORMATS.includes(w.type)) {
      throw new BackendError(
        "unsupported_type",
        `Cannot run ${op}: weight type ${
          ggmlTypeName(w.type)
        } is not supported by the wasm backend`,
        { op, type: w.type },
      );
    }
    const rb = this.#k.weight_row_bytes(w.type, w.cols);
    if (
      !(Number.isInteger(w.rows) && Number.isInteger(w.cols) && w.rows >= 0 && w.cols > 0 && rb > 0)
    ) fail(op, `cols ${w.cols} is not a whole number of ${ggmlTypeName(w.type)} blocks`);
    if (!(Number.isInteger(w.offset) && w.offset >= 0 && w.offset + w.rows * rb <= slotBytes)) {
      fail(
        op,
        `weight [${w.offset}, ${
          w.offset + w.rows * rb
        }) exceeds slot ${w.slot.id} of ${slotBytes} bytes`,
      );
    }
    return w.rows * rb;
  }

  /** Number of matrices packed so far (diagnostics, tests). */
  get packCount(): number {
    return this.#packs;
  }

  /**
   * Address and kernel type of `w` (already validated by the caller to lie
   * inside its slot, `bytes` long). With `pack`, an untracked view is packed
   * now when eligible.
   */
  resolve(w: WeightView, bytes: number, pack: boolean): ResolvedWeight {
    const s = this.#entry(w.slot);
    const ptr = s.off + w.offset;
    let exact: Tracked | undefined;
    let conflict = false;
    for (const t of s.tracked) {
      if (t.offset === w.offset && t.type === w.type && t.rows === w.rows && t.cols === w.cols) {
        exact = t;
      } else if (t.offset < w.offset + bytes && w.offset < t.offset + t.bytes) {
        conflict = true;
      }
    }
    if (exact) return { ptr, kernelType: exact.packed ? w.type | PACKED_FLAG : w.type };
    if (conflict) {
      for (const t of s.tracked) {
        if (t.packed && this.#overlaps(t, w.offset, bytes)) this.#repack(s, t, true);
      }
      s.tracked = s.tracked.filter((t) => !this.#overlaps(t, w.offset, bytes));
      s.tracked.push({
        offset: w.offset,
        bytes,
        type: w.type,
        rows: w.rows,
        cols: w.cols,
        packed: false,
      });
      return { ptr, kernelType: w.type };
    }
    if (!pack || !s.autoPack) return { ptr, kernelType: w.type };
    return { ptr, kernelType: this.#tryPack(s, w, bytes) ? w.type | PACKED_FLAG : w.type };
  }

  /** Pack `w` now (unpacking whatever overlaps it); true when it is packed. */
  prepare(w: WeightView, bytes: number): boolean {
    const s = this.#entry(w.slot);
    const r = this.resolve(w, bytes, false);
    if (r.kernelType & PACKED_FLAG) return true;
    for (const t of s.tracked) {
      if (t.packed && this.#overlaps(t, w.offset, bytes)) this.#repack(s, t, true);
    }
    s.tracked = s.tracked.filter((t) => !this.#overlaps(t, w.offset, bytes));
    return this.#tryPack(s, w, bytes);
  }

  /** Forget every slot (the backend was disposed). */
  clear(): void {
    this.#slots.clear();
  }

  #overlaps(t: Tracked, offset: number, bytes: number): boolean {
    return t.offset < offset + bytes && offset < t.offset + t.bytes;
  }

  #tryPack(s: SlotEntry, w: WeightView, bytes: number): boolean {
    let packed = false;
    if (this.#pack && this.#k.pack_scratch_bytes(w.type, w.cols) > 0) {
      const t = { offset: w.offset, bytes, type: w.type, rows: w.rows, cols: w.cols, packed: true };
      packed = this.#repack(s, t, false) === 0;
    }
    s.tracked.push({ offset: w.offset, bytes, type: w.type, rows: w.rows, cols: w.cols, packed });
    return packed;
  }

  /** Run `pack_weights` on a tracked matrix; returns its status. */
  #repack(s: SlotEntry, t: Tracked, inverse: boolean): number {
    const [tmp] = this.#mem.scratch(this.#k.pack_scratch_bytes(t.type, t.cols));
    const rc = this.#k.pack_weights(t.type, s.off + t.offset, t.rows, t.cols, tmp, inverse ? 1 : 0);
    if (rc < 0 || (inverse && rc !== 0)) {
      throw new BackendError(
        "bad_shape",
        `Cannot ${
          inverse ? "unpack" : "pack"
        } weights: kernel rejected type ${t.type} ${t.rows}×${t.cols}`,
        { type: t.type, rows: t.rows, cols: t.cols },
      );
    }
    if (rc === 0 && !inverse) this.#packs++;
    return rc;
  }

  #entry(slot: Slot): SlotEntry {
    const s = this.#slots.get(slot.id);
    if (!s) {
      throw new BackendError(
        "bad_slot",
        `Cannot use slot ${slot.id}: it is not live in this backend`,
        { slot: slot.id },
      );
    }
    return s;
  }
}
