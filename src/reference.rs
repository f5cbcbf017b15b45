//! CPU references the GPU kernels are tested against: plain f64 loops, written for clarity,
//! plus a seeded generator and the one comparison helper every test uses.

/// A small seeded generator (SplitMix64): reproducible test data without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// `n` values uniform in [-1, 1), as f32.
    pub fn vec_f32(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| (2.0 * self.uniform() - 1.0) as f32).collect()
    }
}

/// C = α·op(A)·op(B) + β·C in f64, batched like `linalg::gemm`: A is (batch_a, m, k) or, with
/// `trans_a`, (batch_a, k, m); B is (batch_b, k, n) or (batch_b, n, k); batch 1 broadcasts.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    alpha: f64,
    a: &[f32],
    trans_a: bool,
    batched_a: bool,
    b: &[f32],
    trans_b: bool,
    batched_b: bool,
    beta: f64,
    c: &[f32],
) -> Vec<f64> {
    let mut out = vec![0.0; batch * m * n];
    for z in 0..batch {
        let a0 = if batched_a { z * m * k } else { 0 };
        let b0 = if batched_b { z * k * n } else { 0 };
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    let av = if trans_a { a[a0 + p * m + i] } else { a[a0 + i * k + p] };
                    let bv = if trans_b { b[b0 + j * k + p] } else { b[b0 + p * n + j] };
                    s += av as f64 * bv as f64;
                }
                let idx = z * m * n + i * n + j;
                let prev = if beta != 0.0 { beta * c[idx] as f64 } else { 0.0 };
                out[idx] = alpha * s + prev;
            }
        }
    }
    out
}

/// Y = Xᵀ for each of `batch` (rows, cols) matrices.
pub fn transpose(batch: usize, rows: usize, cols: usize, x: &[f32]) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for z in 0..batch {
        for i in 0..rows {
            for j in 0..cols {
                y[z * rows * cols + j * rows + i] = x[z * rows * cols + i * cols + j] as f64;
            }
        }
    }
    y
}

/// Σ_j f(x[r, j]) for each row of a (rows, cols) matrix.
pub fn sum_rows(x: &[f32], cols: usize, f: impl Fn(f64) -> f64) -> Vec<f64> {
    x.chunks(cols.max(1)).map(|row| row.iter().map(|&v| f(v as f64)).sum()).collect()
}

/// How far `got` is from `want`.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// First index where |got − want| > atol + rtol·|want|, if any.
    pub first_bad: Option<usize>,
    pub max_abs: f64,
    pub max_rel: f64,
}

/// Compares element by element with the tolerance |got − want| ≤ atol + rtol·|want|.
pub fn compare(got: &[f32], want: &[f64], atol: f64, rtol: f64) -> Comparison {
    let mut cmp = Comparison { first_bad: None, max_abs: 0.0, max_rel: 0.0 };
    if got.len() != want.len() {
        cmp.first_bad = Some(got.len().min(want.len()));
        return cmp;
    }
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let diff = (g as f64 - w).abs();
        cmp.max_abs = cmp.max_abs.max(diff);
        if w != 0.0 {
            cmp.max_rel = cmp.max_rel.max(diff / w.abs());
        }
        // NaN fails too: it is not within any tolerance.
        let within = diff <= atol + rtol * w.abs();
        if !within && cmp.first_bad.is_none() {
            cmp.first_bad = Some(i);
        }
    }
    cmp
}

/// Panics with a full report (name, first bad index and values, max abs/rel, tolerance) when
/// `got` is not within tolerance of `want`. For tests.
pub fn assert_close(name: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length {} != expected {}", got.len(), want.len());
    let cmp = compare(got, want, atol, rtol);
    if let Some(i) = cmp.first_bad {
        panic!(
            "{name}: first mismatch at index {i}: got {} want {} (max abs {:.3e}, max rel {:.3e}; tolerance atol {atol:e} + rtol {rtol:e}·|want|)",
            got[i], want[i], cmp.max_abs, cmp.max_rel
        );
    }
}
