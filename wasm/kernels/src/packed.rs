//! Packed weight layouts: a quantized matrix repacked *in place* (same byte
//! size, same region) into a SIMD-friendly order at upload time.
//!
//! * Q8_0, Q4_0, Q4_K: groups of 4 consecutive rows (the matrix needs
//!   `rows % 4 == 0`). Per block the 4 rows' f16 scales are adjacent (one
//!   8-byte load → f32x4) and their quants follow, so the group kernels
//!   (`group.rs`, `c/relaxed.c`) share each activation block load across 4
//!   rows. Quants are permuted within a block so that dot lane `j` sums
//!   exactly the elements lane `j` of the standard kernels sums: results
//!   stay bit-identical to the unpacked kernels. (The relaxed build's Q4_0
//!   keeps rows in lanes instead; its unpacked kernels sum in the same
//!   generic order, so packed and unpacked stay bit-identical.)
//! * F16: per row, each 8-element group is stored as 4 u32 lanes
//!   `(e[m] | e[4+m] << 16)`, so two shifts expose e[0..4] and e[4..8] in
//!   the high halves of i32 lanes (`packed_f16::f16x8`); the `cols % 8` tail is
//!   unchanged.
//!
//! Packing is refused (status 1, bytes untouched) when a fast path's
//! precondition fails: non-finite f16 scales/values (the cheap f16→f32
//! conversion skips inf/NaN), and, in the relaxed-SIMD build, Q8_0 quants of
//! -128 (the sign transfer onto 7-bit |a| would overflow).
//!
//! Every layout is defined by one `impl PackedType for Packed<TY>` (its
//! `read_block` / `write_block` pair: packing, unpacking, `get_rows` and the
//! scalar twins all go through it) and registered by one line in
//! [`LAYOUTS`]; see docs/quant-types.md.

use crate::simd::rd_u16;
use crate::types::*;

/// Flag OR-ed into a weight type id at the ABI: the matrix is packed.
pub const PACKED: u32 = 0x100;

/// Kernel family of this build: 1 = simd128, 2 = simd128 + relaxed SIMD
/// (the packed Q8_0/Q4_K byte orders differ between them).
#[cfg(not(moe_relaxed))]
pub const VARIANT: u32 = 1;
/// Kernel family of this build: 1 = simd128, 2 = simd128 + relaxed SIMD.
#[cfg(moe_relaxed)]
pub const VARIANT: u32 = 2;

/// One packable weight type: the single definition of its in-place
/// packed layout (one `impl` per type, on [`Packed<TY>`]), registered by one
/// line in [`LAYOUTS`]. `read_block` / `write_block` define the byte order;
/// `KERNELS` are the group kernels of this build (`group::GroupKernel`).
pub trait PackedType {
    /// ggml type id.
    const TY: u32;
    /// Rows per packed group.
    const GROUP_ROWS: usize;
    /// Elements per packed block (F16: one 8-element group).
    const BLOCK_ELEMS: usize;
    /// Bytes per (standard) block.
    const BLOCK_BYTES: usize;
    /// Group kernels of this build (None: F16, which has its own row kernels).
    const KERNELS: Option<&'static crate::group::GroupKernels>;
    /// Copy the standard bytes of block `i` of row `r` (of the group at `g`,
    /// `nb` blocks per row) to `dst`.
    unsafe fn read_block(g: *const u8, nb: usize, r: usize, i: usize, dst: *mut u8);
    /// Inverse of `read_block`: store the standard block bytes `src` as
    /// block `i` of row `r` of the group at `g`.
    unsafe fn write_block(g: *mut u8, nb: usize, r: usize, i: usize, src: *const u8);
    /// Whether `n` bytes of a standard-layout matrix meet the packed kernels'
    /// preconditions (`pack` refuses the matrix otherwise).
    unsafe fn eligible(w: *const u8, n: usize) -> bool;
}

/// The packed layout of ggml type `TY`: the type `PackedType` is implemented
/// on (here for F16, Q8_0, Q4_0, Q4_K; in `packed_*.rs` for the others).
pub struct Packed<const TY: u32>;

/// One packed layout, built from its [`PackedType`] impl by [`Layout::of`].
pub struct Layout {
    pub ty: u32,
    /// Rows per packed group.
    pub group_rows: usize,
    /// Elements per packed block (F16: one 8-element group).
    pub block_elems: usize,
    /// Bytes per (standard) block.
    pub block_bytes: usize,
    pub(crate) read_block: unsafe fn(*const u8, usize, usize, usize, *mut u8),
    /// Repack one group in place from (`inverse`: to) the standard rows in `tmp`.
    pub(crate) group: unsafe fn(*mut u8, *const u8, usize, usize, bool),
    pub(crate) eligible: unsafe fn(*const u8, usize) -> bool,
    /// Group kernels of this build (None: F16, which has its own row kernels).
    pub kernels: Option<&'static crate::group::GroupKernels>,
}

impl Layout {
    /// The table row of packed type `T`.
    pub const fn of<T: PackedType>() -> Layout {
        Layout {
            ty: T::TY,
            group_rows: T::GROUP_ROWS,
            block_elems: T::BLOCK_ELEMS,
            block_bytes: T::BLOCK_BYTES,
            read_block: T::read_block,
            group: group_of::<T>,
            eligible: T::eligible,
            kernels: T::KERNELS,
        }
    }
}

/// Every packed layout of this build, one line per type (the relaxed-SIMD
/// build adds the types whose only kernels are in `c/relaxed_kquants.c`).
pub static LAYOUTS: &[Layout] = &[
    Layout::of::<Packed<F16>>(),
    Layout::of::<Packed<Q8_0>>(),
    Layout::of::<Packed<Q4_0>>(),
    Layout::of::<Packed<Q4_K>>(),
    #[cfg(moe_relaxed)]
    Layout::of::<Packed<Q6_K>>(),
    #[cfg(moe_relaxed)]
    Layout::of::<Packed<Q2_K>>(),
    #[cfg(moe_relaxed)]
    Layout::of::<Packed<Q3_K>>(),
    #[cfg(moe_relaxed)]
    Layout::of::<Packed<MXFP4>>(),
    #[cfg(moe_relaxed)]
    Layout::of::<Packed<Q5_K>>(),
    #[cfg(moe_relaxed)]
    Layout::of::<Packed<IQ4_NL>>(),
    #[cfg(moe_relaxed)]
    Layout::of::<Packed<Q4_1>>(),
    #[cfg(moe_relaxed)]
    Layout::of::<Packed<Q5_0>>(),
    #[cfg(moe_relaxed)]
    Layout::of::<Packed<Q5_1>>(),
    #[cfg(moe_relaxed)]
    Layout::of::<Packed<IQ4_XS>>(),
    Layout::of::<Packed<BF16>>(),
];

/// The packed layout of `ty`, or None.
#[inline]
pub fn layout(ty: u32) -> Option<&'static Layout> {
    LAYOUTS.iter().find(|l| l.ty == ty)
}

/// Whether `ty` has a packed layout.
pub fn packable(ty: u32) -> bool {
    layout(ty).is_some()
}

/// Rows per packed group (`ty` packable).
pub fn group_rows(ty: u32) -> usize {
    layout(ty).map_or(1, |l| l.group_rows)
}

/// Elements per packed block (`ty` packable).
pub fn block_elems(ty: u32) -> usize {
    layout(ty).map_or(1, |l| l.block_elems)
}

/// Bytes per (standard) block (`ty` packable).
pub fn block_bytes(ty: u32) -> usize {
    layout(ty).map_or(1, |l| l.block_bytes)
}

/// Bytes of one 4-row Q4_K super-block group.
const K_GROUP: usize = 576;


/// `f(n) = 2j + (m & 1) + 8·(m >> 1)` for `n = 4j + m`: byte `n` of a
/// permuted 16-byte quant run holds original byte `f(n)`, so dot lane `j`
/// (bytes `4j..4j+4`) reads elements `{2j, 2j+1, 8+2j, 9+2j}` (and, in the
/// run of elements 16..32, their +16 partners): the standard lane-`j` set.
/// Q4_0 runs use it in the simd128 build; Q8_0 and Q4_K runs in the relaxed build. (An F16
/// group's u32 lanes `e[m] | e[4+m] << 16` are the same byte order.)
///
/// Byte permutations of one 16-byte run, as `i8x16.shuffle` (pack: packed
/// byte `n` ← original byte `idx[n]`; unpack: the inverse).
#[derive(Clone, Copy, PartialEq)]
enum Run {
    /// `f` (Q4_0; Q8_0 and Q4_K in the relaxed build; F16 groups).
    F,
    /// byte `2k` ← `k`, `2k+1` ← `8+k` (Q4_K in the simd128 build).
    Interleave,
    /// Unchanged (Q8_0 in the simd128 build).
    Same,
}

#[inline(always)]
unsafe fn run16(kind: Run, src: *const u8, dst: *mut u8, inverse: bool) {
    use crate::simd::*;
    let v = ld(src);
    let o = match (kind, inverse) {
        (Run::F, false) => i8x16_shuffle::<0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15>(v, v),
        (Run::F, true) => i8x16_shuffle::<0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15>(v, v),
        (Run::Interleave, false) => i8x16_shuffle::<0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15>(v, v),
        (Run::Interleave, true) => i8x16_shuffle::<0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15>(v, v),
        (Run::Same, _) => v,
    };
    st(dst, o);
}

/// The run permutation of a 32-byte Q8_0 / Q4_K quant run in this build.
const fn run32_kind(ty: u32) -> Run {
    if VARIANT == 2 {
        Run::F
    } else if ty == Q4_K {
        Run::Interleave
    } else {
        Run::Same
    }
}

// ---------------------------------------------------------------- Q4_K scale planes

/// Q4_K 6-bit scale `sb` (`min = false`) or min of row `r`, in the 48-byte
/// planes of a group super-block: index `8r + sb` (scales) or
/// `8(sb/2) + 2r + sb%2` (mins); low 4 bits in plane 0/1 byte `n % 16`
/// (nibble `n / 16`), high 2 bits in plane 2 byte `n % 16`.
#[inline(always)]
fn k_plane_pos(r: usize, sb: usize, min: bool) -> (usize, usize, usize) {
    let n = if min { 8 * (sb / 2) + 2 * r + sb % 2 } else { 8 * r + sb };
    let lo_byte = if min { 16 } else { 0 } + n % 16;
    let lo_shift = 4 * (n / 16);
    let hi_shift = if min { 4 } else { 0 } + 2 * (n / 16);
    (lo_byte, lo_shift, hi_shift)
}

#[inline(always)]
unsafe fn k_plane_get(p: *const u8, r: usize, sb: usize, min: bool) -> u8 {
    let (lb, ls, hs) = k_plane_pos(r, sb, min);
    let n = if min { 8 * (sb / 2) + 2 * r + sb % 2 } else { 8 * r + sb };
    ((*p.add(lb) >> ls) & 15) | (((*p.add(32 + n % 16) >> hs) & 3) << 4)
}

#[inline(always)]
unsafe fn k_plane_set(p: *mut u8, r: usize, sb: usize, min: bool, v: u8) {
    let (lb, ls, hs) = k_plane_pos(r, sb, min);
    let n = if min { 8 * (sb / 2) + 2 * r + sb % 2 } else { 8 * r + sb };
    let b = p.add(lb);
    *b = (*b & !(15 << ls)) | ((v & 15) << ls);
    let h = p.add(32 + n % 16);
    *h = (*h & !(3 << hs)) | (((v >> 4) & 3) << hs);
}

/// Decode the 12 packed scale bytes of a standard Q4_K block.
#[inline(always)]
unsafe fn k_scales_get(q: *const u8) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..8 {
        let (s, mm) = crate::kquants::scale_min_k4(j, q);
        sc[j] = s;
        m[j] = mm;
    }
    (sc, m)
}

/// Inverse of [`k_scales_get`] (ggml's bit layout; a bijection).
#[inline(always)]
unsafe fn k_scales_set(q: *mut u8, sc: &[u8; 8], m: &[u8; 8]) {
    for i in 0..4 {
        *q.add(i) = (sc[i] & 63) | ((sc[4 + i] >> 4) << 6);
        *q.add(4 + i) = (m[i] & 63) | ((m[4 + i] >> 4) << 6);
        *q.add(8 + i) = (sc[4 + i] & 15) | ((m[4 + i] & 15) << 4);
    }
}

// ---------------------------------------------------------------- one block

/// Copy the standard bytes of block `i` of row `r` (of its group at `g`,
/// `nb` blocks per row) to `dst`.
pub unsafe fn read_block(ty: u32, g: *const u8, nb: usize, r: usize, i: usize, dst: *mut u8) {
    (layout(ty).unwrap_unchecked().read_block)(g, nb, r, i, dst)
}

// The four layouts of this file. Q8_0 (and the simd128 build's Q4_0) groups:
// `d: f16[4·nb]` (block `i`, row `r` at `4i + r`), then per block the 4 rows'
// quant runs; the relaxed build's Q4_0: per block one 72-byte chunk (`d`,
// runs); Q4_K groups: 576-byte super-block groups (d, dmin, scale planes,
// quant runs).

/// Q8_0 / Q4_0 block `i` of row `r` → standard bytes (`q` quant bytes: 32 or 16).
#[inline(always)]
unsafe fn read_legacy(q: usize, kind: Run, g: *const u8, nb: usize, r: usize, i: usize, dst: *mut u8) {
    *dst = *g.add(8 * i + 2 * r);
    *dst.add(1) = *g.add(8 * i + 2 * r + 1);
    let s = g.add(8 * nb + 4 * q * i + q * r);
    for h in 0..q / 16 {
        run16(kind, s.add(16 * h), dst.add(2 + 16 * h), true);
    }
}

/// Inverse of [`read_legacy`].
#[inline(always)]
unsafe fn write_legacy(q: usize, kind: Run, g: *mut u8, nb: usize, r: usize, i: usize, src: *const u8) {
    *g.add(8 * i + 2 * r) = *src;
    *g.add(8 * i + 2 * r + 1) = *src.add(1);
    let d = g.add(8 * nb + 4 * q * i + q * r);
    for h in 0..q / 16 {
        run16(kind, src.add(2 + 16 * h), d.add(16 * h), false);
    }
}

impl PackedType for Packed<F16> {
    const TY: u32 = F16;
    const GROUP_ROWS: usize = 1;
    const BLOCK_ELEMS: usize = 8;
    const BLOCK_BYTES: usize = 16;
    const KERNELS: Option<&'static crate::group::GroupKernels> = None;
    // An F16 group's lanes `e[m] | e[4+m] << 16` are the f order of its bytes.
    unsafe fn read_block(g: *const u8, _nb: usize, _r: usize, i: usize, dst: *mut u8) {
        run16(Run::F, g.add(16 * i), dst, true)
    }
    unsafe fn write_block(g: *mut u8, _nb: usize, _r: usize, i: usize, src: *const u8) {
        run16(Run::F, src, g.add(16 * i), false)
    }
    unsafe fn eligible(w: *const u8, n: usize) -> bool {
        all_f16_finite(w, n / 2)
    }
}

impl PackedType for Packed<Q8_0> {
    const TY: u32 = Q8_0;
    const GROUP_ROWS: usize = 4;
    const BLOCK_ELEMS: usize = 32;
    const BLOCK_BYTES: usize = 34;
    const KERNELS: Option<&'static crate::group::GroupKernels> = Some(&crate::group::GroupKernels::of::<Self>());
    unsafe fn read_block(g: *const u8, nb: usize, r: usize, i: usize, dst: *mut u8) {
        read_legacy(32, run32_kind(Q8_0), g, nb, r, i, dst)
    }
    unsafe fn write_block(g: *mut u8, nb: usize, r: usize, i: usize, src: *const u8) {
        write_legacy(32, run32_kind(Q8_0), g, nb, r, i, src)
    }
    /// Finite `d`; in the relaxed build no quant of -128 (the sign transfer
    /// onto 7-bit |a| would overflow).
    unsafe fn eligible(w: *const u8, n: usize) -> bool {
        (0..n / 34).all(|b| f16_finite(rd_u16(w.add(34 * b))) && (VARIANT == 1 || !has_min_i8(w.add(34 * b + 2))))
    }
}

impl PackedType for Packed<Q4_0> {
    const TY: u32 = Q4_0;
    const GROUP_ROWS: usize = 4;
    const BLOCK_ELEMS: usize = 32;
    const BLOCK_BYTES: usize = 18;
    const KERNELS: Option<&'static crate::group::GroupKernels> = Some(&crate::group::GroupKernels::of::<Self>());
    /// simd128 build: `read_legacy`'s planes; relaxed build: rows in lanes,
    /// per block one contiguous 72-byte chunk at `72i` (`d: f16[4]`, then four
    /// quant vectors `V_j` at `8 + 16j` whose bytes `4r..4r+3` are row `r`'s
    /// standard quant bytes `4j..4j+3`: the packed IQ4_NL layout; one memory
    /// stream per group, see `c/relaxed.c` `q4r_block`).
    unsafe fn read_block(g: *const u8, nb: usize, r: usize, i: usize, dst: *mut u8) {
        if VARIANT == 2 {
            let c = g.add(72 * i);
            *dst = *c.add(2 * r);
            *dst.add(1) = *c.add(2 * r + 1);
            for j in 0..4 {
                core::ptr::copy_nonoverlapping(c.add(8 + 16 * j + 4 * r), dst.add(2 + 4 * j), 4);
            }
        } else {
            read_legacy(16, Run::F, g, nb, r, i, dst)
        }
    }
    unsafe fn write_block(g: *mut u8, nb: usize, r: usize, i: usize, src: *const u8) {
        if VARIANT == 2 {
            let c = g.add(72 * i);
            *c.add(2 * r) = *src;
            *c.add(2 * r + 1) = *src.add(1);
            for j in 0..4 {
                core::ptr::copy_nonoverlapping(src.add(2 + 4 * j), c.add(8 + 16 * j + 4 * r), 4);
            }
        } else {
            write_legacy(16, Run::F, g, nb, r, i, src)
        }
    }
    unsafe fn eligible(w: *const u8, n: usize) -> bool {
        (0..n / 18).all(|b| f16_finite(rd_u16(w.add(18 * b))))
    }
}

impl PackedType for Packed<Q4_K> {
    const TY: u32 = Q4_K;
    const GROUP_ROWS: usize = 4;
    const BLOCK_ELEMS: usize = 256;
    const BLOCK_BYTES: usize = 144;
    const KERNELS: Option<&'static crate::group::GroupKernels> = Some(&crate::group::GroupKernels::of::<Self>());
    unsafe fn read_block(g: *const u8, _nb: usize, r: usize, i: usize, dst: *mut u8) {
        let s = g.add(K_GROUP * i);
        for k in 0..2 {
            *dst.add(k) = *s.add(2 * r + k);
            *dst.add(2 + k) = *s.add(8 + 2 * r + k);
        }
        let mut sc = [0u8; 8];
        let mut m = [0u8; 8];
        for sb in 0..8 {
            sc[sb] = k_plane_get(s.add(16), r, sb, false);
            m[sb] = k_plane_get(s.add(16), r, sb, true);
        }
        k_scales_set(dst.add(4), &sc, &m);
        for c in 0..4 {
            let run = s.add(64 + 128 * c + 32 * r);
            run16(run32_kind(Q4_K), run, dst.add(16 + 32 * c), true);
            run16(run32_kind(Q4_K), run.add(16), dst.add(32 + 32 * c), true);
        }
    }
    unsafe fn write_block(g: *mut u8, _nb: usize, r: usize, i: usize, src: *const u8) {
        let d = g.add(K_GROUP * i);
        for k in 0..2 {
            *d.add(2 * r + k) = *src.add(k);
            *d.add(8 + 2 * r + k) = *src.add(2 + k);
        }
        let (sc, m) = k_scales_get(src.add(4));
        for sb in 0..8 {
            k_plane_set(d.add(16), r, sb, false, sc[sb]);
            k_plane_set(d.add(16), r, sb, true, m[sb]);
        }
        for c in 0..4 {
            let run = d.add(64 + 128 * c + 32 * r);
            run16(run32_kind(Q4_K), src.add(16 + 32 * c), run, false);
            run16(run32_kind(Q4_K), src.add(32 + 32 * c), run.add(16), false);
        }
    }
    /// Finite `d` and `dmin`.
    unsafe fn eligible(w: *const u8, n: usize) -> bool {
        (0..n / 144).all(|b| f16_finite(rd_u16(w.add(144 * b))) && f16_finite(rd_u16(w.add(144 * b + 2))))
    }
}

/// Copy the standard bytes of row `row` of a packed matrix to `dst`.
pub unsafe fn read_row(ty: u32, w: *const u8, cols: usize, row: usize, dst: *mut u8) {
    let (be, bb) = (block_elems(ty), block_bytes(ty));
    let gr = group_rows(ty);
    let rb = row_bytes(ty, cols).unwrap_unchecked();
    let nb = cols / be;
    let g = w.add((row / gr) * gr * rb);
    for i in 0..nb {
        read_block(ty, g, nb, row % gr, i, dst.add(i * bb));
    }
    // F16: the `cols % 8` tail is stored unchanged.
    core::ptr::copy_nonoverlapping(g.add(nb * bb), dst.add(nb * bb), rb - nb * bb);
}

// ---------------------------------------------------------------- whole matrix

#[inline(always)]
fn f16_finite(h: u16) -> bool {
    h & 0x7c00 != 0x7c00
}

/// Whether any of the 32 bytes at `q` is 0x80 (-128).
#[inline(always)]
unsafe fn has_min_i8(q: *const u8) -> bool {
    use crate::simd::*;
    let m = i8x16_splat(-128);
    v128_any_true(v128_or(i8x16_eq(ld(q), m), i8x16_eq(ld(q.add(16)), m)))
}

/// Whether all `n` f16 values at `p` are finite.
unsafe fn all_f16_finite(p: *const u8, n: usize) -> bool {
    use crate::simd::*;
    let e = i16x8_splat(0x7c00);
    let mut bad = i16x8_splat(0);
    let mut i = 0;
    while i + 8 <= n {
        bad = v128_or(bad, i16x8_eq(v128_and(ld(p.add(2 * i)), e), e));
        i += 8;
    }
    !v128_any_true(bad) && (i..n).all(|j| f16_finite(rd_u16(p.add(2 * j))))
}

/// Group `g` (rows of `rb` bytes, `nb` blocks each) from the standard copy
/// in `tmp`, or back to it (`inverse`), for packed type `T`: the block loops
/// with `T::read_block` / `T::write_block` inlined (one indirect call per group).
unsafe fn group_of<T: PackedType>(g: *mut u8, tmp: *const u8, nb: usize, rb: usize, inverse: bool) {
    let bb = T::BLOCK_BYTES;
    for r in 0..T::GROUP_ROWS {
        for i in 0..nb {
            if inverse {
                T::read_block(tmp, nb, r, i, g.add(r * rb + i * bb));
            } else {
                T::write_block(g, nb, r, i, tmp.add(r * rb + i * bb));
            }
        }
    }
}

/// Scratch bytes [`pack`] needs: one group of standard rows.
pub fn scratch_bytes(ty: u32, cols: usize) -> usize {
    if !packable(ty) {
        return 0;
    }
    group_rows(ty) * row_bytes(ty, cols).unwrap_or(0)
}

/// Repack a `rows × cols` matrix in place (`inverse`: back to standard).
/// Returns 0 when done, 1 when packing was refused (ineligible; bytes
/// untouched), -1 for an unsupported type or shape.
pub unsafe fn pack(ty: u32, w: *mut u8, rows: usize, cols: usize, tmp: *mut u8, inverse: bool) -> i32 {
    let rb = match row_bytes(ty, cols) {
        Some(b) if packable(ty) && b > 0 => b,
        _ => return -1,
    };
    let gr = group_rows(ty);
    if rows % gr != 0 {
        return if inverse { -1 } else { 1 };
    }
    let l = layout(ty).unwrap_unchecked();
    if l.kernels.is_some() && cols % l.block_elems != 0 {
        // Group kernels need whole blocks (BF16: cols % 8): refused, as for rows.
        return if inverse { -1 } else { 1 };
    }
    if !inverse && !(l.eligible)(w, rows * rb) {
        return 1;
    }
    let nb = cols / l.block_elems;
    for gi in 0..rows / gr {
        let g = w.add(gi * gr * rb);
        core::ptr::copy_nonoverlapping(g, tmp, gr * rb);
        (l.group)(g, tmp, nb, rb, inverse);
    }
    0
}
