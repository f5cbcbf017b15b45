//! The JS API (wasm-bindgen). Thin wrappers over the Rust API: every failure becomes a JS
//! `Error` carrying the Rust error's message, and a panic hook makes any bug readable in the
//! console instead of an opaque `unreachable`.

use std::rc::Rc;

use js_sys::{Float32Array, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::linalg::{self, Gemm, MatmulKernel, TileConfig};
use crate::{Error, Step};

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
}

fn set(obj: &js_sys::Object, key: &str, value: impl Into<JsValue>) {
    // Setting a plain data property on a fresh object cannot fail.
    let _ = js_sys::Reflect::set(obj, &JsValue::from_str(key), &value.into());
}

fn get_f64(obj: &JsValue, key: &str) -> Option<f64> {
    js_sys::Reflect::get(obj, &JsValue::from_str(key)).ok().and_then(|v| v.as_f64())
}

fn get_bool(obj: &JsValue, key: &str) -> Option<bool> {
    js_sys::Reflect::get(obj, &JsValue::from_str(key)).ok().and_then(|v| v.as_bool())
}

fn gemm_options(options: Option<JsGemmOptions>) -> Gemm {
    let mut g = Gemm::default();
    if let Some(o) = options.map(JsValue::from).filter(|o| o.is_object()) {
        g.trans_a = get_bool(&o, "transA").unwrap_or(false);
        g.trans_b = get_bool(&o, "transB").unwrap_or(false);
        g.alpha = get_f64(&o, "alpha").unwrap_or(1.0) as f32;
        g.beta = get_f64(&o, "beta").unwrap_or(0.0) as f32;
        let kernel = js_sys::Reflect::get(&o, &JsValue::from_str("kernel")).unwrap_or(JsValue::UNDEFINED);
        if kernel.as_string().as_deref() == Some("naive") {
            g.kernel = MatmulKernel::Naive;
        } else if let (Some(wx), Some(wy)) = (get_f64(&kernel, "wx"), get_f64(&kernel, "wy")) {
            g.kernel = MatmulKernel::Tiled(TileConfig { wx: wx as u32, wy: wy as u32 });
        }
    }
    g
}

#[wasm_bindgen(js_class = Gpu)]
impl JsGpu {
    /// Opens the GPU with the adapter's own limits. Rejects with a clear `Error` when WebGPU is
    /// missing or no adapter is available.
    pub async fn request() -> Result<JsGpu, JsValue> {
        let gpu = crate::Gpu::request().await.map_err(js_error)?;
        Ok(JsGpu { inner: Rc::new(gpu) })
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
        Ok(JsTensor { inner: Rc::new(t), gpu: self.inner.clone() })
    }

    /// A tensor of zeros.
    pub fn zeros(&self, shape: Vec<u32>) -> Result<JsTensor, JsValue> {
        let shape: Vec<usize> = shape.into_iter().map(|d| d as usize).collect();
        let t = crate::Tensor::zeros(&self.inner, &shape).map_err(js_error)?;
        Ok(JsTensor { inner: Rc::new(t), gpu: self.inner.clone() })
    }

    /// C = A·B (2D, or batched 3D), computed on the GPU; read it with `await c.read()`.
    pub fn matmul(&self, a: &JsTensor, b: &JsTensor) -> Result<JsTensor, JsValue> {
        let mut step = Step::new(&self.inner, "matmul");
        let c = linalg::matmul(&mut step, &a.inner, &b.inner).map_err(js_error)?;
        step.submit().map_err(js_error)?;
        Ok(JsTensor { inner: Rc::new(c), gpu: self.inner.clone() })
    }

    /// C = alpha·op(A)·op(B) + beta·C in place, `repeat` times in one submit (for benchmarks).
    pub fn gemm(&self, a: &JsTensor, b: &JsTensor, c: &JsTensor, options: Option<JsGemmOptions>, repeat: Option<u32>) -> Result<(), JsValue> {
        let g = gemm_options(options);
        let mut step = Step::new(&self.inner, "gemm");
        for _ in 0..repeat.unwrap_or(1).max(1) {
            linalg::gemm(&mut step, &g, &a.inner, &b.inner, &c.inner).map_err(js_error)?;
        }
        step.submit().map_err(js_error)
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
