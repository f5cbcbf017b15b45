//! A frozen linear layer y = x Wᵀ + b, W (out × in) as Hugging Face stores it
//! (`<name>.weight`, `<name>.bias`), which an adapter may take over.

use crate::adapter::kernels::add_bias;
use crate::adapter::{
    fuse, Adapter, AdapterConfig, BaseWeight, Frozen, Fusion, LayerAdapter, Saved,
};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Step, Tensor};
use crate::linalg::Gemm;

/// A frozen linear layer.
#[derive(Debug)]
pub struct Linear {
    pub name: String,
    /// W (out × in), dense or quantized.
    pub weight: Frozen,
    /// b (out).
    pub bias: Option<Tensor>,
    /// W as it was before a [`FusedAdapters`] set was fused into `weight`, kept so that
    /// fusing another set (one adapter fewer) starts from it again.
    unfused: Option<Frozen>,
}

/// Adapters fused into a model's weights and kept beside them, so that one can be taken out
/// again ([`FusedAdapters::remove`] and a re-fuse) without reloading the model.
#[derive(Debug)]
pub struct FusedAdapters {
    adapters: Vec<Adapter>,
    how: Fusion,
}

impl Default for FusedAdapters {
    fn default() -> Self {
        FusedAdapters {
            adapters: Vec::new(),
            how: Fusion::Sum,
        }
    }
}

impl FusedAdapters {
    /// The adapters, in the order they were fused.
    pub fn adapters(&self) -> &[Adapter] {
        &self.adapters
    }

    /// How they are weighted.
    pub fn how(&self) -> &Fusion {
        &self.how
    }

    /// Adds `adapters` and weights the whole set by `how` (`Weighted` takes one weight per
    /// adapter, the earlier ones first). Refused, leaving the set as it was, when the weights
    /// do not match.
    pub fn add(&mut self, adapters: Vec<Adapter>, how: Fusion) -> Result<()> {
        let count = self.adapters.len() + adapters.len();
        if let Fusion::Weighted(w) = &how {
            if w.len() != count {
                return Err(Error::InvalidAdapter(format!(
                    "{} fusion weights for the {count} fused adapters (earlier ones included)",
                    w.len()
                )));
            }
        }
        self.adapters.extend(adapters);
        self.how = how;
        Ok(())
    }

    /// Takes adapter `index` out of the set (and its weight, for `Weighted`).
    pub fn remove(&mut self, index: usize) -> Result<Adapter> {
        if index >= self.adapters.len() {
            return Err(Error::InvalidAdapter(format!(
                "there is no fused adapter {index}: {} are fused",
                self.adapters.len()
            )));
        }
        if let Fusion::Weighted(w) = &mut self.how {
            w.remove(index);
        }
        Ok(self.adapters.remove(index))
    }

    /// Undoes an [`add`](Self::add) or a [`remove`](Self::remove) whose fusion failed: the
    /// set back to its first `len` adapters (then `removed` at its index) and `how`.
    fn restore(&mut self, len: usize, removed: Option<(usize, Adapter)>, how: Fusion) {
        self.adapters.truncate(len);
        if let Some((index, adapter)) = removed {
            self.adapters.insert(index, adapter);
        }
        self.how = how;
    }

    /// Fuses `adapters` into `layers` beside the set's own (see [`fuse_set`]); on failure the
    /// set and the weights stay as they were.
    pub fn fuse_more<'a>(
        &mut self,
        gpu: &Gpu,
        layers: impl Iterator<Item = &'a mut Linear>,
        adapters: Vec<Adapter>,
        how: Fusion,
    ) -> Result<()> {
        let (len, before) = (self.adapters.len(), self.how.clone());
        self.add(adapters, how)?;
        fuse_set(gpu, layers, self).inspect_err(|_| self.restore(len, None, before))
    }

    /// Takes adapter `index` out of `layers` again (the rest stay fused, reweighted by the
    /// set's `how`) and returns it; on failure the set and the weights stay as they were.
    pub fn unfuse<'a>(
        &mut self,
        gpu: &Gpu,
        layers: impl Iterator<Item = &'a mut Linear>,
        index: usize,
    ) -> Result<Adapter> {
        let (len, before) = (self.adapters.len(), self.how.clone());
        let adapter = self.remove(index)?;
        match fuse_set(gpu, layers, self) {
            Ok(()) => Ok(adapter),
            Err(e) => {
                self.restore(len - 1, Some((index, adapter)), before);
                Err(e)
            }
        }
    }
}

/// What a linear layer's forward pass keeps for its backward pass.
#[derive(Debug)]
pub enum LinearSaved {
    Frozen,
    Adapted(Saved),
}

impl Linear {
    /// Checks that W (a dense `Tensor` or a `QuantMatrix`) is 2D and b matches its rows.
    pub fn new(
        name: impl Into<String>,
        weight: impl Into<Frozen>,
        bias: Option<Tensor>,
    ) -> Result<Linear> {
        let name = name.into();
        let weight = weight.into();
        let &[m, _] = weight.shape().as_slice() else {
            return Err(Error::ShapeMismatch {
                op: "linear",
                detail: format!(
                    "{name}.weight must be 2D (out × in), got {:?}",
                    weight.shape()
                ),
            });
        };
        if let Some(b) = &bias {
            if b.shape() != [m] {
                return Err(Error::ShapeMismatch {
                    op: "linear",
                    detail: format!("{name}.bias is {:?}, expected [{m}]", b.shape()),
                });
            }
        }
        Ok(Linear {
            name,
            weight,
            bias,
            unfused: None,
        })
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Records y = x W'ᵀ + b for X (…, in): through `adapter` when one adapts this layer.
    pub fn forward(
        &self,
        step: &mut Step,
        x: &Tensor,
        adapter: Option<&LayerAdapter>,
    ) -> Result<(Tensor, LinearSaved)> {
        if let Some(a) = adapter {
            let (y, saved) = a.forward(step, x, self.bias.as_ref())?;
            return Ok((y, LinearSaved::Adapted(saved)));
        }
        let n = self.in_features();
        if x.shape().last() != Some(&n) {
            return Err(Error::ShapeMismatch {
                op: "linear",
                detail: format!(
                    "input {:?} should end in {n} features ({})",
                    x.shape(),
                    self.name
                ),
            });
        }
        let rows = x.len() / n;
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("checked non-empty above") = self.out_features();
        let y = Tensor::uninit(step.gpu(), &[rows, self.out_features()])?;
        self.weight.gemm(
            step,
            &Gemm::default().trans_b(true),
            &x.view(0, &[rows, n])?,
            &y,
        )?;
        if let Some(b) = &self.bias {
            add_bias(step, &y, b)?;
        }
        Ok((y.reshape(&shape)?, LinearSaved::Frozen))
    }

    /// Records the backward pass from dY: the adapter's gradients (when adapted) and, when
    /// `want_dx`, dx = dY W'.
    pub fn backward(
        &self,
        step: &mut Step,
        x: &Tensor,
        saved: &LinearSaved,
        d_y: &Tensor,
        adapter: Option<&LayerAdapter>,
        want_dx: bool,
    ) -> Result<Option<Tensor>> {
        match (saved, adapter) {
            (LinearSaved::Adapted(s), Some(a)) => a.backward(step, x, s, d_y, want_dx),
            (LinearSaved::Frozen, None) if want_dx => {
                let m = self.out_features();
                let rows = d_y.len() / m.max(1);
                let d_x = Tensor::uninit(step.gpu(), x.shape())?;
                self.weight.gemm(
                    step,
                    &Gemm::default(),
                    &d_y.view(0, &[rows, m])?,
                    &d_x.view(0, &[rows, self.in_features()])?,
                )?;
                Ok(Some(d_x))
            }
            (LinearSaved::Frozen, None) => Ok(None),
            _ => Err(Error::InvalidAdapter(format!(
                "{}: the adapter changed between forward and backward",
                self.name
            ))),
        }
    }
}

/// Builds one adapter on every layer of `layers` whose name matches one of `targets` (see
/// [`matches_target`]); no match is an [`Error::InvalidAdapter`] naming the patterns.
pub async fn adapt<'a>(
    gpu: &Gpu,
    config: AdapterConfig,
    layers: impl Iterator<Item = &'a Linear>,
    targets: &[&str],
) -> Result<Adapter> {
    let chosen: Vec<(&str, BaseWeight)> = layers
        .filter(|l| targets.iter().any(|p| matches_target(&l.name, p)))
        .map(|l| (l.name.as_str(), BaseWeight::from(&l.weight)))
        .collect();
    if chosen.is_empty() {
        return Err(Error::InvalidAdapter(format!(
            "no linear layer matches {targets:?}"
        )));
    }
    Adapter::new(gpu, config, &chosen).await
}

/// Loads an adapter file onto the layers it names (see [`Adapter::load`]): a name this model
/// lacks, another shape or other base weights are named errors.
pub async fn load_adapter<'a>(
    gpu: &Gpu,
    bytes: &[u8],
    layers: impl Iterator<Item = &'a Linear>,
) -> Result<Adapter> {
    // Against the weights the model was loaded with, not a fused set's: an adapter file is
    // made for those, and loading one is how another adapter joins a fusion.
    let targets: Vec<(&str, BaseWeight)> = layers
        .map(|l| {
            let base = l.unfused.as_ref().unwrap_or(&l.weight);
            (l.name.as_str(), BaseWeight::from(base))
        })
        .collect();
    Adapter::load(gpu, bytes, &targets).await
}

/// Merges `adapters` into the layers they adapt for good: each such layer's weight becomes
/// the dense W + Σ_k w_k ΔW_k (see [`fuse`]: `Sum` and `Mean` need disjoint bands), and every
/// layer's current weight becomes its base (a fused set is then part of it: the caller drops
/// its [`FusedAdapters`]). One submit.
pub fn merge_adapters<'a>(
    gpu: &Gpu,
    layers: impl Iterator<Item = &'a mut Linear>,
    adapters: &[&Adapter],
    how: &Fusion,
) -> Result<()> {
    let mut step = Step::new(gpu, "merge adapters");
    let mut merged = Vec::new();
    for lin in layers {
        let parts: Vec<&LayerAdapter> = adapters.iter().filter_map(|a| a.find(&lin.name)).collect();
        let w = if parts.is_empty() {
            None
        } else {
            let base = lin.weight.to_dense(&mut step)?;
            Some(fuse(&mut step, &base, &parts, how)?)
        };
        merged.push((lin, w));
    }
    step.submit()?;
    for (lin, w) in merged {
        lin.unfused = None;
        if let Some(w) = w {
            lin.weight = Frozen::Dense(w);
        }
    }
    Ok(())
}

/// Fuses the whole `set` into the layers: each layer some adapter of the set adapts gets the
/// dense W + Σ_k w_k ΔW_k from the weight it had before any set was fused; a layer no adapter
/// of the set adapts any more gets that weight back. All weights change or none (one submit).
pub fn fuse_set<'a>(
    gpu: &Gpu,
    layers: impl Iterator<Item = &'a mut Linear>,
    set: &FusedAdapters,
) -> Result<()> {
    let adapters: Vec<&Adapter> = set.adapters.iter().collect();
    let mut step = Step::new(gpu, "fuse adapters");
    let mut fused = Vec::new();
    for lin in layers {
        let parts: Vec<&LayerAdapter> = adapters.iter().filter_map(|a| a.find(&lin.name)).collect();
        let before = lin.unfused.as_ref().unwrap_or(&lin.weight);
        let weight = if parts.is_empty() {
            before.alias()
        } else {
            let base = before.to_dense(&mut step)?;
            Frozen::Dense(fuse(&mut step, &base, &parts, &set.how)?)
        };
        fused.push((lin, weight, parts.is_empty()));
    }
    step.submit()?;
    for (lin, weight, restored) in fused {
        if lin.unfused.is_none() && !restored {
            lin.unfused = Some(lin.weight.alias());
        }
        if restored {
            if let Some(before) = lin.unfused.take() {
                lin.weight = before;
            }
        } else {
            lin.weight = weight;
        }
    }
    Ok(())
}

/// A layer's spectrum beside the bands adapters own on it (for plots: the demo draws it).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpectrum {
    /// Every singular value of the layer's weight before any fusion, largest first.
    pub sigma: Vec<f32>,
    /// The model's own adapter's band first (if it adapts the layer), then each fused one's.
    pub bands: Vec<BandChange>,
}

/// One adapter on a layer: the singular vectors its band owns and how much it changes W.
#[derive(Debug, Clone, PartialEq)]
pub struct BandChange {
    /// Fused into the weights (by its index in the fused set), or the model's own adapter.
    pub fused: Option<usize>,
    pub kind: crate::adapter::AdapterKind,
    /// Its band's singular vectors [start, end) (LoRA has none: start = end = 0).
    pub start: usize,
    pub end: usize,
    /// ‖ΔW‖_F, the Frobenius norm of its change to the weight.
    pub change: f32,
}

/// The spectrum of `lin` and the bands of `own` and of the `fused` adapters that adapt it: one
/// submit and one readback for the changes, the singular values on the host in f64.
pub async fn layer_spectrum(
    gpu: &Gpu,
    lin: &Linear,
    own: Option<&Adapter>,
    fused: &[Adapter],
) -> Result<LayerSpectrum> {
    let mut step = Step::new(gpu, "layer spectrum");
    let base = lin
        .unfused
        .as_ref()
        .unwrap_or(&lin.weight)
        .to_dense(&mut step)?;
    let adapters = own
        .map(|a| (None, a))
        .into_iter()
        .chain(fused.iter().enumerate().map(|(i, a)| (Some(i), a)));
    let mut bands = Vec::new();
    let mut norms = Vec::new();
    for (index, adapter) in adapters {
        let Some(layer) = adapter.find(&lin.name) else {
            continue;
        };
        let delta = Tensor::zeros(gpu, base.shape())?;
        layer.add_delta(&mut step, &delta, 1.0)?;
        norms.push(crate::linalg::sum_squares(&mut step, &delta)?);
        let spectral = layer.kind.is_spectral_basis();
        let start = if spectral { layer.band * layer.rank } else { 0 };
        bands.push(BandChange {
            fused: index,
            kind: layer.kind,
            start,
            end: if spectral { start + layer.rank } else { 0 },
            change: 0.0,
        });
    }
    step.submit()?;
    let values = crate::gpu::read_many(gpu, &norms.iter().collect::<Vec<_>>()).await?;
    for (band, v) in bands.iter_mut().zip(values) {
        band.change = v.first().copied().unwrap_or(0.0).max(0.0).sqrt();
    }
    Ok(LayerSpectrum {
        sigma: crate::linalg::singular_values(gpu, &base).await?,
        bands,
    })
}

/// Whether layer `name` matches a target `pattern`: `*`, the exact name, or a dot-separated
/// suffix of it (`query` matches `encoder.layer.0.attention.self.query`), as PEFT matches.
pub fn matches_target(name: &str, pattern: &str) -> bool {
    pattern == "*" || name == pattern || name.ends_with(&format!(".{pattern}"))
}
