//! The JS API (wasm-bindgen). Thin wrappers over the Rust API: every failure becomes a JS
//! `Error` carrying the Rust error's message, and a panic hook makes any bug readable in the
//! console instead of an opaque `unreachable`.

mod llama;
mod model;

pub use llama::JsLanguageModel;
pub use model::{JsModel, JsTrainer};

use std::rc::Rc;

use js_sys::{Float32Array, Promise};
use wasm_bindgen::convert::TryFromJsValue;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::linalg::{self, Gemm, MatmulKernel, Svd, SvdOptions, TileConfig};
use crate::{Error, GpuOptions, Step};

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

fn js_error(e: Error) -> JsValue {
    JsError::new(&e.to_string()).into()
}

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
/** What the GPU adapter says about itself. */
export interface AdapterInfo { name: string; backend: string; deviceType: string; driver: string; isSoftware: boolean }
/** Options of `Gpu.gemm`: C = alpha·op(A)·op(B) + beta·C. */
export interface GemmOptions {
  transA?: boolean; transB?: boolean; alpha?: number; beta?: number;
  /** Kernel override for benchmarks and tuning: "naive", or a workgroup of wx × wy invocations. */
  kernel?: "naive" | { wx: number; wy: number };
}
/** Options of `Gpu.request`: which adapter to ask the browser for. */
export interface GpuRequestOptions {
  /** "high-performance" (the default: a discrete GPU where there is one) or "low-power". */
  powerPreference?: "high-performance" | "low-power";
  /** Only the browser's software adapter, even where a GPU exists. */
  forceFallbackAdapter?: boolean;
}
/** Options of `Gpu.svd`. `method`: "auto" (the default: "exact" for min(m, n) ≤ 1024, else
 * "iterative"), "exact" (the whole SVD on the host in f64) or "iterative" (subspace iteration
 * on the GPU until converged: each σ to `sigmaTol`, default 1e-5 relative, each vector's angle
 * bound to `angleTol`, default 1e-2 rad, checked every `checkEvery` = 4 iterations, at most
 * `maxIters` = 96; oversampling `oversample` = 10). `powerIters` asks instead for exactly that
 * many iterations with no convergence test. */
export interface SvdOptions {
  method?: "auto" | "exact" | "iterative"; oversample?: number; maxIters?: number;
  checkEvery?: number; sigmaTol?: number; angleTol?: number; powerIters?: number; seed?: number;
}
/** What an SVD reached: per returned vector its residual ‖W v − σ u‖ / σ and its angle bound
 * (radians), and σ_{r+1} (the gap at the edge is s[r-1] / nextSigma). */
export interface SvdReport {
  method: "exact" | "iterative"; iterations: number; converged: boolean;
  residuals: Float32Array; angleBounds: Float32Array; nextSigma: number | null;
}
/** A truncated SVD W ≈ U diag(s) Vᵀ: U (m×r) and V (n×r) stay on the GPU. */
export interface SvdResult { u: Tensor; s: Float32Array; v: Tensor; report: SvdReport }
"#;

/// A GPU device (WebGPU). Create one with `await Gpu.request()`.
#[wasm_bindgen(js_name = Gpu)]
pub struct JsGpu {
    inner: Rc<crate::Gpu>,
}

/// A tensor of f32 values on the GPU.
#[wasm_bindgen(js_name = Tensor)]
pub struct JsTensor {
    inner: Rc<crate::Tensor>,
    gpu: Rc<crate::Gpu>,
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(typescript_type = "AdapterInfo")]
    pub type JsAdapterInfo;
    #[wasm_bindgen(typescript_type = "GemmOptions")]
    pub type JsGemmOptions;
    #[wasm_bindgen(typescript_type = "SvdOptions")]
    pub type JsSvdOptions;
    #[wasm_bindgen(typescript_type = "GpuRequestOptions")]
    pub type JsGpuRequestOptions;
    #[wasm_bindgen(typescript_type = "Promise<SvdResult>")]
    pub type JsSvdPromise;
    #[wasm_bindgen(typescript_type = "Promise<SvdResult[]>")]
    pub type JsSvdBatchPromise;
}

fn set(obj: &js_sys::Object, key: &str, value: impl Into<JsValue>) {
    // Setting a plain data property on a fresh object cannot fail.
    let _ = js_sys::Reflect::set(obj, &JsValue::from_str(key), &value.into());
}

fn get_f64(obj: &JsValue, key: &str) -> Option<f64> {
    js_sys::Reflect::get(obj, &JsValue::from_str(key))
        .ok()
        .and_then(|v| v.as_f64())
}

fn get_bool(obj: &JsValue, key: &str) -> Option<bool> {
    js_sys::Reflect::get(obj, &JsValue::from_str(key))
        .ok()
        .and_then(|v| v.as_bool())
}

fn gemm_options(options: Option<JsGemmOptions>) -> Gemm {
    let mut g = Gemm::default();
    if let Some(o) = options.map(JsValue::from).filter(|o| o.is_object()) {
        g.trans_a = get_bool(&o, "transA").unwrap_or(false);
        g.trans_b = get_bool(&o, "transB").unwrap_or(false);
        g.alpha = get_f64(&o, "alpha").unwrap_or(1.0) as f32;
        g.beta = get_f64(&o, "beta").unwrap_or(0.0) as f32;
        let kernel =
            js_sys::Reflect::get(&o, &JsValue::from_str("kernel")).unwrap_or(JsValue::UNDEFINED);
        if kernel.as_string().as_deref() == Some("naive") {
            g.kernel = MatmulKernel::Naive;
        } else if let (Some(wx), Some(wy)) = (get_f64(&kernel, "wx"), get_f64(&kernel, "wy")) {
            g.kernel = MatmulKernel::Tiled(TileConfig {
                wx: wx as u32,
                wy: wy as u32,
            });
        }
    }
    g
}

fn gpu_request_options(options: Option<JsGpuRequestOptions>) -> Result<GpuOptions, JsValue> {
    let mut opts = GpuOptions::default();
    let Some(o) = options.map(JsValue::from).filter(|o| o.is_object()) else {
        return Ok(opts);
    };
    let preference = js_sys::Reflect::get(&o, &JsValue::from_str("powerPreference"))
        .unwrap_or(JsValue::UNDEFINED);
    opts.power_preference = match preference.as_string().as_deref() {
        _ if preference.is_undefined() => opts.power_preference,
        Some("high-performance") => wgpu::PowerPreference::HighPerformance,
        Some("low-power") => wgpu::PowerPreference::LowPower,
        _ => {
            let given = preference
                .as_string()
                .map_or_else(|| "not a string".to_owned(), |s| format!("{s:?}"));
            return Err(JsError::new(&format!(
                "Gpu.request: powerPreference is {given}; use \"high-performance\" or \
                 \"low-power\""
            ))
            .into());
        }
    };
    opts.force_fallback_adapter = get_bool(&o, "forceFallbackAdapter").unwrap_or(false);
    Ok(opts)
}

pub(crate) fn svd_options(options: Option<JsSvdOptions>) -> Result<SvdOptions, JsValue> {
    let mut opts = SvdOptions::default();
    let Some(o) = options.map(JsValue::from).filter(|o| o.is_object()) else {
        return Ok(opts);
    };
    let count = |key: &str, default: usize| {
        get_f64(&o, key)
            .filter(|v| *v >= 0.0)
            .map_or(default, |v| v as usize)
    };
    // `powerIters` asks for the old fixed count of iterations, with no convergence test.
    if let Some(q) = get_f64(&o, "powerIters").filter(|v| *v >= 0.0) {
        opts = SvdOptions::fixed(q as usize);
    }
    if let Some(method) = js_sys::Reflect::get(&o, &"method".into())
        .ok()
        .and_then(|v| v.as_string())
    {
        opts.method = linalg::SvdMethod::from_name(&method).map_err(js_error)?;
    }
    opts.oversample = count("oversample", opts.oversample);
    opts.max_iters = count("maxIters", opts.max_iters);
    opts.check_every = count("checkEvery", opts.check_every);
    let tol = |key: &str, default: f32| get_f64(&o, key).map_or(default, |v| v as f32);
    opts.sigma_tol = tol("sigmaTol", opts.sigma_tol);
    opts.angle_tol = tol("angleTol", opts.angle_tol);
    opts.seed = count("seed", 0) as u64;
    Ok(opts)
}

/// An [`linalg::SvdReport`] as a plain JS object.
fn svd_report_to_js(report: &linalg::SvdReport) -> js_sys::Object {
    let obj = js_sys::Object::new();
    set(&obj, "method", report.method.name());
    set(&obj, "iterations", report.iterations as f64);
    set(&obj, "converged", report.converged);
    set(
        &obj,
        "residuals",
        Float32Array::from(report.residuals.as_slice()),
    );
    set(
        &obj,
        "angleBounds",
        Float32Array::from(report.angle_bounds.as_slice()),
    );
    set(
        &obj,
        "nextSigma",
        report
            .next_sigma
            .map_or(JsValue::NULL, |s| JsValue::from(f64::from(s))),
    );
    obj
}

fn svd_to_js(svd: Svd, gpu: &Rc<crate::Gpu>) -> JsValue {
    let obj = js_sys::Object::new();
    set(
        &obj,
        "u",
        JsTensor {
            inner: Rc::new(svd.u),
            gpu: gpu.clone(),
        },
    );
    set(&obj, "s", Float32Array::from(svd.s.as_slice()));
    set(&obj, "report", svd_report_to_js(&svd.report));
    set(
        &obj,
        "v",
        JsTensor {
            inner: Rc::new(svd.v),
            gpu: gpu.clone(),
        },
    );
    obj.into()
}

#[wasm_bindgen(js_class = Gpu)]
impl JsGpu {
    /// Opens the GPU with the adapter's own limits. Rejects with a clear `Error` when WebGPU is
    /// missing, no adapter is available, the adapter refuses a device, or an option is wrong.
    pub async fn request(options: Option<JsGpuRequestOptions>) -> Result<JsGpu, JsValue> {
        let options = gpu_request_options(options)?;
        let gpu = crate::Gpu::request_with(&options).await.map_err(js_error)?;
        Ok(JsGpu {
            inner: Rc::new(gpu),
        })
    }

    /// GPU memory the library holds: `heldBytes` (tensors in use and pooled for reuse),
    /// `peakBytes` (the most held at once) and `buffersCreated` (flat once a repeated workload's
    /// buffers are pooled: growth means a leak).
    #[wasm_bindgen(
        unchecked_return_type = "{ heldBytes: number; peakBytes: number; buffersCreated: number }"
    )]
    pub fn memory(&self) -> JsValue {
        let (held, peak) = self.inner.memory();
        let obj = js_sys::Object::new();
        set(&obj, "heldBytes", held as f64);
        set(&obj, "peakBytes", peak as f64);
        set(&obj, "buffersCreated", self.inner.buffers_created() as f64);
        obj.into()
    }

    /// The adapter's name, backend and type.
    #[wasm_bindgen(getter)]
    pub fn info(&self) -> JsAdapterInfo {
        let info = self.inner.info();
        let obj = js_sys::Object::new();
        set(&obj, "name", info.name.as_str());
        set(&obj, "backend", info.backend.as_str());
        set(&obj, "deviceType", info.device_type.as_str());
        set(&obj, "driver", info.driver.as_str());
        set(&obj, "isSoftware", info.is_software());
        obj.unchecked_into()
    }

    /// Uploads `data` (row-major) as a tensor of `shape`.
    pub fn tensor(&self, data: &[f32], shape: Vec<u32>) -> Result<JsTensor, JsValue> {
        let shape: Vec<usize> = shape.into_iter().map(|d| d as usize).collect();
        let t = crate::Tensor::from_slice(&self.inner, &shape, data).map_err(js_error)?;
        Ok(JsTensor {
            inner: Rc::new(t),
            gpu: self.inner.clone(),
        })
    }

    /// A tensor of zeros.
    pub fn zeros(&self, shape: Vec<u32>) -> Result<JsTensor, JsValue> {
        let shape: Vec<usize> = shape.into_iter().map(|d| d as usize).collect();
        let t = crate::Tensor::zeros(&self.inner, &shape).map_err(js_error)?;
        Ok(JsTensor {
            inner: Rc::new(t),
            gpu: self.inner.clone(),
        })
    }

    /// C = A·B (2D, or batched 3D), computed on the GPU; read it with `await c.read()`.
    pub fn matmul(&self, a: &JsTensor, b: &JsTensor) -> Result<JsTensor, JsValue> {
        let mut step = Step::new(&self.inner, "matmul");
        let c = linalg::matmul(&mut step, &a.inner, &b.inner).map_err(js_error)?;
        step.submit().map_err(js_error)?;
        Ok(JsTensor {
            inner: Rc::new(c),
            gpu: self.inner.clone(),
        })
    }

    /// C = alpha·op(A)·op(B) + beta·C in place, `repeat` times in one submit (for benchmarks).
    pub fn gemm(
        &self,
        a: &JsTensor,
        b: &JsTensor,
        c: &JsTensor,
        options: Option<JsGemmOptions>,
        repeat: Option<u32>,
    ) -> Result<(), JsValue> {
        let g = gemm_options(options);
        let mut step = Step::new(&self.inner, "gemm");
        for _ in 0..repeat.unwrap_or(1).max(1) {
            linalg::gemm(&mut step, &g, &a.inner, &b.inner, &c.inner).map_err(js_error)?;
        }
        step.submit().map_err(js_error)
    }

    /// Truncated SVD of W (m×n) to rank r by randomized subspace iteration:
    /// resolves to `{u, s, v}` with W ≈ U diag(s) Vᵀ. Rejects with a named Error for a rank
    /// outside 1..=min(m, n), NaN/Inf in W, or an empty or non-2D W.
    pub fn svd(&self, w: &JsTensor, rank: u32, options: Option<JsSvdOptions>) -> JsSvdPromise {
        let opts = svd_options(options);
        let (gpu, w) = (self.inner.clone(), w.inner.clone());
        future_to_promise(async move {
            let svd = linalg::svd_truncated(&gpu, &w, rank as usize, &opts?)
                .await
                .map_err(js_error)?;
            Ok(svd_to_js(svd, &gpu))
        })
        .unchecked_into()
    }

    /// Truncated SVDs of many matrices (a whole model's layers) in one batched pass: one submit
    /// and one GPU round trip; resolves to one `{u, s, v}` per matrix.
    /// The tensors stay usable afterwards.
    #[wasm_bindgen(js_name = svdBatch)]
    pub fn svd_batch(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Tensor[]")] ws: js_sys::Array,
        rank: u32,
        options: Option<JsSvdOptions>,
    ) -> Result<JsSvdBatchPromise, JsValue> {
        let (gpu, opts) = (self.inner.clone(), svd_options(options)?);
        // Taking `Vec<Tensor>` would make JS give the caller's tensors up; converting a handle
        // from `clone()` instead leaves the caller's own.
        let ws = ws
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let clone = js_sys::Reflect::get(&t, &"clone".into())
                    .ok()
                    .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
                    .and_then(|f| f.call0(&t).ok())
                    .ok_or_else(|| {
                        JsValue::from(JsError::new(&format!(
                            "svdBatch: element {i} is not a Tensor"
                        )))
                    })?;
                JsTensor::try_from_js_value(clone)
                    .map(|t| t.inner)
                    .map_err(|_| {
                        JsError::new(&format!("svdBatch: element {i} is not a Tensor")).into()
                    })
            })
            .collect::<Result<Vec<_>, JsValue>>()?;
        Ok(future_to_promise(async move {
            let refs: Vec<&crate::Tensor> = ws.iter().map(|t| t.as_ref()).collect();
            let (svds, _) = linalg::svd_truncated_batch(&gpu, &refs, rank as usize, &opts)
                .await
                .map_err(js_error)?;
            Ok(svds
                .into_iter()
                .map(|s| svd_to_js(s, &gpu))
                .collect::<js_sys::Array>()
                .into())
        })
        .unchecked_into())
    }

    /// Resolves once all submitted work has finished.
    pub fn sync(&self) -> Promise {
        let gpu = self.inner.clone();
        future_to_promise(async move {
            gpu.sync().await.map_err(js_error)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Destroys the device, as a lost GPU would be; later calls reject with a device-lost Error.
    pub fn destroy(&self) {
        self.inner.destroy();
    }
}

#[wasm_bindgen(js_class = Tensor)]
impl JsTensor {
    /// The shape, outermost dimension first.
    #[wasm_bindgen(getter)]
    pub fn shape(&self) -> Vec<u32> {
        self.inner.shape().iter().map(|&d| d as u32).collect()
    }

    /// Another handle to the same GPU buffer (the buffer is freed when every handle is).
    #[allow(clippy::should_implement_trait)]
    pub fn clone(&self) -> JsTensor {
        JsTensor {
            inner: self.inner.clone(),
            gpu: self.gpu.clone(),
        }
    }

    /// Downloads the values (row-major).
    #[wasm_bindgen(unchecked_return_type = "Promise<Float32Array>")]
    pub fn read(&self) -> Promise {
        let (t, gpu) = (self.inner.clone(), self.gpu.clone());
        future_to_promise(async move {
            let values = t.to_vec(&gpu).await.map_err(js_error)?;
            Ok(Float32Array::from(values.as_slice()).into())
        })
    }
}
