//! Fusion (DESIGN.md §4): several adapters of one base in one dense weight,
//! W_fused = W + Σ_k w_k ΔW_k. Adapters on disjoint bands own disjoint singular vectors and
//! fuse by `sum` or `mean`; adapters on the same band fuse by averaging their trainable
//! tensors ([`average`]); LoRAs fuse by summing B A (the baseline the paper compares with).

use crate::adapter::{Adapter, LayerAdapter, LayerParams};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Step, Tensor};
use crate::linalg::copy;
use crate::train::{ParamSpec, Params};

/// How fused changes are weighted.
#[derive(Debug, Clone, PartialEq)]
pub enum Fusion {
    /// w_k = 1: every adapter's full change.
    Sum,
    /// w_k = 1/n: what the authors' fusion code does.
    Mean,
    /// Given weights, one per adapter (any bands).
    Weighted(Vec<f32>),
}

/// Records the fused weight W + Σ_k w_k ΔW_k of `layers` (each adapting the same m×n base W)
/// and returns it. `Sum` and `Mean` refuse spectral adapters whose bands overlap: their
/// changes would count the shared singular vectors twice (use [`average`] for those).
pub fn fuse(
    step: &mut Step,
    base: &Tensor,
    layers: &[&LayerAdapter],
    how: &Fusion,
) -> Result<Tensor> {
    if layers.is_empty() {
        return Err(Error::InvalidAdapter(
            "fusion needs at least one adapter".into(),
        ));
    }
    let weights = match how {
        Fusion::Sum => vec![1.0; layers.len()],
        Fusion::Mean => vec![1.0 / layers.len() as f32; layers.len()],
        Fusion::Weighted(w) if w.len() == layers.len() => w.clone(),
        Fusion::Weighted(w) => {
            return Err(Error::InvalidAdapter(format!(
                "{} fusion weights for {} adapters",
                w.len(),
                layers.len()
            )))
        }
    };
    if !matches!(how, Fusion::Weighted(_)) {
        for (i, a) in layers.iter().enumerate() {
            for b in &layers[..i] {
                let spectral = a.kind.is_spectral_basis() && b.kind.is_spectral_basis();
                let (a0, b0) = (a.band * a.rank, b.band * b.rank);
                if spectral && a0 < b0 + b.rank && b0 < a0 + a.rank {
                    return Err(Error::InvalidAdapter(format!(
                        "{} (singular vectors {a0}..{}) and {} ({b0}..{}) overlap: fuse adapters on disjoint bands, or average same-band adapters",
                        a.name,
                        a0 + a.rank,
                        b.name,
                        b0 + b.rank
                    )));
                }
            }
        }
    }
    let fused = copy(step, base)?;
    for (layer, &w) in layers.iter().zip(&weights) {
        layer.add_delta(step, &fused, w)?;
    }
    Ok(fused)
}

/// A new adapter whose trainable tensors are Σ_k w_k (tensors of adapter k): same-band fusion
/// of adapters of one kind, rank, band and base (it shares their frozen tensors).
pub async fn average(gpu: &Gpu, adapters: &[(&Adapter, f32)]) -> Result<Adapter> {
    let Some(&(first, _)) = adapters.first() else {
        return Err(Error::InvalidAdapter(
            "averaging needs at least one adapter".into(),
        ));
    };
    for (a, _) in adapters {
        let (c, f) = (&a.config, &first.config);
        if (c.kind, c.rank, c.band, c.train_singular_values)
            != (f.kind, f.rank, f.band, f.train_singular_values)
            || a.base_hashes != first.base_hashes
        {
            return Err(Error::InvalidAdapter(
                "only adapters of the same kind, rank, band and base weights can be averaged"
                    .into(),
            ));
        }
        let names: Vec<&str> = a.params.names().collect();
        if names != first.params.names().collect::<Vec<_>>() {
            return Err(Error::InvalidAdapter(
                "only adapters on the same targets can be averaged".into(),
            ));
        }
    }
    let mut sums: Vec<Vec<f32>> = Vec::new();
    for (a, w) in adapters {
        let values = a.params.read_values(gpu).await?;
        if sums.is_empty() {
            sums = values.iter().map(|v| vec![0.0; v.len()]).collect();
        }
        for (sum, v) in sums.iter_mut().zip(values) {
            sum.iter_mut().zip(v).for_each(|(s, x)| *s += w * x);
        }
    }
    first.with_values(gpu, sums)
}

impl Adapter {
    /// A copy of this adapter with other trainable values (spec order), sharing the frozen
    /// base and basis.
    pub(crate) fn with_values(&self, gpu: &Gpu, values: Vec<Vec<f32>>) -> Result<Adapter> {
        let old = &self.params;
        let specs: Vec<ParamSpec> = old
            .names()
            .zip(old.tensors())
            .zip(values)
            .map(|((name, p), v)| {
                let spec = ParamSpec::with_values(name, p.value.shape(), v)
                    .orthogonal_to(old.orthogonal_to(name).map(<[f32]>::to_vec));
                if old.decays(name) {
                    spec
                } else {
                    spec.no_decay()
                }
            })
            .collect();
        let params = Params::new(gpu, specs)?;
        let mut next = 0;
        let mut layers = Vec::new();
        for l in &self.layers {
            let mut take = || {
                next += 1;
                params.share(next - 1)
            };
            let layer_params = match &l.params {
                LayerParams::Additive { offset, .. } => LayerParams::Additive {
                    a_u: take(),
                    a_v: take(),
                    offset: offset.as_ref().map(|_| take()),
                },
                LayerParams::Rotation { scale, .. } => LayerParams::Rotation {
                    p_u: take(),
                    p_v: take(),
                    scale: scale.as_ref().map(|_| take()),
                    state: Box::new(crate::adapter::kernels::RotationState::new(gpu, l.rank)?),
                },
                LayerParams::Lora { scaling, .. } => LayerParams::Lora {
                    a: take(),
                    b: take(),
                    scaling: *scaling,
                },
            };
            layers.push(LayerAdapter {
                name: l.name.clone(),
                kind: l.kind,
                m: l.m,
                n: l.n,
                rank: l.rank,
                band: l.band,
                base: l.base.alias(),
                basis: l.basis.as_ref().map(|b| crate::adapter::Basis {
                    u: b.u.alias(),
                    s: b.s.alias(),
                    v: b.v.alias(),
                }),
                spectrum: l.spectrum.clone(),
                params: layer_params,
            });
        }
        Ok(Adapter {
            config: self.config,
            layers,
            params,
            base_hashes: self.base_hashes.clone(),
        })
    }
}
