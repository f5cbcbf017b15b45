//! The bodies of the fuzz targets, one function per target. tests/fuzz_regressions.rs includes
//! this file too, so the committed corpus and every finding run through exactly what the fuzzer
//! ran. Each returns the loader's verdict (an `Err` is a fine outcome); a panic, a failed
//! invariant below or an allocation of the size an input claims is a finding.

use spectune::adapter::{file, peft};
use spectune::io::{gguf, safetensors};
use spectune::Result;

/// GGUF tensors of at most this many values are also dequantized: every tensor is bounded by
/// the input anyway, this keeps each run fast.
pub const MAX_DEQUANTIZE: u64 = 1 << 16;

/// Safetensors: read; every float tensor holds as many values as its shape says.
pub fn safetensors(data: &[u8]) -> Result<()> {
    let file = safetensors::read("fuzz", data)?;
    for t in &file.tensors {
        let expected: usize = t.shape.iter().product();
        assert_eq!(t.values.len(), expected, "tensor {}", t.name);
        let found = file.require("fuzz", &t.name, &t.shape);
        assert!(found.is_ok(), "tensor {} was read, yet: {found:?}", t.name);
    }
    Ok(())
}

/// GGUF: read; then every typed getter on every key, every tensor's bytes (of the size its info
/// gives), and the values of every small dequantizable tensor (one per element).
pub fn gguf(data: &[u8]) -> Result<()> {
    let file = gguf::read("fuzz", data)?;
    for (key, value) in file.metadata() {
        assert!(
            file.get(key).is_some_and(|v| std::ptr::eq(v, value)),
            "key {key}"
        );
        let _ = file.get_str(key);
        let _ = file.get_u32(key);
        let _ = file.get_u64(key);
        let _ = file.get_i64(key);
        let _ = file.get_f32(key);
        let _ = file.get_bool(key);
        let _ = file.get_array(key);
        let _ = file.get_str_array(key);
        let _ = file.get_i64_array(key);
        let _ = file.get_f32_array(key);
    }
    for t in file.tensors() {
        let bytes = file
            .tensor_bytes(&t.name)
            .unwrap_or_else(|e| panic!("read checked tensor {}, yet: {e}", t.name));
        assert_eq!(bytes.len() as u64, t.n_bytes, "tensor {}", t.name);
        assert_eq!(
            t.shape().iter().product::<usize>() as u64,
            t.n_elements(),
            "tensor {}",
            t.name
        );
        if t.n_elements() <= MAX_DEQUANTIZE && t.ggml_type.is_dequantizable() {
            let values = file
                .dequantize(&t.name)
                .unwrap_or_else(|e| panic!("{} is dequantizable, yet: {e}", t.ggml_type));
            assert_eq!(values.len() as u64, t.n_elements(), "tensor {}", t.name);
        }
    }
    Ok(())
}

/// The adapter file: parse (all of `Adapter::load` but the base weights and the GPU); every
/// tensor it returns has its shape's number of values.
pub fn adapter_file(data: &[u8]) -> Result<()> {
    let parsed = file::parse(data)?;
    let r = parsed.config.rank;
    for t in &parsed.targets {
        let (m, n) = t.shape;
        if let Some(b) = &t.basis {
            assert_eq!(
                (b.u.len(), b.s.len(), b.v.len()),
                (m * r, r, n * r),
                "{}",
                t.name
            );
        }
        for p in &t.params {
            assert_eq!(
                p.init.len(),
                p.shape.iter().product::<usize>(),
                "{}",
                p.name
            );
        }
    }
    Ok(())
}

/// One fuzz input as the two files of a PEFT export: adapter_config.json up to the first NUL
/// byte (JSON text never holds one), adapter_model.safetensors after it. A separator, not a
/// length prefix, so that the fuzzer can grow or shrink the JSON without moving the boundary.
pub fn split_peft(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// The inverse of [`split_peft`], for writing seeds (`config_json` holds no NUL byte).
pub fn join_peft(config_json: &[u8], weights: &[u8]) -> Vec<u8> {
    let mut out = config_json.to_vec();
    out.push(0);
    out.extend_from_slice(weights);
    out
}

/// The PEFT export reader: both files from one input ([`split_peft`]); every factor has the
/// shape the rank and the target's size give.
pub fn peft(data: &[u8]) -> Result<()> {
    let (config_json, weights) = split_peft(data);
    let adapter = peft::read_peft(config_json, weights)?;
    for l in &adapter.layers {
        assert_eq!(l.lora_a.len(), adapter.r * l.n, "{}", l.name);
        assert_eq!(l.lora_b.len(), l.m * adapter.r, "{}", l.name);
    }
    Ok(())
}
