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

/// (elements per block, bytes per block) of a weight type, or None.
pub fn block_geom(ty: u32) -> Option<(usize, usize)> {
    Some(match ty {
        F32 => (1, 4),
        F16 | BF16 => (1, 2),
        Q4_0 => (32, 18),
        Q4_1 => (32, 20),
        Q5_0 => (32, 22),
        Q5_1 => (32, 24),
        Q8_0 => (32, 34),
        Q8_1 => (32, 36),
        Q2_K => (256, 84),
        Q3_K => (256, 110),
        Q4_K => (256, 144),
        Q5_K => (256, 176),
        Q6_K => (256, 210),
        Q8_K => (256, 292),
        IQ4_NL => (32, 18),
        IQ4_XS => (256, 136),
        MXFP4 => (32, 17),
        _ => return None,
    })
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
