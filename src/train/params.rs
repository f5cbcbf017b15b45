//! `Params`: every trainable tensor of a model or adapter as a view into one flat buffer, with
//! a gradient buffer of the same layout, so one dispatch updates them all (the AdamW kernel)
//! and one reduction gives the global gradient norm.

use crate::error::{Error, Result};
use crate::gpu::{read_many, Gpu, Tensor};

/// One trainable tensor to allocate: its name, shape, initial values and whether weight decay
/// applies to it (not to scales initialised at 1, which decay would pull towards 0).
#[derive(Debug, Clone)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Vec<f32>,
    pub decay: bool,
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
        }
    }

    /// A tensor with the given values that decays.
    pub fn with_values(name: impl Into<String>, shape: &[usize], init: Vec<f32>) -> ParamSpec {
        ParamSpec {
            name: name.into(),
            shape: shape.to_vec(),
            init,
            decay: true,
        }
    }

    /// The same tensor without weight decay.
    pub fn no_decay(mut self) -> ParamSpec {
        self.decay = false;
        self
    }
}

/// A trainable tensor: its value and its gradient, views into the owning [`Params`].
#[derive(Debug)]
pub struct Param {
    pub value: Tensor,
    pub grad: Tensor,
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    shape: Vec<usize>,
    start: usize,
    decay: bool,
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
        let mut entries = vec![None; specs.len()];
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
            entries[i] = Some(Entry {
                name: spec.name.clone(),
                shape: spec.shape.clone(),
                start,
                decay: spec.decay,
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
