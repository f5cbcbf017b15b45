//! Export to Hugging Face PEFT (DESIGN.md §4): every adapter's change ΔW = W' − W written
//! exactly as a LoRA, `adapter_config.json` + `adapter_model.safetensors`, with keys
//! `base_model.model.<target>.lora_A.weight` (r'×n) and `.lora_B.weight` (m×r'), so stock PEFT
//! applies W + (lora_alpha / r')·B'A'.
//!   A:    r' = 2r, B' = [U₁+A_U, U₁], A' = [diag(S₁+c)(V₁+A_V)ᵀ; −diag(S₁)V₁ᵀ], α = r'
//!   R:    r' = r,  B' = U₁, A' = (R_U diag(S₁⊙c) R_Vᵀ − diag(S₁)) V₁ᵀ, α = r'
//!   LoRA: r' = r,  B' = B, A' = A, α as trained
//!   PiSSA (on W_res): r' = 2r, B' = [(α/r)·B, U₁], A' = [A; −diag(S₁)V₁ᵀ], α = r'
//!
//! [`read_peft`] reads such a pair of files back (no GPU), checking the config, the tensor
//! names, shapes and rank.

use std::collections::{HashMap, HashSet};

use serde_json::json;

use crate::adapter::{Adapter, AdapterKind, LayerParams};
use crate::error::{Error, Result};
use crate::gpu::{read_many, Gpu, Step, Tensor};
use crate::io::safetensors::{read, write_f32, NamedTensor};

/// The two files of a PEFT adapter directory.
#[derive(Debug, Clone)]
pub struct PeftExport {
    /// `adapter_config.json`.
    pub config_json: String,
    /// `adapter_model.safetensors`.
    pub weights: Vec<u8>,
}

/// Row-major (rows × cols) from a function of (i, j).
fn build(rows: usize, cols: usize, f: impl Fn(usize, usize) -> f64) -> Vec<f32> {
    (0..rows * cols)
        .map(|idx| f(idx / cols, idx % cols) as f32)
        .collect()
}

impl Adapter {
    /// The adapter as an exact PEFT LoRA (see the module docs for the factors).
    pub async fn export_peft(&self, gpu: &Gpu) -> Result<PeftExport> {
        let r = self.config.rank;
        // Rotation cores M = R_V D R_Uᵀ, from the current parameters.
        let mut step = Step::new(gpu, "peft export: rotation cores");
        for l in &self.layers {
            if let (
                LayerParams::Rotation {
                    p_u,
                    p_v,
                    scale,
                    state,
                },
                Some(b),
            ) = (&l.params, &l.basis)
            {
                state.forward(
                    &mut step,
                    &p_u.value,
                    &p_v.value,
                    &b.s,
                    scale.as_ref().map(|c| &c.value),
                )?;
            }
        }
        step.submit()?;
        // Everything the factors need, read back in one round trip and looked up by name.
        let mut names = Vec::new();
        let mut wanted: Vec<&Tensor> = Vec::new();
        for l in &self.layers {
            if let Some(b) = &l.basis {
                names.extend(["u", "s", "v"].map(|t| format!("{}.{t}", l.name)));
                wanted.extend([&b.u, &b.s, &b.v]);
            }
            if let LayerParams::Rotation { state, .. } = &l.params {
                names.push(format!("{}.core", l.name));
                wanted.push(&state.core);
            }
        }
        let mut host: HashMap<String, Vec<f32>> = names
            .into_iter()
            .zip(read_many(gpu, &wanted).await?)
            .collect();
        host.extend(
            self.params
                .names()
                .map(str::to_string)
                .zip(self.params.read_values(gpu).await?),
        );
        let empty = Vec::new();

        let (r_out, alpha) = match self.config.kind {
            AdapterKind::SpectralAdditive | AdapterKind::Pissa => (2 * r, (2 * r) as f32),
            AdapterKind::SpectralRotation => (r, r as f32),
            AdapterKind::Lora => (r, self.config.lora_alpha.unwrap_or(r as f32)),
        };
        let mut tensors = Vec::new();
        for l in &self.layers {
            let (m, n) = (l.m, l.n);
            let get = |t: &str| -> Result<&Vec<f32>> {
                host.get(&format!("{}.{t}", l.name)).ok_or_else(|| {
                    Error::InvalidAdapter(format!("{}.{t} is missing from the adapter", l.name))
                })
            };
            let (u, s, v) = if l.basis.is_some() {
                (get("u")?, get("s")?, get("v")?)
            } else {
                (&empty, &empty, &empty)
            };
            let (b_out, a_out) = match &l.params {
                LayerParams::Additive { offset, .. } => {
                    let (a_u, a_v) = (get("a_u")?, get("a_v")?);
                    let zeros = vec![0.0; r];
                    let c = if offset.is_some() {
                        get("offset")?
                    } else {
                        &zeros
                    };
                    let b_out = build(m, 2 * r, |i, k| {
                        if k < r {
                            (u[i * r + k] + a_u[i * r + k]) as f64
                        } else {
                            u[i * r + k - r] as f64
                        }
                    });
                    let a_out = build(2 * r, n, |k, j| {
                        if k < r {
                            (s[k] as f64 + c[k] as f64) * (v[j * r + k] + a_v[j * r + k]) as f64
                        } else {
                            -(s[k - r] as f64) * v[j * r + k - r] as f64
                        }
                    });
                    (b_out, a_out)
                }
                LayerParams::Rotation { .. } => {
                    // A' = (Mᵀ − diag(S₁)) V₁ᵀ, Mᵀ = R_U D R_Vᵀ.
                    let core = get("core")?;
                    let a_out = build(r, n, |k, j| {
                        (0..r)
                            .map(|l| {
                                ((core[l * r + k] - if l == k { s[k] } else { 0.0 }) as f64)
                                    * v[j * r + l] as f64
                            })
                            .sum()
                    });
                    (u.clone(), a_out)
                }
                LayerParams::Lora { scaling, .. } => {
                    let (a, b) = (get("lora_a")?, get("lora_b")?);
                    if l.kind == AdapterKind::Pissa {
                        let b_out = build(m, 2 * r, |i, k| {
                            if k < r {
                                *scaling as f64 * b[i * r + k] as f64
                            } else {
                                u[i * r + k - r] as f64
                            }
                        });
                        let a_out = build(2 * r, n, |k, j| {
                            if k < r {
                                a[k * n + j] as f64
                            } else {
                                -(s[k - r] as f64) * v[j * r + k - r] as f64
                            }
                        });
                        (b_out, a_out)
                    } else {
                        (b.clone(), a.clone())
                    }
                }
            };
            let key = |t: &str| format!("base_model.model.{}.{t}.weight", l.name);
            tensors.push(NamedTensor::new(key("lora_A"), &[r_out, n], a_out));
            tensors.push(NamedTensor::new(key("lora_B"), &[m, r_out], b_out));
        }
        let targets: Vec<&str> = self.layers.iter().map(|l| l.name.as_str()).collect();
        let config = json!({
            "peft_type": "LORA",
            "r": r_out,
            // An integer where it is one, as PEFT's LoraConfig declares it.
            "lora_alpha": if alpha.fract() == 0.0 { json!(alpha as i64) } else { json!(alpha) },
            "target_modules": targets,
            "lora_dropout": 0.0,
            "bias": "none",
            "fan_in_fan_out": false,
            "init_lora_weights": true,
            "inference_mode": true,
            "use_rslora": false,
            "use_dora": false,
            "modules_to_save": null,
            "task_type": null,
            "base_model_name_or_path": null,
            "revision": null,
        });
        let config_json = serde_json::to_string_pretty(&config).unwrap_or_default();
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        Ok(PeftExport {
            config_json,
            weights: write_f32("PEFT export", &tensors, metadata)?,
        })
    }
}

/// A PEFT LoRA adapter read back from its two files: every target's factors, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct PeftAdapter {
    /// `r`: the rank of every factor pair.
    pub r: usize,
    pub lora_alpha: f32,
    /// One per entry of `target_modules`, in that order.
    pub layers: Vec<PeftLayer>,
}

/// One target's LoRA factors: ΔW = (lora_alpha / r)·B A.
#[derive(Debug, Clone, PartialEq)]
pub struct PeftLayer {
    /// The module path, as in `target_modules`.
    pub name: String,
    /// Out × in of the adapted weight.
    pub m: usize,
    pub n: usize,
    /// A, row-major (r × n).
    pub lora_a: Vec<f32>,
    /// B, row-major (m × r).
    pub lora_b: Vec<f32>,
}

impl PeftAdapter {
    /// PEFT's scaling without rsLoRA: lora_alpha / r.
    pub fn scaling(&self) -> f32 {
        self.lora_alpha / self.r as f32
    }
}

const CONFIG: &str = "PEFT adapter_config.json";
const WEIGHTS: &str = "PEFT adapter_model.safetensors";

fn bad(what: &'static str, detail: impl Into<String>) -> Error {
    Error::BadFile {
        what,
        detail: detail.into(),
    }
}

/// Reads a PEFT LoRA adapter as [`Adapter::export_peft`] writes it: `adapter_config.json` with
/// peft_type LORA, a positive whole `r`, a finite `lora_alpha` and `target_modules` a list of
/// module paths, and nothing that would make PEFT apply anything but W + (lora_alpha / r)·B A
/// (rsLoRA, DoRA, fan_in_fan_out, biases, per-module rank or alpha patterns); and
/// `adapter_model.safetensors` with exactly `base_model.model.<target>.lora_A.weight` (r × n)
/// and `.lora_B.weight` (m × r) for every target, finite floats. Anything else is a named error.
///
/// ```no_run
/// # fn demo(config_json: &[u8], weights: &[u8]) -> spectune::Result<()> {
/// let peft = spectune::adapter::peft::read_peft(config_json, weights)?;
/// for l in &peft.layers {
///     println!("{}: {}×{} at rank {}", l.name, l.m, l.n, peft.r);
/// }
/// # Ok(()) }
/// ```
pub fn read_peft(config_json: &[u8], weights: &[u8]) -> Result<PeftAdapter> {
    let config: serde_json::Value =
        serde_json::from_slice(config_json).map_err(|e| bad(CONFIG, format!("not JSON: {e}")))?;
    let field = |key: &str| config.get(key).filter(|v| !v.is_null());
    if !config.is_object() {
        return Err(bad(CONFIG, "not a JSON object"));
    }
    match field("peft_type").and_then(|v| v.as_str()) {
        Some("LORA") => {}
        _ => {
            return Err(bad(
                CONFIG,
                format!("peft_type is {:?}, expected \"LORA\"", config["peft_type"]),
            ))
        }
    }
    let r = field("r")
        .and_then(|v| v.as_u64())
        .and_then(|r| usize::try_from(r).ok())
        .filter(|&r| r > 0)
        .ok_or_else(|| {
            bad(
                CONFIG,
                format!("r is {}, not a positive whole number", config["r"]),
            )
        })?;
    let lora_alpha = field("lora_alpha")
        .and_then(|v| v.as_f64())
        .map(|a| a as f32)
        .filter(|a| a.is_finite())
        .ok_or_else(|| {
            bad(
                CONFIG,
                format!(
                    "lora_alpha is {}, not a finite number",
                    config["lora_alpha"]
                ),
            )
        })?;
    for key in ["use_rslora", "use_dora", "fan_in_fan_out"] {
        if field(key).is_some_and(|v| v != &json!(false)) {
            return Err(bad(
                CONFIG,
                format!("{key} is {}; only a plain LoRA is read", config[key]),
            ));
        }
    }
    if field("bias").is_some_and(|v| v != "none") {
        return Err(bad(
            CONFIG,
            format!("bias is {}, expected \"none\"", config["bias"]),
        ));
    }
    for key in [
        "rank_pattern",
        "alpha_pattern",
        "layers_to_transform",
        "layers_pattern",
        "modules_to_save",
    ] {
        if field(key).is_some_and(|v| v != &json!({}) && v != &json!([])) {
            return Err(bad(
                CONFIG,
                format!("{key} is set ({}); only a plain LoRA is read", config[key]),
            ));
        }
    }
    let targets: Vec<&str> = field("target_modules")
        .and_then(|v| v.as_array())
        .and_then(|a| a.iter().map(|t| t.as_str()).collect::<Option<_>>())
        .filter(|t: &Vec<&str>| !t.is_empty())
        .ok_or_else(|| {
            bad(
                CONFIG,
                format!(
                    "target_modules is {}, not a non-empty list of module paths",
                    config["target_modules"]
                ),
            )
        })?;
    let mut seen = HashSet::new();
    if let Some(t) = targets.iter().find(|t| t.is_empty() || !seen.insert(**t)) {
        return Err(bad(
            CONFIG,
            format!("target_modules has {t:?} twice or empty"),
        ));
    }

    let file = read(WEIGHTS, weights)?;
    if let Some((name, dtype)) = file.other_dtypes.first() {
        return Err(bad(
            WEIGHTS,
            format!("tensor {name} is {dtype}; LoRA factors are F32, F16 or BF16"),
        ));
    }
    let key = |t: &str, ab: &str| format!("base_model.model.{t}.lora_{ab}.weight");
    let by_name: HashMap<&str, &NamedTensor> =
        file.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let expected: HashSet<String> = targets
        .iter()
        .flat_map(|t| [key(t, "A"), key(t, "B")])
        .collect();
    if let Some(extra) = file.tensors.iter().find(|t| !expected.contains(&t.name)) {
        return Err(bad(
            WEIGHTS,
            format!(
                "tensor {} belongs to no module of target_modules",
                extra.name
            ),
        ));
    }
    let mut layers = Vec::new();
    for name in targets {
        let factor = |ab: &str| {
            let k = key(name, ab);
            by_name.get(k.as_str()).ok_or(Error::MissingTensor {
                what: WEIGHTS,
                name: k,
            })
        };
        let (a, b) = (factor("A")?, factor("B")?);
        let (n, m) = match (a.shape.as_slice(), b.shape.as_slice()) {
            (&[ra, n], &[m, rb]) if ra == r && rb == r => (n, m),
            _ => {
                return Err(bad(
                    WEIGHTS,
                    format!(
                    "{name}: lora_A is {:?} and lora_B is {:?}, expected [{r}, in] and [out, {r}]",
                    a.shape, b.shape
                ),
                ))
            }
        };
        if m == 0 || n == 0 {
            return Err(bad(
                WEIGHTS,
                format!("{name}: the adapted weight would be {m}×{n}"),
            ));
        }
        if a.values.iter().chain(&b.values).any(|v| !v.is_finite()) {
            return Err(bad(WEIGHTS, format!("{name}: the factors hold NaN or Inf")));
        }
        layers.push(PeftLayer {
            name: name.to_string(),
            m,
            n,
            lora_a: a.values.clone(),
            lora_b: b.values.clone(),
        });
    }
    Ok(PeftAdapter {
        r,
        lora_alpha,
        layers,
    })
}
