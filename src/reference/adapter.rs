//! f64 references of the adapters (DESIGN.md §4), written from the definitions of W', not
//! from the kernels: the dense adapted weight, the Cayley map, and central finite
//! differences of L = Σ dY ⊙ (x W'ᵀ), the loss whose gradient a backward pass from dY computes.

/// Row-major (rows × k)·(k × cols).
pub fn matmul(a: &[f64], b: &[f64], rows: usize, k: usize, cols: usize) -> Vec<f64> {
    let mut c = vec![0.0; rows * cols];
    for i in 0..rows {
        for p in 0..k {
            let av = a[i * k + p];
            for j in 0..cols {
                c[i * cols + j] += av * b[p * cols + j];
            }
        }
    }
    c
}

/// Transpose of a (rows × cols) matrix.
pub fn transposed(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..rows * cols)
        .map(|idx| a[(idx % rows) * cols + idx / rows])
        .collect()
}

/// Inverse of a small well-conditioned square matrix by Gauss–Jordan with partial pivoting.
pub fn inverse(a: &[f64], r: usize) -> Vec<f64> {
    let mut m: Vec<f64> = a.to_vec();
    let mut inv: Vec<f64> = (0..r * r)
        .map(|i| if i / r == i % r { 1.0 } else { 0.0 })
        .collect();
    for col in 0..r {
        let piv = (col..r)
            .max_by(|&x, &y| m[x * r + col].abs().total_cmp(&m[y * r + col].abs()))
            .unwrap_or(col);
        for j in 0..r {
            m.swap(col * r + j, piv * r + j);
            inv.swap(col * r + j, piv * r + j);
        }
        let d = m[col * r + col];
        for j in 0..r {
            m[col * r + j] /= d;
            inv[col * r + j] /= d;
        }
        for i in (0..r).filter(|&i| i != col) {
            let f = m[i * r + col];
            for j in 0..r {
                m[i * r + j] -= f * m[col * r + j];
                inv[i * r + j] -= f * inv[col * r + j];
            }
        }
    }
    inv
}

/// Cayley rotation R = (I − K)(I + K)⁻¹ with K = ½(P − Pᵀ).
pub fn cayley(p: &[f64], r: usize) -> Vec<f64> {
    let k: Vec<f64> = (0..r * r)
        .map(|idx| 0.5 * (p[idx] - p[(idx % r) * r + idx / r]))
        .collect();
    let eye = |idx: usize| if idx / r == idx % r { 1.0 } else { 0.0 };
    let minus: Vec<f64> = (0..r * r).map(|i| eye(i) - k[i]).collect();
    let plus: Vec<f64> = (0..r * r).map(|i| eye(i) + k[i]).collect();
    matmul(&minus, &inverse(&plus, r), r, r, r)
}

/// The frozen part of an adapted layer, as the GPU adapter holds it.
#[derive(Debug, Clone)]
pub struct FrozenRef {
    pub m: usize,
    pub n: usize,
    pub r: usize,
    /// W_res (spectral, PiSSA) or W (LoRA), m×n.
    pub base: Vec<f64>,
    /// U₁ (m×r), S₁ (r), V₁ (n×r); empty for LoRA.
    pub u: Vec<f64>,
    pub s: Vec<f64>,
    pub v: Vec<f64>,
}

/// Which adapter, with the data its formula needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KindRef {
    /// Trainable: [A_U (m×r), A_V (n×r), (offset c (r))].
    Additive,
    /// Trainable: [P_U (r×r), P_V (r×r), (scale c (r))].
    Rotation,
    /// Trainable: [A (r×n), B (m×r)], with the scaling α/r.
    Lora(f64),
}

/// W' (m×n) from the definitions of DESIGN.md §4.
pub fn adapted_weight(f: &FrozenRef, kind: KindRef, params: &[Vec<f64>]) -> Vec<f64> {
    let (m, n, r) = (f.m, f.n, f.r);
    let part = match kind {
        KindRef::Additive => {
            let c = params.get(2).cloned().unwrap_or_else(|| vec![0.0; r]);
            let us: Vec<f64> = (0..m * r)
                .map(|i| (f.u[i] + params[0][i]) * (f.s[i % r] + c[i % r]))
                .collect();
            let v_eff: Vec<f64> = (0..n * r).map(|i| f.v[i] + params[1][i]).collect();
            matmul(&us, &transposed(&v_eff, n, r), m, r, n)
        }
        KindRef::Rotation => {
            let c = params.get(2).cloned().unwrap_or_else(|| vec![1.0; r]);
            let (ru, rv) = (cayley(&params[0], r), cayley(&params[1], r));
            let ru_d: Vec<f64> = (0..r * r).map(|i| ru[i] * f.s[i % r] * c[i % r]).collect();
            let core = matmul(&ru_d, &transposed(&rv, r, r), r, r, r);
            let u_core = matmul(&f.u, &core, m, r, r);
            matmul(&u_core, &transposed(&f.v, n, r), m, r, n)
        }
        KindRef::Lora(scaling) => matmul(&params[1], &params[0], m, r, n)
            .into_iter()
            .map(|x| scaling * x)
            .collect(),
    };
    f.base.iter().zip(part).map(|(b, p)| b + p).collect()
}

/// L = Σ dY ⊙ (x W'ᵀ) for x (rows × n), dY (rows × m).
pub fn linear_loss(
    f: &FrozenRef,
    kind: KindRef,
    params: &[Vec<f64>],
    x: &[f64],
    d_y: &[f64],
) -> f64 {
    let w = adapted_weight(f, kind, params);
    let rows = x.len() / f.n;
    let y = matmul(x, &transposed(&w, f.m, f.n), rows, f.n, f.m);
    y.iter().zip(d_y).map(|(a, b)| a * b).sum()
}

/// Central finite differences (step h) of `loss` with respect to every entry of `values`.
pub fn finite_differences(values: &[f64], h: f64, mut loss: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut at = values.to_vec();
    (0..values.len())
        .map(|i| {
            at[i] = values[i] + h;
            let plus = loss(&at);
            at[i] = values[i] - h;
            let minus = loss(&at);
            at[i] = values[i];
            (plus - minus) / (2.0 * h)
        })
        .collect()
}
