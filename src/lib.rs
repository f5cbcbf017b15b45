//! # spectune
//!
//! Spectral fine-tuning of small neural networks on the user's own GPU: WGSL compute kernels
//! run through wgpu natively (Vulkan/Metal/DX12, lavapipe in CI) and through WebGPU in the
//! browser (this crate compiled to wasm32, with the JS API in [`web`]).
//!
//! Layers (see `DESIGN.md`): [`gpu`] (device, tensors, kernel cache, step recorder) →
//! [`linalg`] (matmul family, elementwise, reductions, transpose). Every kernel lives in
//! `shaders/*.wgsl`, and [`reference`] holds the CPU versions the tests compare against.
//!
//! ```no_run
//! # async fn demo() -> spectune::Result<()> {
//! use spectune::{linalg, Gpu, Step, Tensor};
//! let gpu = Gpu::request().await?;
//! let a = Tensor::from_slice(&gpu, &[2, 3], &[1., 2., 3., 4., 5., 6.])?;
//! let b = Tensor::from_slice(&gpu, &[3, 1], &[1., 1., 1.])?;
//! let mut step = Step::new(&gpu, "demo"); // many dispatches, one submit
//! let c = linalg::matmul(&mut step, &a, &b)?;
//! step.submit()?;
//! assert_eq!(c.to_vec(&gpu).await?, vec![6., 15.]);
//! # Ok(()) }
//! ```

// On wasm32 wgpu's handles are not Send; the Arcs still share them within the one thread.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

pub mod adapter;
pub mod error;
pub mod gpu;
pub mod io;
pub mod linalg;
pub mod model;
pub mod random;
pub mod reference;
pub mod shaders;
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
pub use gpu::{read_many, AdapterInfo, Gpu, GpuOptions, KernelOp, Step, Tensor};
