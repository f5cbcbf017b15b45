//! Safetensors files, read and written through the `safetensors` crate, which checks the header
//! size, the JSON, and that every tensor's offsets lie inside the data, in order, without
//! overlap; every failure becomes a named error. Values arrive as f32 (F16 and BF16 widened).

use std::collections::HashMap;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};

/// One tensor read from or written to a file: name, shape, row-major values.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl NamedTensor {
    pub fn new(name: impl Into<String>, shape: &[usize], values: Vec<f32>) -> NamedTensor {
        NamedTensor {
            name: name.into(),
            shape: shape.to_vec(),
            values,
        }
    }
}

/// A file's tensors (in the order the file stores them) and its `__metadata__` strings.
#[derive(Debug, Clone, Default)]
pub struct SafetensorsFile {
    pub tensors: Vec<NamedTensor>,
    pub metadata: HashMap<String, String>,
    /// Tensors of other dtypes (integer buffers such as BERT's `position_ids`), by name and
    /// dtype: kept out of `tensors`, and an error if required.
    pub other_dtypes: Vec<(String, String)>,
}

impl SafetensorsFile {
    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The tensor called `name`, which must exist and have `shape`.
    pub fn require(&self, what: &'static str, name: &str, shape: &[usize]) -> Result<&NamedTensor> {
        if let Some((_, dtype)) = self.other_dtypes.iter().find(|(n, _)| n == name) {
            return Err(bad(
                what,
                format!("tensor {name} is {dtype}; spectune reads F32, F16 and BF16"),
            ));
        }
        let t = self.get(name).ok_or_else(|| Error::MissingTensor {
            what,
            name: name.to_string(),
        })?;
        if t.shape != shape {
            return Err(bad(
                what,
                format!("tensor {name} has shape {:?}, expected {shape:?}", t.shape),
            ));
        }
        Ok(t)
    }
}

fn bad(what: &'static str, detail: impl std::fmt::Display) -> Error {
    Error::BadFile {
        what,
        detail: detail.to_string(),
    }
}

/// Serialises f32 tensors and metadata strings into safetensors bytes.
pub fn write_f32(
    what: &'static str,
    tensors: &[NamedTensor],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            Ok((
                t.name.clone(),
                TensorView::new(Dtype::F32, t.shape.clone(), b)
                    .map_err(|e| bad(what, format!("{}: {e}", t.name)))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = (!metadata.is_empty()).then_some(metadata);
    safetensors::serialize(views, metadata).map_err(|e| bad(what, e))
}

/// Parses safetensors bytes: float tensors (F32, F16, BF16) as f32; others are listed in
/// `other_dtypes`.
pub fn read(what: &'static str, bytes: &[u8]) -> Result<SafetensorsFile> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| bad(what, e))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(what, e))?;
    let mut tensors = Vec::new();
    let mut other_dtypes = Vec::new();
    for (name, view) in file.iter() {
        let data = view.data();
        let values = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                other_dtypes.push((name.to_string(), format!("{other:?}")));
                continue;
            }
        };
        tensors.push(NamedTensor {
            name: name.to_string(),
            shape: view.shape().to_vec(),
            values,
        });
    }
    Ok(SafetensorsFile {
        tensors,
        metadata: header.metadata().clone().unwrap_or_default(),
        other_dtypes,
    })
}
