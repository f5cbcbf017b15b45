//! GPU runtime: device, tensors, kernel cache, step recorder, buffer pool, uniform arena.
//! Knows nothing of linear algebra or models.

mod context;
pub mod kernels;
mod pool;
mod step;
mod tensor;
mod uniforms;
#[cfg(target_arch = "wasm32")]
pub(crate) mod web;

pub use context::{AdapterInfo, Gpu, GpuOptions};
pub use kernels::{Defines, Shader};
pub use step::{KernelOp, Step};
pub use tensor::{read_many, Tensor};

impl Gpu {
    /// (storage buffers ever created, bytes idle in the pool): for leak checks.
    pub fn pool_stats(&self) -> (u64, u64) {
        self.pool.stats()
    }

    /// Frees every idle pooled buffer.
    pub fn clear_pool(&self) {
        self.pool.clear()
    }

    /// Number of compiled pipelines.
    pub fn compiled_kernels(&self) -> usize {
        self.kernels.len()
    }

    /// The cached pipeline for `entry` of `shader` with `defines`.
    pub(crate) fn kernel(
        &self,
        shader: &Shader,
        entry: &'static str,
        defines: Defines,
    ) -> kernels::Kernel {
        self.kernels.get(&self.device, shader, entry, defines)
    }
}
