//! Rust wrappers of `shaders/adapter.wgsl` (the small kernels between the adapters' matmuls)
//! and `shaders/rotation.wgsl` (adapter R's Cayley rotations).

use crate::error::{Error, Result};
use crate::gpu::{KernelOp, Step, Tensor};
use crate::linalg::{grid_stride_groups, to_u32};
use crate::shaders;

/// Mirrors `Params` in `adapter.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AdapterParams {
    rows: u32,
    cols: u32,
    flag: u32,
    _pad: u32,
}

/// Rotations run in one workgroup with r ≤ this (the Gauss–Jordan factors' workgroup array).
pub const MAX_ROTATION_RANK: usize = 64;

fn params(op: &'static str, rows: usize, cols: usize, flag: bool) -> Result<AdapterParams> {
    Ok(AdapterParams {
        rows: to_u32(op, rows)?,
        cols: to_u32(op, cols)?,
        flag: flag as u32,
        _pad: 0,
    })
}

/// (rows, cols) of a matrix-shaped tensor whose last dimension is `cols`.
fn rows_of(op: &'static str, x: &Tensor, cols: usize) -> Result<usize> {
    if cols == 0 || x.shape().last() != Some(&cols) {
        return Err(Error::ShapeMismatch {
            op,
            detail: format!("{:?} should end in {cols} columns", x.shape()),
        });
    }
    Ok(x.len() / cols)
}

/// Records out = x · diag(s + c) (with `c`) or x · diag(s), column-wise; returns out.
pub fn scale_columns(
    step: &mut Step,
    x: &Tensor,
    s: &Tensor,
    c: Option<&Tensor>,
) -> Result<Tensor> {
    let cols = s.len();
    let rows = rows_of("scale_columns", x, cols)?;
    let out = Tensor::uninit(step.gpu(), x.shape())?;
    if out.is_empty() {
        return Ok(out);
    }
    let p = params("scale_columns", rows, cols, c.is_some())?;
    let kernel = step
        .gpu()
        .kernel(&shaders::ADAPTER, "scale_columns", vec![]);
    let bindings = [(1, x), (2, s), (3, c.unwrap_or(s)), (4, &out)];
    step.push(KernelOp::new(
        step.gpu(),
        "scale_columns",
        kernel,
        &p,
        &bindings,
        [grid_stride_groups(x.len(), 256), 1, 1],
    )?);
    Ok(out)
}

/// Records out[j] = Σ_i a[i, j]·b[i, j] into `out` (cols).
pub fn column_dots(step: &mut Step, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<()> {
    let cols = out.len();
    let rows = rows_of("column_dots", a, cols)?;
    if a.shape() != b.shape() {
        return Err(Error::ShapeMismatch {
            op: "column_dots",
            detail: format!("{:?} and {:?} differ", a.shape(), b.shape()),
        });
    }
    let p = params("column_dots", rows, cols, false)?;
    let kernel = step.gpu().kernel(&shaders::ADAPTER, "column_dots", vec![]);
    step.push(KernelOp::new(
        step.gpu(),
        "column_dots",
        kernel,
        &p,
        &[(1, a), (2, b), (3, out)],
        [cols.div_ceil(64) as u64, 1, 1],
    )?);
    Ok(())
}

/// Records y[i, j] += bias[j] in place.
pub fn add_bias(step: &mut Step, y: &Tensor, bias: &Tensor) -> Result<()> {
    let rows = rows_of("add_bias", y, bias.len())?;
    if y.is_empty() {
        return Ok(());
    }
    let p = params("add_bias", rows, bias.len(), false)?;
    let kernel = step.gpu().kernel(&shaders::ADAPTER, "add_bias", vec![]);
    step.push(KernelOp::new(
        step.gpu(),
        "add_bias",
        kernel,
        &p,
        &[(1, bias), (2, y)],
        [grid_stride_groups(y.len(), 256), 1, 1],
    )?);
    Ok(())
}

/// The r×r state of adapter R: `cayley` = [Q_U, Q_V, R_U, R_V] (4, r, r), the core
/// M = R_V diag(S₁⊙c) R_Uᵀ (r, r), and scratch.
#[derive(Debug)]
pub struct RotationState {
    pub cayley: Tensor,
    pub core: Tensor,
    work: Tensor,
    no_scale_grad: Tensor,
}

impl RotationState {
    pub fn new(gpu: &crate::Gpu, r: usize) -> Result<RotationState> {
        if r > MAX_ROTATION_RANK {
            return Err(Error::InvalidRank {
                rank: r,
                m: r,
                n: r,
                max: MAX_ROTATION_RANK,
            });
        }
        Ok(RotationState {
            cayley: Tensor::zeros(gpu, &[4, r, r])?,
            core: Tensor::zeros(gpu, &[r, r])?,
            work: Tensor::zeros(gpu, &[4, r, r])?,
            no_scale_grad: Tensor::zeros(gpu, &[r])?,
        })
    }

    /// Records the Cayley maps of P_U, P_V and the core M (one dispatch, one workgroup).
    pub fn forward(
        &self,
        step: &mut Step,
        p_u: &Tensor,
        p_v: &Tensor,
        s: &Tensor,
        scale: Option<&Tensor>,
    ) -> Result<()> {
        let r = s.len();
        let p = params("rotation_forward", r, r, scale.is_some())?;
        let kernel = step.gpu().kernel(
            &shaders::ROTATION,
            "rotation_forward",
            vec![("R", r.to_string())],
        );
        let bindings = [
            (1, p_u),
            (2, p_v),
            (3, s),
            (4, scale.unwrap_or(s)),
            (5, &self.cayley),
            (6, &self.core),
            (7, &self.work),
        ];
        step.push(KernelOp::new(
            step.gpu(),
            "rotation_forward",
            kernel,
            &p,
            &bindings,
            [1, 1, 1],
        )?);
        Ok(())
    }

    /// Records ∂P_U, ∂P_V (and ∂c) from ∂M, through the Cayley maps (one dispatch).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        step: &mut Step,
        d_core: &Tensor,
        s: &Tensor,
        scale: Option<&Tensor>,
        d_p_u: &Tensor,
        d_p_v: &Tensor,
        d_scale: Option<&Tensor>,
    ) -> Result<()> {
        let r = s.len();
        let p = params("rotation_backward", r, r, scale.is_some())?;
        let kernel = step.gpu().kernel(
            &shaders::ROTATION,
            "rotation_backward",
            vec![("R", r.to_string())],
        );
        let bindings = [
            (1, d_core),
            (2, &self.cayley),
            (3, s),
            (4, scale.unwrap_or(s)),
            (5, d_p_u),
            (6, d_p_v),
            (7, d_scale.unwrap_or(&self.no_scale_grad)),
            (8, &self.work),
        ];
        step.push(KernelOp::new(
            step.gpu(),
            "rotation_backward",
            kernel,
            &p,
            &bindings,
            [1, 1, 1],
        )?);
        Ok(())
    }
}
