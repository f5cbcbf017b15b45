//! `Tensor`: a shape and an f32 storage buffer on the GPU, with upload and async download.

use crate::error::{Error, Result};
use std::sync::Arc;

use crate::gpu::pool::PooledBuffer;
use crate::gpu::Gpu;

/// A dense row-major f32 tensor living in a GPU storage buffer from the pool.
pub struct Tensor {
    shape: Vec<usize>,
    // Shared with the ops that use it, so the buffer goes back to the pool only once no
    // recorded-but-unsubmitted op refers to it.
    buffer: Arc<PooledBuffer>,
    // Where this tensor's bytes start in the buffer, and how many bytes a kernel binds: views
    // into one flat buffer (the trainable parameters) let one dispatch update them all.
    offset: u64,
    bind_size: Option<u64>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor{:?}", self.shape)
    }
}

/// Number of elements of a shape, or an error when it overflows.
fn numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::ShapeMismatch {
            op: "tensor",
            detail: format!("shape {shape:?} has more elements than fit in memory"),
        })
}

impl Tensor {
    /// An uninitialised tensor (contents are whatever the pooled buffer held): for outputs that
    /// a kernel overwrites entirely.
    pub fn uninit(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        let len = numel(shape)?;
        let bytes = (len as u64)
            .checked_mul(4)
            .ok_or_else(|| Error::ShapeMismatch {
                op: "tensor",
                detail: format!("shape {shape:?} is too large"),
            })?;
        gpu.check()?;
        let what = || format!("a tensor of shape {shape:?}");
        gpu.check_buffer_size(what, bytes)?;
        let buffer = Arc::new(gpu.pool.take(bytes, "tensor", what)?);
        Ok(Tensor {
            shape: shape.to_vec(),
            buffer,
            offset: 0,
            bind_size: None,
        })
    }

    /// A tensor filled with zeros.
    pub fn zeros(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        let t = Self::uninit(gpu, shape)?;
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("zeros"),
            });
        encoder.clear_buffer(t.buffer(), t.offset, t.bind_size);
        gpu.queue.submit([encoder.finish()]);
        Ok(t)
    }

    /// Uploads `data` (row-major) as a tensor of `shape`.
    pub fn from_slice(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        let t = Self::uninit(gpu, shape)?;
        t.write(gpu, data)?;
        Ok(t)
    }

    /// Uploads u32 data (token ids, labels) as a tensor of `shape`: the bits go unchanged into the
    /// same kind of buffer an f32 tensor uses, and kernels read it as `array<u32>`. Only kernels
    /// that declare it so should read it; as f32 its values are meaningless.
    pub fn from_u32(gpu: &Gpu, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        Self::from_slice(gpu, shape, bytemuck::cast_slice(data))
    }

    /// Overwrites the tensor's values with `data` (row-major, same length).
    pub fn write(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        if data.len() != self.len() {
            return Err(Error::DataLength {
                what: "tensor upload",
                len: data.len(),
                shape: self.shape.clone(),
                expected: self.len(),
            });
        }
        if !data.is_empty() {
            gpu.queue
                .write_buffer(self.buffer(), self.offset, bytemuck::cast_slice(data));
        }
        gpu.check()
    }

    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Views the same buffer under another shape with the same number of elements.
    pub fn reshape(self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape)? != self.len() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                detail: format!("{:?} into {shape:?}", self.shape),
            });
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            ..self
        })
    }

    /// A view of `len(shape)` elements starting at element `start` of this tensor, sharing its
    /// buffer (writes through either are seen by both). `start` must be a multiple of
    /// [`Tensor::view_alignment`] elements, which WebGPU requires of a binding's offset.
    pub fn view(&self, start: usize, shape: &[usize]) -> Result<Tensor> {
        let len = numel(shape)?;
        let align = self.view_alignment_of();
        let fits = start.checked_add(len).is_some_and(|end| end <= self.len());
        if !fits || !start.is_multiple_of(align) {
            return Err(Error::ShapeMismatch {
                op: "view",
                detail: format!("{shape:?} at element {start} of {:?} (views start at multiples of {align} elements and stay inside)", self.shape),
            });
        }
        let offset = self.offset + start as u64 * 4;
        // Bind whole 16-byte granules so vec4 kernels see every element of the view; the
        // parameter store leaves that much room after each view.
        let available = self.offset + self.bind_bytes() - offset;
        let bind_size = Some(((len as u64 * 4).next_multiple_of(16)).clamp(16, available.max(16)));
        Ok(Tensor {
            shape: shape.to_vec(),
            buffer: Arc::clone(&self.buffer),
            offset,
            bind_size,
        })
    }

    /// Elements between view starts: `min_storage_buffer_offset_alignment` (256 bytes unless
    /// the device allows less) in f32s. Stored with the buffer so views need no `Gpu`.
    fn view_alignment_of(&self) -> usize {
        self.buffer.offset_alignment() as usize / 4
    }

    /// Another handle on the same storage (no copy): for frozen tensors several owners share.
    pub(crate) fn alias(&self) -> Tensor {
        Tensor {
            shape: self.shape.clone(),
            buffer: Arc::clone(&self.buffer),
            offset: self.offset,
            bind_size: self.bind_size,
        }
    }

    /// Elements between view starts on `gpu` (64 on most devices).
    pub fn view_alignment(gpu: &Gpu) -> usize {
        (gpu.limits().min_storage_buffer_offset_alignment as usize / 4).max(1)
    }

    /// Bytes a kernel binding of this tensor covers.
    fn bind_bytes(&self) -> u64 {
        self.bind_size
            .unwrap_or(self.buffer.raw().size() - self.offset)
    }

    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.raw()
    }

    /// The buffer, offset and size a kernel binds.
    pub(crate) fn binding(&self) -> TensorBinding {
        TensorBinding {
            buffer: Arc::clone(&self.buffer),
            offset: self.offset,
            size: self.bind_size,
        }
    }

    /// Downloads the values (row-major). Async on both targets: natively it polls the device,
    /// on the web it awaits `mapAsync`.
    pub async fn to_vec(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let mut all = read_many(gpu, &[self]).await?;
        Ok(all.pop().unwrap_or_default())
    }
}

/// A tensor's storage as a kernel binds it; holds the buffer until the op is dropped.
#[derive(Clone)]
pub(crate) struct TensorBinding {
    pub(crate) buffer: Arc<PooledBuffer>,
    pub(crate) offset: u64,
    pub(crate) size: Option<u64>,
}

/// Downloads several tensors with one copy submit and one map: one host round trip however many
/// tensors (the batched SVD reads a whole model's Gram matrices this way).
pub async fn read_many(gpu: &Gpu, tensors: &[&Tensor]) -> Result<Vec<Vec<f32>>> {
    gpu.check()?;
    let offsets: Vec<u64> = tensors
        .iter()
        .scan(0u64, |at, t| {
            let here = *at;
            *at += t.len() as u64 * 4;
            Some(here)
        })
        .collect();
    let total: u64 = tensors.iter().map(|t| t.len() as u64 * 4).sum();
    if total == 0 {
        return Ok(tensors.iter().map(|_| Vec::new()).collect());
    }
    let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: total,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = gpu
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("readback"),
        });
    for (t, &offset) in tensors.iter().zip(&offsets) {
        if !t.is_empty() {
            encoder.copy_buffer_to_buffer(
                t.buffer(),
                t.offset,
                &staging,
                offset,
                t.len() as u64 * 4,
            );
        }
    }
    gpu.queue.submit([encoder.finish()]);

    let (tx, rx) = futures_channel::oneshot::channel();
    staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    gpu.poll_wait()?;
    let mapped = rx
        .await
        .map_err(|_| Error::Readback("the map callback was dropped".into()))?;
    gpu.check()?;
    mapped.map_err(|e| Error::Readback(e.to_string()))?;
    let values = {
        let view = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| Error::Readback(e.to_string()))?;
        let all = bytemuck::cast_slice::<u8, f32>(&view);
        tensors
            .iter()
            .zip(&offsets)
            .map(|(t, &o)| all[o as usize / 4..o as usize / 4 + t.len()].to_vec())
            .collect()
    };
    staging.unmap();
    Ok(values)
}
