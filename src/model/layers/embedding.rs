//! BERT's input embeddings (`shaders/embedding.wgsl`): word + position + token type, before
//! the embedding layer norm. Forward only: the tables are frozen in fine-tuning, so no
//! gradient flows into them (and none is needed below them: the ids are integers).

use crate::error::{Error, Result};
use crate::gpu::{Gpu, KernelOp, Step, Tensor};
use crate::linalg::{grid_stride_groups, to_u32};
use crate::shaders;

/// Mirrors `Params` in `embedding.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct EmbeddingParams {
    tokens: u32,
    seq: u32,
    width: u32,
    vocab: u32,
    type_vocab: u32,
    _pad: [u32; 3],
}

/// The three embedding tables of a BERT model, as in HF's `embeddings.*_embeddings.weight`.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddingTables<'a> {
    /// (vocab, width)
    pub word: &'a Tensor,
    /// (max_positions, width)
    pub position: &'a Tensor,
    /// (type_vocab, width)
    pub token_type: &'a Tensor,
}

/// Uploads integer ids of `shape` as a u32 tensor ([`Tensor::from_u32`]) after checking each is
/// below `limit`: an out-of-range id is an [`Error::IndexOutOfRange`] naming `what` and its
/// position, before anything runs.
pub fn upload_ids(
    gpu: &Gpu,
    what: &'static str,
    shape: &[usize],
    ids: &[u32],
    limit: usize,
) -> Result<Tensor> {
    if let Some((position, &value)) = ids
        .iter()
        .enumerate()
        .find(|&(_, &id)| id as usize >= limit)
    {
        return Err(Error::IndexOutOfRange {
            what,
            position,
            value,
            limit,
        });
    }
    Tensor::from_u32(gpu, shape, ids)
}

/// (rows, width) of a 2D table.
fn table_dims(name: &str, t: &Tensor) -> Result<(usize, usize)> {
    match *t.shape() {
        [rows, width] => Ok((rows, width)),
        _ => Err(Error::ShapeMismatch {
            op: "embeddings_forward",
            detail: format!(
                "the {name} table has shape {:?}: it must be (rows, width)",
                t.shape()
            ),
        }),
    }
}

/// Records out[b, t, :] = word[ids[b, t]] + position[t] + token_type[type_ids[b, t]] and
/// returns out (batch, seq, width). `ids` and `type_ids` are row-major (batch, seq) host slices,
/// checked against the tables' sizes and uploaded here. One dispatch.
///
/// ```no_run
/// # fn demo(step: &mut spectune::Step, tables: spectune::model::layers::EmbeddingTables) -> spectune::Result<()> {
/// use spectune::model::layers::embeddings_forward;
/// let ids = [101, 7592, 102, 0]; // [CLS] hello [SEP] [PAD]
/// let x = embeddings_forward(step, tables, &ids, &[0; 4], 1, 4)?;
/// # Ok(()) }
/// ```
pub fn embeddings_forward(
    step: &mut Step,
    tables: EmbeddingTables,
    ids: &[u32],
    type_ids: &[u32],
    batch: usize,
    seq: usize,
) -> Result<Tensor> {
    const OP: &str = "embeddings_forward";
    let (vocab, width) = table_dims("word", tables.word)?;
    let (max_positions, pos_width) = table_dims("position", tables.position)?;
    let (type_vocab, type_width) = table_dims("token_type", tables.token_type)?;
    if pos_width != width || type_width != width {
        return Err(Error::ShapeMismatch {
            op: OP,
            detail: format!(
                "tables of different widths: word {:?}, position {:?}, token_type {:?}",
                tables.word.shape(),
                tables.position.shape(),
                tables.token_type.shape()
            ),
        });
    }
    if seq > max_positions {
        return Err(Error::ShapeMismatch {
            op: OP,
            detail: format!(
                "a sequence of {seq} tokens is longer than the position table {:?} allows",
                tables.position.shape()
            ),
        });
    }
    let tokens = batch.saturating_mul(seq);
    for (name, data) in [("ids", ids), ("type_ids", type_ids)] {
        if data.len() != tokens {
            return Err(Error::DataLength {
                what: if name == "ids" {
                    "token ids"
                } else {
                    "token type ids"
                },
                len: data.len(),
                shape: vec![batch, seq],
                expected: tokens,
            });
        }
    }
    let gpu = step.gpu();
    let ids = upload_ids(gpu, "token ids", &[batch, seq], ids, vocab)?;
    let type_ids = upload_ids(gpu, "token type ids", &[batch, seq], type_ids, type_vocab)?;
    let out = Tensor::uninit(gpu, &[batch, seq, width])?;
    if out.is_empty() {
        return Ok(out);
    }
    let params = EmbeddingParams {
        tokens: to_u32(OP, tokens)?,
        seq: to_u32(OP, seq)?,
        width: to_u32(OP, width)?,
        vocab: to_u32(OP, vocab)?,
        type_vocab: to_u32(OP, type_vocab)?,
        _pad: [0; 3],
    };
    to_u32(OP, out.len())?;
    let kernel = gpu.kernel(&shaders::EMBEDDING, OP, vec![]);
    step.push(KernelOp::new(
        gpu,
        OP,
        kernel,
        &params,
        &[
            (1, &ids),
            (2, &type_ids),
            (3, tables.word),
            (4, tables.position),
            (5, tables.token_type),
            (6, &out),
        ],
        [grid_stride_groups(out.len(), 256), 1, 1],
    )?);
    Ok(out)
}
