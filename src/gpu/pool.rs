//! Buffer pool: storage buffers are reused by size, so a training step that allocates the same
//! activations every time allocates nothing after the first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

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
    /// The device's error slot (`Gpu::check` returns it): where an allocation that fails
    /// asynchronously (on the web) is reported.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    errors: Arc<Mutex<Option<Error>>>,
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
    pub(crate) fn new(device: wgpu::Device, errors: Arc<Mutex<Option<Error>>>) -> Self {
        let offset_alignment =
            u64::from(device.limits().min_storage_buffer_offset_alignment).max(4);
        BufferPool {
            device,
            free: Mutex::new(PoolState::default()),
            offset_alignment,
            errors,
        }
    }

    /// The size a request for `bytes` is served with.
    pub(crate) fn bucket(bytes: u64) -> u64 {
        bytes.max(1).div_ceil(GRANULE) * GRANULE
    }

    /// A storage buffer of at least `bytes`, reused when one is free. Contents are undefined.
    /// A new buffer the GPU has no memory for is [`Error::OutOfMemory`] naming `what`: at once
    /// natively, at the next submit or read on the web (where the answer is a promise).
    pub(crate) fn take(
        self: &Arc<Self>,
        bytes: u64,
        label: &str,
        what: impl FnOnce() -> String,
    ) -> Result<PooledBuffer> {
        let size = Self::bucket(bytes);
        let reused = {
            let mut state = self.free.lock().unwrap_or_else(|p| p.into_inner());
            let reused = state.by_size.get_mut(&size).and_then(Vec::pop);
            if reused.is_some() {
                state.pooled_bytes -= size;
            }
            reused
        };
        let buffer = match reused {
            Some(b) => b,
            None => {
                let b = self.create(size, label, what)?;
                let mut state = self.free.lock().unwrap_or_else(|p| p.into_inner());
                state.allocated += 1;
                state.held_bytes += size;
                state.peak_bytes = state.peak_bytes.max(state.held_bytes);
                b
            }
        };
        Ok(PooledBuffer {
            buffer: Some(buffer),
            pool: Arc::clone(self),
        })
    }

    /// A new storage buffer, inside an out-of-memory error scope so that a failed allocation
    /// is named here rather than reported anonymously by a later submit. The pool makes new
    /// buffers only until a workload's sizes are all pooled, so the scope costs nothing in a
    /// training loop after its first step.
    fn create(
        &self,
        size: u64,
        label: &str,
        what: impl FnOnce() -> String,
    ) -> Result<wgpu::Buffer> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let popped = scope.pop();
        let out_of_memory = |what: String| Error::OutOfMemory {
            what,
            bytes: Some(size),
        };
        // Natively wgpu decides while creating the buffer, so the future is already resolved:
        // one poll, no wait.
        #[cfg(not(target_arch = "wasm32"))]
        {
            use std::future::Future;
            use std::task::{Context, Poll, Waker};
            let mut popped = std::pin::pin!(popped);
            if let Poll::Ready(Some(_)) = popped
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
            {
                return Err(out_of_memory(what()));
            }
        }
        #[cfg(target_arch = "wasm32")]
        {
            let (errors, e) = (self.errors.clone(), out_of_memory(what()));
            wasm_bindgen_futures::spawn_local(async move {
                if popped.await.is_some() {
                    crate::gpu::context::record(&errors, e);
                }
            });
        }
        Ok(buffer)
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
