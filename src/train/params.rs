//! `Params`: every trainable tensor of a model or adapter as a view into one flat buffer, with
//! a gradient buffer of the same layout, so one dispatch updates them all (the AdamW kernel)
//! and one reduction gives the global gradient norm. A tensor may be held orthogonal to a
//! fixed basis (a band-confined adapter's A_U and A_V): the optimizer projects it back after
//! every update.

use crate::error::{Error, Result};
use crate::gpu::{read_many, Gpu, Step, Tensor};
use crate::linalg::{gemm, Gemm};

/// One trainable tensor to allocate: its name, shape, initial values and whether weight decay
/// applies to it (not to scales initialised at 1, which decay would pull towards 0).
#[derive(Debug, Clone)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Vec<f32>,
    pub decay: bool,
    /// Orthonormal columns B (rows × k, row-major; rows = the tensor's first dimension) that
    /// the tensor's columns are kept orthogonal to: after each update, X ← X − B (Bᵀ X).
    pub orthogonal_to: Option<Vec<f32>>,
}

impl ParamSpec {
    /// A tensor of zeros that decays.
    pub fn zeros(name: impl Into<String>, shape: &[usize]) -> ParamSpec {
        let len = shape.iter().product();
        ParamSpec {
            name: name.into(),
            shape: shape.to_vec(),
            init: vec![0.0; len],
            decay: true,
            orthogonal_to: None,
        }
    }

    /// A tensor with the given values that decays.
    pub fn with_values(name: impl Into<String>, shape: &[usize], init: Vec<f32>) -> ParamSpec {
        ParamSpec {
            name: name.into(),
            shape: shape.to_vec(),
            init,
            decay: true,
            orthogonal_to: None,
        }
    }

    /// The same tensor without weight decay.
    pub fn no_decay(mut self) -> ParamSpec {
        self.decay = false;
        self
    }

    /// The same tensor, kept orthogonal to the orthonormal columns of `basis` (rows × k,
    /// row-major, rows the tensor's first dimension); `None` leaves it free.
    pub fn orthogonal_to(mut self, basis: Option<Vec<f32>>) -> ParamSpec {
        self.orthogonal_to = basis;
        self
    }
}

/// A trainable tensor: its value and its gradient, views into the owning [`Params`].
#[derive(Debug)]
pub struct Param {
    pub value: Tensor,
    pub grad: Tensor,
}

#[derive(Debug)]
struct Entry {
    name: String,
    shape: Vec<usize>,
    start: usize,
    decay: bool,
    /// The basis the tensor is kept orthogonal to: host values and their GPU copy (rows × k).
    orthogonal_to: Option<(Vec<f32>, Tensor)>,
}

/// The flat store. Decayed tensors come first, so the optimizer tells them apart by index.
#[derive(Debug)]
pub struct Params {
    values: Tensor,
    grads: Tensor,
    entries: Vec<Entry>,
    params: Vec<Param>,
    decay_len: usize,
}

impl Params {
    /// Allocates and uploads `specs`. Gaps between views (alignment) hold zeros in both
    /// buffers and stay zero: no kernel writes them and the optimizer keeps a zero at zero.
    pub fn new(gpu: &Gpu, specs: Vec<ParamSpec>) -> Result<Params> {
        let align = Tensor::view_alignment(gpu);
        let mut order: Vec<usize> = (0..specs.len()).collect();
        order.sort_by_key(|&i| !specs[i].decay); // stable: decayed first, otherwise as given
        let mut host = Vec::new();
        let mut entries: Vec<Option<Entry>> = specs.iter().map(|_| None).collect();
        let mut decay_len = 0;
        for &i in &order {
            let spec = &specs[i];
            let len: usize = spec.shape.iter().product();
            if spec.init.len() != len {
                return Err(Error::DataLength {
                    what: "parameter initial values",
                    len: spec.init.len(),
                    shape: spec.shape.clone(),
                    expected: len,
                });
            }
            let start = host.len();
            host.extend_from_slice(&spec.init);
            // Room for the 16-byte granule a view binds, then the next aligned start.
            host.resize(
                (start + len)
                    .next_multiple_of(4)
                    .max(start + 4)
                    .next_multiple_of(align),
                0.0,
            );
            if spec.decay {
                decay_len = host.len();
            }
            let orthogonal_to = match &spec.orthogonal_to {
                None => None,
                Some(basis) => {
                    let rows = spec.shape.first().copied().unwrap_or(0);
                    if rows == 0 || basis.is_empty() || basis.len() % rows != 0 {
                        return Err(Error::DataLength {
                            what: "the basis a parameter is kept orthogonal to",
                            len: basis.len(),
                            shape: vec![rows, basis.len() / rows.max(1)],
                            expected: rows * (basis.len() / rows.max(1)).max(1),
                        });
                    }
                    let t = Tensor::from_slice(gpu, &[rows, basis.len() / rows], basis)?;
                    Some((basis.clone(), t))
                }
            };
            entries[i] = Some(Entry {
                name: spec.name.clone(),
                shape: spec.shape.clone(),
                start,
                decay: spec.decay,
                orthogonal_to,
            });
        }
        let entries: Vec<Entry> = entries.into_iter().flatten().collect();
        let total = host.len().max(align);
        host.resize(total, 0.0);
        let values = Tensor::from_slice(gpu, &[total], &host)?;
        let grads = Tensor::zeros(gpu, &[total])?;
        let params = entries
            .iter()
            .map(|e| {
                Ok(Param {
                    value: values.view(e.start, &e.shape)?,
                    grad: grads.view(e.start, &e.shape)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Params {
            values,
            grads,
            entries,
            params,
            decay_len,
        })
    }

    /// The tensors, in the order of the specs they were made from.
    pub fn tensors(&self) -> &[Param] {
        &self.params
    }

    /// The `i`-th tensor (in spec order).
    pub fn get(&self, i: usize) -> &Param {
        &self.params[i]
    }

    /// Another handle on the `i`-th tensor and its gradient (the same storage).
    pub fn share(&self, i: usize) -> Param {
        let p = &self.params[i];
        Param {
            value: p.value.alias(),
            grad: p.grad.alias(),
        }
    }

    /// Names in spec order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// Whether weight decay applies to the tensor called `name`.
    pub fn decays(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.name == name && e.decay)
    }

    /// The basis (rows × k, host values) the tensor called `name` is kept orthogonal to.
    pub fn orthogonal_to(&self, name: &str) -> Option<&[f32]> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.orthogonal_to.as_ref())
            .map(|(host, _)| host.as_slice())
    }

    /// Records X ← X − B (Bᵀ X) for every tensor kept orthogonal to a basis B: what an
    /// optimizer runs after its update. Exact for any optimizer (AdamW's per-coordinate steps
    /// leave the subspace; projecting the values, not the gradients, brings them back).
    pub fn record_constraints(&self, step: &mut Step) -> Result<()> {
        for (e, p) in self.entries.iter().zip(&self.params) {
            let Some((_, basis)) = &e.orthogonal_to else {
                continue;
            };
            let (rows, k) = (basis.shape()[0], basis.shape()[1]);
            let cols = p.value.len() / rows;
            let x = p.value.alias().reshape(&[rows, cols])?;
            let coeffs = Tensor::uninit(step.gpu(), &[k, cols])?;
            gemm(step, &Gemm::default().trans_a(true), basis, &x, &coeffs)?; // Bᵀ X
            gemm(
                step,
                &Gemm::default().alpha(-1.0).beta(1.0),
                basis,
                &coeffs,
                &x,
            )?; // X −= B·(Bᵀ X)
        }
        Ok(())
    }

    /// Index of the tensor called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.name == name)
    }

    /// Number of trainable values (not counting alignment gaps).
    pub fn count(&self) -> usize {
        self.entries
            .iter()
            .map(|e| e.shape.iter().product::<usize>())
            .sum()
    }

    /// The whole value buffer (with gaps), for the optimizer.
    pub fn flat_values(&self) -> &Tensor {
        &self.values
    }

    /// The whole gradient buffer (with gaps).
    pub fn flat_grads(&self) -> &Tensor {
        &self.grads
    }

    /// Elements of the flat buffers, from the start, that get weight decay.
    pub fn decay_len(&self) -> usize {
        self.decay_len
    }

    /// Downloads every tensor's values (spec order) in one round trip.
    pub async fn read_values(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        let flat = read_many(gpu, &[&self.values])
            .await?
            .pop()
            .unwrap_or_default();
        Ok(self.split(&flat))
    }

    /// Downloads every tensor's gradient (spec order) in one round trip.
    pub async fn read_grads(&self, gpu: &Gpu) -> Result<Vec<Vec<f32>>> {
        let flat = read_many(gpu, &[&self.grads])
            .await?
            .pop()
            .unwrap_or_default();
        Ok(self.split(&flat))
    }

    fn split(&self, flat: &[f32]) -> Vec<Vec<f32>> {
        self.entries
            .iter()
            .map(|e| flat[e.start..e.start + e.shape.iter().product::<usize>()].to_vec())
            .collect()
    }

    /// Overwrites the `i`-th tensor's values.
    pub fn write(&self, gpu: &Gpu, i: usize, values: &[f32]) -> Result<()> {
        self.params[i].value.write(gpu, values)
    }
}
