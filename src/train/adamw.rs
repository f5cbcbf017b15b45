//! AdamW with global-norm clipping and a learning-rate schedule, as one dispatch over every
//! trainable value (`shaders/adamw.wgsl`), after one reduction for the gradient norm.

use crate::error::Result;
use crate::gpu::{Gpu, KernelOp, Step, Tensor};
use crate::linalg::sum_squares;
use crate::shaders;
use crate::train::{Params, Schedule};

/// AdamW's settings. The defaults are PyTorch's, except weight decay (0 by default, as
/// adapter fine-tuning usually runs; set it to decay towards the untrained adapter).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Clip the global gradient norm to this (`None`: no clipping).
    pub max_grad_norm: Option<f32>,
    pub schedule: Schedule,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: None,
            schedule: Schedule::Constant,
        }
    }
}

impl AdamW {
    pub fn lr(mut self, lr: f32) -> Self {
        self.lr = lr;
        self
    }
    pub fn weight_decay(mut self, wd: f32) -> Self {
        self.weight_decay = wd;
        self
    }
    pub fn max_grad_norm(mut self, norm: f32) -> Self {
        self.max_grad_norm = Some(norm);
        self
    }
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }
}

/// Mirrors `Params` in `adamw.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AdamWParams {
    n: u32,
    decay_len: u32,
    lr: f32,
    weight_decay: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    max_norm: f32,
    bias_correction1: f32,
    bias_correction2: f32,
    _pad: [u32; 2],
}

/// The optimizer's state for one [`Params`]: both moments, on the GPU, and the step count.
#[derive(Debug)]
pub struct Optimizer {
    pub config: AdamW,
    m: Tensor,
    v: Tensor,
    steps: u64,
    grad_norm_sq: Option<Tensor>,
}

const WG: usize = 256;

impl Optimizer {
    /// Zero moments for `params`.
    pub fn new(gpu: &Gpu, params: &Params, config: AdamW) -> Result<Optimizer> {
        let shape = params.flat_values().shape();
        Ok(Optimizer {
            config,
            m: Tensor::zeros(gpu, shape)?,
            v: Tensor::zeros(gpu, shape)?,
            steps: 0,
            grad_norm_sq: None,
        })
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The learning rate the next step will use.
    pub fn current_lr(&self) -> f32 {
        self.config.lr * self.config.schedule.factor(self.steps)
    }

    /// Records one update of every parameter from its gradient: the norm reduction (2
    /// dispatches) and the AdamW kernel (1 dispatch). A gradient whose norm is not finite
    /// leaves every value and both moments unchanged (the step still counts).
    pub fn step(&mut self, step: &mut Step, params: &Params) -> Result<()> {
        self.record(step, params, None)
    }

    /// [`Optimizer::step`], also skipped when `loss` (shape [1], recorded before in the same
    /// step) is not finite: what a training loop's NaN guard needs, with no read-back.
    pub fn step_guarded(&mut self, step: &mut Step, params: &Params, loss: &Tensor) -> Result<()> {
        self.record(step, params, Some(loss))
    }

    fn record(&mut self, step: &mut Step, params: &Params, loss: Option<&Tensor>) -> Result<()> {
        let grads = params.flat_grads();
        let norm_sq = sum_squares(step, grads)?;
        let c = self.config;
        let t = (self.steps + 1) as i32;
        let n = grads.len();
        let uniforms = AdamWParams {
            n: crate::linalg::to_u32("adamw", n)?,
            decay_len: crate::linalg::to_u32("adamw", params.decay_len())?,
            lr: self.current_lr(),
            weight_decay: c.weight_decay,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            max_norm: c.max_grad_norm.unwrap_or(0.0),
            bias_correction1: 1.0 - c.beta1.powi(t),
            bias_correction2: 1.0 - c.beta2.powi(t),
            _pad: [0; 2],
        };
        let gpu = step.gpu();
        let kernel = gpu.kernel(&shaders::ADAMW, "adamw", vec![]);
        let bindings = [
            (1, params.flat_values()),
            (2, grads),
            (3, &self.m),
            (4, &self.v),
            (5, &norm_sq),
            (6, loss.unwrap_or(&norm_sq)),
        ];
        step.push(KernelOp::new(
            gpu,
            "adamw",
            kernel,
            &uniforms,
            &bindings,
            [crate::linalg::grid_stride_groups(n, WG), 1, 1],
        )?);
        params.record_constraints(step)?;
        self.grad_norm_sq = Some(norm_sq);
        self.steps += 1;
        Ok(())
    }

    /// Σ g² (before clipping) of the last recorded step, shape [1]: read it back only when
    /// it is wanted.
    pub fn grad_norm_sq(&self) -> Option<&Tensor> {
        self.grad_norm_sq.as_ref()
    }

    /// Sets both moments and the step count (from a checkpoint).
    pub fn restore(&mut self, gpu: &Gpu, m: &[f32], v: &[f32], steps: u64) -> Result<()> {
        self.m.write(gpu, m)?;
        self.v.write(gpu, v)?;
        self.steps = steps;
        Ok(())
    }

    /// Both moments, for checkpoints.
    pub fn moments(&self) -> (&Tensor, &Tensor) {
        (&self.m, &self.v)
    }
}
