//! Asking for a GPU the machine cannot give: no adapter on the backends asked for, and limits
//! beyond the adapter's own, are named errors that say what was asked and what is there; lower
//! limits asked for are the ones the library then keeps to.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{block_on, gpu};
use spectune::{Error, Gpu, GpuOptions, Tensor};

#[test]
fn no_backend_means_no_adapter() {
    // Metal is compiled only for Apple targets, so on Linux and Windows asking for it alone
    // finds nothing; asking for no backend at all finds nothing anywhere.
    let mut asked = vec![(wgpu::Backends::empty(), "none")];
    if !cfg!(target_vendor = "apple") {
        asked.push((wgpu::Backends::METAL, "METAL"));
    }
    for (backends, names) in asked {
        let err = block_on(Gpu::request_with(&GpuOptions {
            backends,
            ..GpuOptions::default()
        }))
        .unwrap_err();
        let Error::NoAdapter(why) = &err else {
            panic!("expected NoAdapter for {backends:?}, got {err}")
        };
        let msg = err.to_string();
        eprintln!("{backends:?}: {msg}");
        assert!(msg.starts_with("no GPU adapter was found"), "{msg}");
        assert!(
            why.contains(&format!("(asked for backends: {names})")),
            "{msg}"
        );
        assert!(msg.contains("mesa-vulkan-drivers"), "{msg}");
        // wgpu's own reason, backend by backend.
        assert!(msg.contains("not requested"), "{msg}");
    }
}

#[test]
fn limits_beyond_the_adapter_are_refused_naming_them() {
    let Some(gpu) = gpu() else { return };
    let own = gpu.limits().clone();
    let mut asked = own.clone();
    asked.max_buffer_size = own
        .max_buffer_size
        .saturating_mul(2)
        .max(own.max_buffer_size + 1);
    asked.max_compute_workgroups_per_dimension = own.max_compute_workgroups_per_dimension + 1;
    let err = block_on(Gpu::request_with(&GpuOptions {
        required_limits: Some(asked.clone()),
        ..GpuOptions::default()
    }))
    .unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(matches!(err, Error::DeviceRefused(_)), "{msg}");
    assert!(
        msg.starts_with("the GPU adapter refused to create a device"),
        "{msg}"
    );
    assert!(msg.contains(&gpu.info().name), "{msg}");
    for (name, value, limit) in [
        (
            "max_buffer_size",
            asked.max_buffer_size,
            own.max_buffer_size,
        ),
        (
            "max_compute_workgroups_per_dimension",
            asked.max_compute_workgroups_per_dimension.into(),
            own.max_compute_workgroups_per_dimension.into(),
        ),
    ] {
        assert!(
            msg.contains(&format!("{name} {value} (the adapter's limit is {limit})")),
            "{msg}"
        );
    }
}

#[test]
fn lower_limits_asked_for_are_kept() {
    let Some(_) = gpu() else { return };
    // The WebGPU defaults: 128 MiB storage bindings, 256 MiB buffers.
    let gpu = block_on(Gpu::request_with(&GpuOptions {
        required_limits: Some(wgpu::Limits::default()),
        ..GpuOptions::default()
    }))
    .unwrap();
    assert_eq!(gpu.limits(), &wgpu::Limits::default());
    assert_eq!(gpu.device().limits(), wgpu::Limits::default());
    let binding = wgpu::Limits::default().max_storage_buffer_binding_size;
    let rows = (binding / 4 / 1024 + 1) as usize;
    match Tensor::uninit(&gpu, &[rows, 1024]) {
        Err(Error::BufferTooLarge { bytes, limit, .. }) => {
            assert_eq!((bytes, limit), (rows as u64 * 4096, binding))
        }
        other => panic!("expected BufferTooLarge, got {other:?}"),
    }
    assert_eq!(gpu.memory(), (0, 0), "nothing was allocated");
}
