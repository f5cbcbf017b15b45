//! Linear algebra on the GPU: the matmul family (also over quantized frozen weights),
//! elementwise ops, reductions and layout changes.
//! Each function records its dispatches into a [`Step`](crate::Step) and returns its output
//! tensor, whose values exist once the step is submitted.

pub mod cholesky;
mod elementwise;
mod layout;
mod matmul;
pub mod quant;
mod reduce;
mod small;
mod svd;

pub use elementwise::{add, axpby, axpy, copy, scale};
pub use layout::{pad_rows, read_rows, transpose, write_rows};
pub use matmul::{gemm, matmul, matmul_variants, qgemm, Gemm, MatmulKernel, TileConfig};
pub use quant::{dequantize, gather_rows, quantize, QuantFormat, QuantMatrix};
pub use reduce::{sum, sum_rows, sum_squares, sum_squares_rows};
pub use svd::{
    singular_values, svd_truncated, svd_truncated_batch, Svd, SvdMethod, SvdOptions, SvdReport,
    SvdStats, EXACT_MAX_DIM,
};

/// (batch, rows, cols) of a 2D or 3D tensor.
pub(crate) fn as_batched(
    op: &'static str,
    name: &str,
    shape: &[usize],
) -> crate::Result<(usize, usize, usize)> {
    match *shape {
        [r, c] => Ok((1, r, c)),
        [b, r, c] => Ok((b, r, c)),
        _ => Err(crate::Error::ShapeMismatch {
            op,
            detail: format!("{name} must be 2D or 3D, got shape {shape:?}"),
        }),
    }
}

/// A dimension as the u32 the kernels index with, refusing sizes that do not fit.
pub(crate) fn to_u32(op: &'static str, value: usize) -> crate::Result<u32> {
    u32::try_from(value).map_err(|_| crate::Error::ShapeMismatch {
        op,
        detail: format!("dimension {value} exceeds u32"),
    })
}

/// Workgroups for a grid-stride loop over `n` items, `per_group` at a time (capped at the
/// WebGPU minimum limit of 65535; the kernels loop over the rest).
pub(crate) fn grid_stride_groups(n: usize, per_group: usize) -> u64 {
    (n.div_ceil(per_group) as u64).clamp(1, 65535)
}
