//! ggml type ids and block geometry of the weight formats this crate runs.

/// ggml type ids (`enum ggml_type`).
pub const F32: u32 = 0;
pub const F16: u32 = 1;
pub const Q4_0: u32 = 2;
pub const Q4_1: u32 = 3;
pub const Q5_0: u32 = 6;
pub const Q5_1: u32 = 7;
pub const Q8_0: u32 = 8;
pub const Q8_1: u32 = 9;
pub const Q2_K: u32 = 10;
pub const Q3_K: u32 = 11;
pub const Q4_K: u32 = 12;
pub const Q5_K: u32 = 13;
pub const Q6_K: u32 = 14;
pub const Q8_K: u32 = 15;
pub const IQ4_NL: u32 = 20;
pub const IQ4_XS: u32 = 23;
pub const BF16: u32 = 30;
pub const MXFP4: u32 = 39;

/// (elements per block, bytes per block) of a type, or None (from
/// `formats::FORMATS`).
pub fn block_geom(ty: u32) -> Option<(usize, usize)> {
    crate::formats::format(ty).map(|f| (f.blk, f.bytes))
}

/// Bytes of one row of `n` elements, or None for an unknown type or a
/// length that is not a whole number of blocks.
pub fn row_bytes(ty: u32, n: usize) -> Option<usize> {
    let (be, bb) = block_geom(ty)?;
    if n % be != 0 {
        return None;
    }
    Some(n / be * bb)
}
