//! Elementwise ops (`shaders/elementwise.wgsl`): copy, add, axpby, axpy, scale.

use crate::error::{Error, Result};
use crate::gpu::{KernelOp, Step, Tensor};
use crate::linalg::{grid_stride_groups, to_u32};
use crate::shaders;

/// Mirrors `Params` in `elementwise.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ElementwiseParams {
    n: u32,
    alpha: f32,
    beta: f32,
    _pad: u32,
}

const WG: usize = 256;

fn same_shape(op: &'static str, x: &Tensor, y: &Tensor) -> Result<()> {
    if x.shape() != y.shape() {
        return Err(Error::ShapeMismatch {
            op,
            detail: format!("{:?} and {:?} differ", x.shape(), y.shape()),
        });
    }
    Ok(())
}

fn record(
    step: &mut Step,
    entry: &'static str,
    alpha: f32,
    beta: f32,
    bindings: &[(u32, &Tensor)],
    n: usize,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let params = ElementwiseParams {
        n: to_u32(entry, n)?,
        alpha,
        beta,
        _pad: 0,
    };
    let kernel = step.gpu.kernel(&shaders::ELEMENTWISE, entry, vec![]);
    step.push(KernelOp::new(
        step.gpu,
        entry,
        kernel,
        &params,
        bindings,
        [grid_stride_groups(n, WG), 1, 1],
    )?);
    Ok(())
}

/// Records a copy of X and returns it.
pub fn copy(step: &mut Step, x: &Tensor) -> Result<Tensor> {
    let y = Tensor::uninit(step.gpu, x.shape())?;
    record(step, "copy", 1.0, 0.0, &[(1, x), (3, &y)], x.len())?;
    Ok(y)
}

/// Records Z = X + Y and returns Z.
pub fn add(step: &mut Step, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    same_shape("add", x, y)?;
    let z = Tensor::uninit(step.gpu, x.shape())?;
    record(step, "add", 1.0, 1.0, &[(1, x), (2, y), (3, &z)], x.len())?;
    Ok(z)
}

/// Records Z = α·X + β·Y and returns Z.
pub fn axpby(step: &mut Step, alpha: f32, x: &Tensor, beta: f32, y: &Tensor) -> Result<Tensor> {
    same_shape("axpby", x, y)?;
    let z = Tensor::uninit(step.gpu, x.shape())?;
    record(
        step,
        "axpby",
        alpha,
        beta,
        &[(1, x), (2, y), (3, &z)],
        x.len(),
    )?;
    Ok(z)
}

/// Records Y += α·X in place.
pub fn axpy(step: &mut Step, alpha: f32, x: &Tensor, y: &Tensor) -> Result<()> {
    same_shape("axpy", x, y)?;
    record(step, "axpy", alpha, 0.0, &[(1, x), (3, y)], x.len())
}

/// Records X *= α in place.
pub fn scale(step: &mut Step, alpha: f32, x: &Tensor) -> Result<()> {
    record(step, "scale", alpha, 0.0, &[(3, x)], x.len())
}
