//! Layer norm over the last dimension (`shaders/layer_norm.wgsl`), forward and backward.

use crate::error::{Error, Result};
use crate::gpu::{KernelOp, Step, Tensor};
use crate::linalg::to_u32;
use crate::model::layers::{expect_shape, row_grid};
use crate::shaders;

/// BERT's (and MiniLM's) `layer_norm_eps`.
pub const BERT_LAYER_NORM_EPS: f32 = 1e-12;

/// Mirrors `Params` in `layer_norm.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LayerNormParams {
    rows: u32,
    cols: u32,
    grid_x: u32,
    eps: f32,
}

/// Gradients of a layer norm: always d_x; d_γ and d_β when asked for (γ and β are frozen in
/// fine-tuning, so by default they are not computed).
#[derive(Debug)]
pub struct LayerNormGrads {
    pub d_x: Tensor,
    pub d_gamma: Option<Tensor>,
    pub d_beta: Option<Tensor>,
}

/// (rows, cols) of x, checking that γ (and β) have cols elements.
fn dims(op: &'static str, x: &Tensor, gamma: &Tensor) -> Result<(usize, usize)> {
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
    expect_shape(op, "gamma", gamma, &[cols])?;
    Ok((x.len() / cols, cols))
}

fn params(
    op: &'static str,
    rows: usize,
    cols: usize,
    eps: f32,
) -> Result<(LayerNormParams, [u64; 3])> {
    to_u32(op, rows.saturating_mul(cols))?; // the kernels index x with u32
    let (grid_x, grid_y) = row_grid(rows);
    let params = LayerNormParams {
        rows: to_u32(op, rows)?,
        cols: to_u32(op, cols)?,
        grid_x: to_u32(op, grid_x)?,
        eps,
    };
    Ok((params, [grid_x as u64, grid_y as u64, 1]))
}

/// Records y = (x − μ)/√(σ² + eps)·γ + β over the last dimension of x (any leading shape; σ²
/// is the biased variance, as in PyTorch). Returns (y, stats), stats = (rows, 2) holding μ and
/// 1/√(σ² + eps) per row, which [`layer_norm_backward`] needs. One dispatch.
///
/// ```no_run
/// # fn demo(step: &mut spectune::Step, x: &spectune::Tensor, g: &spectune::Tensor, b: &spectune::Tensor) -> spectune::Result<()> {
/// use spectune::model::layers::{layer_norm_forward, BERT_LAYER_NORM_EPS};
/// let (y, stats) = layer_norm_forward(step, x, g, b, BERT_LAYER_NORM_EPS)?;
/// # Ok(()) }
/// ```
pub fn layer_norm_forward(
    step: &mut Step,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "layer_norm_forward";
    let (rows, cols) = dims(OP, x, gamma)?;
    expect_shape(OP, "beta", beta, &[cols])?;
    let gpu = step.gpu();
    let y = Tensor::uninit(gpu, x.shape())?;
    let stats = Tensor::uninit(gpu, &[rows, 2])?;
    if rows == 0 {
        return Ok((y, stats));
    }
    let (p, groups) = params(OP, rows, cols, eps)?;
    let kernel = gpu.kernel(&shaders::LAYER_NORM, OP, vec![]);
    step.push(KernelOp::new(
        gpu,
        OP,
        kernel,
        &p,
        &[(1, x), (2, gamma), (3, beta), (4, &y), (5, &stats)],
        groups,
    )?);
    Ok((y, stats))
}

/// Records the backward of [`layer_norm_forward`] for d_y = ∂L/∂y:
/// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) with g = d_y·γ (one dispatch), and, when
/// `param_grads`, dγ = Σ_rows d_y·x̂ and dβ = Σ_rows d_y (one more dispatch).
pub fn layer_norm_backward(
    step: &mut Step,
    x: &Tensor,
    gamma: &Tensor,
    stats: &Tensor,
    d_y: &Tensor,
    param_grads: bool,
) -> Result<LayerNormGrads> {
    const OP: &str = "layer_norm_backward";
    let (rows, cols) = dims(OP, x, gamma)?;
    expect_shape(OP, "stats", stats, &[rows, 2])?;
    expect_shape(OP, "d_y", d_y, x.shape())?;
    let gpu = step.gpu();
    let d_x = Tensor::uninit(gpu, x.shape())?;
    let (mut d_gamma, mut d_beta) = (None, None);
    if param_grads {
        d_gamma = Some(Tensor::uninit(gpu, &[cols])?);
        d_beta = Some(Tensor::uninit(gpu, &[cols])?);
    }
    if rows == 0 {
        // Nothing to sum: the parameter gradients are zero.
        for t in d_gamma.iter().chain(&d_beta) {
            t.write(gpu, &vec![0.0; cols])?;
        }
        return Ok(LayerNormGrads {
            d_x,
            d_gamma,
            d_beta,
        });
    }
    let (p, groups) = params(OP, rows, cols, 0.0)?;
    let kernel = gpu.kernel(&shaders::LAYER_NORM, OP, vec![]);
    step.push(KernelOp::new(
        gpu,
        OP,
        kernel,
        &p,
        &[(1, x), (2, gamma), (3, stats), (4, d_y), (5, &d_x)],
        groups,
    )?);
    if let (Some(dg), Some(db)) = (&d_gamma, &d_beta) {
        const PG: &str = "layer_norm_param_grads";
        let kernel = gpu.kernel(&shaders::LAYER_NORM, PG, vec![]);
        step.push(KernelOp::new(
            gpu,
            PG,
            kernel,
            &p,
            &[(1, x), (2, stats), (3, d_y), (4, dg), (5, db)],
            [cols.div_ceil(64) as u64, 1, 1],
        )?);
    }
    Ok(LayerNormGrads {
        d_x,
        d_gamma,
        d_beta,
    })
}
