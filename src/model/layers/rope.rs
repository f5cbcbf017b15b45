//! Rotary position embedding (`shaders/rope.wgsl`), HF's "rotate half" convention, forward and
//! backward, and the host-side row permutation that turns GGUF's Q/K weights back into HF's.
//!
//! Convention: in each head's head_dim-vector, element i pairs with element i + head_dim/2 and
//! the pair turns by (position)·θ^(−2i/head_dim) (SmolLM2: θ = `llama.rope.freq_base` = 100000).
//! llama.cpp instead turns adjacent pairs (2i, 2i + 1); its converter permutes the rows of
//! W_q and W_k so that the two conventions give the same attention scores.
//! [`unpermute_qk_rows`] undoes that permutation, so the weights match HF's and this kernel.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, KernelOp, Step, Tensor};
use crate::linalg::{grid_stride_groups, to_u32};
use crate::shaders;

/// Mirrors `Params` in `rope.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RopeParams {
    pairs: u32,
    seq: u32,
    heads: u32,
    offset: u32,
}

const WG: usize = 256;

/// cos and sin of every (position, frequency) pair, computed once on the host in f64 and kept
/// on the GPU: (positions, head_dim/2, 2). f64 angles keep long positions accurate (at position
/// 8000 an f32 angle is already ~5e-4 rad off), and WGSL bounds the error of its own sin and cos
/// only on [−π, π].
#[derive(Debug)]
pub struct RopeTable {
    table: Tensor,
    head_dim: usize,
    positions: usize,
    theta: f64,
}

impl RopeTable {
    /// The table for `positions` positions (0..positions) of heads `head_dim` wide (even) with
    /// base `theta`. SmolLM2-135M: head_dim 64, θ = 100000, up to 8192 positions
    /// (2 MiB).
    pub fn new(gpu: &Gpu, head_dim: usize, theta: f64, positions: usize) -> Result<RopeTable> {
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(Error::ShapeMismatch {
                op: "rope_table",
                detail: format!("head_dim {head_dim} must be even and at least 2"),
            });
        }
        if !(theta.is_finite() && theta > 0.0) {
            return Err(Error::NonFinite(format!(
                "the RoPE base θ must be finite and positive, not {theta}"
            )));
        }
        let half = head_dim / 2;
        to_u32("rope_table", positions.saturating_mul(head_dim))?;
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| theta.powf(-((2 * i) as f64) / head_dim as f64))
            .collect();
        let mut data = Vec::with_capacity(positions * head_dim);
        for pos in 0..positions {
            for f in &inv_freq {
                let (sin, cos) = (pos as f64 * f).sin_cos();
                data.extend([cos as f32, sin as f32]);
            }
        }
        Ok(RopeTable {
            table: Tensor::from_slice(gpu, &[positions, half, 2], &data)?,
            head_dim,
            positions,
            theta,
        })
    }

    /// The head width it was built for.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// How many positions it covers: offset + seq must not exceed it.
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// Its base θ.
    pub fn theta(&self) -> f64 {
        self.theta
    }
}

/// Checks x (batch, seq, heads·head_dim) or (batch, seq, heads, head_dim) against the table and
/// the offset; returns the uniforms and the number of pairs.
fn params(
    op: &'static str,
    table: &RopeTable,
    x: &Tensor,
    offset: usize,
) -> Result<(RopeParams, usize)> {
    let bad = |detail: String| Error::ShapeMismatch { op, detail };
    let (batch, seq, width) = match *x.shape() {
        [batch, seq, width] => (batch, seq, width),
        [batch, seq, heads, d] if d == table.head_dim => (batch, seq, heads * d),
        _ => {
            return Err(bad(format!(
            "x has shape {:?}: it must be (batch, seq, heads·head_dim) or (batch, seq, heads, {})",
            x.shape(),
            table.head_dim
        )))
        }
    };
    if width == 0 || width % table.head_dim != 0 {
        return Err(bad(format!(
            "x has shape {:?}: its width {width} is not a whole number of heads of {}",
            x.shape(),
            table.head_dim
        )));
    }
    if offset.saturating_add(seq) > table.positions {
        return Err(bad(format!(
            "positions {offset}..{} are past the RoPE table's {} positions",
            offset.saturating_add(seq),
            table.positions
        )));
    }
    to_u32(op, batch.saturating_mul(seq).saturating_mul(width))?;
    let pairs = batch * seq * width / 2;
    let p = RopeParams {
        pairs: to_u32(op, pairs)?,
        seq: to_u32(op, seq)?,
        heads: to_u32(op, width / table.head_dim)?,
        offset: to_u32(op, offset)?,
    };
    Ok((p, pairs))
}

fn record(
    step: &mut Step,
    entry: &'static str,
    table: &RopeTable,
    input: &Tensor,
    offset: usize,
) -> Result<Tensor> {
    let (p, pairs) = params(entry, table, input, offset)?;
    let gpu = step.gpu();
    let out = Tensor::uninit(gpu, input.shape())?;
    if pairs == 0 {
        return Ok(out);
    }
    let defines = vec![("HEAD_DIM", table.head_dim.to_string())];
    let kernel = gpu.kernel(&shaders::ROPE, entry, defines);
    step.push(KernelOp::new(
        gpu,
        entry,
        kernel,
        &p,
        &[(1, input), (2, &table.table), (3, &out)],
        [grid_stride_groups(pairs, WG), 1, 1],
    )?);
    Ok(out)
}

/// Records RoPE of x (batch, seq, heads·head_dim) (or (batch, seq, heads, head_dim)), token t of
/// every sequence at position offset + t: pairs (i, i + head_dim/2) of each head turn by
/// (offset + t)·θ^(−2i/head_dim). `offset` is the number of tokens already in a KV cache (0 in
/// training). Returns the rotated tensor, shaped like x. One dispatch.
///
/// ```no_run
/// # fn demo(gpu: &spectune::Gpu, step: &mut spectune::Step, q: &spectune::Tensor) -> spectune::Result<()> {
/// use spectune::model::layers::{rope_forward, RopeTable};
/// let table = RopeTable::new(gpu, 64, 100_000.0, 2048)?; // SmolLM2's head_dim and θ
/// let q_rotated = rope_forward(step, &table, q, 0)?;
/// # Ok(()) }
/// ```
pub fn rope_forward(
    step: &mut Step,
    table: &RopeTable,
    x: &Tensor,
    offset: usize,
) -> Result<Tensor> {
    record(step, "rope_forward", table, x, offset)
}

/// Records the backward of [`rope_forward`] at the same offset: each pair of d_y turns by the
/// opposite angle (RoPE is a rotation, so its transpose is its inverse). One dispatch.
pub fn rope_backward(
    step: &mut Step,
    table: &RopeTable,
    d_y: &Tensor,
    offset: usize,
) -> Result<Tensor> {
    record(step, "rope_backward", table, d_y, offset)
}

/// Checks a (rows, cols) matrix split into `n_heads` heads of even height; returns head_dim.
fn head_rows<T>(
    what: &'static str,
    weight: &[T],
    rows: usize,
    cols: usize,
    n_heads: usize,
) -> Result<usize> {
    if rows.checked_mul(cols) != Some(weight.len()) {
        return Err(Error::DataLength {
            what,
            len: weight.len(),
            shape: vec![rows, cols],
            expected: rows.saturating_mul(cols),
        });
    }
    if n_heads == 0 || !rows.is_multiple_of(n_heads) || !(rows / n_heads).is_multiple_of(2) {
        return Err(Error::ShapeMismatch {
            op: what,
            detail: format!("{rows} rows do not split into {n_heads} heads of even height"),
        });
    }
    Ok(rows / n_heads)
}

/// Moves whole rows: out[to(r)] = weight[r] for each row r.
fn move_rows<T: Copy>(weight: &[T], cols: usize, to: impl Fn(usize) -> usize) -> Vec<T> {
    let mut out = weight.to_vec();
    for (r, row) in weight.chunks_exact(cols.max(1)).enumerate() {
        let t = to(r);
        out[t * cols..(t + 1) * cols].copy_from_slice(row);
    }
    out
}

/// Undoes the permutation llama.cpp's converter applies to W_q and W_k (rows = n_heads·head_dim,
/// cols = the input width), giving back HF's rows for the rotate-half RoPE of [`rope_forward`].
/// The converter reshapes each matrix to (n_heads, 2, head_dim/2, cols) and swaps the middle
/// axes, so its row h·head_dim + 2i + s holds HF's row h·head_dim + s·head_dim/2 + i
/// (s ∈ {0, 1}, i < head_dim/2). Pass the query heads for W_q and the KV heads for W_k (SmolLM2:
/// 9 and 3). Rows move whole, so `T` may be f32 values of a dequantized matrix (cols = the input
/// width) or the bytes of a quantized one (cols = bytes per row).
///
/// ```
/// use spectune::model::layers::{permute_qk_rows, unpermute_qk_rows};
/// // One head of 4 rows, 1 column: HF rows [a0, a1, b0, b1] are stored as [a0, b0, a1, b1].
/// let gguf = [0.0f32, 2.0, 1.0, 3.0];
/// assert_eq!(unpermute_qk_rows(&gguf, 4, 1, 1)?, vec![0.0, 1.0, 2.0, 3.0]);
/// assert_eq!(permute_qk_rows(&[0.0f32, 1.0, 2.0, 3.0], 4, 1, 1)?, gguf.to_vec());
/// # Ok::<(), spectune::Error>(())
/// ```
pub fn unpermute_qk_rows<T: Copy>(
    weight: &[T],
    rows: usize,
    cols: usize,
    n_heads: usize,
) -> Result<Vec<T>> {
    let head_dim = head_rows("unpermute_qk_rows", weight, rows, cols, n_heads)?;
    let half = head_dim / 2;
    Ok(move_rows(weight, cols, |r| {
        let (h, within) = (r / head_dim, r % head_dim);
        let (i, s) = (within / 2, within % 2);
        h * head_dim + s * half + i
    }))
}

/// llama.cpp's converter permutation of W_q / W_k rows (HF row h·head_dim + s·head_dim/2 + i
/// goes to row h·head_dim + 2i + s), the inverse of [`unpermute_qk_rows`]: for writing GGUF
/// back, and for testing.
pub fn permute_qk_rows<T: Copy>(
    weight: &[T],
    rows: usize,
    cols: usize,
    n_heads: usize,
) -> Result<Vec<T>> {
    let head_dim = head_rows("permute_qk_rows", weight, rows, cols, n_heads)?;
    let half = head_dim / 2;
    Ok(move_rows(weight, cols, |r| {
        let (h, within) = (r / head_dim, r % head_dim);
        let (s, i) = (within / half, within % half);
        h * head_dim + 2 * i + s
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::Rng;
    use crate::reference::layers::rope;

    #[test]
    fn unpermute_inverts_the_converter_permutation() {
        // SmolLM2's K shape (3 heads × 64, width 576) shrunk in width, and odd sizes.
        for (n_heads, head_dim, cols) in [(3, 64, 5), (9, 64, 1), (2, 6, 3), (1, 2, 4)] {
            let rows = n_heads * head_dim;
            let w: Vec<u32> = (0..(rows * cols) as u32).collect();
            let permuted = permute_qk_rows(&w, rows, cols, n_heads).unwrap();
            // With head_dim 2 the pair is the half: nothing moves.
            assert_eq!(permuted == w, head_dim == 2);
            assert_eq!(
                unpermute_qk_rows(&permuted, rows, cols, n_heads).unwrap(),
                w
            );
            assert_eq!(
                permute_qk_rows(
                    &unpermute_qk_rows(&w, rows, cols, n_heads).unwrap(),
                    rows,
                    cols,
                    n_heads
                )
                .unwrap(),
                w
            );
        }
    }

    /// What the permutation is for: adjacent-pair RoPE (llama.cpp's) of the permuted weights'
    /// output equals the permuted rotate-half RoPE (HF's) of the original weights' output.
    #[test]
    fn permuted_rows_turn_rotate_half_into_adjacent_pairs() {
        let (n_heads, head_dim, cols, seq, theta) = (3, 8, 5, 4, 100_000.0);
        let rows = n_heads * head_dim;
        let mut rng = Rng::new(42);
        let w: Vec<f64> = (0..rows * cols).map(|_| rng.normal()).collect();
        let x: Vec<f64> = (0..seq * cols).map(|_| rng.normal()).collect();
        let project = |w: &[f64]| -> Vec<f64> {
            (0..seq)
                .flat_map(|t| (0..rows).map(move |r| (t, r)))
                .map(|(t, r)| (0..cols).map(|c| w[r * cols + c] * x[t * cols + c]).sum())
                .collect()
        };
        let offset = 7;
        let hf = rope(&project(&w), 1, seq, n_heads, head_dim, theta, offset);
        let gguf_w = permute_qk_rows(&w, rows, cols, n_heads).unwrap();
        let mut adjacent = project(&gguf_w);
        for t in 0..seq {
            for h in 0..n_heads {
                for i in 0..head_dim / 2 {
                    let angle =
                        (offset + t) as f64 * theta.powf(-((2 * i) as f64) / head_dim as f64);
                    let at = (t * n_heads + h) * head_dim + 2 * i;
                    let (a, b) = (adjacent[at], adjacent[at + 1]);
                    adjacent[at] = a * angle.cos() - b * angle.sin();
                    adjacent[at + 1] = b * angle.cos() + a * angle.sin();
                }
            }
        }
        // Undo the permutation on the rotated activations (each token's rows).
        let back: Vec<f64> = adjacent
            .chunks(rows)
            .flat_map(|token| unpermute_qk_rows(token, rows, 1, n_heads).unwrap())
            .collect();
        for (a, b) in back.iter().zip(&hf) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let w = [0.0f32; 12];
        assert!(matches!(
            unpermute_qk_rows(&w, 5, 2, 1),
            Err(Error::DataLength { .. })
        ));
        // 6 rows into 2 heads of 3: odd head height.
        assert!(matches!(
            unpermute_qk_rows(&w, 6, 2, 2),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(unpermute_qk_rows(&w, 6, 2, 0).is_err());
    }
}
