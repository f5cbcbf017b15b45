//! Browser specifics: detecting WebGPU before wgpu tries to use it.

use wasm_bindgen::JsValue;

/// True when `navigator.gpu` exists (in a window or a worker).
pub(crate) fn has_webgpu() -> bool {
    let global = js_sys::global();
    let navigator = js_sys::Reflect::get(&global, &JsValue::from_str("navigator"))
        .unwrap_or(JsValue::UNDEFINED);
    if navigator.is_undefined() || navigator.is_null() {
        return false;
    }
    let gpu =
        js_sys::Reflect::get(&navigator, &JsValue::from_str("gpu")).unwrap_or(JsValue::UNDEFINED);
    !(gpu.is_undefined() || gpu.is_null())
}
