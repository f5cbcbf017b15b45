//! The adapter file: safetensors holding each target's trainable tensors
//! (`<target>.<tensor>`) and its band's basis (`<target>.u`, `.s`, `.v`), with JSON metadata
//! (kind, rank, band, targets with their shapes and base-weight sha256, SVD options, format
//! version). The basis is stored, not recomputed at load time: a recomputed SVD can flip a
//! singular vector's sign or split a degenerate band edge differently.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::adapter::build::{
    base_weights, check_targets, decode_quantized, dense_weights, initial_params, weight_hash,
};
use crate::adapter::{Adapter, AdapterConfig, AdapterKind, BaseWeight, HostBasis};
use crate::error::{Error, Result};
use crate::gpu::{read_many, Gpu, Step, Tensor};
use crate::io::safetensors::{read, write_f32, NamedTensor};
use crate::linalg::SvdOptions;

/// The `format` metadata value of an adapter file.
pub const FORMAT: &str = "spectune-adapter";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const WHAT: &str = "adapter file";

fn bad(detail: impl Into<String>) -> Error {
    Error::BadFile {
        what: WHAT,
        detail: detail.into(),
    }
}

impl Adapter {
    /// Serialises the adapter (trainable tensors, bases, metadata) as safetensors bytes.
    pub async fn save(&self, gpu: &Gpu) -> Result<Vec<u8>> {
        let values = self.params.read_values(gpu).await?;
        let basis_tensors: Vec<&Tensor> = self
            .layers
            .iter()
            .filter_map(|l| l.basis.as_ref())
            .flat_map(|b| [&b.u, &b.s, &b.v])
            .collect();
        let mut basis_values = read_many(gpu, &basis_tensors).await?.into_iter();
        let mut tensors: Vec<NamedTensor> = self
            .params
            .names()
            .zip(self.params.tensors())
            .zip(values)
            .map(|((name, p), v)| NamedTensor::new(name, p.value.shape(), v))
            .collect();
        for l in &self.layers {
            if l.basis.is_some() {
                for (suffix, shape) in [
                    ("u", vec![l.m, l.rank]),
                    ("s", vec![l.rank]),
                    ("v", vec![l.n, l.rank]),
                ] {
                    let v = basis_values
                        .next()
                        .ok_or_else(|| bad("basis readback came back short"))?;
                    tensors.push(NamedTensor::new(format!("{}.{suffix}", l.name), &shape, v));
                }
            }
        }
        let c = &self.config;
        let targets: Vec<Value> = self
            .layers
            .iter()
            .zip(&self.base_hashes)
            .map(|(l, h)| json!({ "name": l.name, "shape": [l.m, l.n], "base_sha256": h }))
            .collect();
        let config = json!({
            "kind": c.kind.name(),
            "rank": c.rank,
            "band": c.band,
            "train_singular_values": c.train_singular_values,
            "lora_alpha": c.lora_alpha,
            "seed": c.seed,
            "svd": { "oversample": c.svd.oversample, "power_iters": c.svd.power_iters, "seed": c.svd.seed },
            "targets": targets,
        });
        let metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("format_version".to_string(), FORMAT_VERSION.to_string()),
            ("spectune".to_string(), config.to_string()),
        ]);
        write_f32(WHAT, &tensors, metadata)
    }

    /// Loads an adapter file onto the named base weights. Refuses (with a named error) a file
    /// of another format version, a target that is missing or has another shape, and a base
    /// weight whose sha256 differs from the one the adapter was trained on.
    pub async fn load<'w, W: Copy + Into<BaseWeight<'w>>>(
        gpu: &Gpu,
        bytes: &[u8],
        targets: &[(&'w str, W)],
    ) -> Result<Adapter> {
        let targets = base_weights(targets);
        let file = read(WHAT, bytes)?;
        match file.metadata.get("format").map(String::as_str) {
            Some(FORMAT) => {}
            other => return Err(bad(format!("format is {other:?}, expected {FORMAT:?}"))),
        }
        let version = file
            .metadata
            .get("format_version")
            .cloned()
            .unwrap_or_default();
        if version != FORMAT_VERSION.to_string() {
            return Err(Error::UnsupportedVersion {
                what: WHAT,
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let meta: Value = serde_json::from_str(
            file.metadata
                .get("spectune")
                .ok_or_else(|| bad("no \"spectune\" metadata"))?,
        )
        .map_err(|e| bad(format!("metadata is not JSON: {e}")))?;
        let config = parse_config(&meta)?;

        // The file's targets, matched by name to the weights given.
        let listed = meta["targets"]
            .as_array()
            .ok_or_else(|| bad("metadata has no targets"))?;
        let mut chosen: Vec<(&str, BaseWeight)> = Vec::new();
        let mut hashes = Vec::new();
        for t in listed {
            let name = t["name"]
                .as_str()
                .ok_or_else(|| bad("a target has no name"))?;
            let &(_, w) = targets.iter().find(|(n, _)| *n == name).ok_or_else(|| {
                Error::AdapterMismatch(format!(
                    "the adapter targets {name}, which this model does not have"
                ))
            })?;
            let shape: Vec<usize> = t["shape"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .filter_map(Value::as_u64)
                        .map(|d| d as usize)
                        .collect()
                })
                .unwrap_or_default();
            if w.shape() != shape {
                return Err(Error::AdapterMismatch(format!(
                    "{name} is {:?} here but the adapter was trained on {shape:?}",
                    w.shape()
                )));
            }
            chosen.push((name, w));
            hashes.push(
                t["base_sha256"]
                    .as_str()
                    .ok_or_else(|| bad(format!("{name} has no base_sha256")))?
                    .to_string(),
            );
        }
        let dims = check_targets(&config, &chosen)?;
        let mut step = Step::new(gpu, "adapter: decode quantized targets");
        let decoded = decode_quantized(&mut step, &chosen)?;
        step.submit()?;
        let weights = dense_weights(&chosen, &decoded);
        for (((name, _), w), expected) in chosen
            .iter()
            .zip(read_many(gpu, &weights).await?)
            .zip(&hashes)
        {
            let found = weight_hash(&w);
            if &found != expected {
                return Err(Error::AdapterMismatch(format!("the base weight of {name} is not the one the adapter was trained on (sha256 {found}, expected {expected})")));
            }
        }

        let tensor = |name: String, shape: &[usize]| -> Result<Vec<f32>> {
            let t = file
                .get(&name)
                .ok_or_else(|| bad(format!("tensor {name} is missing")))?;
            if t.shape != shape {
                return Err(bad(format!(
                    "tensor {name} is {:?}, expected {shape:?}",
                    t.shape
                )));
            }
            Ok(t.values.clone())
        };
        let r = config.rank;
        let mut bases = Vec::new();
        let mut specs = Vec::new();
        for ((name, _), &(m, n)) in chosen.iter().zip(&dims) {
            bases.push(if config.kind.is_spectral_basis() {
                Some(HostBasis {
                    u: tensor(format!("{name}.u"), &[m, r])?,
                    s: tensor(format!("{name}.s"), &[r])?,
                    v: tensor(format!("{name}.v"), &[n, r])?,
                })
            } else {
                None
            });
            // The same tensors a new adapter would have, with the file's values.
            let mut layer_specs = initial_params(
                &config,
                name,
                (m, n),
                bases.last().and_then(Option::as_ref),
                specs.len(),
            )?;
            for spec in &mut layer_specs {
                spec.init = tensor(spec.name.clone(), &spec.shape)?;
            }
            specs.push(layer_specs);
        }
        Adapter::assemble(gpu, config, &chosen, bases, specs, hashes)
    }
}

fn parse_config(meta: &Value) -> Result<AdapterConfig> {
    let uint = |v: &Value, key: &str| {
        v[key].as_u64().map(|x| x as usize).ok_or_else(|| {
            bad(format!(
                "metadata field {key} is missing or not a whole number"
            ))
        })
    };
    let kind = AdapterKind::from_name(
        meta["kind"]
            .as_str()
            .ok_or_else(|| bad("metadata has no kind"))?,
    )?;
    let svd = &meta["svd"];
    Ok(AdapterConfig {
        kind,
        rank: uint(meta, "rank")?,
        band: uint(meta, "band")?,
        train_singular_values: meta["train_singular_values"].as_bool().unwrap_or(false),
        lora_alpha: meta["lora_alpha"].as_f64().map(|a| a as f32),
        svd: SvdOptions {
            oversample: uint(svd, "oversample")?,
            power_iters: uint(svd, "power_iters")?,
            seed: svd["seed"].as_u64().unwrap_or(0),
        },
        seed: meta["seed"].as_u64().unwrap_or(0),
    })
}
