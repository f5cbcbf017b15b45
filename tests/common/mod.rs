//! Shared test helper: one GPU for all native tests. Outside CI a machine without an adapter
//! skips the GPU tests; with CI=true it fails them, so a green CI always means they ran.

use std::sync::OnceLock;

use spectune::Gpu;

pub fn gpu() -> Option<&'static Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| match pollster::block_on(Gpu::request()) {
        Ok(gpu) => Some(gpu),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but no GPU adapter: {e}")
        }
        Err(e) => {
            eprintln!("skipping GPU test: {e}");
            None
        }
    })
    .as_ref()
}

/// Runs a future to completion (the native side polls the device inside).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

pub mod assets;
pub mod peft_case;
