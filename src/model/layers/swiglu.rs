//! SwiGLU, Llama's gated MLP activation (`shaders/swiglu.wgsl`): h = silu(gate) ⊙ up, forward
//! and backward.

use crate::error::Result;
use crate::gpu::{KernelOp, Step, Tensor};
use crate::linalg::{grid_stride_groups, to_u32};
use crate::model::layers::expect_shape;
use crate::shaders;

/// Mirrors `Params` in `swiglu.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SwigluParams {
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
    let params = SwigluParams {
        n: to_u32(entry, n)?,
        _pad: [0; 3],
    };
    let kernel = step.gpu().kernel(&shaders::SWIGLU, entry, vec![]);
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

/// Records h = silu(gate) ⊙ up, silu(x) = x·σ(x), elementwise over two tensors of one shape
/// (Llama: the gate_proj and up_proj outputs, (batch, seq, ffn)). Returns h. One dispatch.
///
/// ```no_run
/// # fn demo(step: &mut spectune::Step, gate: &spectune::Tensor, up: &spectune::Tensor) -> spectune::Result<()> {
/// use spectune::model::layers::swiglu_forward;
/// let h = swiglu_forward(step, gate, up)?; // then down_proj
/// # Ok(()) }
/// ```
pub fn swiglu_forward(step: &mut Step, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    const OP: &str = "swiglu_forward";
    expect_shape(OP, "up", up, gate.shape())?;
    let h = Tensor::uninit(step.gpu(), gate.shape())?;
    record(step, OP, &[(1, gate), (2, up), (3, &h)], gate.len())?;
    Ok(h)
}

/// Records the backward of [`swiglu_forward`] for d_h = ∂L/∂h: returns (d_gate, d_up) with
/// d_gate = d_h·up·silu'(gate), silu'(x) = σ(x)·(1 + x·(1 − σ(x))), and d_up = d_h·silu(gate).
/// One dispatch.
pub fn swiglu_backward(
    step: &mut Step,
    gate: &Tensor,
    up: &Tensor,
    d_h: &Tensor,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "swiglu_backward";
    expect_shape(OP, "up", up, gate.shape())?;
    expect_shape(OP, "d_h", d_h, gate.shape())?;
    let gpu = step.gpu();
    let d_gate = Tensor::uninit(gpu, gate.shape())?;
    let d_up = Tensor::uninit(gpu, gate.shape())?;
    record(
        step,
        OP,
        &[(1, gate), (2, up), (3, d_h), (4, &d_gate), (5, &d_up)],
        gate.len(),
    )?;
    Ok((d_gate, d_up))
}
