//! Quantized frozen weights on the GPU, in GGML's block formats as GGUF stores them (Q4_1,
//! Q8_0): a base model stays as small on the GPU as its file. The matmul decodes them as it
//! reads ([`qgemm`](crate::linalg::qgemm), with `shaders/quant_*.wgsl` as the prelude of
//! `matmul.wgsl`); [`gather_rows`] looks up embedding rows and [`dequantize`] writes a dense
//! copy where one is needed once (an adapter's SVD, a merged model).

use crate::error::{Error, Result};
use crate::gpu::{Gpu, KernelOp, Shader, Step, Tensor};
use crate::linalg::{grid_stride_groups, to_u32};
use crate::shaders;

/// Values per block in both formats.
pub const BLOCK: usize = 32;

/// A GGML block format the GPU decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    /// f16 d, f16 m, 32 × 4-bit q: value = d·q + m (20 bytes per block).
    Q4_1,
    /// f16 d, 32 × i8 q: value = d·q (34 bytes per block; 36 on the GPU, word-aligned).
    Q8_0,
}

impl QuantFormat {
    /// GGML's name.
    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::Q4_1 => "Q4_1",
            QuantFormat::Q8_0 => "Q8_0",
        }
    }

    /// Bytes per block in a GGUF file.
    pub fn file_block_bytes(self) -> usize {
        match self {
            QuantFormat::Q4_1 => 20,
            QuantFormat::Q8_0 => 34,
        }
    }

    /// 32-bit words per block on the GPU.
    /// Bytes of one block of 32 values as kept on the GPU (whole 32-bit words).
    pub fn gpu_block_bytes(self) -> usize {
        self.words_per_block() * 4
    }

    fn words_per_block(self) -> usize {
        match self {
            QuantFormat::Q4_1 => 5,
            QuantFormat::Q8_0 => 9,
        }
    }

    pub(crate) fn matmul_shader(self) -> &'static Shader {
        match self {
            QuantFormat::Q4_1 => &shaders::MATMUL_Q4_1,
            QuantFormat::Q8_0 => &shaders::MATMUL_Q8_0,
        }
    }

    fn dequantize_shader(self) -> &'static Shader {
        match self {
            QuantFormat::Q4_1 => &shaders::DEQUANTIZE_Q4_1,
            QuantFormat::Q8_0 => &shaders::DEQUANTIZE_Q8_0,
        }
    }
}

/// A frozen rows × cols weight in a block format, on the GPU. Rows are whole blocks of 32.
#[derive(Debug)]
pub struct QuantMatrix {
    pub rows: usize,
    pub cols: usize,
    pub format: QuantFormat,
    /// The blocks, row-major, as 32-bit words.
    pub(crate) words: Tensor,
}

impl QuantMatrix {
    /// Uploads a rows × cols weight from its GGUF bytes (row-major blocks), refusing a width
    /// that is not whole blocks and data of the wrong length.
    pub fn from_ggml(
        gpu: &Gpu,
        format: QuantFormat,
        rows: usize,
        cols: usize,
        data: &[u8],
    ) -> Result<QuantMatrix> {
        if rows == 0 || cols == 0 || !cols.is_multiple_of(BLOCK) {
            return Err(Error::ShapeMismatch {
                op: "quantized weight",
                detail: format!(
                    "a {} weight of {rows}×{cols} must be non-empty with rows of whole {BLOCK}-value blocks",
                    format.name()
                ),
            });
        }
        let blocks = rows * (cols / BLOCK);
        let expected = blocks * format.file_block_bytes();
        if data.len() != expected {
            return Err(Error::DataLength {
                what: "quantized weight",
                len: data.len(),
                shape: vec![rows, cols],
                expected,
            });
        }
        let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let words: Vec<u32> = match format {
            QuantFormat::Q4_1 => data.chunks_exact(4).map(word).collect(),
            // Word 0: the f16 scale; then the 32 signed bytes as eight words.
            QuantFormat::Q8_0 => data
                .chunks_exact(34)
                .flat_map(|b| {
                    std::iter::once(u32::from(u16::from_le_bytes([b[0], b[1]])))
                        .chain(b[2..].chunks_exact(4).map(word))
                })
                .collect(),
        };
        debug_assert_eq!(words.len(), blocks * format.words_per_block());
        Ok(QuantMatrix {
            rows,
            cols,
            format,
            words: Tensor::from_u32(gpu, &[words.len()], &words)?,
        })
    }

    /// (rows, cols).
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Bytes the weight takes on the GPU.
    pub fn gpu_bytes(&self) -> usize {
        self.words.len() * 4
    }

    /// Another handle on the same blocks (no copy).
    pub fn alias(&self) -> QuantMatrix {
        QuantMatrix {
            words: self.words.alias(),
            ..*self
        }
    }
}

/// Mirrors `Params` in `dequantize.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GatherParams {
    count: u32,
    cols: u32,
    use_ids: u32,
    _pad: u32,
}

fn record_gather(step: &mut Step, w: &QuantMatrix, ids: Option<&Tensor>) -> Result<Tensor> {
    let gpu = step.gpu();
    let count = ids.map_or(w.rows, Tensor::len);
    let out = Tensor::uninit(gpu, &[count, w.cols])?;
    if count == 0 {
        return Ok(out);
    }
    let unused;
    let ids_tensor = match ids {
        Some(t) => t,
        None => {
            unused = Tensor::zeros(gpu, &[1])?;
            &unused
        }
    };
    let params = GatherParams {
        count: to_u32("dequantize", count)?,
        cols: to_u32("dequantize", w.cols)?,
        use_ids: u32::from(ids.is_some()),
        _pad: 0,
    };
    let kernel = gpu.kernel(w.format.dequantize_shader(), "gather_rows", vec![]);
    step.push(KernelOp::new(
        gpu,
        "dequantize",
        kernel,
        &params,
        &[(1, ids_tensor), (2, &w.words), (3, &out)],
        [grid_stride_groups(count * w.cols / 4, 64), 1, 1],
    )?);
    Ok(out)
}

/// Records the dense f32 copy of `w` (rows × cols) and returns it.
pub fn dequantize(step: &mut Step, w: &QuantMatrix) -> Result<Tensor> {
    record_gather(step, w, None)
}

/// Records out[t] = w[ids[t]] (an embedding lookup) and returns out (count × cols). `ids` is a
/// u32 tensor whose values the caller has checked against `w.rows` (see
/// [`upload_ids`](crate::model::layers::upload_ids)).
pub fn gather_rows(step: &mut Step, w: &QuantMatrix, ids: &Tensor) -> Result<Tensor> {
    record_gather(step, w, Some(ids))
}

/// Quantizes row-major values (whole blocks of 32) to GGML blocks on the host, round to
/// nearest as ggml's reference quantizers do: for generated test models and for writing files.
pub fn quantize(format: QuantFormat, values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / BLOCK * format.file_block_bytes());
    for block in values.chunks(BLOCK) {
        match format {
            QuantFormat::Q8_0 => {
                let amax = block.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                let d = amax / 127.0;
                let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                out.extend(half::f16::from_f32(d).to_le_bytes());
                out.extend(block.iter().map(|v| (v * inv).round() as i8 as u8));
            }
            QuantFormat::Q4_1 => {
                let lo = block.iter().fold(f32::INFINITY, |a, &v| a.min(v));
                let hi = block.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                let d = (hi - lo) / 15.0;
                let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                out.extend(half::f16::from_f32(d).to_le_bytes());
                out.extend(half::f16::from_f32(lo).to_le_bytes());
                let q = |v: f32| (((v - lo) * inv).round() as u8).min(15);
                out.extend((0..16).map(|i| q(block[i]) | (q(block[i + 16]) << 4)));
            }
        }
    }
    out
}
