//! One adapted linear layer y = x W'ᵀ + b, in the factored form of DESIGN.md §4: the dense
//! m×n weight is never rebuilt per step. Forward and backward for every adapter kind, and the
//! dense weights merge, unmerge and fusion write.

use crate::adapter::kernels::{add_bias, column_dots, scale_columns, RotationState};
use crate::adapter::{AdapterKind, BandSpectrum};
use crate::error::{Error, Result};
use crate::gpu::{Step, Tensor};
use crate::linalg::{add, copy, dequantize, gemm, qgemm, Gemm, QuantMatrix};
use crate::train::Param;

/// A target layer's frozen weight as its model holds it: what an adapter is built on.
#[derive(Debug, Clone, Copy)]
pub enum BaseWeight<'a> {
    Dense(&'a Tensor),
    Quantized(&'a QuantMatrix),
}

impl<'a> From<&'a Tensor> for BaseWeight<'a> {
    fn from(t: &'a Tensor) -> Self {
        BaseWeight::Dense(t)
    }
}

impl<'a> From<&'a QuantMatrix> for BaseWeight<'a> {
    fn from(q: &'a QuantMatrix) -> Self {
        BaseWeight::Quantized(q)
    }
}

impl BaseWeight<'_> {
    pub fn shape(&self) -> Vec<usize> {
        match self {
            BaseWeight::Dense(t) => t.shape().to_vec(),
            BaseWeight::Quantized(q) => q.shape().to_vec(),
        }
    }
}

/// A frozen weight, dense or quantized. In a plain layer it is W; in an adapted layer it is
/// the frozen part of W'.
#[derive(Debug)]
pub enum Frozen {
    /// Dense W_res = W − U₁S₁V₁ᵀ (spectral, PiSSA), or W itself (LoRA).
    Dense(Tensor),
    /// W itself, quantized: the band's U₁S₁V₁ᵀ (if any) is subtracted in factored form in
    /// every pass (DESIGN.md §5), so the base is never densified.
    Quantized(QuantMatrix),
}

impl From<Tensor> for Frozen {
    fn from(t: Tensor) -> Self {
        Frozen::Dense(t)
    }
}

impl From<QuantMatrix> for Frozen {
    fn from(q: QuantMatrix) -> Self {
        Frozen::Quantized(q)
    }
}

impl<'a> From<&'a Frozen> for BaseWeight<'a> {
    fn from(f: &'a Frozen) -> Self {
        match f {
            Frozen::Dense(t) => BaseWeight::Dense(t),
            Frozen::Quantized(q) => BaseWeight::Quantized(q),
        }
    }
}

impl Frozen {
    /// (rows, cols) for a matrix; a dense tensor's shape otherwise.
    pub fn shape(&self) -> Vec<usize> {
        BaseWeight::from(self).shape()
    }

    /// The dense tensor, if it is one.
    pub fn dense(&self) -> Option<&Tensor> {
        match self {
            Frozen::Dense(t) => Some(t),
            Frozen::Quantized(_) => None,
        }
    }

    /// Bytes on the GPU.
    pub fn gpu_bytes(&self) -> usize {
        match self {
            Frozen::Dense(t) => t.len() * 4,
            Frozen::Quantized(q) => q.gpu_bytes(),
        }
    }

    /// Another handle on the same storage.
    pub fn alias(&self) -> Frozen {
        match self {
            Frozen::Dense(t) => Frozen::Dense(t.alias()),
            Frozen::Quantized(q) => Frozen::Quantized(q.alias()),
        }
    }

    /// Records C = α·A·op(W) + β·C.
    pub fn gemm(&self, step: &mut Step, g: &Gemm, a: &Tensor, c: &Tensor) -> Result<()> {
        match self {
            Frozen::Dense(w) => gemm(step, g, a, w, c),
            Frozen::Quantized(q) => qgemm(step, g, a, q, c),
        }
    }

    /// Records a dense copy.
    pub fn to_dense(&self, step: &mut Step) -> Result<Tensor> {
        match self {
            Frozen::Dense(w) => copy(step, w),
            Frozen::Quantized(q) => dequantize(step, q),
        }
    }
}

/// The band's spectral basis: W ≈ … + U₁ diag(S₁) V₁ᵀ + …, frozen.
#[derive(Debug)]
pub struct Basis {
    /// U₁ (m×r).
    pub u: Tensor,
    /// S₁ (r).
    pub s: Tensor,
    /// V₁ (n×r).
    pub v: Tensor,
}

/// The trainable tensors of one layer, by kind.
#[derive(Debug)]
pub enum LayerParams {
    /// Spectral A: A_U (m×r), A_V (n×r), optional singular-value offset c (r).
    Additive {
        a_u: Param,
        a_v: Param,
        offset: Option<Param>,
    },
    /// Spectral R: P_U, P_V (r×r; their skew parts generate the rotations), optional scale c (r).
    Rotation {
        p_u: Param,
        p_v: Param,
        scale: Option<Param>,
        state: Box<RotationState>,
    },
    /// LoRA and PiSSA: A (r×n), B (m×r), and the scaling α/r.
    Lora { a: Param, b: Param, scaling: f32 },
}

/// Tensors the forward pass keeps for the backward pass.
#[derive(Debug)]
pub struct Saved {
    tensors: Vec<Tensor>,
}

/// One linear layer with an adapter over a frozen `base` (see [`Frozen`]); the bias is frozen
/// too.
#[derive(Debug)]
pub struct LayerAdapter {
    pub name: String,
    pub kind: AdapterKind,
    /// Output features m.
    pub m: usize,
    /// Input features n.
    pub n: usize,
    pub rank: usize,
    /// The band: this layer owns singular vectors [band·r, (band+1)·r).
    pub band: usize,
    pub base: Frozen,
    pub basis: Option<Basis>,
    /// What the SVD reached for the band (spectral kinds; none for older files).
    pub spectrum: Option<BandSpectrum>,
    pub params: LayerParams,
}

fn t(yes: bool) -> Gemm {
    Gemm::default().trans_b(yes)
}

impl LayerAdapter {
    /// X viewed as (rows, n), and the shape of Y (X's shape with m last).
    fn rows(&self, op: &'static str, x: &Tensor) -> Result<(Tensor, Vec<usize>)> {
        if x.shape().last() != Some(&self.n) {
            return Err(Error::ShapeMismatch {
                op,
                detail: format!(
                    "input {:?} should end in the layer's {} input features ({})",
                    x.shape(),
                    self.n,
                    self.name
                ),
            });
        }
        let rows = x.len() / self.n;
        let mut y_shape = x.shape().to_vec();
        *y_shape.last_mut().expect("checked non-empty above") = self.m;
        Ok((x.view(0, &[rows, self.n])?, y_shape))
    }

    fn basis(&self) -> Result<&Basis> {
        self.basis.as_ref().ok_or_else(|| Error::ShapeMismatch {
            op: "adapter",
            detail: format!("{} has no spectral basis", self.name),
        })
    }

    /// Records y = x W'ᵀ + b. X is (…, n); Y is (…, m).
    pub fn forward(
        &self,
        step: &mut Step,
        x: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<(Tensor, Saved)> {
        let (x2, y_shape) = self.rows("adapter forward", x)?;
        let gpu = step.gpu();
        let rows = x2.shape()[0];
        let y = Tensor::uninit(gpu, &[rows, self.m])?;
        self.base.gemm(step, &t(true), &x2, &y)?;
        self.subtract_quantized_basis(step, &x2, &y, true)?;
        let saved = match &self.params {
            LayerParams::Additive { a_u, a_v, offset } => {
                // h = x (V₁ + A_V); g = h (S₁ + c); y += g (U₁ + A_U)ᵀ
                let b = self.basis()?;
                let u_eff = add(step, &b.u, &a_u.value)?;
                let v_eff = add(step, &b.v, &a_v.value)?;
                let h = Tensor::uninit(gpu, &[rows, self.rank])?;
                gemm(step, &t(false), &x2, &v_eff, &h)?;
                let g = scale_columns(step, &h, &b.s, offset.as_ref().map(|c| &c.value))?;
                gemm(step, &t(true).beta(1.0), &g, &u_eff, &y)?;
                vec![u_eff, v_eff, h, g]
            }
            LayerParams::Rotation {
                p_u,
                p_v,
                scale,
                state,
            } => {
                // M = R_V diag(S₁⊙c) R_Uᵀ; y += ((x V₁) M) U₁ᵀ
                let b = self.basis()?;
                state.forward(
                    step,
                    &p_u.value,
                    &p_v.value,
                    &b.s,
                    scale.as_ref().map(|c| &c.value),
                )?;
                let h = Tensor::uninit(gpu, &[rows, self.rank])?;
                gemm(step, &t(false), &x2, &b.v, &h)?;
                let hm = Tensor::uninit(gpu, &[rows, self.rank])?;
                gemm(step, &t(false), &h, &state.core, &hm)?;
                gemm(step, &t(true).beta(1.0), &hm, &b.u, &y)?;
                vec![h]
            }
            LayerParams::Lora { a, b, scaling } => {
                // y += (α/r) (x Aᵀ) Bᵀ
                let h = Tensor::uninit(gpu, &[rows, self.rank])?;
                gemm(step, &t(true), &x2, &a.value, &h)?;
                gemm(step, &t(true).alpha(*scaling).beta(1.0), &h, &b.value, &y)?;
                vec![h]
            }
        };
        if let Some(bias) = bias {
            if bias.len() != self.m {
                return Err(Error::ShapeMismatch {
                    op: "adapter forward",
                    detail: format!(
                        "bias of {} values for {} outputs ({})",
                        bias.len(),
                        self.m,
                        self.name
                    ),
                });
            }
            add_bias(step, &y, bias)?;
        }
        Ok((y.reshape(&y_shape)?, Saved { tensors: saved }))
    }

    /// Records the backward pass from dY = ∂L/∂y: writes every trainable tensor's gradient
    /// (overwriting it) and, when `want_dx`, returns ∂L/∂x.
    pub fn backward(
        &self,
        step: &mut Step,
        x: &Tensor,
        saved: &Saved,
        d_y: &Tensor,
        want_dx: bool,
    ) -> Result<Option<Tensor>> {
        let (x2, _) = self.rows("adapter backward", x)?;
        let rows = x2.shape()[0];
        if d_y.len() != rows * self.m {
            return Err(Error::ShapeMismatch {
                op: "adapter backward",
                detail: format!(
                    "dY {:?} does not match {rows} rows of {} outputs ({})",
                    d_y.shape(),
                    self.m,
                    self.name
                ),
            });
        }
        let d_y = d_y.view(0, &[rows, self.m])?;
        let gpu = step.gpu();
        let ta = Gemm::default().trans_a(true);
        let small = |step: &Step| Tensor::uninit(step.gpu(), &[rows, self.rank]);
        // (∂h: the gradient reaching h, and the factor that maps h back to x: x·F = h.)
        let (d_h, h_factor, h_factor_transposed) = match (&self.params, saved.tensors.as_slice()) {
            (LayerParams::Additive { a_u, a_v, offset }, [u_eff, v_eff, h, g]) => {
                // ∂A_U = dYᵀ g; dg = dY (U₁+A_U); dh = dg (S₁+c); ∂c = Σ dg⊙h; ∂A_V = xᵀ dh
                let b = self.basis()?;
                gemm(step, &ta, &d_y, g, &a_u.grad)?;
                let d_g = small(step)?;
                gemm(step, &t(false), &d_y, u_eff, &d_g)?;
                let d_h = scale_columns(step, &d_g, &b.s, offset.as_ref().map(|c| &c.value))?;
                if let Some(c) = offset {
                    column_dots(step, &d_g, h, &c.grad)?;
                }
                gemm(step, &ta, &x2, &d_h, &a_v.grad)?;
                (d_h, v_eff, false)
            }
            (
                LayerParams::Rotation {
                    p_u,
                    p_v,
                    scale,
                    state,
                },
                [h],
            ) => {
                // dt = dY U₁; ∂M = hᵀ dt; dh = dt Mᵀ; then through the Cayley maps
                let b = self.basis()?;
                let d_t = small(step)?;
                gemm(step, &t(false), &d_y, &b.u, &d_t)?;
                let d_core = Tensor::uninit(gpu, &[self.rank, self.rank])?;
                gemm(step, &ta, h, &d_t, &d_core)?;
                let d_h = small(step)?;
                gemm(step, &t(true), &d_t, &state.core, &d_h)?;
                let sc = scale.as_ref();
                state.backward(
                    step,
                    &d_core,
                    &b.s,
                    sc.map(|c| &c.value),
                    &p_u.grad,
                    &p_v.grad,
                    sc.map(|c| &c.grad),
                )?;
                (d_h, &b.v, false)
            }
            (LayerParams::Lora { a, b, scaling }, [h]) => {
                // ∂B = s dYᵀ h; dh = s dY B; ∂A = dhᵀ x
                gemm(step, &ta.alpha(*scaling), &d_y, h, &b.grad)?;
                let d_h = small(step)?;
                gemm(step, &t(false).alpha(*scaling), &d_y, &b.value, &d_h)?;
                gemm(step, &ta, &d_h, &x2, &a.grad)?;
                (d_h, &a.value, true)
            }
            _ => {
                return Err(Error::ShapeMismatch {
                    op: "adapter backward",
                    detail: format!("saved tensors do not belong to {}", self.name),
                })
            }
        };
        if !want_dx {
            return Ok(None);
        }
        // dx = dY W_base + dh Fᵀ, F = V₁ + A_V, V₁ or (LoRA, stored transposed) A
        let d_x = Tensor::uninit(gpu, x.shape())?;
        let d_x2 = d_x.view(0, &[rows, self.n])?;
        self.base.gemm(step, &t(false), &d_y, &d_x2)?;
        self.subtract_quantized_basis(step, &d_y, &d_x2, false)?;
        gemm(
            step,
            &t(!h_factor_transposed).beta(1.0),
            &d_h,
            h_factor,
            &d_x2,
        )?;
        Ok(Some(d_x))
    }

    /// With a quantized base W and a band: records y −= x V₁S₁U₁ᵀ (`forward`), or
    /// dx −= dy U₁S₁V₁ᵀ, which turns W into W_res in factored form. Otherwise nothing.
    fn subtract_quantized_basis(
        &self,
        step: &mut Step,
        x: &Tensor,
        out: &Tensor,
        forward: bool,
    ) -> Result<()> {
        let (Frozen::Quantized(_), Some(b)) = (&self.base, &self.basis) else {
            return Ok(());
        };
        let (into, back) = if forward { (&b.v, &b.u) } else { (&b.u, &b.v) };
        let h = Tensor::uninit(step.gpu(), &[x.shape()[0], self.rank])?;
        gemm(step, &t(false), x, into, &h)?;
        let g = scale_columns(step, &h, &b.s, None)?;
        gemm(step, &t(true).alpha(-1.0).beta(1.0), &g, back, out)
    }

    /// Records out += α·(the adapter's part of W'): (U₁+A_U) diag(S₁+c) (V₁+A_V)ᵀ,
    /// U₁ R_U diag(S₁⊙c) R_Vᵀ V₁ᵀ, or (α/r)·B A.
    fn add_adapter_part(&self, step: &mut Step, out: &Tensor, alpha: f32) -> Result<()> {
        let g = Gemm::default().alpha(alpha).beta(1.0);
        match &self.params {
            LayerParams::Additive { a_u, a_v, offset } => {
                let b = self.basis()?;
                let u_eff = add(step, &b.u, &a_u.value)?;
                let v_eff = add(step, &b.v, &a_v.value)?;
                let us = scale_columns(step, &u_eff, &b.s, offset.as_ref().map(|c| &c.value))?;
                gemm(step, &g.trans_b(true), &us, &v_eff, out)
            }
            LayerParams::Rotation {
                p_u,
                p_v,
                scale,
                state,
            } => {
                let b = self.basis()?;
                state.forward(
                    step,
                    &p_u.value,
                    &p_v.value,
                    &b.s,
                    scale.as_ref().map(|c| &c.value),
                )?;
                let um = Tensor::uninit(step.gpu(), &[self.m, self.rank])?;
                gemm(step, &t(true), &b.u, &state.core, &um)?; // U₁ Mᵀ
                gemm(step, &g.trans_b(true), &um, &b.v, out)
            }
            LayerParams::Lora { a, b, scaling } => {
                gemm(step, &g.alpha(alpha * scaling), &b.value, &a.value, out)
            }
        }
    }

    /// Records out += α·U₁ S₁ V₁ᵀ (nothing for LoRA, whose base is W itself).
    fn add_basis_part(&self, step: &mut Step, out: &Tensor, alpha: f32) -> Result<()> {
        let Some(b) = &self.basis else { return Ok(()) };
        let us = scale_columns(step, &b.u, &b.s, None)?;
        gemm(
            step,
            &Gemm::default().alpha(alpha).beta(1.0).trans_b(true),
            &us,
            &b.v,
            out,
        )
    }

    /// Records the dense frozen part W_res (or LoRA's W).
    pub fn residual_weight(&self, step: &mut Step) -> Result<Tensor> {
        let w = self.base.to_dense(step)?;
        if let Frozen::Quantized(_) = self.base {
            self.add_basis_part(step, &w, -1.0)?;
        }
        Ok(w)
    }

    /// Records W' (m×n), the weight the forward pass applies: merging the adapter.
    pub fn merged_weight(&self, step: &mut Step) -> Result<Tensor> {
        let w = self.residual_weight(step)?;
        self.add_adapter_part(step, &w, 1.0)?;
        Ok(w)
    }

    /// Records the original W, restored from W_res + U₁S₁V₁ᵀ (or W itself): unmerging.
    pub fn base_weight(&self, step: &mut Step) -> Result<Tensor> {
        match &self.base {
            Frozen::Dense(_) => {
                let w = self.base.to_dense(step)?;
                self.add_basis_part(step, &w, 1.0)?;
                Ok(w)
            }
            Frozen::Quantized(q) => dequantize(step, q),
        }
    }

    /// Records out += α·ΔW, ΔW = W' − W, in factored form.
    pub fn add_delta(&self, step: &mut Step, out: &Tensor, alpha: f32) -> Result<()> {
        if out.shape() != [self.m, self.n] {
            return Err(Error::ShapeMismatch {
                op: "adapter delta",
                detail: format!(
                    "{:?} is not the {}×{} weight of {}",
                    out.shape(),
                    self.m,
                    self.n,
                    self.name
                ),
            });
        }
        self.add_adapter_part(step, out, alpha)?;
        self.add_basis_part(step, out, -alpha)
    }
}
