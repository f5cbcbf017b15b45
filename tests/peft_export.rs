//! The PEFT export (DESIGN.md §4 "PEFT export") checked from outside Rust: for every adapter
//! kind, trained to random values on two targets of different shapes, tests/python/check_peft.py
//! reads adapter_config.json + adapter_model.safetensors with numpy + safetensors from PyPI,
//! applies stock PEFT's W + (lora_alpha / r)·B A to the base weights, and compares the result
//! with the adapter's own merged weights.
//!
//! Python: $SPECTUNE_PYTHON (scripts/test.sh points it at setup.sh's .venv), else `python3`.
//! Without numpy + safetensors the tests skip, except with CI=true, where they fail.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use common::gpu;
use common::peft_case::{peft_case, TARGETS};
use spectune::adapter::{AdapterConfig, AdapterKind};
use spectune::io::safetensors::{write_f32, NamedTensor};
use spectune::Gpu;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/check_peft.py");

/// The interpreter, once it is known to import numpy and safetensors; `None` to skip.
fn python() -> Option<&'static str> {
    static PYTHON: OnceLock<Option<String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let python = std::env::var("SPECTUNE_PYTHON").unwrap_or_else(|_| "python3".into());
            let probe = Command::new(&python)
                .args(["-c", "import numpy, safetensors.numpy"])
                .output();
            let problem = match probe {
                Ok(out) if out.status.success() => return Some(python),
                Ok(out) => {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    stderr.trim().lines().last().unwrap_or_default().to_string()
                }
                Err(e) => e.to_string(),
            };
            let msg = format!(
                "{python} cannot import numpy and safetensors ({problem}); run scripts/setup.sh \
                 and set SPECTUNE_PYTHON=.venv/bin/python (scripts/test.sh does)"
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but {msg}");
            }
            eprintln!("skipping PEFT export check: {msg}");
            None
        })
        .as_deref()
}

/// A fresh, empty directory under the system temp dir.
fn fresh_dir(label: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "spectune-peft-{label}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(dir.join("peft")).unwrap();
    dir
}

fn safetensors(path: &Path, tensors: &[NamedTensor]) {
    let bytes = write_f32("test weights", tensors, HashMap::new()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Runs the checker on `dir`: (success, its output).
fn run_checker(python: &str, dir: &Path) -> (bool, String) {
    let out = Command::new(python)
        .arg(SCRIPT)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("could not run {python} {SCRIPT}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The case of `config` written as peft/, base.safetensors and merged.safetensors into a fresh
/// directory; returns it and the merged weights.
fn write_case(
    gpu: &Gpu,
    config: AdapterConfig,
    label: &str,
    seed: u64,
) -> (PathBuf, Vec<NamedTensor>) {
    let case = peft_case(gpu, config, label, seed);
    let dir = fresh_dir(label);
    std::fs::write(
        dir.join("peft/adapter_config.json"),
        &case.export.config_json,
    )
    .unwrap();
    std::fs::write(
        dir.join("peft/adapter_model.safetensors"),
        &case.export.weights,
    )
    .unwrap();
    safetensors(&dir.join("base.safetensors"), &case.base);
    safetensors(&dir.join("merged.safetensors"), &case.merged);
    (dir, case.merged)
}

/// Exports `config` and asserts that check_peft.py accepts it.
fn check_export(config: AdapterConfig, label: &str, seed: u64) {
    let Some(gpu) = gpu() else { return };
    let Some(python) = python() else { return };
    let (dir, _) = write_case(gpu, config, label, seed);
    let (ok, output) = run_checker(python, &dir);
    println!("{label}:\n{output}");
    assert!(
        ok,
        "{label}: check_peft.py rejected the PEFT export in {}:\n{output}",
        dir.display()
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn spectral_additive_exports_as_peft_lora() {
    let config = AdapterConfig::new(AdapterKind::SpectralAdditive, 2).band(1);
    check_export(config, "additive", 1);
}

#[test]
fn spectral_additive_with_singular_values_exports_as_peft_lora() {
    let config = AdapterConfig::new(AdapterKind::SpectralAdditive, 2)
        .band(1)
        .train_singular_values(true);
    check_export(config, "additive-sv", 2);
}

/// Band-confined (docs/FUSION.md): the export is ΔW's exact LoRA form whatever A holds.
#[test]
fn band_confined_spectral_additive_exports_as_peft_lora() {
    let config = AdapterConfig::new(AdapterKind::SpectralAdditive, 2)
        .band(1)
        .confine_bands(3);
    check_export(config, "additive-confined", 7);
}

#[test]
fn spectral_rotation_exports_as_peft_lora() {
    let config = AdapterConfig::new(AdapterKind::SpectralRotation, 2).band(1);
    check_export(config, "rotation", 3);
}

#[test]
fn spectral_rotation_with_singular_values_exports_as_peft_lora() {
    let config = AdapterConfig::new(AdapterKind::SpectralRotation, 2)
        .band(1)
        .train_singular_values(true);
    check_export(config, "rotation-sv", 4);
}

/// α ≠ r, so that a lost or doubled α/r would show.
#[test]
fn lora_exports_as_peft_lora() {
    let config = AdapterConfig::new(AdapterKind::Lora, 2)
        .lora_alpha(3.0)
        .seed(5);
    check_export(config, "lora", 5);
}

#[test]
fn pissa_exports_as_peft_lora() {
    let config = AdapterConfig::new(AdapterKind::Pissa, 2)
        .band(1)
        .lora_alpha(3.0);
    check_export(config, "pissa", 6);
}

/// The checker itself is not vacuous: a merged weight with one entry's sign flipped fails it.
#[test]
fn checker_rejects_a_wrong_merge() {
    let Some(gpu) = gpu() else { return };
    let Some(python) = python() else { return };
    let config = AdapterConfig::new(AdapterKind::SpectralAdditive, 2).band(1);
    let (dir, mut merged) = write_case(gpu, config, "corrupted", 7);
    let (i, _) = merged[1]
        .values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
        .unwrap();
    merged[1].values[i] = -merged[1].values[i];
    safetensors(&dir.join("merged.safetensors"), &merged);
    let (ok, output) = run_checker(python, &dir);
    println!("corrupted:\n{output}");
    assert!(
        !ok,
        "check_peft.py accepted a merged weight with a flipped sign:\n{output}"
    );
    assert!(
        output.contains(&format!("FAIL {}", TARGETS[1].0)),
        "{output}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
