//! GPU kernels against the f64 CPU reference on awkward shapes.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{block_on, gpu};
use spectune::linalg::{self, Gemm, MatmulKernel, TileConfig};
use spectune::reference::{self, assert_close, Rng};
use spectune::{Error, Step, Tensor};

/// Matmul tolerance: f32 accumulation over k terms of size ~1 has error ~ sqrt(k)·2⁻²⁴·|terms|;
/// atol 1e-5·sqrt(k) covers it with margin and still catches any wrong element (errors there
/// are O(1)).
fn matmul_atol(k: usize) -> f64 {
    1e-5 * (k.max(1) as f64).sqrt()
}

#[allow(clippy::too_many_arguments)]
fn check_gemm(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    batched_a: bool,
    batched_b: bool,
    alpha: f32,
    beta: f32,
    kernel: MatmulKernel,
) {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new((batch * 1_000_003 + m * 10007 + n * 101 + k) as u64);
    let (ba, bb) = (
        if batched_a { batch } else { 1 },
        if batched_b { batch } else { 1 },
    );
    let ha = rng.vec_f32(ba * m * k);
    let hb = rng.vec_f32(bb * k * n);
    let hc = rng.vec_f32(batch * m * n);
    let shape = |bt: usize, r: usize, c: usize, batched: bool| {
        if batched {
            vec![bt, r, c]
        } else {
            vec![r, c]
        }
    };
    let a = Tensor::from_slice(
        gpu,
        &shape(
            ba,
            if ta { k } else { m },
            if ta { m } else { k },
            batched_a,
        ),
        &ha,
    )
    .unwrap();
    let b = Tensor::from_slice(
        gpu,
        &shape(
            bb,
            if tb { n } else { k },
            if tb { k } else { n },
            batched_b,
        ),
        &hb,
    )
    .unwrap();
    let c = Tensor::from_slice(
        gpu,
        &shape(batch, m, n, batch > 1 || batched_a || batched_b),
        &hc,
    )
    .unwrap();
    let g = Gemm::default()
        .alpha(alpha)
        .beta(beta)
        .trans_a(ta)
        .trans_b(tb)
        .kernel(kernel);
    let mut step = Step::new(gpu, "test");
    linalg::gemm(&mut step, &g, &a, &b, &c).unwrap();
    step.submit().unwrap();
    let got = block_on(c.to_vec(gpu)).unwrap();
    let want = reference::gemm(
        batch,
        m,
        n,
        k,
        alpha as f64,
        &ha,
        ta,
        batched_a,
        &hb,
        tb,
        batched_b,
        beta as f64,
        &hc,
    );
    let name =
        format!("gemm {batch}x{m}x{n}x{k} ta={ta} tb={tb} alpha={alpha} beta={beta} {kernel:?}");
    assert_close(
        &name,
        &got,
        &want,
        matmul_atol(k) * (alpha.abs() as f64).max(1.0),
        1e-5,
    );
}

// m ≤ 4 runs one row per invocation (decoding), larger m eight.
const AWKWARD: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (3, 70, 37),
    (4, 130, 64),
    (2, 17, 8),
    (1, 7, 1),
    (1, 1, 9),
    (1, 33, 5),
    (17, 33, 65),
    (8, 8, 8),
    (9, 1, 3),
    (64, 3, 130),
];

#[test]
fn matmul_all_layouts_awkward_shapes() {
    for &(m, n, k) in AWKWARD {
        for ta in [false, true] {
            for tb in [false, true] {
                check_gemm(
                    1,
                    m,
                    n,
                    k,
                    ta,
                    tb,
                    false,
                    false,
                    1.0,
                    0.0,
                    MatmulKernel::Auto,
                );
            }
        }
    }
}

#[test]
fn matmul_large_awkward() {
    // 257×129×511 in every layout: several workgroups in each direction, ragged edges.
    for ta in [false, true] {
        for tb in [false, true] {
            check_gemm(
                1,
                257,
                129,
                511,
                ta,
                tb,
                false,
                false,
                1.0,
                0.0,
                MatmulKernel::Auto,
            );
        }
    }
}

#[test]
fn matmul_alpha_beta_and_batches() {
    check_gemm(
        3,
        17,
        33,
        65,
        false,
        false,
        true,
        true,
        0.5,
        -2.0,
        MatmulKernel::Auto,
    );
    check_gemm(
        3,
        17,
        33,
        65,
        true,
        true,
        true,
        false,
        1.5,
        1.0,
        MatmulKernel::Auto,
    ); // B shared
    check_gemm(
        4,
        9,
        12,
        16,
        false,
        true,
        false,
        true,
        1.0,
        0.25,
        MatmulKernel::Auto,
    ); // A shared
    check_gemm(
        2,
        1,
        1,
        1,
        true,
        false,
        true,
        true,
        2.0,
        3.0,
        MatmulKernel::Auto,
    );
}

#[test]
fn matmul_other_tiles_and_naive() {
    for kernel in [
        MatmulKernel::Naive,
        MatmulKernel::Tiled(TileConfig { wx: 8, wy: 1 }),
        MatmulKernel::Tiled(TileConfig { wx: 16, wy: 8 }),
    ] {
        check_gemm(2, 17, 33, 65, true, false, true, true, 1.0, 0.5, kernel);
        check_gemm(1, 40, 24, 7, false, true, false, false, 1.0, 0.0, kernel);
    }
}

#[test]
fn matmul_k_zero_scales_c() {
    check_gemm(
        1,
        5,
        6,
        0,
        false,
        false,
        false,
        false,
        1.0,
        0.5,
        MatmulKernel::Auto,
    );
}

#[test]
fn matmul_returns_product() {
    let Some(gpu) = gpu() else { return };
    let a = Tensor::from_slice(gpu, &[2, 3], &[1., 2., 3., 4., 5., 6.]).unwrap();
    let b = Tensor::from_slice(gpu, &[3, 1], &[1., 1., 1.]).unwrap();
    let mut step = Step::new(gpu, "test");
    let c = linalg::matmul(&mut step, &a, &b).unwrap();
    step.submit().unwrap();
    assert_eq!(c.shape(), &[2, 1]);
    assert_eq!(block_on(c.to_vec(gpu)).unwrap(), vec![6., 15.]);
}

#[test]
fn matmul_shape_errors_are_named() {
    let Some(gpu) = gpu() else { return };
    let a = Tensor::zeros(gpu, &[2, 3]).unwrap();
    let b = Tensor::zeros(gpu, &[4, 5]).unwrap();
    let mut step = Step::new(gpu, "test");
    let err = linalg::matmul(&mut step, &a, &b).unwrap_err();
    assert!(
        matches!(err, Error::ShapeMismatch { op: "matmul", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("inner dimensions differ"), "{err}");
    let v = Tensor::zeros(gpu, &[3]).unwrap();
    assert!(matches!(
        linalg::matmul(&mut step, &v, &b),
        Err(Error::ShapeMismatch { .. })
    ));
    let a3 = Tensor::zeros(gpu, &[2, 2, 3]).unwrap();
    let b3 = Tensor::zeros(gpu, &[3, 3, 5]).unwrap();
    assert!(linalg::matmul(&mut step, &a3, &b3)
        .unwrap_err()
        .to_string()
        .contains("batch"));
    let too_big = Gemm::default().kernel(MatmulKernel::Tiled(TileConfig { wx: 64, wy: 64 }));
    let c = Tensor::zeros(gpu, &[2, 2]).unwrap();
    let sq = Tensor::zeros(gpu, &[2, 2]).unwrap();
    assert!(linalg::gemm(&mut step, &too_big, &sq, &sq, &c)
        .unwrap_err()
        .to_string()
        .contains("workgroup"));
    assert!(step.is_empty(), "a refused op records nothing");
}

#[test]
fn buffer_over_the_limit_is_refused() {
    let Some(gpu) = gpu() else { return };
    let limit = gpu.limits().max_storage_buffer_binding_size as usize / 4;
    let err = Tensor::uninit(gpu, &[limit + 1]).unwrap_err();
    assert!(matches!(err, Error::BufferTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("bytes"), "{err}");
}

#[test]
fn upload_length_mismatch_is_refused() {
    let Some(gpu) = gpu() else { return };
    let err = Tensor::from_slice(gpu, &[2, 2], &[1.0, 2.0, 3.0]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::DataLength {
                len: 3,
                expected: 4,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn elementwise_ops() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(7);
    for n in [1usize, 17, 1000, 70_001] {
        let (hx, hy) = (rng.vec_f32(n), rng.vec_f32(n));
        let x = Tensor::from_slice(gpu, &[n], &hx).unwrap();
        let y = Tensor::from_slice(gpu, &[n], &hy).unwrap();
        let mut step = Step::new(gpu, "elementwise");
        let sum = linalg::add(&mut step, &x, &y).unwrap();
        let comb = linalg::axpby(&mut step, 2.0, &x, -0.5, &y).unwrap();
        let acc = Tensor::from_slice(gpu, &[n], &hy).unwrap();
        linalg::axpy(&mut step, 3.0, &x, &acc).unwrap();
        linalg::scale(&mut step, -1.5, &acc).unwrap();
        step.submit().unwrap();
        // One f32 rounding per op: rtol 1e-6 and a tiny atol for cancellation.
        let want = |f: &dyn Fn(f64, f64) -> f64| {
            hx.iter()
                .zip(&hy)
                .map(|(&a, &b)| f(a as f64, b as f64))
                .collect::<Vec<_>>()
        };
        assert_close(
            "add",
            &block_on(sum.to_vec(gpu)).unwrap(),
            &want(&|a, b| a + b),
            1e-7,
            1e-6,
        );
        assert_close(
            "axpby",
            &block_on(comb.to_vec(gpu)).unwrap(),
            &want(&|a, b| 2.0 * a - 0.5 * b),
            1e-6,
            1e-6,
        );
        assert_close(
            "axpy+scale",
            &block_on(acc.to_vec(gpu)).unwrap(),
            &want(&|a, b| -1.5 * (b + 3.0 * a)),
            1e-6,
            1e-6,
        );
    }
    let x = Tensor::zeros(gpu, &[3]).unwrap();
    let y = Tensor::zeros(gpu, &[4]).unwrap();
    assert!(matches!(
        linalg::add(&mut Step::new(gpu, "bad"), &x, &y),
        Err(Error::ShapeMismatch { op: "add", .. })
    ));
}

#[test]
fn reductions() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(11);
    for (rows, cols) in [
        (1usize, 1usize),
        (1, 1000),
        (17, 33),
        (70_000, 3),
        (3, 100_003),
    ] {
        let hx = rng.vec_f32(rows * cols);
        let x = Tensor::from_slice(gpu, &[rows, cols], &hx).unwrap();
        let mut step = Step::new(gpu, "reduce");
        let s = linalg::sum(&mut step, &x).unwrap();
        let ss = linalg::sum_squares(&mut step, &x).unwrap();
        let sr = linalg::sum_rows(&mut step, &x).unwrap();
        let ssr = linalg::sum_squares_rows(&mut step, &x).unwrap();
        step.submit().unwrap();
        let total: f64 = hx.iter().map(|&v| v as f64).sum();
        let total_sq: f64 = hx.iter().map(|&v| (v as f64).powi(2)).sum();
        // Tree sums in f32: error ~ log2(n)·2⁻²⁴·Σ|x|; atol 1e-6·n bounds it loosely but stays
        // far below the O(1) error of a dropped or doubled element.
        let atol = 1e-6 * (rows * cols) as f64;
        assert_close(
            "sum",
            &block_on(s.to_vec(gpu)).unwrap(),
            &[total],
            atol,
            1e-5,
        );
        assert_close(
            "sum_squares",
            &block_on(ss.to_vec(gpu)).unwrap(),
            &[total_sq],
            atol,
            1e-5,
        );
        let atol_row = 1e-6 * cols as f64;
        assert_close(
            "sum_rows",
            &block_on(sr.to_vec(gpu)).unwrap(),
            &reference::sum_rows(&hx, cols, |v| v),
            atol_row,
            1e-5,
        );
        assert_close(
            "sum_squares_rows",
            &block_on(ssr.to_vec(gpu)).unwrap(),
            &reference::sum_rows(&hx, cols, |v| v * v),
            atol_row,
            1e-5,
        );
    }
}

#[test]
fn transpose_batched() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(13);
    for (batch, rows, cols) in [
        (1usize, 1usize, 1usize),
        (1, 1, 37),
        (1, 17, 33),
        (3, 40, 7),
        (2, 257, 129),
    ] {
        let hx = rng.vec_f32(batch * rows * cols);
        let shape = if batch == 1 {
            vec![rows, cols]
        } else {
            vec![batch, rows, cols]
        };
        let x = Tensor::from_slice(gpu, &shape, &hx).unwrap();
        let mut step = Step::new(gpu, "transpose");
        let y = linalg::transpose(&mut step, &x).unwrap();
        step.submit().unwrap();
        assert_eq!(y.shape()[y.shape().len() - 2..], [cols, rows]);
        // A copy: exact.
        assert_close(
            "transpose",
            &block_on(y.to_vec(gpu)).unwrap(),
            &reference::transpose(batch, rows, cols, &hx),
            0.0,
            0.0,
        );
    }
}

#[test]
fn one_submit_many_ops_and_pool_reuse() {
    let Some(gpu) = gpu() else { return };
    let x = Tensor::from_slice(gpu, &[4, 4], &[1.0; 16]).unwrap();
    let (created_before, _) = gpu.pool_stats();
    for _ in 0..5 {
        let mut step = Step::new(gpu, "chain");
        let mut t = linalg::matmul(&mut step, &x, &x).unwrap();
        for _ in 0..20 {
            t = linalg::matmul(&mut step, &t, &x).unwrap();
        }
        assert_eq!(step.len(), 21);
        step.submit().unwrap();
        let v = block_on(t.to_vec(gpu)).unwrap();
        assert_eq!(v[0], 4f32.powi(21));
    }
    let (created_after, _) = gpu.pool_stats();
    // Later rounds reuse the first round's buffers.
    assert!(
        created_after - created_before <= 22,
        "pool created {} buffers",
        created_after - created_before
    );
}

#[test]
fn destroyed_device_reports_lost() {
    let gpu = match block_on(spectune::Gpu::request()) {
        Ok(g) => g,
        Err(_) => return assert!(common::gpu().is_none()),
    };
    gpu.destroy();
    let err = Tensor::zeros(&gpu, &[4]).unwrap_err();
    assert!(matches!(err, Error::DeviceLost(_)), "{err}");
}
