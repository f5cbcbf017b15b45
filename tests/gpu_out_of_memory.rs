//! Out of GPU memory, for real: a driver that cannot allocate a buffer gives
//! `Error::OutOfMemory` naming the tensor and its bytes, at the call that asked for it, and the
//! device goes on working.
//!
//! A software adapter (lavapipe) allocates GPU memory from the process's address space, and
//! allocates it lazily: a buffer takes no RAM until it is written. So the test lowers this
//! process's address-space limit (RLIMIT_AS, the soft limit only) to a little above what it
//! uses, and asks for 64 MiB tensors until the driver refuses one (`vkAllocateMemory` fails
//! with VK_ERROR_OUT_OF_*_MEMORY, which wgpu reports as an out-of-memory error). Nothing is
//! written to those buffers, so they take no real memory (the test's one written tensor and
//! its read-back take some 200 MiB). Then a read-back whose staging buffer cannot be allocated
//! shows the other path: wgpu's error, named, at the next check. A limit on the whole process is
//! why this file holds one test: the test harness runs the tests of a file as threads of one
//! process. On a hardware GPU the buffers live in its own memory, which this limit does not
//! reach, so the test skips there.
#![cfg(all(
    not(target_arch = "wasm32"),
    target_os = "linux",
    target_pointer_width = "64"
))]

mod common;

use common::{block_on, gpu};
use spectune::{Error, Tensor};

/// `struct rlimit` of Linux on 64-bit targets.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Rlimit {
    cur: u64,
    max: u64,
}

/// RLIMIT_AS, the same number on every Linux architecture Rust targets with 64-bit pointers.
const RLIMIT_AS: i32 = 9;

extern "C" {
    fn getrlimit(resource: i32, rlim: *mut Rlimit) -> i32;
    fn setrlimit(resource: i32, rlim: *const Rlimit) -> i32;
}

fn address_space_limit() -> Rlimit {
    let mut r = Rlimit { cur: 0, max: 0 };
    // SAFETY: `r` is a valid, writable `struct rlimit`.
    assert_eq!(unsafe { getrlimit(RLIMIT_AS, &mut r) }, 0);
    r
}

fn set_address_space_limit(r: Rlimit) {
    // SAFETY: `r` is a valid `struct rlimit`; lowering or restoring the soft limit up to the
    // unchanged hard limit needs no privilege.
    assert_eq!(unsafe { setrlimit(RLIMIT_AS, &r) }, 0, "setrlimit {r:?}");
}

/// This process's virtual memory size in bytes (VmSize of /proc/self/status).
fn address_space_used() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn a_buffer_the_driver_cannot_allocate_is_out_of_memory_and_the_device_goes_on() {
    let Some(gpu) = gpu() else { return };
    if !gpu.info().is_software() {
        eprintln!(
            "skipping: {} keeps buffers in its own memory, which an address-space limit does not reach",
            gpu.info().name
        );
        return;
    }
    // Warm the device (and the threads lavapipe starts) before measuring what it uses.
    let x = Tensor::from_slice(gpu, &[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert_eq!(block_on(x.to_vec(gpu)).unwrap(), [1.0, 2.0, 3.0, 4.0]);
    // A tensor to read back under the limit below.
    let rows = 16 << 10; // 16 Ki × 1 Ki floats: 64 MiB a tensor, under lavapipe's 128 MiB binding
    let bytes = rows as u64 * 1024 * 4;
    let source = Tensor::zeros(gpu, &[rows, 1024]).unwrap();
    block_on(gpu.sync()).unwrap();
    let (held_before, _) = gpu.memory();

    let saved = address_space_limit();
    set_address_space_limit(Rlimit {
        cur: address_space_used() + 256 * (1 << 20),
        max: saved.max,
    });
    let mut kept = Vec::new();
    let result = loop {
        match Tensor::uninit(gpu, &[rows, 1024]) {
            Ok(t) if kept.len() < 64 => kept.push(t),
            other => break other.map(|_| ()),
        }
    };
    // Any other buffer is reported by the next check, here at once: reading `source` five
    // times over needs a 320 MiB staging buffer, over the 256 MiB the limit left.
    let read = block_on(spectune::read_many(gpu, &[&source; 5]));
    set_address_space_limit(saved);

    let err = result.unwrap_err();
    let msg = err.to_string();
    eprintln!("after {} tensors of {bytes} bytes: {msg}", kept.len());
    assert_eq!(
        err,
        Error::OutOfMemory {
            what: format!("a tensor of shape [{rows}, 1024]"),
            bytes: Some(bytes),
        }
    );
    assert!(
        msg.starts_with(&format!(
            "the GPU is out of memory: a tensor of shape [{rows}, 1024] could not be allocated ({bytes} bytes)"
        )),
        "{msg}"
    );
    // Only the buffers that were made are counted.
    assert_eq!(gpu.memory().0, held_before + kept.len() as u64 * bytes);

    let err = read.unwrap_err();
    eprintln!("reading 5 × {bytes} bytes back: {err}");
    match &err {
        Error::OutOfMemory { what, bytes: None } => assert!(
            what.starts_with("a GPU object (") && what.contains("label = 'readback'"),
            "{err}"
        ),
        other => panic!("expected OutOfMemory for the readback buffer, got {other}"),
    }

    // The device is not lost: the error was reported once, where it happened, and the
    // buffers freed make room again.
    drop(kept);
    gpu.clear_pool();
    block_on(gpu.sync()).unwrap();
    let y = Tensor::from_slice(gpu, &[3], &[5.0, 6.0, 7.0]).unwrap();
    assert_eq!(block_on(y.to_vec(gpu)).unwrap(), [5.0, 6.0, 7.0]);
    let big = Tensor::uninit(gpu, &[rows, 1024]).unwrap();
    drop(big);
    assert_eq!(block_on(source.to_vec(gpu)).unwrap().len(), rows * 1024);
}
