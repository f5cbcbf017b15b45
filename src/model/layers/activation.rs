//! GELU in BERT's exact erf form (`shaders/activation.wgsl`), forward and backward. The erf
//! approximation and its measured error are documented in the shader.

use crate::error::{Error, Result};
use crate::gpu::{KernelOp, Step, Tensor};
use crate::linalg::{grid_stride_groups, to_u32};
use crate::shaders;

/// Mirrors `Params` in `activation.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ActivationParams {
    n: u32,
    _pad: [u32; 3],
}

const WG: usize = 256;

fn record(
    step: &mut Step,
    entry: &'static str,
    bindings: &[(u32, &Tensor)],
    n: usize,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let params = ActivationParams {
        n: to_u32(entry, n)?,
        _pad: [0; 3],
    };
    let kernel = step.gpu().kernel(&shaders::ACTIVATION, entry, vec![]);
    step.push(KernelOp::new(
        step.gpu(),
        entry,
        kernel,
        &params,
        bindings,
        [grid_stride_groups(n, WG), 1, 1],
    )?);
    Ok(())
}

/// Records y = x·Φ(x) = x·½(1 + erf(x/√2)) elementwise and returns y. One dispatch.
pub fn gelu_forward(step: &mut Step, x: &Tensor) -> Result<Tensor> {
    let y = Tensor::uninit(step.gpu(), x.shape())?;
    record(step, "gelu_forward", &[(1, x), (2, &y)], x.len())?;
    Ok(y)
}

/// Records dx = d_y·(Φ(x) + x·φ(x)), the backward of [`gelu_forward`] at its input x. One
/// dispatch.
pub fn gelu_backward(step: &mut Step, x: &Tensor, d_y: &Tensor) -> Result<Tensor> {
    if x.shape() != d_y.shape() {
        return Err(Error::ShapeMismatch {
            op: "gelu_backward",
            detail: format!("x {:?} and d_y {:?} differ", x.shape(), d_y.shape()),
        });
    }
    let d_x = Tensor::uninit(step.gpu(), x.shape())?;
    record(
        step,
        "gelu_backward",
        &[(1, x), (2, d_y), (3, &d_x)],
        x.len(),
    )?;
    Ok(d_x)
}
