//! RMSNorm over the last dimension (`shaders/rms_norm.wgsl`), Llama's norm, forward and backward.

use crate::error::{Error, Result};
use crate::gpu::{KernelOp, Step, Tensor};
use crate::linalg::to_u32;
use crate::model::layers::{expect_shape, row_grid};
use crate::shaders;

/// Mirrors `Params` in `rms_norm.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RmsNormParams {
    rows: u32,
    cols: u32,
    grid_x: u32,
    eps: f32,
}

/// Gradients of an RMSNorm: always d_x; d_weight when asked for (the norm's weight is frozen in
/// fine-tuning, so by default it is not computed).
#[derive(Debug)]
pub struct RmsNormGrads {
    pub d_x: Tensor,
    pub d_weight: Option<Tensor>,
}

/// (rows, cols) of x, checking that the weight has cols elements.
fn dims(op: &'static str, x: &Tensor, weight: &Tensor) -> Result<(usize, usize)> {
    let cols = match x.shape().last() {
        Some(&c) if c > 0 => c,
        _ => {
            return Err(Error::ShapeMismatch {
                op,
                detail: format!(
                    "x has shape {:?}: it needs a last dimension of at least 1",
                    x.shape()
                ),
            })
        }
    };
    expect_shape(op, "weight", weight, &[cols])?;
    Ok((x.len() / cols, cols))
}

fn params(
    op: &'static str,
    rows: usize,
    cols: usize,
    eps: f32,
) -> Result<(RmsNormParams, [u64; 3])> {
    to_u32(op, rows.saturating_mul(cols))?; // the kernels index x with u32
    let (grid_x, grid_y) = row_grid(rows);
    let params = RmsNormParams {
        rows: to_u32(op, rows)?,
        cols: to_u32(op, cols)?,
        grid_x: to_u32(op, grid_x)?,
        eps,
    };
    Ok((params, [grid_x as u64, grid_y as u64, 1]))
}

/// Records y = x/√(mean(x²) + eps)·weight over the last dimension of x (any leading shape), as
/// HF's `LlamaRMSNorm` (SmolLM2: eps = `llama.attention.layer_norm_rms_epsilon` = 1e-5). Returns
/// (y, rstd), rstd = (rows) holding 1/√(mean(x²) + eps) per row, which [`rms_norm_backward`]
/// needs. One dispatch.
///
/// ```no_run
/// # fn demo(step: &mut spectune::Step, x: &spectune::Tensor, w: &spectune::Tensor) -> spectune::Result<()> {
/// use spectune::model::layers::rms_norm_forward;
/// let (y, rstd) = rms_norm_forward(step, x, w, 1e-5)?;
/// # Ok(()) }
/// ```
pub fn rms_norm_forward(
    step: &mut Step,
    x: &Tensor,
    weight: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "rms_norm_forward";
    let (rows, cols) = dims(OP, x, weight)?;
    let gpu = step.gpu();
    let y = Tensor::uninit(gpu, x.shape())?;
    let rstd = Tensor::uninit(gpu, &[rows])?;
    if rows == 0 {
        return Ok((y, rstd));
    }
    let (p, groups) = params(OP, rows, cols, eps)?;
    let kernel = gpu.kernel(&shaders::RMS_NORM, OP, vec![]);
    step.push(KernelOp::new(
        gpu,
        OP,
        kernel,
        &p,
        &[(1, x), (2, weight), (3, &y), (4, &rstd)],
        groups,
    )?);
    Ok((y, rstd))
}

/// Records the backward of [`rms_norm_forward`] for d_y = ∂L/∂y:
/// dx = rstd·(u − x̂·mean(u·x̂)) with u = d_y·weight and x̂ = x·rstd (one dispatch), and, when
/// `weight_grad`, d_weight = Σ_rows d_y·x̂ (one more dispatch).
pub fn rms_norm_backward(
    step: &mut Step,
    x: &Tensor,
    weight: &Tensor,
    rstd: &Tensor,
    d_y: &Tensor,
    weight_grad: bool,
) -> Result<RmsNormGrads> {
    const OP: &str = "rms_norm_backward";
    let (rows, cols) = dims(OP, x, weight)?;
    expect_shape(OP, "rstd", rstd, &[rows])?;
    expect_shape(OP, "d_y", d_y, x.shape())?;
    let gpu = step.gpu();
    let d_x = Tensor::uninit(gpu, x.shape())?;
    let d_weight = if weight_grad {
        Some(Tensor::uninit(gpu, &[cols])?)
    } else {
        None
    };
    if rows == 0 {
        // Nothing to sum: the weight's gradient is zero.
        if let Some(dw) = &d_weight {
            dw.write(gpu, &vec![0.0; cols])?;
        }
        return Ok(RmsNormGrads { d_x, d_weight });
    }
    let (p, groups) = params(OP, rows, cols, 0.0)?;
    let kernel = gpu.kernel(&shaders::RMS_NORM, OP, vec![]);
    step.push(KernelOp::new(
        gpu,
        OP,
        kernel,
        &p,
        &[(1, x), (2, weight), (3, rstd), (4, d_y), (5, &d_x)],
        groups,
    )?);
    if let Some(dw) = &d_weight {
        const WG_OP: &str = "rms_norm_weight_grad";
        let kernel = gpu.kernel(&shaders::RMS_NORM, WG_OP, vec![]);
        step.push(KernelOp::new(
            gpu,
            WG_OP,
            kernel,
            &p,
            &[(1, x), (2, rstd), (3, d_y), (4, dw)],
            [cols.div_ceil(64) as u64, 1, 1],
        )?);
    }
    Ok(RmsNormGrads { d_x, d_weight })
}
