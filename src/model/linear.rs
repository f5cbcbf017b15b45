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
        Ok(Linear { name, weight, bias })
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
    let targets: Vec<(&str, BaseWeight)> = layers
        .map(|l| (l.name.as_str(), BaseWeight::from(&l.weight)))
        .collect();
    Adapter::load(gpu, bytes, &targets).await
}

/// Merges `adapters` into the layers they adapt: each such layer's weight becomes the dense
/// W + Σ_k w_k ΔW_k (see [`fuse`]: `Sum` and `Mean` need disjoint bands). One submit.
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
        if parts.is_empty() {
            continue;
        }
        let base = lin.weight.to_dense(&mut step)?;
        let w = fuse(&mut step, &base, &parts, how)?;
        merged.push((lin, w));
    }
    step.submit()?;
    for (lin, w) in merged {
        lin.weight = Frozen::Dense(w);
    }
    Ok(())
}

/// Whether layer `name` matches a target `pattern`: `*`, the exact name, or a dot-separated
/// suffix of it (`query` matches `encoder.layer.0.attention.self.query`), as PEFT matches.
pub fn matches_target(name: &str, pattern: &str) -> bool {
    pattern == "*" || name == pattern || name.ends_with(&format!(".{pattern}"))
}
