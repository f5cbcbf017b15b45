//! The step recorder. Ops are data (`KernelOp`: kernel + parameters + buffers + workgroup
//! count); a `Step` collects many and encodes them into one compute pass, submitted once.

use crate::error::{Error, Result};
use crate::gpu::kernels::Kernel;
use crate::gpu::tensor::TensorBinding;
use crate::gpu::{Gpu, Tensor};

/// One dispatch, ready to record: built by an op constructor that has checked the shapes.
/// Binding 0 is the op's uniform parameter struct; the tensors are bound at the numbers given.
#[derive(Clone)]
pub struct KernelOp {
    pub(crate) kernel: Kernel,
    pub(crate) params: Vec<u8>,
    pub(crate) buffers: Vec<(u32, TensorBinding)>,
    pub(crate) workgroups: [u32; 3],
}

impl std::fmt::Debug for KernelOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KernelOp({} x {:?})", self.kernel.label, self.workgroups)
    }
}

impl KernelOp {
    /// Builds a dispatch of `kernel` over `workgroups` with `params` at binding 0 and each
    /// `(binding, tensor)`, refusing a grid over the device's per-dimension limit.
    pub(crate) fn new<P: bytemuck::Pod>(
        gpu: &Gpu,
        op: &'static str,
        kernel: Kernel,
        params: &P,
        tensors: &[(u32, &Tensor)],
        workgroups: [u64; 3],
    ) -> Result<KernelOp> {
        let max = gpu.limits().max_compute_workgroups_per_dimension;
        let mut grid = [1u32; 3];
        for (g, &w) in grid.iter_mut().zip(&workgroups) {
            *g = u32::try_from(w)
                .ok()
                .filter(|&w| w <= max)
                .ok_or(Error::TooManyWorkgroups { op, count: w, max })?;
        }
        Ok(KernelOp {
            kernel,
            params: bytemuck::bytes_of(params).to_vec(),
            buffers: tensors
                .iter()
                .map(|&(binding, t)| (binding, t.binding()))
                .collect(),
            workgroups: grid,
        })
    }

    /// The kernel's label: file, entry point and defines.
    pub fn label(&self) -> &str {
        &self.kernel.label
    }
}

/// A list of ops encoded into one command buffer and submitted once.
///
/// ```no_run
/// # async fn demo(gpu: &spectune::Gpu, a: &spectune::Tensor, b: &spectune::Tensor, c: &spectune::Tensor) -> spectune::Result<()> {
/// use spectune::linalg::{gemm, Gemm};
/// let mut step = spectune::Step::new(gpu, "two products");
/// gemm(&mut step, &Gemm::default(), a, b, c)?;
/// gemm(&mut step, &Gemm::default().beta(1.0), a, b, c)?; // c += a·b
/// step.submit()?;
/// # Ok(()) }
/// ```
pub struct Step<'g> {
    pub(crate) gpu: &'g Gpu,
    label: String,
    ops: Vec<KernelOp>,
}

impl<'g> Step<'g> {
    /// An empty step on `gpu`.
    pub fn new(gpu: &'g Gpu, label: impl Into<String>) -> Self {
        Step {
            gpu,
            label: label.into(),
            ops: Vec::new(),
        }
    }

    /// The device this step records for.
    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// Appends one dispatch.
    pub fn push(&mut self, op: KernelOp) {
        self.ops.push(op);
    }

    /// Appends several dispatches.
    pub fn extend(&mut self, ops: impl IntoIterator<Item = KernelOp>) {
        self.ops.extend(ops);
    }

    /// Dispatches recorded so far.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Submits what has been recorded so far and goes on recording. Temporaries that only the
    /// submitted ops used go back to the buffer pool, so a long step (a whole model's
    /// backward pass) reuses one layer's temporaries for the next instead of holding them all.
    pub fn flush(&mut self) -> Result<()> {
        let ops = std::mem::take(&mut self.ops);
        Step {
            gpu: self.gpu,
            label: self.label.clone(),
            ops,
        }
        .submit()
    }

    /// Encodes every op into one compute pass (WebGPU orders dispatches within a pass, so each
    /// sees the writes of the ones before) and submits once. Returns without waiting.
    pub fn submit(self) -> Result<()> {
        let gpu = self.gpu;
        gpu.check()?;
        let mut arena = Vec::new();
        let offsets: Vec<u64> = self
            .ops
            .iter()
            .map(|op| gpu.uniforms.push(&mut arena, &op.params))
            .collect();
        let (_arena_lock, uniforms) = gpu.uniforms.upload(&gpu.device, &gpu.queue, &arena);

        let bind_groups: Vec<wgpu::BindGroup> = self
            .ops
            .iter()
            .zip(&offsets)
            .map(|(op, &offset)| {
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &uniforms,
                        offset,
                        size: wgpu::BufferSize::new(op.params.len() as u64),
                    }),
                }];
                entries.extend(op.buffers.iter().map(|(binding, b)| wgpu::BindGroupEntry {
                    binding: *binding,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: b.buffer.raw(),
                        offset: b.offset,
                        size: b.size.and_then(wgpu::BufferSize::new),
                    }),
                }));
                gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(&op.kernel.label),
                    layout: &op.kernel.pipeline.get_bind_group_layout(0),
                    entries: &entries,
                })
            })
            .collect();

        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some(&self.label),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(&self.label),
                timestamp_writes: None,
            });
            for (op, bind_group) in self.ops.iter().zip(&bind_groups) {
                pass.set_pipeline(&op.kernel.pipeline);
                pass.set_bind_group(0, bind_group, &[]);
                let [x, y, z] = op.workgroups;
                pass.dispatch_workgroups(x, y, z);
            }
        }
        gpu.queue.submit([encoder.finish()]);
        gpu.check()
    }
}
