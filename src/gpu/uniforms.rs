//! Uniform arena: WebGPU has no push constants, so each dispatch's small parameter struct is
//! appended to one per-step byte arena, uploaded with a single `write_buffer` at submit.

use std::sync::{Mutex, MutexGuard};

/// One growable uniform buffer shared by every step. Reusing it while an earlier step is still
/// running is safe: `write_buffer` is ordered on the queue after the earlier submit. Between a
/// step's upload and its submit the arena stays locked, so that steps submitted from several
/// threads cannot overwrite each other's parameters.
pub(crate) struct UniformArena {
    alignment: u64,
    buffer: Mutex<Option<wgpu::Buffer>>,
}

impl UniformArena {
    pub(crate) fn new(alignment: u32) -> Self {
        UniformArena {
            alignment: u64::from(alignment.max(16)),
            buffer: Mutex::new(None),
        }
    }

    /// Appends `bytes` to a step's arena at the next aligned offset; returns that offset.
    pub(crate) fn push(&self, arena: &mut Vec<u8>, bytes: &[u8]) -> u64 {
        let offset = (arena.len() as u64).div_ceil(self.alignment) * self.alignment;
        arena.resize(offset as usize, 0);
        arena.extend_from_slice(bytes);
        offset
    }

    /// Uploads a step's arena and returns the buffer holding it (grown when too small), with
    /// the lock to hold until the step is submitted.
    pub(crate) fn upload(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        arena: &[u8],
    ) -> (MutexGuard<'_, Option<wgpu::Buffer>>, wgpu::Buffer) {
        let needed = (arena.len() as u64).max(256).next_power_of_two();
        let mut slot = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let buffer = match slot.as_ref() {
            Some(b) if b.size() >= needed => b.clone(),
            _ => {
                let b = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("uniform arena"),
                    size: needed,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                *slot = Some(b.clone());
                b
            }
        };
        if !arena.is_empty() {
            queue.write_buffer(&buffer, 0, arena);
        }
        (slot, buffer)
    }
}
