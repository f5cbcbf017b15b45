//! The matmul family: C = α·op(A)·op(B) + β·C, op = transpose or not, batched, any shape.
//! Kernel: `shaders/matmul.wgsl` (register-blocked, vec4 loads); baseline `matmul_naive.wgsl`.

use crate::error::{Error, Result};
use crate::gpu::{AdapterInfo, Defines, KernelOp, Step, Tensor};
use crate::linalg::quant::QuantMatrix;
use crate::linalg::{as_batched, layout, to_u32};
use crate::shaders;

/// Mirrors `Params` in `matmul.wgsl` and `matmul_naive.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    stride_a: u32,
    stride_b: u32,
    stride_c: u32,
    lda: u32,
    ldb: u32,
    alpha: f32,
    beta: f32,
    _pad: u32,
}

/// The workgroup of the tiled kernel: `wx × wy` invocations, each computing an 8 × 16 block of C.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TileConfig {
    pub wx: u32,
    pub wy: u32,
}

/// Rows and columns of C per invocation, fixed by `matmul.wgsl`.
const BLOCK_ROWS: u32 = 8;
/// At most this many rows of C, an invocation computes one row (`ROWS` = 1 in the shader).
const SKINNY_ROWS: usize = 4;
const BLOCK_COLS: u32 = 16;

impl TileConfig {
    /// Rows of C per workgroup.
    pub fn block_rows(&self) -> u32 {
        self.wy * BLOCK_ROWS
    }

    /// Columns of C per workgroup.
    pub fn block_cols(&self) -> u32 {
        self.wx * BLOCK_COLS
    }

    /// The workgroup tuned for this adapter (see the benchmark table in the README).
    pub fn for_adapter(info: &AdapterInfo) -> TileConfig {
        if info.is_software() {
            // Measured on lavapipe (2 cores), GFLOP/s at 512³ / 1024³ / 2048³: 8x4 31/30/25,
            // 8x8 31/30/30, 16x8 31/28/28, 4x8 22/21/18. Taller groups share B's panel across
            // more rows, which matters once it leaves L2. On Chromium's SwiftShader every shape
            // from 4x1 to 32x8 gives 5.6–6.5 at 1024³ (`node bench/browser-bench.mjs --tune`).
            TileConfig { wx: 8, wy: 8 }
        } else {
            // 128 invocations, a 64 x 256 block of C per workgroup. Not yet measured on a real GPU.
            TileConfig { wx: 16, wy: 8 }
        }
    }
}

impl TileConfig {
    /// The adapter's tile reshaped for a skinny C (m×n): the SVD's products have m or n = ℓ ≈ 20,
    /// where a 64×128 block would leave most invocations idle. The short side gets just enough
    /// invocations to cover it; the long side gets the rest of the adapter's invocation count.
    pub fn for_shape(info: &AdapterInfo, m: usize, n: usize) -> TileConfig {
        let t = TileConfig::for_adapter(info);
        let count = t.wx * t.wy;
        let (m, n) = (m.max(1) as u32, n.max(1) as u32);
        if m < t.block_rows() {
            let wy = m.div_ceil(BLOCK_ROWS);
            TileConfig {
                wx: (count / wy).clamp(1, n.div_ceil(BLOCK_COLS)),
                wy,
            }
        } else if n < t.block_cols() {
            let wx = n.div_ceil(BLOCK_COLS);
            TileConfig {
                wx,
                wy: (count / wx).clamp(1, m.div_ceil(BLOCK_ROWS)),
            }
        } else {
            t
        }
    }
}

/// Which kernel runs a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatmulKernel {
    /// The tiled kernel with the adapter's tuned tile, reshaped for skinny products.
    #[default]
    Auto,
    /// The tiled kernel with a given tile.
    Tiled(TileConfig),
    /// The one-invocation-per-output baseline.
    Naive,
}

/// Options of a product C = α·op(A)·op(B) + β·C.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gemm {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
    pub kernel: MatmulKernel,
}

impl Default for Gemm {
    fn default() -> Self {
        Gemm {
            alpha: 1.0,
            beta: 0.0,
            trans_a: false,
            trans_b: false,
            kernel: MatmulKernel::Auto,
        }
    }
}

impl Gemm {
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }
    pub fn beta(mut self, beta: f32) -> Self {
        self.beta = beta;
        self
    }
    /// Use Aᵀ: A is stored (k, m).
    pub fn trans_a(mut self, yes: bool) -> Self {
        self.trans_a = yes;
        self
    }
    /// Use Bᵀ: B is stored (n, k).
    pub fn trans_b(mut self, yes: bool) -> Self {
        self.trans_b = yes;
        self
    }
    pub fn kernel(mut self, kernel: MatmulKernel) -> Self {
        self.kernel = kernel;
        self
    }
}

/// Shapes of one product, checked.
struct Dims {
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    batch_a: usize,
    batch_b: usize,
}

fn check_dims(g: &Gemm, a: &[usize], b: &[usize], c: &[usize]) -> Result<Dims> {
    let (batch_a, ra, ca) = as_batched("matmul", "A", a)?;
    let (batch_b, rb, cb) = as_batched("matmul", "B", b)?;
    let (batch, m, n) = as_batched("matmul", "C", c)?;
    let (am, ak) = if g.trans_a { (ca, ra) } else { (ra, ca) };
    let (bk, bn) = if g.trans_b { (cb, rb) } else { (rb, cb) };
    let mismatch = |detail: String| {
        Err(Error::ShapeMismatch {
            op: "matmul",
            detail,
        })
    };
    if ak != bk {
        return mismatch(format!(
            "op(A) is {am}×{ak} but op(B) is {bk}×{bn}: inner dimensions differ (A {a:?}, B {b:?})"
        ));
    }
    if (am, bn) != (m, n) {
        return mismatch(format!(
            "op(A)·op(B) is {am}×{bn} but C is {m}×{n} (C {c:?})"
        ));
    }
    for (name, bx) in [("A", batch_a), ("B", batch_b)] {
        if bx != 1 && bx != batch {
            return mismatch(format!(
                "{name} has batch {bx} but C has batch {batch} (a batch of 1 broadcasts)"
            ));
        }
    }
    Ok(Dims {
        batch,
        m,
        n,
        k: ak,
        batch_a,
        batch_b,
    })
}

/// Records C = α·op(A)·op(B) + β·C into `step`. A, B, C are 2D or 3D (batch first); A or B with
/// batch 1 is shared by every batch of C.
///
/// ```no_run
/// # async fn demo(gpu: &spectune::Gpu, x: &spectune::Tensor, w: &spectune::Tensor, y: &spectune::Tensor) -> spectune::Result<()> {
/// use spectune::linalg::{gemm, Gemm};
/// let mut step = spectune::Step::new(gpu, "linear");
/// gemm(&mut step, &Gemm::default().trans_b(true), x, w, y)?; // y = x Wᵀ
/// step.submit()?;
/// # Ok(()) }
/// ```
pub fn gemm(step: &mut Step, g: &Gemm, a: &Tensor, b: &Tensor, c: &Tensor) -> Result<()> {
    record(step, g, a, Operand::Dense(b), c)
}

/// Records C = α·op(A)·op(W) + β·C with W a quantized frozen weight (2D), decoded as the
/// tiled kernel reads it: y = x Wᵀ with `trans_b`, dx = dy W without. Never the naive kernel.
pub fn qgemm(step: &mut Step, g: &Gemm, a: &Tensor, w: &QuantMatrix, c: &Tensor) -> Result<()> {
    record(step, g, a, Operand::Quant(w), c)
}

/// The B operand: f32 storage, or a quantized frozen weight.
#[derive(Clone, Copy)]
enum Operand<'a> {
    Dense(&'a Tensor),
    Quant(&'a QuantMatrix),
}

fn record(step: &mut Step, g: &Gemm, a: &Tensor, b: Operand, c: &Tensor) -> Result<()> {
    let b_shape = match b {
        Operand::Dense(t) => t.shape().to_vec(),
        Operand::Quant(w) => w.shape().to_vec(),
    };
    let d = check_dims(g, a.shape(), &b_shape, c.shape())?;
    if d.batch == 0 || d.m == 0 || d.n == 0 {
        return Ok(());
    }
    let gpu = step.gpu;
    let (m, n, k) = (
        to_u32("matmul", d.m)?,
        to_u32("matmul", d.n)?,
        to_u32("matmul", d.k)?,
    );
    let trans = |t: bool| if t { "true" } else { "false" }.to_string();
    let mut defines: Defines = vec![("TRANS_A", trans(g.trans_a)), ("TRANS_B", trans(g.trans_b))];

    let tile = match (g.kernel, b) {
        (_, Operand::Quant(_)) => Some(TileConfig::for_shape(gpu.info(), d.m, d.n)),
        (MatmulKernel::Naive, _) => None,
        (MatmulKernel::Tiled(t), _) => Some(t),
        (MatmulKernel::Auto, _) => Some(TileConfig::for_shape(gpu.info(), d.m, d.n)),
    };
    if let Some(t) = tile {
        check_workgroup(gpu.limits(), t)?;
    }
    // The tiled kernel reads A and B as vec4 rows: pad a stored row length that is not a
    // multiple of 4 (rare in models; common for the SVD's r + p columns).
    // A quantized B's rows are whole blocks of 32 already.
    let padded_a;
    let padded_b;
    let (a, b) = match (tile, b) {
        (Some(_), _) => {
            let a_cols = *a.shape().last().unwrap_or(&0);
            padded_a = (!a_cols.is_multiple_of(4))
                .then(|| layout::pad_rows(step, a, a_cols.next_multiple_of(4)))
                .transpose()?;
            let b = match b {
                Operand::Dense(t) => {
                    let b_cols = *t.shape().last().unwrap_or(&0);
                    padded_b = (!b_cols.is_multiple_of(4))
                        .then(|| layout::pad_rows(step, t, b_cols.next_multiple_of(4)))
                        .transpose()?;
                    Operand::Dense(padded_b.as_ref().unwrap_or(t))
                }
                quant => quant,
            };
            (padded_a.as_ref().unwrap_or(a), b)
        }
        (None, b) => (a, b),
    };
    // (binding, shader, stored row length: padded for dense B, whole blocks for quantized B)
    let (b_tensor, b_shader, ldb) = match b {
        Operand::Dense(t) => (t, &shaders::MATMUL, *t.shape().last().unwrap_or(&0)),
        Operand::Quant(w) => (&w.words, w.format.matmul_shader(), w.cols),
    };
    let lda = *a.shape().last().unwrap_or(&0);
    // Stored rows per batch (a quantized B is 2D, so never batched).
    let rows_a = a.len() / lda.max(1) / d.batch_a.max(1);
    let rows_b = b_shape[b_shape.len() - 2];
    let params = MatmulParams {
        m,
        n,
        k,
        batch: to_u32("matmul", d.batch)?,
        stride_a: if d.batch_a == 1 {
            0
        } else {
            to_u32("matmul", rows_a * lda)?
        },
        stride_b: if d.batch_b == 1 {
            0
        } else {
            to_u32("matmul", rows_b * ldb)?
        },
        stride_c: to_u32("matmul", d.m * d.n)?,
        lda: to_u32("matmul", lda)?,
        ldb: to_u32("matmul", ldb)?,
        alpha: g.alpha,
        beta: g.beta,
        _pad: 0,
    };
    let op = match tile {
        Some(t) => {
            // A C of a few rows (one decoded token) gets one row per invocation, not eight
            // (not with Aᵀ, whose loads transpose blocks of four rows).
            let rows = if d.m <= SKINNY_ROWS && !g.trans_a {
                1
            } else {
                BLOCK_ROWS
            };
            defines.extend([
                ("WX", t.wx.to_string()),
                ("WY", t.wy.to_string()),
                ("ROWS", rows.to_string()),
            ]);
            let kernel = gpu.kernel(b_shader, "matmul", defines);
            let groups = [
                d.n.div_ceil(t.block_cols() as usize) as u64,
                d.m.div_ceil((t.wy * rows) as usize) as u64,
                d.batch as u64,
            ];
            KernelOp::new(
                gpu,
                "matmul",
                kernel,
                &params,
                &[(1, a), (2, b_tensor), (3, c)],
                groups,
            )?
        }
        None => {
            let kernel = gpu.kernel(&shaders::MATMUL_NAIVE, "matmul_naive", defines);
            let groups = [
                d.n.div_ceil(16) as u64,
                d.m.div_ceil(16) as u64,
                d.batch as u64,
            ];
            KernelOp::new(
                gpu,
                "matmul",
                kernel,
                &params,
                &[(1, a), (2, b_tensor), (3, c)],
                groups,
            )?
        }
    };
    step.push(op);
    Ok(())
}

/// Refuses a workgroup the device cannot run, before a pipeline is built for it.
fn check_workgroup(limits: &wgpu::Limits, t: TileConfig) -> Result<()> {
    let invocations = t.wx.saturating_mul(t.wy);
    if t.wx == 0
        || t.wy == 0
        || t.wx > limits.max_compute_workgroup_size_x
        || t.wy > limits.max_compute_workgroup_size_y
        || invocations > limits.max_compute_invocations_per_workgroup
    {
        return Err(Error::ShapeMismatch {
            op: "matmul",
            detail: format!(
                "a {}x{} workgroup does not fit this GPU (at most {}x{} and {} invocations)",
                t.wx,
                t.wy,
                limits.max_compute_workgroup_size_x,
                limits.max_compute_workgroup_size_y,
                limits.max_compute_invocations_per_workgroup
            ),
        });
    }
    Ok(())
}

/// Records C = A·B into `step` and returns C (2D, or 3D when A or B is batched).
pub fn matmul(step: &mut Step, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (batch_a, m, _) = as_batched("matmul", "A", a.shape())?;
    let (batch_b, _, n) = as_batched("matmul", "B", b.shape())?;
    let batch = batch_a.max(batch_b);
    let shape: Vec<usize> = if a.shape().len() == 3 || b.shape().len() == 3 {
        vec![batch, m, n]
    } else {
        vec![m, n]
    };
    let c = Tensor::uninit(step.gpu, &shape)?;
    gemm(step, &Gemm::default(), a, b, &c)?;
    Ok(c)
}

/// Every define set the tiled and naive kernels can be compiled with, for shader validation.
pub fn matmul_variants() -> Vec<(crate::gpu::Shader, &'static str, Defines)> {
    let tiles = [
        TileConfig::for_adapter(&AdapterInfo {
            name: "llvmpipe".into(),
            backend: String::new(),
            device_type: "Cpu".into(),
            driver: String::new(),
        }),
        TileConfig::for_adapter(&AdapterInfo {
            name: "gpu".into(),
            backend: String::new(),
            device_type: "DiscreteGpu".into(),
            driver: String::new(),
        }),
    ];
    let mut out = Vec::new();
    for ta in [false, true] {
        for tb in [false, true] {
            let base: Defines = vec![("TRANS_A", ta.to_string()), ("TRANS_B", tb.to_string())];
            out.push((shaders::MATMUL_NAIVE, "matmul_naive", base.clone()));
            for t in tiles {
                for rows in [1, BLOCK_ROWS] {
                    let mut d = base.clone();
                    d.extend([
                        ("WX", t.wx.to_string()),
                        ("WY", t.wy.to_string()),
                        ("ROWS", rows.to_string()),
                    ]);
                    for shader in [shaders::MATMUL, shaders::MATMUL_Q4_1, shaders::MATMUL_Q8_0] {
                        out.push((shader, "matmul", d.clone()));
                    }
                }
            }
        }
    }
    out
}
