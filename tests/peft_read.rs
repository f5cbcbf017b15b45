//! The PEFT reader (`adapter::peft::read_peft`): a real export of every adapter kind reads back
//! with the right rank, alpha, targets and shapes, and W + (lora_alpha / r)·B A from what it read
//! equals the adapter's own merged weight (GPU); configs and weight files that are not a plain
//! PEFT LoRA are named errors (no GPU).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::collections::HashMap;

use common::gpu;
use common::peft_case::{peft_case, TARGETS};
use spectune::adapter::peft::{read_peft, PeftAdapter};
use spectune::adapter::{AdapterConfig, AdapterKind};
use spectune::io::safetensors::{write_f32, NamedTensor};
use spectune::Error;

/// The PEFT check's tolerance (tests/python/check_peft.py): the factors are f32, and the
/// merged weight is computed in f32 on the GPU, so an exact export agrees to ~1e-7 relative.
const REL_TOL: f64 = 1e-5;

/// Exports `config` trained to random values, reads it back, and compares
/// W + (α/r)·B A with the adapter's merged weights.
fn round_trip(config: AdapterConfig, seed: u64) {
    let Some(gpu) = gpu() else { return };
    let label = config.kind.name();
    let case = peft_case(gpu, config, label, seed);
    let peft = read_peft(case.export.config_json.as_bytes(), &case.export.weights)
        .unwrap_or_else(|e| panic!("{label}: the export does not read back: {e}"));
    let r_out = match config.kind {
        AdapterKind::SpectralAdditive | AdapterKind::Pissa => 2 * config.rank,
        AdapterKind::SpectralRotation | AdapterKind::Lora => config.rank,
    };
    assert_eq!(peft.r, r_out, "{label}");
    let names: Vec<&str> = peft.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, TARGETS.map(|t| t.0), "{label}");
    for ((l, &(_, m, n)), (base, merged)) in peft
        .layers
        .iter()
        .zip(&TARGETS)
        .zip(case.base.iter().zip(&case.merged))
    {
        assert_eq!((l.m, l.n), (m, n), "{label}: {}", l.name);
        let want = apply(&peft, l, &base.values);
        let (diff, norm) = merged
            .values
            .iter()
            .zip(&want)
            .fold((0.0, 0.0), |(d, s), (&g, &w)| {
                (d + (g as f64 - w).powi(2), s + w * w)
            });
        let rel = (diff / norm).sqrt();
        eprintln!("{label} {}: rel Frobenius err {rel:.2e}", l.name);
        assert!(rel <= REL_TOL, "{label} {}: {rel:e} > {REL_TOL:e}", l.name);
    }
}

/// W + (α/r)·B A in f64, row-major (m × n): what stock PEFT applies.
fn apply(peft: &PeftAdapter, l: &spectune::adapter::peft::PeftLayer, w: &[f32]) -> Vec<f64> {
    let (r, n) = (peft.r, l.n);
    let scaling = peft.scaling() as f64;
    (0..l.m * n)
        .map(|idx| {
            let (i, j) = (idx / n, idx % n);
            let ba: f64 = (0..r)
                .map(|k| l.lora_b[i * r + k] as f64 * l.lora_a[k * n + j] as f64)
                .sum();
            w[idx] as f64 + scaling * ba
        })
        .collect()
}

#[test]
fn spectral_additive_export_reads_back() {
    let config = AdapterConfig::new(AdapterKind::SpectralAdditive, 2)
        .band(1)
        .train_singular_values(true);
    round_trip(config, 1);
}

#[test]
fn spectral_rotation_export_reads_back() {
    let config = AdapterConfig::new(AdapterKind::SpectralRotation, 2)
        .band(1)
        .train_singular_values(true);
    round_trip(config, 2);
}

/// α ≠ r, so that a lost or doubled α/r would show.
#[test]
fn lora_export_reads_back() {
    let config = AdapterConfig::new(AdapterKind::Lora, 2)
        .lora_alpha(3.0)
        .seed(5);
    round_trip(config, 3);
}

#[test]
fn pissa_export_reads_back() {
    let config = AdapterConfig::new(AdapterKind::Pissa, 2)
        .band(1)
        .lora_alpha(3.0);
    round_trip(config, 4);
}

// ---- Malformed exports, built by hand (no GPU). ----

const GOOD_CONFIG: &str = r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q"],
    "bias": "none", "use_rslora": false, "use_dora": false, "fan_in_fan_out": false,
    "modules_to_save": null, "rank_pattern": {}, "alpha_pattern": {}}"#;

/// lora_A (r×n) and lora_B (m×r) of module `q`, with the given shapes.
fn weights(a_shape: &[usize], b_shape: &[usize]) -> Vec<u8> {
    let t = |name: &str, shape: &[usize]| {
        let len = shape.iter().product();
        NamedTensor::new(name, shape, (0..len).map(|i| i as f32 * 0.25).collect())
    };
    let tensors = [
        t("base_model.model.q.lora_A.weight", a_shape),
        t("base_model.model.q.lora_B.weight", b_shape),
    ];
    write_f32("test", &tensors, HashMap::new()).unwrap()
}

/// The detail of the BadFile error that reading gives, which must name `what`.
fn bad_file(config: &str, weights: &[u8], what: &str) -> String {
    match read_peft(config.as_bytes(), weights) {
        Err(Error::BadFile { what: w, detail }) if w.contains(what) => detail,
        other => panic!("expected a BadFile error about {what}, got {other:?}"),
    }
}

#[test]
fn a_hand_made_lora_reads() {
    let peft = read_peft(GOOD_CONFIG.as_bytes(), &weights(&[2, 3], &[5, 2])).unwrap();
    assert_eq!((peft.r, peft.lora_alpha, peft.scaling()), (2, 4.0, 2.0));
    let l = &peft.layers[0];
    assert_eq!((l.name.as_str(), l.m, l.n), ("q", 5, 3));
    assert_eq!(l.lora_a, [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]);
}

#[test]
fn configs_that_are_not_a_plain_lora_are_refused() {
    let w = weights(&[2, 3], &[5, 2]);
    let with = |key: &str, value: &str| {
        let mut c: serde_json::Value = serde_json::from_str(GOOD_CONFIG).unwrap();
        c[key] = serde_json::from_str(value).unwrap();
        c.to_string()
    };
    for (key, value, needle) in [
        ("peft_type", r#""IA3""#, "peft_type"),
        ("r", "0", "r is 0"),
        ("r", "2.5", "r is 2.5"),
        ("r", "-2", "r is -2"),
        ("lora_alpha", r#""4""#, "lora_alpha"),
        ("use_rslora", "true", "use_rslora"),
        ("use_dora", "true", "use_dora"),
        ("fan_in_fan_out", "true", "fan_in_fan_out"),
        ("bias", r#""all""#, "bias"),
        ("rank_pattern", r#"{"q": 4}"#, "rank_pattern"),
        ("target_modules", r#"".*q""#, "target_modules"),
        ("target_modules", "[]", "target_modules"),
        ("target_modules", r#"["q", "q"]"#, "twice"),
    ] {
        let detail = bad_file(&with(key, value), &w, "adapter_config.json");
        assert!(detail.contains(needle), "{key} = {value}: {detail}");
    }
    bad_file("{not json", &w, "adapter_config.json");
    bad_file("[1, 2]", &w, "adapter_config.json");
}

#[test]
fn weights_that_do_not_fit_the_config_are_refused() {
    // r = 2: lora_A must be 2 × n, lora_B m × 2.
    for (a, b) in [([3, 3], [5, 2]), ([2, 3], [5, 3]), ([2, 3], [2, 5])] {
        let detail = bad_file(GOOD_CONFIG, &weights(&a, &b), "safetensors");
        assert!(detail.contains("expected [2, in] and [out, 2]"), "{detail}");
    }
    let one_dim = write_f32(
        "test",
        &[
            NamedTensor::new("base_model.model.q.lora_A.weight", &[6], vec![0.0; 6]),
            NamedTensor::new("base_model.model.q.lora_B.weight", &[5, 2], vec![0.0; 10]),
        ],
        HashMap::new(),
    )
    .unwrap();
    bad_file(GOOD_CONFIG, &one_dim, "safetensors");

    // A missing factor, an extra tensor, a truncated file, a non-finite value.
    let only_a = write_f32(
        "test",
        &[NamedTensor::new(
            "base_model.model.q.lora_A.weight",
            &[2, 3],
            vec![0.0; 6],
        )],
        HashMap::new(),
    )
    .unwrap();
    assert!(matches!(
        read_peft(GOOD_CONFIG.as_bytes(), &only_a),
        Err(Error::MissingTensor { ref name, .. }) if name == "base_model.model.q.lora_B.weight"
    ));
    let extra = write_f32(
        "test",
        &[
            NamedTensor::new("base_model.model.q.lora_A.weight", &[2, 3], vec![0.0; 6]),
            NamedTensor::new("base_model.model.q.lora_B.weight", &[5, 2], vec![0.0; 10]),
            NamedTensor::new("base_model.model.k.lora_A.weight", &[2, 3], vec![0.0; 6]),
        ],
        HashMap::new(),
    )
    .unwrap();
    let detail = bad_file(GOOD_CONFIG, &extra, "safetensors");
    assert!(detail.contains("k.lora_A"), "{detail}");
    let good = weights(&[2, 3], &[5, 2]);
    bad_file(GOOD_CONFIG, &good[..good.len() - 1], "safetensors");
    let nan = write_f32(
        "test",
        &[
            NamedTensor::new(
                "base_model.model.q.lora_A.weight",
                &[2, 3],
                vec![f32::NAN; 6],
            ),
            NamedTensor::new("base_model.model.q.lora_B.weight", &[5, 2], vec![0.0; 10]),
        ],
        HashMap::new(),
    )
    .unwrap();
    let detail = bad_file(GOOD_CONFIG, &nan, "safetensors");
    assert!(detail.contains("NaN"), "{detail}");
}
