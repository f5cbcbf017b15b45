//! Adapters on linear layers (DESIGN.md §4): spectral additive (A), spectral rotation (R),
//! LoRA and PiSSA-initialised LoRA. An [`Adapter`] covers one or more target layers of one
//! base model; its trainable tensors live in one [`Params`] store, so one optimizer dispatch
//! updates them all.
//!
//! ```no_run
//! # async fn demo(gpu: &spectune::Gpu, w: &spectune::Tensor, x: &spectune::Tensor) -> spectune::Result<()> {
//! use spectune::adapter::{Adapter, AdapterConfig, AdapterKind};
//! let config = AdapterConfig::new(AdapterKind::SpectralAdditive, 8);
//! let adapter = Adapter::new(gpu, config, &[("query", w)]).await?;
//! let mut step = spectune::Step::new(gpu, "forward");
//! let (y, _saved) = adapter.layer(0).forward(&mut step, x, None)?;
//! step.submit()?;
//! # Ok(()) }
//! ```

mod build;
pub mod file;
mod fusion;
pub mod kernels;
mod layer;
pub mod peft;
mod spectrum;
pub mod task_merge;

pub use build::{HostBasis, OtherBands};
pub use fusion::{average, fuse, Fusion};
pub use layer::{BaseWeight, Basis, Frozen, LayerAdapter, LayerParams, Saved};
pub use spectrum::{BandSpectrum, CLUSTER_GAP};

use crate::error::{Error, Result};
use crate::linalg::SvdOptions;
use crate::train::Params;

/// Which adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdapterKind {
    /// Spectral A: W' = W_res + (U₁ + A_U) S₁ (V₁ + A_V)ᵀ.
    SpectralAdditive,
    /// Spectral R: W' = W_res + U₁ R_U diag(S₁⊙c) R_Vᵀ V₁ᵀ, Cayley rotations.
    SpectralRotation,
    /// LoRA: W' = W + (α/r) B A, B zero, A Kaiming-uniform.
    Lora,
    /// LoRA initialised from the band's singular triplets (PiSSA) on W_res.
    Pissa,
}

impl AdapterKind {
    /// The name used in files and in the JS API.
    pub fn name(self) -> &'static str {
        match self {
            AdapterKind::SpectralAdditive => "spectral-additive",
            AdapterKind::SpectralRotation => "spectral-rotation",
            AdapterKind::Lora => "lora",
            AdapterKind::Pissa => "pissa",
        }
    }

    /// The kind called `name`.
    pub fn from_name(name: &str) -> Result<AdapterKind> {
        [AdapterKind::SpectralAdditive, AdapterKind::SpectralRotation, AdapterKind::Lora, AdapterKind::Pissa]
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| Error::InvalidAdapter(format!("unknown adapter kind {name:?} (expected spectral-additive, spectral-rotation, lora or pissa)")))
    }

    /// Whether the adapter stands on a band of singular vectors.
    pub fn is_spectral_basis(self) -> bool {
        self != AdapterKind::Lora
    }
}

/// How an adapter is built.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdapterConfig {
    pub kind: AdapterKind,
    /// r: singular vectors per band (spectral), or LoRA's rank.
    pub rank: usize,
    /// Which r singular vectors: [band·r, (band+1)·r). Adapters on disjoint bands fuse without
    /// interfering. LoRA has no basis and ignores it (it is still recorded).
    pub band: usize,
    /// A: also train an additive offset of S₁ (zero-initialised); R: a scale of S₁ (ones).
    pub train_singular_values: bool,
    /// LoRA / PiSSA scaling α/r; `None` means α = r.
    pub lora_alpha: Option<f32>,
    /// The truncated SVD that finds the band.
    pub svd: SvdOptions,
    /// Seed of LoRA's Kaiming-uniform A.
    pub seed: u64,
    /// Spectral A: keep A_U and A_V orthogonal to the singular vectors of every *other* band
    /// among the first `confine_bands`, so that adapters on those bands fuse without answering
    /// to each other's inputs (docs/FUSION.md). 0 or 1 (the default, [`DEFAULT_CONFINE_BANDS`]):
    /// free, the paper's adapter. Set it to the number of bands to be fused, on every adapter
    /// of the fusion.
    pub confine_bands: usize,
}

/// Spectral A adapters are free by default: the constraint takes (B − 1)·r of the directions
/// A_U and A_V could use, which cost a lone adapter its win over LoRA on a small layer
/// (tests/train_gpu.rs, the rank-2r task on 48×40 with B = 4: 0.103 against LoRA's 0.077;
/// free, 0.055).
/// Adapters meant for fusion are confined by asking for it.
pub const DEFAULT_CONFINE_BANDS: usize = 0;

impl AdapterConfig {
    /// Rank `rank` on band 0 with the default SVD options.
    pub fn new(kind: AdapterKind, rank: usize) -> AdapterConfig {
        AdapterConfig {
            kind,
            rank,
            band: 0,
            train_singular_values: false,
            lora_alpha: None,
            svd: SvdOptions::default(),
            seed: 0,
            confine_bands: DEFAULT_CONFINE_BANDS,
        }
    }
    pub fn band(mut self, band: usize) -> Self {
        self.band = band;
        self
    }
    pub fn train_singular_values(mut self, yes: bool) -> Self {
        self.train_singular_values = yes;
        self
    }
    pub fn lora_alpha(mut self, alpha: f32) -> Self {
        self.lora_alpha = Some(alpha);
        self
    }
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    pub fn svd(mut self, svd: SvdOptions) -> Self {
        self.svd = svd;
        self
    }
    pub fn confine_bands(mut self, bands: usize) -> Self {
        self.confine_bands = bands;
        self
    }

    /// Whether A_U and A_V are kept out of other bands' singular vectors.
    pub fn is_confined(&self) -> bool {
        self.kind == AdapterKind::SpectralAdditive && self.confine_bands > 1
    }

    /// How many leading singular vectors the SVD must find: the band's end, or every
    /// confining band's, whichever is further, at most `max` (the smallest min(m, n)).
    pub(crate) fn basis_width(&self, max: usize) -> usize {
        let end = self.band_start().saturating_add(self.rank);
        if self.is_confined() {
            end.max(self.confine_bands.saturating_mul(self.rank).min(max))
        } else {
            end
        }
    }

    /// LoRA's α/r.
    pub fn scaling(&self) -> f32 {
        self.lora_alpha.unwrap_or(self.rank as f32) / self.rank.max(1) as f32
    }

    /// The first singular vector the band owns (saturating: a band beyond any matrix is
    /// refused by the rank check, not an overflow).
    pub fn band_start(&self) -> usize {
        self.band.saturating_mul(self.rank)
    }
}

/// An adapter on one or more linear layers of a base model.
#[derive(Debug)]
pub struct Adapter {
    pub config: AdapterConfig,
    layers: Vec<LayerAdapter>,
    params: Params,
    /// sha256 (hex) of each target's base weight (f32 little-endian bytes), in layer order.
    base_hashes: Vec<String>,
}

impl Adapter {
    /// The layers, in the order of the targets given.
    pub fn layers(&self) -> &[LayerAdapter] {
        &self.layers
    }

    /// The `i`-th layer.
    pub fn layer(&self, i: usize) -> &LayerAdapter {
        &self.layers[i]
    }

    /// The layer adapting the target called `name`.
    pub fn find(&self, name: &str) -> Option<&LayerAdapter> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// The trainable tensors.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// sha256 of each target's base weight, in layer order.
    pub fn base_hashes(&self) -> &[String] {
        &self.base_hashes
    }

    /// Trainable values stored (what the optimizer updates). For R this counts all of P_U and
    /// P_V (2r² per layer) though only their skew parts, r(r−1)/2 each, matter: see
    /// [`Adapter::degrees_of_freedom`].
    pub fn trainable_count(&self) -> usize {
        self.params.count()
    }

    /// Independent trainable directions: the stored count, except r(r−1)/2 per rotation.
    pub fn degrees_of_freedom(&self) -> usize {
        let r = self.config.rank;
        match self.config.kind {
            AdapterKind::SpectralRotation => {
                let per_layer = r * (r - 1)
                    + if self.config.train_singular_values {
                        r
                    } else {
                        0
                    };
                per_layer * self.layers.len()
            }
            _ => self.trainable_count(),
        }
    }
}
