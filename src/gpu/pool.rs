//! Buffer pool: storage buffers are reused by size, so a training step that allocates the same
//! activations every time allocates nothing after the first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Buffers at least this many bytes apart in size never share a bucket; a bucket is the size
/// rounded up to this granularity (vec4 alignment and then some).
const GRANULE: u64 = 256;
/// Free buffers kept, in bytes, before the pool starts dropping returned buffers.
const MAX_POOLED_BYTES: u64 = 512 << 20;

/// Free storage buffers keyed by their (rounded) size.
pub(crate) struct BufferPool {
    device: wgpu::Device,
    free: Mutex<PoolState>,
    offset_alignment: u64,
}

#[derive(Default)]
struct PoolState {
    by_size: HashMap<u64, Vec<wgpu::Buffer>>,
    pooled_bytes: u64,
    allocated: u64,
    /// Bytes of every buffer created and not yet dropped (in use or idle in the pool).
    held_bytes: u64,
    peak_bytes: u64,
}

impl BufferPool {
    pub(crate) fn new(device: wgpu::Device) -> Self {
        let offset_alignment =
            u64::from(device.limits().min_storage_buffer_offset_alignment).max(4);
        BufferPool {
            device,
            free: Mutex::new(PoolState::default()),
            offset_alignment,
        }
    }

    /// The size a request for `bytes` is served with.
    pub(crate) fn bucket(bytes: u64) -> u64 {
        bytes.max(1).div_ceil(GRANULE) * GRANULE
    }

    /// A storage buffer of at least `bytes`, reused when one is free. Contents are undefined.
    pub(crate) fn take(self: &Arc<Self>, bytes: u64, label: &str) -> PooledBuffer {
        let size = Self::bucket(bytes);
        let mut state = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let reused = state.by_size.get_mut(&size).and_then(Vec::pop);
        let buffer = match reused {
            Some(b) => {
                state.pooled_bytes -= size;
                b
            }
            None => {
                state.allocated += 1;
                state.held_bytes += size;
                state.peak_bytes = state.peak_bytes.max(state.held_bytes);
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            }
        };
        PooledBuffer {
            buffer: Some(buffer),
            pool: Arc::clone(self),
        }
    }

    fn give_back(&self, buffer: wgpu::Buffer) {
        let size = buffer.size();
        let mut state = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if state.pooled_bytes + size > MAX_POOLED_BYTES {
            state.held_bytes -= size;
            return; // dropped: wgpu frees it once the GPU is done with it
        }
        state.pooled_bytes += size;
        state.by_size.entry(size).or_default().push(buffer);
    }

    /// (buffers ever created, bytes now idle in the pool): for leak checks and benchmarks.
    pub(crate) fn stats(&self) -> (u64, u64) {
        let state = self.free.lock().unwrap_or_else(|p| p.into_inner());
        (state.allocated, state.pooled_bytes)
    }

    /// (bytes held now, the most held at once since the last reset): storage buffers in use
    /// or idle in the pool, the GPU memory the library's tensors take.
    pub(crate) fn memory(&self) -> (u64, u64) {
        let state = self.free.lock().unwrap_or_else(|p| p.into_inner());
        (state.held_bytes, state.peak_bytes)
    }

    /// Starts a new peak from what is held now.
    pub(crate) fn reset_peak(&self) {
        let mut state = self.free.lock().unwrap_or_else(|p| p.into_inner());
        state.peak_bytes = state.held_bytes;
    }

    /// Drops every idle buffer.
    pub(crate) fn clear(&self) {
        let mut state = self.free.lock().unwrap_or_else(|p| p.into_inner());
        state.by_size.clear();
        state.held_bytes -= state.pooled_bytes;
        state.pooled_bytes = 0;
    }
}

/// A buffer on loan from the pool; returned when dropped. Work already submitted that uses it
/// stays correct: the queue runs in order, so a later user of the same buffer runs later.
pub(crate) struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    pool: Arc<BufferPool>,
}

impl PooledBuffer {
    pub(crate) fn raw(&self) -> &wgpu::Buffer {
        // Only `drop` takes the buffer out.
        self.buffer
            .as_ref()
            .expect("pooled buffer is present until dropped")
    }

    /// Bytes a binding's offset into this buffer must be a multiple of.
    pub(crate) fn offset_alignment(&self) -> u64 {
        self.pool.offset_alignment
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.pool.give_back(b);
        }
    }
}
