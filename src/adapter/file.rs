//! The adapter file: safetensors holding each target's trainable tensors
//! (`<target>.<tensor>`) and its band's basis (`<target>.u`, `.s`, `.v`), with JSON metadata
//! (kind, rank, band, targets with their shapes and base-weight sha256, SVD options, format
//! version). The basis is stored, not recomputed at load time: a recomputed SVD can flip a
//! singular vector's sign or split a degenerate band edge differently.
//!
//! [`parse`] reads and checks a file on its own (no GPU, no base weights: what the fuzz target
//! runs); [`Adapter::load`] then matches it to the model's weights and their sha256.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::adapter::build::{
    base_weights, check_targets, decode_quantized, dense_weights, initial_params, weight_hash,
};
use crate::adapter::{
    Adapter, AdapterConfig, AdapterKind, BandSpectrum, BaseWeight, HostBasis, OtherBands,
};
use crate::error::{Error, Result};
use crate::gpu::{read_many, Gpu, Step, Tensor};
use crate::io::safetensors::{read, write_f32, NamedTensor, SafetensorsFile};
use crate::linalg::{SvdMethod, SvdOptions};
use crate::train::ParamSpec;

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
            // A band-confined adapter's other bands, which its optimizer keeps A_U, A_V out of.
            for (side, rows) in [("u", l.m), ("v", l.n)] {
                if let Some(b) = self.params.orthogonal_to(&format!("{}.a_{side}", l.name)) {
                    let shape = [rows, b.len() / rows];
                    tensors.push(NamedTensor::new(
                        format!("{}.{side}_others", l.name),
                        &shape,
                        b.to_vec(),
                    ));
                }
            }
        }
        let c = &self.config;
        let targets: Vec<Value> = self
            .layers
            .iter()
            .zip(&self.base_hashes)
            .map(|(l, h)| {
                let mut t = json!({ "name": l.name, "shape": [l.m, l.n], "base_sha256": h });
                if let Some(s) = &l.spectrum {
                    t["spectrum"] = s.to_json();
                }
                t
            })
            .collect();
        let config = json!({
            "kind": c.kind.name(),
            "rank": c.rank,
            "band": c.band,
            "train_singular_values": c.train_singular_values,
            "lora_alpha": c.lora_alpha,
            "seed": c.seed,
            "confine_bands": c.confine_bands,
            "svd": {
                "method": c.svd.method.name(),
                "oversample": c.svd.oversample,
                "max_iters": c.svd.max_iters,
                "check_every": c.svd.check_every,
                "sigma_tol": c.svd.sigma_tol,
                "angle_tol": c.svd.angle_tol,
                "seed": c.svd.seed,
            },
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
    /// that [`parse`] refuses, a target that is missing or has another shape, and a base weight
    /// whose sha256 differs from the one the adapter was trained on.
    pub async fn load<'w, W: Copy + Into<BaseWeight<'w>>>(
        gpu: &Gpu,
        bytes: &[u8],
        targets: &[(&'w str, W)],
    ) -> Result<Adapter> {
        let targets = base_weights(targets);
        let file = parse(bytes)?;

        // The file's targets, matched by name to the weights given.
        let mut chosen: Vec<(&str, BaseWeight)> = Vec::new();
        for t in &file.targets {
            let &(name, w) = targets.iter().find(|(n, _)| *n == t.name).ok_or_else(|| {
                Error::AdapterMismatch(format!(
                    "the adapter targets {}, which this model does not have",
                    t.name
                ))
            })?;
            let shape = [t.shape.0, t.shape.1];
            if w.shape() != shape {
                return Err(Error::AdapterMismatch(format!(
                    "{name} is {:?} here but the adapter was trained on {shape:?}",
                    w.shape()
                )));
            }
            chosen.push((name, w));
        }
        check_targets(&file.config, &chosen)?;
        let mut step = Step::new(gpu, "adapter: decode quantized targets");
        let decoded = decode_quantized(&mut step, &chosen)?;
        step.submit()?;
        let weights = dense_weights(&chosen, &decoded);
        for (t, w) in file.targets.iter().zip(read_many(gpu, &weights).await?) {
            let found = weight_hash(&w);
            if found != t.base_sha256 {
                return Err(Error::AdapterMismatch(format!("the base weight of {} is not the one the adapter was trained on (sha256 {found}, expected {})", t.name, t.base_sha256)));
            }
        }
        let hashes = file.targets.iter().map(|t| t.base_sha256.clone()).collect();
        let (bases, specs) = file
            .targets
            .into_iter()
            .map(|t| (t.basis, t.params))
            .unzip();
        Adapter::assemble(gpu, file.config, &chosen, bases, specs, hashes)
    }
}

/// An adapter file's contents, checked on their own: everything [`Adapter::load`] needs except
/// the base weights (no GPU).
#[derive(Debug, Clone)]
pub struct AdapterFile {
    pub config: AdapterConfig,
    /// In the order the file lists them.
    pub targets: Vec<FileTarget>,
}

/// One target of an adapter file.
#[derive(Debug, Clone)]
pub struct FileTarget {
    pub name: String,
    /// (m, n): the base weight's out × in.
    pub shape: (usize, usize),
    /// sha256 (hex) of the base weight the adapter was trained on.
    pub base_sha256: String,
    /// The band's U₁, S₁, V₁ (spectral kinds), `None` for LoRA.
    pub basis: Option<HostBasis>,
    /// The trainable tensors a new adapter of this config would have, with the file's values.
    pub params: Vec<ParamSpec>,
}

/// Parses adapter-file bytes without a GPU: the format and its version, the metadata (kind,
/// rank, band, targets with their shapes and base-weight sha256) and every tensor the targets
/// need, each present with its shape. A malformed file is a named error, and nothing is
/// allocated beyond what the file holds.
///
/// ```no_run
/// # fn demo(bytes: &[u8]) -> spectune::Result<()> {
/// let file = spectune::adapter::file::parse(bytes)?;
/// println!("{} rank {} on {} targets", file.config.kind.name(), file.config.rank, file.targets.len());
/// # Ok(()) }
/// ```
pub fn parse(bytes: &[u8]) -> Result<AdapterFile> {
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
    let r = config.rank;

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
    let listed = meta["targets"]
        .as_array()
        .ok_or_else(|| bad("metadata has no targets"))?;
    let mut targets = Vec::new();
    for (layer, t) in listed.iter().enumerate() {
        let name = t["name"]
            .as_str()
            .ok_or_else(|| bad("a target has no name"))?;
        let (m, n) = match t["shape"].as_array().map(Vec::as_slice) {
            Some([m, n]) => match (whole(m), whole(n)) {
                (Some(m), Some(n)) if m > 0 && n > 0 => (m, n),
                _ => {
                    return Err(bad(format!(
                        "{name} has shape {}, not two positive whole numbers",
                        t["shape"]
                    )))
                }
            },
            _ => {
                return Err(bad(format!(
                    "{name} has shape {}, not [out, in]",
                    t["shape"]
                )))
            }
        };
        let base_sha256 = t["base_sha256"]
            .as_str()
            .ok_or_else(|| bad(format!("{name} has no base_sha256")))?
            .to_string();
        let max = m.min(n);
        if r == 0 || r > max {
            return Err(Error::InvalidRank { rank: r, m, n, max });
        }
        // Every kind stores an m×r and an n×r tensor (r ≤ min(m, n) bounds the r×r ones), so a
        // file too short for them is refused before any tensor of that size is allocated.
        let floats = m
            .checked_add(n)
            .and_then(|mn| mn.checked_mul(r))
            .filter(|&f| f <= bytes.len() / 4);
        if floats.is_none() {
            return Err(bad(format!(
                "{name} ({m}×{n}) at rank {r} needs more values than the file's {} bytes hold",
                bytes.len()
            )));
        }
        let basis = if config.kind.is_spectral_basis() {
            Some(HostBasis {
                u: tensor(format!("{name}.u"), &[m, r])?,
                s: tensor(format!("{name}.s"), &[r])?,
                v: tensor(format!("{name}.v"), &[n, r])?,
                spectrum: BandSpectrum::from_json(&t["spectrum"]),
                others: if config.is_confined() {
                    other_bands(&file, name, (m, n))?
                } else {
                    None
                },
            })
        } else {
            None
        };
        // The same tensors a new adapter would have, with the file's values.
        let mut params = initial_params(&config, name, (m, n), basis.as_ref(), layer)?;
        for spec in &mut params {
            spec.init = tensor(spec.name.clone(), &spec.shape)?;
        }
        targets.push(FileTarget {
            name: name.to_string(),
            shape: (m, n),
            base_sha256,
            basis,
            params,
        });
    }
    Ok(AdapterFile { config, targets })
}

/// A band-confined target's `<name>.u_others` (m×k) and `.v_others` (n×k), when stored.
fn other_bands(
    file: &SafetensorsFile,
    name: &str,
    (m, n): (usize, usize),
) -> Result<Option<OtherBands>> {
    let (Some(u), Some(v)) = (
        file.get(&format!("{name}.u_others")),
        file.get(&format!("{name}.v_others")),
    ) else {
        return Ok(None);
    };
    match (u.shape.as_slice(), v.shape.as_slice()) {
        (&[um, k], &[vn, k2]) if um == m && vn == n && k == k2 && k > 0 && k < m.min(n) => {
            Ok(Some(OtherBands {
                u: u.values.clone(),
                v: v.values.clone(),
            }))
        }
        _ => Err(bad(format!(
            "{name}'s other bands are {:?} and {:?}, expected [{m}, k] and [{n}, k]",
            u.shape, v.shape
        ))),
    }
}

/// A JSON whole number that fits in usize.
fn whole(v: &Value) -> Option<usize> {
    v.as_u64().and_then(|x| usize::try_from(x).ok())
}

/// The SVD options a file records. Files written before the SVD converged on its own record
/// a fixed `power_iters` count instead: that is what made their basis.
fn parse_svd(svd: &Value) -> Result<SvdOptions> {
    let uint = |key: &str| {
        whole(&svd[key]).ok_or_else(|| {
            bad(format!(
                "metadata field svd.{key} is missing or not a whole number"
            ))
        })
    };
    let seed = svd["seed"].as_u64().unwrap_or(0);
    if svd.get("power_iters").is_some() {
        return Ok(SvdOptions {
            oversample: uint("oversample")?,
            seed,
            ..SvdOptions::fixed(uint("power_iters")?)
        });
    }
    let tol = |key: &str| {
        svd[key].as_f64().map(|x| x as f32).ok_or_else(|| {
            bad(format!(
                "metadata field svd.{key} is missing or not a number"
            ))
        })
    };
    let method = svd["method"]
        .as_str()
        .ok_or_else(|| bad("metadata field svd.method is missing"))?;
    Ok(SvdOptions {
        method: SvdMethod::from_name(method).map_err(|e| bad(e.to_string()))?,
        oversample: uint("oversample")?,
        max_iters: uint("max_iters")?,
        check_every: uint("check_every")?,
        sigma_tol: tol("sigma_tol")?,
        angle_tol: tol("angle_tol")?,
        seed,
    })
}

fn parse_config(meta: &Value) -> Result<AdapterConfig> {
    let uint = |v: &Value, key: &str| {
        whole(&v[key]).ok_or_else(|| {
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
    let (rank, band) = (uint(meta, "rank")?, uint(meta, "band")?);
    // The band owns singular vectors [band·r, (band+1)·r): they must be countable.
    if band
        .checked_add(1)
        .and_then(|b| b.checked_mul(rank))
        .is_none()
    {
        return Err(bad(format!(
            "band {band} of rank {rank} lies past any matrix"
        )));
    }
    Ok(AdapterConfig {
        kind,
        rank,
        band,
        train_singular_values: meta["train_singular_values"].as_bool().unwrap_or(false),
        lora_alpha: meta["lora_alpha"].as_f64().map(|a| a as f32),
        svd: parse_svd(svd)?,
        seed: meta["seed"].as_u64().unwrap_or(0),
        // Files from before band confinement hold free adapters.
        confine_bands: match &meta["confine_bands"] {
            Value::Null => 0,
            v => {
                whole(v).ok_or_else(|| bad("metadata field confine_bands is not a whole number"))?
            }
        },
    })
}
