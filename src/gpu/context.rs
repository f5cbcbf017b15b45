//! The device: one `Gpu` per page or process, created async, holding the adapter's own limits,
//! the kernel cache, the buffer pool and the uniform arena.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::kernels::KernelCache;
use crate::gpu::pool::BufferPool;
use crate::gpu::uniforms::UniformArena;

/// What the adapter says about itself, for display and for choosing kernel variants.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterInfo {
    /// The adapter's name, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)" or "NVIDIA H100".
    pub name: String,
    /// "Vulkan", "Metal", "Dx12", "Gl" or "BrowserWebGpu".
    pub backend: String,
    /// "DiscreteGpu", "IntegratedGpu", "Cpu", "VirtualGpu" or "Other".
    pub device_type: String,
    /// Driver name and version, where the platform reports them.
    pub driver: String,
}

impl AdapterInfo {
    fn from_wgpu(info: &wgpu::AdapterInfo) -> Self {
        let driver = [info.driver.as_str(), info.driver_info.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        AdapterInfo {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver,
        }
    }

    /// True for adapters that run on the CPU (lavapipe, SwiftShader, WARP): kernels pick their
    /// CPU-friendly variants there.
    pub fn is_software(&self) -> bool {
        let name = self.name.to_ascii_lowercase();
        self.device_type == "Cpu"
            || ["llvmpipe", "lavapipe", "swiftshader", "warp", "software"]
                .iter()
                .any(|s| name.contains(s))
    }
}

/// What [`Gpu::request_with`] asks the platform for. The default is what [`Gpu::request`] does:
/// wgpu's backends (or `WGPU_BACKEND`), the high-performance adapter, its own limits.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuOptions {
    /// Native backends to look on (Vulkan, Metal, DX12, GL). On the web the browser's WebGPU
    /// is the only one, and [`Error::NoWebGpu`] comes first when it is missing.
    pub backends: wgpu::Backends,
    /// Which adapter to prefer where there are several (a discrete or an integrated GPU).
    pub power_preference: wgpu::PowerPreference,
    /// Only a software adapter (lavapipe, WARP, SwiftShader), even where a GPU exists.
    pub force_fallback_adapter: bool,
    /// Limits the device must have; `None`: the adapter's own (the most it allows). Asking
    /// for more than the adapter allows is [`Error::DeviceRefused`] naming each limit.
    pub required_limits: Option<wgpu::Limits>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            backends: wgpu::Backends::from_env().unwrap_or_default(),
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            required_limits: None,
        }
    }
}

/// A GPU device and everything cached on it. Create one with [`Gpu::request`] and pass `&Gpu`
/// to every operation: the device is the seam between spectune and the platform.
pub struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: AdapterInfo,
    limits: wgpu::Limits,
    pub(crate) kernels: KernelCache,
    pub(crate) pool: Arc<BufferPool>,
    pub(crate) uniforms: UniformArena,
    /// The first error the device reported outside any call that could return it.
    error: Arc<Mutex<Option<Error>>>,
    /// Why the device was lost, once it is.
    lost: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Gpu {
    /// Finds an adapter (the browser's WebGPU, or whatever wgpu finds natively: a real GPU, or
    /// lavapipe in CI) and opens a device with the adapter's own limits: [`GpuOptions::default`].
    ///
    /// ```no_run
    /// # async fn demo() -> spectune::Result<()> {
    /// let gpu = spectune::Gpu::request().await?;
    /// println!("running on {}", gpu.info().name);
    /// # Ok(()) }
    /// ```
    pub async fn request() -> Result<Gpu> {
        Self::request_with(&GpuOptions::default()).await
    }

    /// Finds an adapter as `options` ask (backends, power preference, software fallback) and
    /// opens a device with their required limits, or the adapter's own.
    ///
    /// ```no_run
    /// # async fn demo() -> spectune::Result<()> {
    /// use spectune::{Gpu, GpuOptions};
    /// let gpu = Gpu::request_with(&GpuOptions {
    ///     backends: wgpu::Backends::VULKAN,
    ///     power_preference: wgpu::PowerPreference::LowPower,
    ///     ..GpuOptions::default()
    /// })
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn request_with(options: &GpuOptions) -> Result<Gpu> {
        #[cfg(target_arch = "wasm32")]
        if !crate::gpu::web::has_webgpu() {
            return Err(Error::NoWebGpu);
        }
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        desc.backends = options.backends;
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: options.power_preference,
                force_fallback_adapter: options.force_fallback_adapter,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                Error::NoAdapter(format!(
                    "{e} (asked for backends: {}{}). Install a GPU driver (on Linux without a GPU, Mesa's lavapipe: mesa-vulkan-drivers), or ask for other backends (GpuOptions::backends, or WGPU_BACKEND)",
                    backend_names(options.backends),
                    if options.force_fallback_adapter { ", a software adapter only" } else { "" }
                ))
            })?;
        Self::from_adapter_with_limits(adapter, options.required_limits.clone()).await
    }

    /// Opens a device on a given adapter, asking for the adapter's own limits (the WebGPU
    /// defaults cap storage bindings at 128 MiB and buffers at 256 MiB, too small for models).
    pub async fn from_adapter(adapter: wgpu::Adapter) -> Result<Gpu> {
        Self::from_adapter_with_limits(adapter, None).await
    }

    /// Opens a device on a given adapter with `required_limits` (`None`: the adapter's own).
    /// A limit beyond what the adapter allows is [`Error::DeviceRefused`], naming it.
    pub async fn from_adapter_with_limits(
        adapter: wgpu::Adapter,
        required_limits: Option<wgpu::Limits>,
    ) -> Result<Gpu> {
        let info = AdapterInfo::from_wgpu(&adapter.get_info());
        let allowed = adapter.limits();
        let limits = required_limits.unwrap_or_else(|| allowed.clone());
        // Checked here rather than left to the driver, so that the error names every limit
        // and the adapter, not only the first limit wgpu meets.
        let mut over = Vec::new();
        limits.check_limits_with_fail_fn(&allowed, false, |name, asked, most| {
            over.push(format!("{name} {asked} (the adapter's limit is {most})"))
        });
        if !over.is_empty() {
            return Err(Error::DeviceRefused(format!(
                "{} ({}) cannot give the limits asked for: {}",
                info.name,
                info.backend,
                over.join(", ")
            )));
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("spectune"),
                required_features: wgpu::Features::empty(),
                required_limits: limits.clone(),
                memory_hints: wgpu::MemoryHints::Performance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::DeviceRefused(format!("{} ({}): {e}", info.name, info.backend)))?;

        let error = Arc::new(Mutex::new(None::<Error>));
        let sink = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let e = match e {
                // The pool's buffers are checked where they are made; this is anything else
                // (a staging or uniform buffer, a bind group), named by wgpu's context.
                wgpu::Error::OutOfMemory { source } => Error::OutOfMemory {
                    what: format!(
                        "a GPU object ({})",
                        error_chain(&*source).trim_end_matches('.')
                    ),
                    bytes: None,
                },
                other => Error::Gpu(other.to_string()),
            };
            record(&sink, e);
        }));
        let lost = Arc::new(Mutex::new(None::<String>));
        let sink = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| format!("{reason:?}: {message}"));
        });

        let pool = Arc::new(BufferPool::new(device.clone(), error.clone()));
        let uniforms = UniformArena::new(limits.min_uniform_buffer_offset_alignment);
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            kernels: KernelCache::default(),
            pool,
            uniforms,
            error,
            lost,
        })
    }

    /// Caps every buffer at `bytes`, below the device's own limits: a budget for a page that
    /// must leave GPU memory to others, and how tests meet a small GPU. Models and batches
    /// over it are refused before anything is allocated.
    pub fn limit_buffers(&mut self, bytes: u64) {
        self.limits.max_buffer_size = self.limits.max_buffer_size.min(bytes);
        self.limits.max_storage_buffer_binding_size =
            self.limits.max_storage_buffer_binding_size.min(bytes);
    }

    /// What the adapter says about itself.
    pub fn info(&self) -> &AdapterInfo {
        &self.info
    }

    /// The limits the device was opened with (the adapter's own, or those
    /// [`GpuOptions::required_limits`] asked for), lowered by [`Gpu::limit_buffers`].
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// GPU memory held by tensors: (bytes now, peak bytes since [`Gpu::reset_peak_memory`]),
    /// counting buffers in use and those idle in the reuse pool.
    pub fn memory(&self) -> (u64, u64) {
        self.pool.memory()
    }

    /// Storage buffers created since the device opened (in use, pooled, or since dropped): flat
    /// once a repeated workload's buffers are all pooled, so growth means a leak.
    pub fn buffers_created(&self) -> u64 {
        self.pool.stats().0
    }

    /// Starts measuring a new peak from what is held now.
    pub fn reset_peak_memory(&self) {
        self.pool.reset_peak()
    }

    /// The underlying wgpu device, for interop.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// Destroys the device, as a lost GPU would be. Every later call returns [`Error::DeviceLost`].
    pub fn destroy(&self) {
        self.device.destroy();
        let mut slot = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| "the device was destroyed".into());
    }

    /// Returns the device's pending error, if any: lost first, then an uncaptured GPU error.
    /// Called after each submit and readback so that no failure goes unreported.
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(why) = self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(Error::DeviceLost(why));
        }
        if let Some(e) = self.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        Ok(())
    }

    /// Checks that a buffer of `bytes` fits this device, naming `what` if not.
    pub(crate) fn check_buffer_size(
        &self,
        what: impl FnOnce() -> String,
        bytes: u64,
    ) -> Result<()> {
        let binding = self.limits.max_storage_buffer_binding_size;
        let (limit, limit_name) = if self.limits.max_buffer_size < binding {
            (self.limits.max_buffer_size, "maxBufferSize")
        } else {
            (binding, "maxStorageBufferBindingSize")
        };
        if bytes > limit {
            return Err(Error::BufferTooLarge {
                what: what(),
                bytes,
                limit,
                limit_name,
            });
        }
        Ok(())
    }

    /// Blocks (natively) until submitted work is done; a no-op on the web, where the browser
    /// drives the queue and callbacks.
    pub(crate) fn poll_wait(&self) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::DeviceLost(e.to_string()))?;
        Ok(())
    }

    /// Waits until all submitted work has finished (async on both targets).
    pub async fn sync(&self) -> Result<()> {
        let (tx, rx) = futures_channel::oneshot::channel();
        self.queue.on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        self.poll_wait()?;
        rx.await
            .map_err(|_| Error::DeviceLost("the queue was dropped".into()))?;
        self.check()
    }
}

/// Keeps the first of the device's asynchronous errors for [`Gpu::check`] to return.
pub(crate) fn record(slot: &Mutex<Option<Error>>, e: Error) {
    let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
    slot.get_or_insert(e);
}

/// An error and its sources on one line: wgpu's `OutOfMemory` says only "Out of Memory", and
/// its source says which call and which label.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(s) = next {
        parts.push(s.to_string());
        next = s.source();
    }
    parts.join(": ")
}

/// "VULKAN | GL", or "none".
fn backend_names(backends: wgpu::Backends) -> String {
    let names: Vec<&str> = backends.iter_names().map(|(name, _)| name).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(" | ")
    }
}
