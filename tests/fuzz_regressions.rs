//! The fuzz targets' inputs, run through the very functions the targets call (fuzz/src/lib.rs,
//! included below): every file of the committed seed corpus (fuzz/corpus/<target>/) — the
//! valid ones must read, the truncated ones (`*truncated*`) must be refused — and every input a
//! fuzzer or a review found to break a loader, inline, each now a named error. No GPU, fast.
//!
//! The corpus is written by the ignored test `write_seed_corpus` (it needs a GPU, for real
//! adapter files and PEFT exports): `cargo test --test fuzz_regressions -- --ignored`.
#![cfg(not(target_arch = "wasm32"))]

mod common;

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::json;
use spectune::adapter::{Adapter, AdapterConfig, AdapterKind};
use spectune::io::safetensors::{write_f32, NamedTensor};
use spectune::reference::Rng;
use spectune::{Error, Tensor};

/// A fuzz target's body: the loader's verdict on one input.
type Body = fn(&[u8]) -> spectune::Result<()>;

/// The fuzz targets, by name, with their bodies.
const TARGETS: [(&str, Body); 4] = [
    ("safetensors", harness::safetensors),
    ("gguf", harness::gguf),
    ("adapter_file", harness::adapter_file),
    ("peft", harness::peft),
];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn every_seed_of_the_corpus_reads_or_is_refused_as_named() {
    for (target, run) in TARGETS {
        let dir = corpus_dir(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        let truncated = files
            .iter()
            .filter(|f| f.to_string_lossy().contains("truncated"))
            .count();
        assert!(
            files.len() >= 3 && truncated >= 1,
            "{target}: {} seeds, {truncated} truncated",
            files.len()
        );
        for path in files {
            let bytes = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy();
            match (run(&bytes), name.contains("truncated")) {
                (Ok(()), false) | (Err(_), true) => {}
                (result, _) => panic!("{target}/{name}: {result:?}"),
            }
        }
    }
}

#[test]
fn peft_inputs_split_where_they_were_joined() {
    let joined = harness::join_peft(b"{}", b"w\0eights");
    assert_eq!(
        harness::split_peft(&joined),
        (&b"{}"[..], &b"w\0eights"[..])
    );
    // Without a NUL byte, everything is the config.
    assert_eq!(harness::split_peft(b"{}"), (&b"{}"[..], &b""[..]));
}

// ---- Findings, each a named error now. ----

/// An adapter file with the given `spectune` metadata and tensors.
fn adapter_file(meta: serde_json::Value, tensors: &[NamedTensor]) -> Vec<u8> {
    let metadata = HashMap::from([
        ("format".to_string(), "spectune-adapter".to_string()),
        ("format_version".to_string(), "1".to_string()),
        ("spectune".to_string(), meta.to_string()),
    ]);
    write_f32("test", tensors, metadata).unwrap()
}

/// LoRA metadata of rank `rank` on band `band` with one target of `shape`.
fn lora_meta(rank: u64, band: u64, shape: serde_json::Value) -> serde_json::Value {
    json!({
        "kind": "lora", "rank": rank, "band": band, "train_singular_values": false,
        "lora_alpha": null, "seed": 0,
        "svd": { "oversample": 8, "power_iters": 2, "seed": 0 },
        "targets": [{ "name": "q", "shape": shape, "base_sha256": "00" }],
    })
}

/// Found by review: band·rank past usize overflowed (a panic in debug builds) where
/// `Adapter::load` computed the band's first singular vector.
#[test]
fn an_adapter_band_past_any_matrix_is_refused() {
    let bytes = adapter_file(lora_meta(2, u64::MAX / 2, json!([4, 3])), &[]);
    match spectune::adapter::file::parse(&bytes) {
        Err(Error::BadFile { detail, .. }) => assert!(detail.contains("band"), "{detail}"),
        other => panic!("{other:?}"),
    }
}

/// Found by review: a target of 1 × 2^40 at rank 1 made `parse` build LoRA's random initial A
/// (r × n values) before looking for the file's own, an allocation of the size the file
/// claims; now the file must be big enough to hold the factors first.
#[test]
fn an_adapter_target_larger_than_the_file_is_refused_before_allocating() {
    let bytes = adapter_file(lora_meta(1, 0, json!([1u64, 1u64 << 40])), &[]);
    match spectune::adapter::file::parse(&bytes) {
        Err(Error::BadFile { detail, .. }) => assert!(detail.contains("bytes"), "{detail}"),
        other => panic!("{other:?}"),
    }
    // A rank over min(m, n) is refused as such, before r × r rotation tensors are built.
    let bytes = adapter_file(lora_meta(1 << 20, 0, json!([1, 1])), &[]);
    assert!(matches!(
        spectune::adapter::file::parse(&bytes),
        Err(Error::InvalidRank {
            rank: 1_048_576,
            ..
        })
    ));
}

/// A target shape that is not two positive whole numbers (it used to be filtered down to its
/// whole numbers, so [4, "x", 3] passed for [4, 3]).
#[test]
fn an_adapter_target_shape_must_be_out_by_in() {
    for shape in [
        json!([4, "x", 3]),
        json!([4]),
        json!([0, 3]),
        json!("4x3"),
        json!(null),
    ] {
        let bytes = adapter_file(lora_meta(1, 0, shape.clone()), &[]);
        match spectune::adapter::file::parse(&bytes) {
            Err(Error::BadFile { detail, .. }) => assert!(detail.contains("shape"), "{detail}"),
            other => panic!("{shape}: {other:?}"),
        }
    }
}

// ---- The seed corpus. ----

/// A small GGUF writer: key/values and tensors, each tensor's offset a multiple of 32.
#[derive(Default)]
struct Gguf {
    kvs: Vec<u8>,
    n_kvs: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    data: Vec<u8>,
}

fn gguf_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl Gguf {
    /// `key` of value type `ty` with the value's bytes.
    fn kv(mut self, key: &str, ty: u32, value: &[u8]) -> Self {
        gguf_str(&mut self.kvs, key);
        self.kvs.extend(ty.to_le_bytes());
        self.kvs.extend(value);
        self.n_kvs += 1;
        self
    }

    fn string_kv(self, key: &str, value: &str) -> Self {
        let mut v = Vec::new();
        gguf_str(&mut v, value);
        self.kv(key, 8, &v)
    }

    fn tensor(mut self, name: &str, dims: &[u64], ggml_type: u32, bytes: &[u8]) -> Self {
        self.data.resize(self.data.len().next_multiple_of(32), 0);
        gguf_str(&mut self.infos, name);
        self.infos.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| self.infos.extend(d.to_le_bytes()));
        self.infos.extend(ggml_type.to_le_bytes());
        self.infos.extend((self.data.len() as u64).to_le_bytes());
        self.data.extend(bytes);
        self.n_tensors += 1;
        self
    }

    /// The file, with the data section aligned to `alignment` (as `general.alignment` says).
    fn finish(self, version: u32, alignment: usize) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(version.to_le_bytes());
        out.extend(self.n_tensors.to_le_bytes());
        out.extend(self.n_kvs.to_le_bytes());
        out.extend(self.kvs);
        out.extend(self.infos);
        out.resize(out.len().next_multiple_of(alignment), 0);
        out.extend(self.data);
        out
    }
}

fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| (rng.uniform() * 256.0) as u8).collect()
}

/// A safetensors file from a JSON header and data.
fn raw_safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// Writes `bytes` as fuzz/corpus/<target>/<name>, and the same cut at `cuts` (fractions of its
/// length) as `<name>.truncated-<i>`.
fn seed(target: &str, name: &str, bytes: &[u8], cuts: &[f64]) {
    let dir = corpus_dir(target);
    std::fs::create_dir_all(&dir).unwrap();
    assert!(
        bytes.len() < 64 << 10,
        "{target}/{name} is {} bytes",
        bytes.len()
    );
    std::fs::write(dir.join(name), bytes).unwrap();
    for (i, cut) in cuts.iter().enumerate() {
        let len = (bytes.len() as f64 * cut) as usize;
        std::fs::write(dir.join(format!("{name}.truncated-{i}")), &bytes[..len]).unwrap();
    }
}

fn safetensors_seeds() {
    let mut rng = Rng::new(1);
    let mut values = |n: usize| (0..n).map(|_| rng.normal() as f32).collect::<Vec<_>>();
    let tensors = [
        NamedTensor::new("encoder.layer.0.weight", &[4, 3], values(12)),
        NamedTensor::new("encoder.layer.0.bias", &[4], values(4)),
        NamedTensor::new("scalar", &[], values(1)),
        NamedTensor::new("empty", &[0, 3], vec![]),
    ];
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let f32s = write_f32("seed", &tensors, meta).unwrap();
    seed("safetensors", "f32.safetensors", &f32s, &[0.02, 0.5, 0.99]);
    // F16, BF16 (widened) and I64 (listed as another dtype), as BERT checkpoints hold them.
    let header = r#"{"__metadata__":{"format":"pt"},"half":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},"brain":{"dtype":"BF16","shape":[3],"data_offsets":[8,14]},"position_ids":{"dtype":"I64","shape":[1,2],"data_offsets":[14,30]}}"#;
    let mut data = [0x3C00u16, 0xC000, 0x3800, 0x7C00, 0x3F80, 0xC000, 0x3F00]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect::<Vec<u8>>();
    data.extend([0u64, 1].iter().flat_map(|v| v.to_le_bytes()));
    let mixed = raw_safetensors(header, &data);
    seed("safetensors", "f16-bf16-i64.safetensors", &mixed, &[0.8]);
    seed(
        "safetensors",
        "no-tensors.safetensors",
        &raw_safetensors("{}", &[]),
        &[],
    );
}

fn gguf_seeds() {
    let mut rng = Rng::new(2);
    let u32s = |v: &[u32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut tokens = 8u32.to_le_bytes().to_vec(); // array of strings
    tokens.extend(3u64.to_le_bytes());
    for t in ["<s>", "a", "b"] {
        gguf_str(&mut tokens, t);
    }
    let mut nested = 9u32.to_le_bytes().to_vec(); // array of 2 arrays of i32
    nested.extend(2u64.to_le_bytes());
    for row in [[1i32, -2], [3, -4]] {
        nested.extend(5u32.to_le_bytes());
        nested.extend(2u64.to_le_bytes());
        row.iter().for_each(|x| nested.extend(x.to_le_bytes()));
    }
    let f32_data: Vec<u8> = (0..12)
        .flat_map(|_| (rng.normal() as f32).to_le_bytes())
        .collect();
    let f16_data: Vec<u8> = [0x3C00u16, 0xC000, 0x3800, 0x0001]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let file = Gguf::default()
        .string_kv("general.architecture", "llama")
        .kv("llama.block_count", 4, &u32s(&[2]))
        .kv("llama.rope.freq_base", 6, &10000f32.to_le_bytes())
        .kv("general.flag", 7, &[1])
        .kv("general.size", 10, &7u64.to_le_bytes())
        .kv("tokenizer.ggml.tokens", 9, &tokens)
        .kv("test.nested", 9, &nested)
        .tensor("f32.weight", &[3, 4], 0, &f32_data)
        .tensor("f16.vector", &[4], 1, &f16_data)
        .tensor("q8.weight", &[32, 2], 8, &random_bytes(&mut rng, 2 * 34))
        .tensor("q4_1.weight", &[32], 3, &random_bytes(&mut rng, 20))
        .tensor("q4_k.weight", &[256], 12, &random_bytes(&mut rng, 144));
    let v3 = file.finish(3, 32);
    seed("gguf", "small-v3.gguf", &v3, &[0.01, 0.3, 0.6, 0.99]);
    let mut v2 = v3.clone();
    v2[4] = 2;
    seed("gguf", "small-v2.gguf", &v2, &[]);
    let aligned = Gguf::default()
        .kv("general.alignment", 4, &u32s(&[64]))
        .tensor("a", &[2], 0, &[0; 8])
        .finish(3, 64);
    seed("gguf", "alignment-64.gguf", &aligned, &[]);
    seed("gguf", "empty.gguf", &Gguf::default().finish(3, 32), &[0.5]);

    // The file llama.cpp's own writer (PyPI `gguf`) makes for tests/gguf.rs, when it is here.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("SPECTUNE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join(".venv/bin/python"));
    let path = std::env::temp_dir().join(format!("spectune-seed-{}.gguf", std::process::id()));
    let written = std::process::Command::new(&python)
        .arg(root.join("tests/python/gguf_ref.py"))
        .arg(&path)
        .output()
        .is_ok_and(|out| out.status.success());
    match std::fs::read(&path) {
        Ok(bytes) if written => seed("gguf", "gguf-py-reference.gguf", &bytes, &[0.5]),
        _ => eprintln!(
            "no gguf-py seed: {} cannot run tests/python/gguf_ref.py",
            python.display()
        ),
    }
    std::fs::remove_file(&path).ok();
}

fn adapter_seeds(gpu: &spectune::Gpu) {
    let mut rng = Rng::new(3);
    let shapes = [("layer.q", 6, 4), ("layer.v", 5, 7)];
    let weights: Vec<Tensor> = shapes
        .iter()
        .map(|&(_, m, n)| {
            let w: Vec<f32> = (0..m * n).map(|_| rng.normal() as f32).collect();
            Tensor::from_slice(gpu, &[m, n], &w).unwrap()
        })
        .collect();
    let targets: Vec<(&str, &Tensor)> = shapes.iter().map(|s| s.0).zip(&weights).collect();
    let configs = [
        AdapterConfig::new(AdapterKind::SpectralAdditive, 2)
            .band(1)
            .train_singular_values(true),
        AdapterConfig::new(AdapterKind::SpectralRotation, 2),
        AdapterConfig::new(AdapterKind::Lora, 2).lora_alpha(3.0),
        AdapterConfig::new(AdapterKind::Pissa, 1).band(1),
    ];
    for config in configs {
        let adapter = common::block_on(Adapter::new(gpu, config, &targets)).unwrap();
        let values = common::block_on(adapter.params().read_values(gpu)).unwrap();
        for (i, v) in values.iter().enumerate() {
            let moved: Vec<f32> = v.iter().map(|&x| x + rng.normal() as f32 * 0.1).collect();
            adapter.params().write(gpu, i, &moved).unwrap();
        }
        let name = config.kind.name();
        let file = common::block_on(adapter.save(gpu)).unwrap();
        seed(
            "adapter_file",
            &format!("{name}.safetensors"),
            &file,
            &[0.1, 0.97],
        );
        let export = common::block_on(adapter.export_peft(gpu)).unwrap();
        let joined = harness::join_peft(export.config_json.as_bytes(), &export.weights);
        seed("peft", &format!("{name}.peft"), &joined, &[0.9]);
    }
}

/// Rewrites fuzz/corpus/ (the valid seeds, and some cut short). Needs a GPU.
#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_seed_corpus() {
    let gpu = common::gpu().expect("writing the corpus needs a GPU");
    for (target, _) in TARGETS {
        std::fs::remove_dir_all(corpus_dir(target)).ok();
    }
    safetensors_seeds();
    gguf_seeds();
    adapter_seeds(gpu);
    every_seed_of_the_corpus_reads_or_is_refused_as_named();
}
