//! CholeskyQR's small factor on the GPU (`shaders/cholesky.wgsl`): the truncated SVD's orth()
//! records it between its two products, so an orthonormalisation costs no host round trip.

use crate::error::{Error, Result};
use crate::gpu::{KernelOp, Step, Tensor};
use crate::linalg::to_u32;
use crate::shaders;

/// What [`cholesky_inverse`] writes into its flag slot.
pub mod flag {
    /// L⁻¹ is good.
    pub const OK: f32 = 0.0;
    /// G is not safely positive definite: a pivot of L fell below the tolerance times the
    /// largest (rank-deficient or too ill-conditioned); L⁻¹ is finite but must not be used.
    pub const NOT_POSITIVE: f32 = 1.0;
    /// G holds NaN or Inf.
    pub const NOT_FINITE: f32 = 2.0;
}

/// Mirrors `Params` in `cholesky.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CholeskyParams {
    l: u32,
    slot: u32,
    tol: f32,
    _pad: u32,
}

/// Records L⁻¹ (ℓ×ℓ, lower triangular) for the symmetric G = L Lᵀ (ℓ×ℓ), and writes one of
/// [`flag`]'s values into `flags[slot]`. `tol` is the smallest pivot, relative to the largest,
/// that counts as positive definite. One workgroup: meant for the ℓ of tens that a
/// CholeskyQR sees.
pub fn cholesky_inverse(
    step: &mut Step,
    gram: &Tensor,
    tol: f32,
    flags: &Tensor,
    slot: usize,
) -> Result<Tensor> {
    const OP: &str = "cholesky_inverse";
    let &[l, l2] = gram.shape() else {
        return Err(Error::ShapeMismatch {
            op: OP,
            detail: format!("G must be 2D, got shape {:?}", gram.shape()),
        });
    };
    if l != l2 || slot >= flags.len() {
        return Err(Error::ShapeMismatch {
            op: OP,
            detail: format!(
                "G must be square and slot {slot} within flags {:?}, got G {:?}",
                flags.shape(),
                gram.shape()
            ),
        });
    }
    let lower = Tensor::uninit(step.gpu, &[l, l])?;
    let inv = Tensor::uninit(step.gpu, &[l, l])?;
    let params = CholeskyParams {
        l: to_u32(OP, l)?,
        slot: to_u32(OP, slot)?,
        tol,
        _pad: 0,
    };
    let kernel = step.gpu.kernel(&shaders::CHOLESKY, OP, vec![]);
    step.push(KernelOp::new(
        step.gpu,
        OP,
        kernel,
        &params,
        &[(1, gram), (2, &lower), (3, &inv), (4, flags)],
        [1, 1, 1],
    )?);
    Ok(inv)
}
