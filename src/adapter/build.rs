//! Building an adapter: checking the targets, finding each band's basis with the truncated
//! SVD (all targets in one batched pipeline), initial values by kind, and the frozen
//! W_res = W − U₁S₁V₁ᵀ, recorded for every layer in one submit.

use sha2::{Digest, Sha256};

use crate::adapter::kernels::{scale_columns, RotationState, MAX_ROTATION_RANK};
use crate::adapter::{
    Adapter, AdapterConfig, AdapterKind, BandSpectrum, BaseWeight, Basis, Frozen, LayerAdapter,
    LayerParams,
};
use crate::error::{Error, Result};
use crate::gpu::{read_many, Gpu, Step, Tensor};
use crate::linalg::{copy, dequantize, gemm, svd_truncated_batch, Gemm, SvdReport};
use crate::random::Rng;
use crate::train::{ParamSpec, Params};

/// A band's basis on the host: U₁ (m×r), S₁ (r), V₁ (n×r), row-major, what the SVD that found
/// it reached (none for files written before it was recorded), and, for a band-confined
/// adapter, the other bands' singular vectors it stays orthogonal to.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBasis {
    pub u: Vec<f32>,
    pub s: Vec<f32>,
    pub v: Vec<f32>,
    pub spectrum: Option<BandSpectrum>,
    pub others: Option<OtherBands>,
}

/// The singular vectors of the bands a band-confined adapter keeps out of: U_o (m×k) and
/// V_o (n×k), row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct OtherBands {
    pub u: Vec<f32>,
    pub v: Vec<f32>,
}

/// sha256 of a weight's f32 values as little-endian bytes, in hex.
pub(crate) fn weight_hash(values: &[f32]) -> String {
    let mut h = Sha256::new();
    for v in values {
        h.update(v.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// (m, n) of each target, after checking the configuration against it.
pub(crate) fn check_targets(
    config: &AdapterConfig,
    targets: &[(&str, BaseWeight)],
) -> Result<Vec<(usize, usize)>> {
    let r = config.rank;
    if targets.is_empty() {
        return Err(Error::InvalidAdapter("no target layers were given".into()));
    }
    if config.kind == AdapterKind::SpectralRotation && r > MAX_ROTATION_RANK {
        return Err(Error::InvalidAdapter(format!(
            "spectral rotation rank {r} is over the maximum of {MAX_ROTATION_RANK}"
        )));
    }
    let mut dims = Vec::new();
    for (i, (name, w)) in targets.iter().enumerate() {
        if name.is_empty() || targets[..i].iter().any(|(other, _)| other == name) {
            return Err(Error::InvalidAdapter(format!(
                "target names must be unique and non-empty, got {name:?} twice or empty"
            )));
        }
        let &[m, n] = w.shape().as_slice() else {
            return Err(Error::ShapeMismatch {
                op: "adapter",
                detail: format!(
                    "the weight of {name} must be 2D (out × in), got {:?}",
                    w.shape()
                ),
            });
        };
        if m == 0 || n == 0 {
            return Err(Error::EmptyMatrix {
                what: format!("the weight of {name}"),
                shape: vec![m, n],
            });
        }
        let max = m.min(n);
        if r == 0 || r > max {
            return Err(Error::InvalidRank { rank: r, m, n, max });
        }
        let end = config.band_start().saturating_add(r);
        if config.kind.is_spectral_basis() && end > max {
            return Err(Error::InvalidAdapter(format!(
                "band {} of rank {r} owns singular vectors {}..{end}, but {name} ({m}×{n}) has only {max}",
                config.band,
                config.band_start()
            )));
        }
        dims.push((m, n));
    }
    Ok(dims)
}

/// The band's columns [start, start + r) of a (rows × cols) matrix.
fn columns(x: &[f32], cols: usize, start: usize, r: usize) -> Vec<f32> {
    x.chunks(cols)
        .flat_map(|row| row[start..start + r].iter().copied())
        .collect()
}

/// Every column of a (rows × cols) matrix but the band's [start, start + r).
fn other_columns(x: &[f32], cols: usize, start: usize, r: usize) -> Vec<f32> {
    x.chunks(cols)
        .flat_map(|row| row[..start].iter().chain(&row[start + r..]).copied())
        .collect()
}

/// Initial trainable tensors of one layer, by kind (names `<target>.<tensor>`).
pub(crate) fn initial_params(
    config: &AdapterConfig,
    name: &str,
    (m, n): (usize, usize),
    basis: Option<&HostBasis>,
    layer: usize,
) -> Result<Vec<ParamSpec>> {
    let r = config.rank;
    let p = |t: &str| format!("{name}.{t}");
    Ok(match config.kind {
        AdapterKind::SpectralAdditive => {
            // Band-confined: A_U ⟂ U_o and A_V ⟂ V_o, held by the optimizer (docs/FUSION.md).
            let others = basis.and_then(|b| b.others.as_ref());
            let mut v = vec![
                ParamSpec::zeros(p("a_u"), &[m, r]).orthogonal_to(others.map(|o| o.u.clone())),
                ParamSpec::zeros(p("a_v"), &[n, r]).orthogonal_to(others.map(|o| o.v.clone())),
            ];
            if config.train_singular_values {
                v.push(ParamSpec::zeros(p("offset"), &[r]).no_decay());
            }
            v
        }
        AdapterKind::SpectralRotation => {
            let mut v = vec![
                ParamSpec::zeros(p("p_u"), &[r, r]),
                ParamSpec::zeros(p("p_v"), &[r, r]),
            ];
            if config.train_singular_values {
                v.push(ParamSpec::with_values(p("scale"), &[r], vec![1.0; r]).no_decay());
            }
            v
        }
        AdapterKind::Lora => {
            // PEFT's kaiming_uniform_(a = √5) on A (r×n): bound √(6 / ((1 + 5)·n)) = 1/√n.
            let bound = 1.0 / (n as f64).sqrt();
            let mut rng = Rng::new(config.seed ^ (layer as u64).wrapping_mul(0x9E37_79B9));
            let a = (0..r * n)
                .map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32)
                .collect();
            vec![
                ParamSpec::with_values(p("lora_a"), &[r, n], a),
                ParamSpec::zeros(p("lora_b"), &[m, r]),
            ]
        }
        AdapterKind::Pissa => {
            // PiSSA: A = √(S₁/s) V₁ᵀ, B = U₁ √(S₁/s), so that s·B A = U₁S₁V₁ᵀ (s = α/r, as PEFT).
            let b = basis.ok_or_else(|| Error::InvalidAdapter("PiSSA needs a basis".into()))?;
            let root: Vec<f32> =
                b.s.iter()
                    .map(|&s| (s / config.scaling()).max(0.0).sqrt())
                    .collect();
            let a = (0..r * n)
                .map(|idx| root[idx / n] * b.v[(idx % n) * r + idx / n])
                .collect();
            let bb = (0..m * r).map(|idx| b.u[idx] * root[idx % r]).collect();
            vec![
                ParamSpec::with_values(p("lora_a"), &[r, n], a),
                ParamSpec::with_values(p("lora_b"), &[m, r], bb),
            ]
        }
    })
}

/// The targets as [`BaseWeight`]s.
pub(crate) fn base_weights<'w, W: Copy + Into<BaseWeight<'w>>>(
    targets: &[(&'w str, W)],
) -> Vec<(&'w str, BaseWeight<'w>)> {
    targets.iter().map(|&(name, w)| (name, w.into())).collect()
}

/// Records a dense copy of each quantized target (`None` for the dense ones).
pub(crate) fn decode_quantized(
    step: &mut Step,
    targets: &[(&str, BaseWeight)],
) -> Result<Vec<Option<Tensor>>> {
    targets
        .iter()
        .map(|(_, w)| match w {
            BaseWeight::Dense(_) => Ok(None),
            BaseWeight::Quantized(q) => dequantize(step, q).map(Some),
        })
        .collect()
}

/// Each target's dense values: its own tensor, or its decoded copy.
pub(crate) fn dense_weights<'a>(
    targets: &[(&str, BaseWeight<'a>)],
    decoded: &'a [Option<Tensor>],
) -> Vec<&'a Tensor> {
    targets
        .iter()
        .zip(decoded)
        .filter_map(|((_, w), d)| match w {
            BaseWeight::Dense(t) => Some(*t),
            BaseWeight::Quantized(_) => d.as_ref(),
        })
        .collect()
}

impl Adapter {
    /// Builds an adapter of `config` on the named target weights (each m×n, out × in; dense
    /// `&Tensor`s or quantized `&QuantMatrix`s): finds each band's singular vectors (one
    /// batched SVD for all targets), initialises the trainable tensors, and computes W_res
    /// (a quantized base stays as it is: see [`Frozen`]). Untrained, it reproduces every x Wᵀ.
    pub async fn new<'w, W: Copy + Into<BaseWeight<'w>>>(
        gpu: &Gpu,
        config: AdapterConfig,
        targets: &[(&'w str, W)],
    ) -> Result<Adapter> {
        let targets = base_weights(targets);
        let dims = check_targets(&config, &targets)?;
        // Quantized targets are decoded once, for their hash and the SVD, then dropped.
        let mut step = Step::new(gpu, "adapter: decode quantized targets");
        let decoded = decode_quantized(&mut step, &targets)?;
        step.submit()?;
        let weights = dense_weights(&targets, &decoded);
        let hashes = read_many(gpu, &weights)
            .await?
            .iter()
            .map(|w| weight_hash(w))
            .collect();
        let r = config.rank;
        let bases = if config.kind.is_spectral_basis() {
            let start = config.band_start();
            let max = dims.iter().map(|&(m, n)| m.min(n)).min().unwrap_or(0);
            let width = config.basis_width(max);
            let (svds, _) = svd_truncated_batch(gpu, &weights, width, &config.svd).await?;
            let all: Vec<&Tensor> = svds.iter().flat_map(|s| [&s.u, &s.v]).collect();
            let host = read_many(gpu, &all).await?;
            svds.iter()
                .zip(host.chunks(2))
                .map(|(svd, uv)| {
                    let end = start + r;
                    // The band's report is the SVD's up to the band's end: σ_end is its edge.
                    let report = SvdReport {
                        residuals: svd.report.residuals[..end].to_vec(),
                        angle_bounds: svd.report.angle_bounds[..end].to_vec(),
                        next_sigma: svd.s.get(end).copied().or(svd.report.next_sigma),
                        ..svd.report.clone()
                    };
                    Some(HostBasis {
                        u: columns(&uv[0], width, start, r),
                        s: svd.s[start..end].to_vec(),
                        v: columns(&uv[1], width, start, r),
                        spectrum: Some(BandSpectrum::of_band(&report, &svd.s[..end], start)),
                        others: (config.is_confined() && width > r).then(|| OtherBands {
                            u: other_columns(&uv[0], width, start, r),
                            v: other_columns(&uv[1], width, start, r),
                        }),
                    })
                })
                .collect()
        } else {
            vec![None; targets.len()]
        };
        let specs = targets
            .iter()
            .zip(&dims)
            .zip(&bases)
            .enumerate()
            .map(|(i, (((name, _), &d), b))| initial_params(&config, name, d, b.as_ref(), i))
            .collect::<Result<Vec<_>>>()?;
        Adapter::assemble(gpu, config, &targets, bases, specs, hashes)
    }

    /// Builds the adapter from known bases and parameter values (a new adapter, or a file).
    pub(crate) fn assemble(
        gpu: &Gpu,
        config: AdapterConfig,
        targets: &[(&str, BaseWeight)],
        bases: Vec<Option<HostBasis>>,
        specs: Vec<Vec<ParamSpec>>,
        base_hashes: Vec<String>,
    ) -> Result<Adapter> {
        let dims = check_targets(&config, targets)?;
        let counts: Vec<usize> = specs.iter().map(Vec::len).collect();
        let params = Params::new(gpu, specs.into_iter().flatten().collect())?;
        let mut step = Step::new(gpu, "adapter: W_res = W − U₁S₁V₁ᵀ");
        let mut layers = Vec::new();
        let mut next = 0;
        for (((name, w), (m, n)), (basis, count)) in
            targets.iter().zip(dims).zip(bases.into_iter().zip(counts))
        {
            let r = config.rank;
            let spectrum = basis.as_ref().and_then(|b| b.spectrum.clone());
            let basis = basis
                .map(|b| -> Result<Basis> {
                    Ok(Basis {
                        u: Tensor::from_slice(gpu, &[m, r], &b.u)?,
                        s: Tensor::from_slice(gpu, &[r], &b.s)?,
                        v: Tensor::from_slice(gpu, &[n, r], &b.v)?,
                    })
                })
                .transpose()?;
            let base = match (&basis, w) {
                (_, BaseWeight::Quantized(q)) => Frozen::Quantized(q.alias()),
                (Some(b), BaseWeight::Dense(w)) => {
                    let w_res = copy(&mut step, w)?;
                    let us = scale_columns(&mut step, &b.u, &b.s, None)?;
                    gemm(
                        &mut step,
                        &Gemm::default().alpha(-1.0).beta(1.0).trans_b(true),
                        &us,
                        &b.v,
                        &w_res,
                    )?;
                    Frozen::Dense(w_res)
                }
                (None, BaseWeight::Dense(w)) => Frozen::Dense(w.alias()),
            };
            let p: Vec<_> = (next..next + count).map(|i| params.share(i)).collect();
            next += count;
            let mut p = p.into_iter();
            let mut take = || {
                p.next().ok_or_else(|| {
                    Error::InvalidAdapter(format!("missing trainable tensors for {name}"))
                })
            };
            let layer_params = match config.kind {
                AdapterKind::SpectralAdditive => LayerParams::Additive {
                    a_u: take()?,
                    a_v: take()?,
                    offset: config.train_singular_values.then(&mut take).transpose()?,
                },
                AdapterKind::SpectralRotation => LayerParams::Rotation {
                    p_u: take()?,
                    p_v: take()?,
                    scale: config.train_singular_values.then(&mut take).transpose()?,
                    state: Box::new(RotationState::new(gpu, r)?),
                },
                AdapterKind::Lora | AdapterKind::Pissa => LayerParams::Lora {
                    a: take()?,
                    b: take()?,
                    scaling: config.scaling(),
                },
            };
            layers.push(LayerAdapter {
                name: name.to_string(),
                kind: config.kind,
                m,
                n,
                rank: r,
                band: config.band,
                base,
                basis,
                spectrum,
                params: layer_params,
            });
        }
        step.submit()?;
        Ok(Adapter {
            config,
            layers,
            params,
            base_hashes,
        })
    }
}
