//! Quantized frozen weights on the GPU (Q4_1, Q8_0): decoding, embedding lookup and the matmul
//! that decodes as it reads, against the CPU decoder (`io::gguf::dequantize_bytes`, itself
//! bit-exact with gguf-py in `tests/gguf.rs`) and an f64 product.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{block_on, gpu};
use spectune::io::gguf::{dequantize_bytes, GgmlType};
use spectune::linalg::{dequantize, gather_rows, qgemm, Gemm, QuantFormat, QuantMatrix};
use spectune::reference::{assert_close, Rng};
use spectune::{Error, Step, Tensor};

/// Random GGUF blocks for a rows × cols weight: scales in ±[1e-3, 0.1], random quants.
fn random_blocks(format: QuantFormat, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let f16 = |rng: &mut Rng, lo: f64, hi: f64| {
        let sign = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
        half::f16::from_f64(sign * (lo + (hi - lo) * rng.uniform())).to_le_bytes()
    };
    let mut out = Vec::new();
    for _ in 0..rows * cols / 32 {
        out.extend(f16(&mut rng, 1e-3, 0.1));
        if format == QuantFormat::Q4_1 {
            out.extend(f16(&mut rng, 0.0, 0.5));
        }
        let quants = if format == QuantFormat::Q4_1 { 16 } else { 32 };
        out.extend((0..quants).map(|_| (rng.next_u64() >> 56) as u8));
    }
    out
}

fn ggml(format: QuantFormat) -> GgmlType {
    match format {
        QuantFormat::Q4_1 => GgmlType::Q4_1,
        QuantFormat::Q8_0 => GgmlType::Q8_0,
    }
}

/// (GPU weight, its values decoded on the CPU).
fn weight(
    format: QuantFormat,
    rows: usize,
    cols: usize,
    seed: u64,
) -> Option<(QuantMatrix, Vec<f32>)> {
    let gpu = gpu()?;
    let bytes = random_blocks(format, rows, cols, seed);
    let values = dequantize_bytes(ggml(format), &bytes).unwrap();
    Some((
        QuantMatrix::from_ggml(gpu, format, rows, cols, &bytes).unwrap(),
        values,
    ))
}

const FORMATS: [QuantFormat; 2] = [QuantFormat::Q4_1, QuantFormat::Q8_0];

#[test]
fn dequantize_and_gather_match_the_cpu_decoder() {
    for format in FORMATS {
        let Some((w, want)) = weight(format, 37, 96, 1) else {
            return;
        };
        let gpu = gpu().unwrap();
        let ids = Tensor::from_u32(gpu, &[4], &[5, 0, 5, 36]).unwrap();
        let mut step = Step::new(gpu, "decode");
        let dense = dequantize(&mut step, &w).unwrap();
        let rows = gather_rows(&mut step, &w, &ids).unwrap();
        step.submit().unwrap();
        // d·q (+ m) in f32 either way; a fused multiply-add may differ in the last bit.
        let want64: Vec<f64> = want.iter().map(|&v| v as f64).collect();
        assert_close(
            format.name(),
            &block_on(dense.to_vec(gpu)).unwrap(),
            &want64,
            0.0,
            1e-6,
        );
        let picked: Vec<f64> = [5, 0, 5, 36]
            .iter()
            .flat_map(|&r| want64[r * 96..(r + 1) * 96].to_vec())
            .collect();
        assert_close(
            "gathered rows",
            &block_on(rows.to_vec(gpu)).unwrap(),
            &picked,
            0.0,
            1e-6,
        );
        assert_eq!(
            w.gpu_bytes(),
            37 * 3 * if format == QuantFormat::Q4_1 { 20 } else { 36 }
        );
    }
}

/// C = α·op(X)·op(W) + β·C against f64, for y = x Wᵀ (`trans_b`) and dx = dy W.
#[test]
fn quantized_matmul_matches_f64_in_both_orientations() {
    for format in FORMATS {
        // 70 × 160: rows not a multiple of the tile, five blocks per row.
        let (m_out, n_in) = (70, 160);
        let Some((w, values)) = weight(format, m_out, n_in, 2) else {
            return;
        };
        let gpu = gpu().unwrap();
        let mut rng = Rng::new(3);
        for (trans_b, rows) in [(true, 13), (false, 13), (true, 1), (false, 33)] {
            let (k, n) = if trans_b {
                (n_in, m_out)
            } else {
                (m_out, n_in)
            };
            let x = rng.vec_f32(rows * k);
            let c0 = rng.vec_f32(rows * n);
            let (alpha, beta) = (0.75f32, 0.5f32);
            let xt = Tensor::from_slice(gpu, &[rows, k], &x).unwrap();
            let c = Tensor::from_slice(gpu, &[rows, n], &c0).unwrap();
            let mut step = Step::new(gpu, "qgemm");
            let g = Gemm::default().trans_b(trans_b).alpha(alpha).beta(beta);
            qgemm(&mut step, &g, &xt, &w, &c).unwrap();
            step.submit().unwrap();
            let want: Vec<f64> = (0..rows * n)
                .map(|idx| {
                    let (i, j) = (idx / n, idx % n);
                    let dot: f64 = (0..k)
                        .map(|p| {
                            let wv = if trans_b {
                                values[j * n_in + p]
                            } else {
                                values[p * n_in + j]
                            };
                            x[i * k + p] as f64 * wv as f64
                        })
                        .sum();
                    alpha as f64 * dot + beta as f64 * c0[idx] as f64
                })
                .collect();
            // f32 sums of k terms of size ≤ ~1: 1e-5·√k covers the rounding (as for gemm).
            let atol = 1e-5 * (k as f64).sqrt();
            assert_close(
                &format!("{} trans_b={trans_b} rows={rows}", format.name()),
                &block_on(c.to_vec(gpu)).unwrap(),
                &want,
                atol,
                1e-5,
            );
        }
    }
}

#[test]
fn bad_quantized_weights_are_named_errors() {
    let Some(gpu) = gpu() else { return };
    let q = QuantFormat::Q4_1;
    assert!(matches!(
        QuantMatrix::from_ggml(gpu, q, 2, 48, &[0; 60]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        QuantMatrix::from_ggml(gpu, q, 2, 64, &[0; 79]),
        Err(Error::DataLength { expected: 80, .. })
    ));
    let (w, _) = weight(q, 4, 64, 4).unwrap();
    let x = Tensor::zeros(gpu, &[3, 32]).unwrap();
    let y = Tensor::zeros(gpu, &[3, 4]).unwrap();
    let mut step = Step::new(gpu, "bad");
    let err = qgemm(&mut step, &Gemm::default().trans_b(true), &x, &w, &y).unwrap_err();
    assert!(err.to_string().contains("inner dimensions"), "{err}");
}

/// An adapter over a quantized base (W kept in blocks, U₁S₁V₁ᵀ subtracted in factored form)
/// computes what the same adapter over the dense decoded W computes (W_res stored), which
/// `tests/adapter_gpu.rs` checks against f64 and finite differences: forward, every gradient,
/// dx, the merged and the restored weight, for every kind. Both SVDs see the same values, so
/// the two differ only by f32 rounding in a different order (~1e-6 here).
#[test]
fn adapters_over_a_quantized_base_match_the_dense_path() {
    use spectune::adapter::{Adapter, AdapterConfig, AdapterKind};
    let (m, n, rows) = (64, 96, 10);
    let Some((q, values)) = weight(QuantFormat::Q4_1, m, n, 5) else {
        return;
    };
    let gpu = gpu().unwrap();
    let dense = Tensor::from_slice(gpu, &[m, n], &values).unwrap();
    let mut rng = Rng::new(6);
    let x = Tensor::from_slice(gpu, &[rows, n], &rng.vec_f32(rows * n)).unwrap();
    let d_y = Tensor::from_slice(gpu, &[rows, m], &rng.vec_f32(rows * m)).unwrap();
    for kind in [
        AdapterKind::SpectralAdditive,
        AdapterKind::SpectralRotation,
        AdapterKind::Lora,
        AdapterKind::Pissa,
    ] {
        let config = AdapterConfig::new(kind, 4)
            .band(1)
            .train_singular_values(true);
        let on_q = block_on(Adapter::new(gpu, config, &[("l", &q)])).unwrap();
        let on_dense = block_on(Adapter::new(gpu, config, &[("l", &dense)])).unwrap();
        assert_eq!(
            on_q.base_hashes(),
            on_dense.base_hashes(),
            "{kind:?}: hash of the decoded base"
        );
        // Trained-looking values, the same in both.
        for (i, p) in on_q.params().tensors().iter().enumerate() {
            let v: Vec<f32> = rng.vec_f32(p.value.len()).iter().map(|v| 0.1 * v).collect();
            on_q.params().write(gpu, i, &v).unwrap();
            on_dense.params().write(gpu, i, &v).unwrap();
        }
        let run = |a: &Adapter| {
            let layer = a.layer(0);
            let mut step = Step::new(gpu, "quantized adapter");
            let (y, saved) = layer.forward(&mut step, &x, None).unwrap();
            let d_x = layer
                .backward(&mut step, &x, &saved, &d_y, true)
                .unwrap()
                .unwrap();
            let merged = layer.merged_weight(&mut step).unwrap();
            let restored = layer.base_weight(&mut step).unwrap();
            step.submit().unwrap();
            let mut out: Vec<Vec<f32>> = [y, d_x, merged, restored]
                .iter()
                .map(|t| block_on(t.to_vec(gpu)).unwrap())
                .collect();
            out.extend(block_on(a.params().read_grads(gpu)).unwrap());
            out
        };
        let (got, want) = (run(&on_q), run(&on_dense));
        let names = ["y", "dx", "merged W'", "restored W"];
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
            let name = format!("{kind:?} {}", names.get(i).unwrap_or(&"gradient"));
            assert_close(&name, g, &w64, 2e-5, 1e-4);
        }
    }
}
