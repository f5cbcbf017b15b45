//! Masked mean pooling over the sequence (`shaders/pooling.wgsl`), forward and backward:
//! sentence-transformers' pooling for all-MiniLM-L6-v2.

use crate::error::{Error, Result};
use crate::gpu::{KernelOp, Step, Tensor};
use crate::linalg::to_u32;
use crate::model::layers::expect_shape;
use crate::shaders;

/// Mirrors `Params` in `pooling.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PoolingParams {
    batch: u32,
    seq: u32,
    width: u32,
    _pad: u32,
}

fn record(
    step: &mut Step,
    entry: &'static str,
    (batch, seq, width): (usize, usize, usize),
    bindings: &[(u32, &Tensor)],
) -> Result<()> {
    if batch * width == 0 {
        return Ok(());
    }
    let params = PoolingParams {
        batch: to_u32(entry, batch)?,
        seq: to_u32(entry, seq)?,
        width: to_u32(entry, width)?,
        _pad: 0,
    };
    to_u32(entry, batch * seq * width)?;
    let kernel = step.gpu().kernel(&shaders::POOLING, entry, vec![]);
    step.push(KernelOp::new(
        step.gpu(),
        entry,
        kernel,
        &params,
        bindings,
        [(batch * width).div_ceil(64) as u64, 1, 1],
    )?);
    Ok(())
}

/// Records out[b, :] = Σ_t mask[b, t]·x[b, t, :] / max(Σ_t mask[b, t], 1e-9) for x (batch,
/// seq, width) and mask (batch, seq) (1 real, 0 padding), and returns out (batch, width). A
/// sequence without real tokens pools to 0. One dispatch.
pub fn mean_pool_forward(step: &mut Step, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    const OP: &str = "mean_pool_forward";
    let &[batch, seq, width] = x.shape() else {
        return Err(Error::ShapeMismatch {
            op: OP,
            detail: format!(
                "x has shape {:?}: it must be (batch, seq, width)",
                x.shape()
            ),
        });
    };
    expect_shape(OP, "mask", mask, &[batch, seq])?;
    let out = Tensor::uninit(step.gpu(), &[batch, width])?;
    record(
        step,
        OP,
        (batch, seq, width),
        &[(1, x), (2, mask), (3, &out)],
    )?;
    Ok(out)
}

/// Records dx[b, t, :] = mask[b, t]·d_out[b, :] / max(Σ_t mask[b, t], 1e-9), the backward of
/// [`mean_pool_forward`], for d_out (batch, width) and mask (batch, seq); returns dx (batch,
/// seq, width). One dispatch.
pub fn mean_pool_backward(step: &mut Step, mask: &Tensor, d_out: &Tensor) -> Result<Tensor> {
    const OP: &str = "mean_pool_backward";
    let (&[batch, seq], &[d_batch, width]) = (mask.shape(), d_out.shape()) else {
        return Err(Error::ShapeMismatch {
            op: OP,
            detail: format!(
                "mask {:?} must be (batch, seq) and d_out {:?} (batch, width)",
                mask.shape(),
                d_out.shape()
            ),
        });
    };
    if d_batch != batch {
        return Err(Error::ShapeMismatch {
            op: OP,
            detail: format!(
                "mask {:?} and d_out {:?} have different batches",
                mask.shape(),
                d_out.shape()
            ),
        });
    }
    let d_x = Tensor::uninit(step.gpu(), &[batch, seq, width])?;
    record(
        step,
        OP,
        (batch, seq, width),
        &[(1, d_out), (2, mask), (3, &d_x)],
    )?;
    Ok(d_x)
}
