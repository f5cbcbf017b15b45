//! The BERT encoder's layers on the GPU (model::layers): every forward against the f64
//! reference (reference::layers), every backward against central finite differences of that
//! reference, and the input checks (shapes, ids, labels) as error values.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{block_on, gpu};
use spectune::model::layers::{
    attention_backward, attention_forward, cross_entropy, embeddings_forward, gelu_backward,
    gelu_forward, layer_norm_backward, layer_norm_forward, mean_pool_backward, mean_pool_forward,
    EmbeddingTables, BERT_LAYER_NORM_EPS,
};
use spectune::reference::adapter::finite_differences;
use spectune::reference::layers::{self as reference, AttentionDims};
use spectune::reference::{assert_close, compare, Rng};
use spectune::{Error, Gpu, Step, Tensor};

/// STYLE.md's tolerances. Forward: f32 kernels summing O(100) terms of size O(1) are ~1e-6
/// from exact. Gradients: the same, plus the differences' own error (h = 1e-5 in f64: ~1e-10
/// truncation, ~1e-11 rounding).
const FWD_ATOL: f64 = 1e-5;
const FWD_RTOL: f64 = 1e-4;
const GRAD_ATOL: f64 = 1e-4;
const GRAD_RTOL: f64 = 1e-3;
const H: f64 = 1e-5;

fn random(rng: &mut Rng, n: usize, scale: f64) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() * scale) as f32).collect()
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

fn upload(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_slice(gpu, shape, data).unwrap()
}

fn read(gpu: &Gpu, t: &Tensor) -> Vec<f32> {
    block_on(t.to_vec(gpu)).unwrap()
}

/// assert_close, also printing the max errors (`cargo test -- --nocapture` shows them).
fn check(name: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    let c = compare(got, want, atol, rtol);
    println!(
        "{name}: max abs {:.2e}, max rel {:.2e}",
        c.max_abs, c.max_rel
    );
    assert_close(name, got, want, atol, rtol);
}

/// A 0/1 padding mask (batch, seq) where sequence b has lengths[b] real tokens.
fn padding_mask(seq: usize, lengths: &[usize]) -> Vec<f32> {
    lengths
        .iter()
        .flat_map(|&len| (0..seq).map(move |t| if t < len { 1.0 } else { 0.0 }))
        .collect()
}

#[test]
fn layer_norm_forward_and_backward() {
    let Some(gpu) = gpu() else { return };
    // MiniLM's width, an odd one, and 1 (y = β: the variance is 0).
    for (rows, cols) in [(6, 384), (5, 17), (3, 1)] {
        let mut rng = Rng::new(cols as u64);
        // Rows off-centre by 3: the two-pass variance must not cancel.
        let x: Vec<f32> = random(&mut rng, rows * cols, 1.0)
            .iter()
            .map(|v| v + 3.0)
            .collect();
        let gamma: Vec<f32> = random(&mut rng, cols, 0.3)
            .iter()
            .map(|v| v + 1.0)
            .collect();
        let beta = random(&mut rng, cols, 0.3);
        let dy = random(&mut rng, rows * cols, 1.0);
        // A leading (batch, seq) shape where it divides, as BERT's activations have.
        let shape: &[usize] = if rows % 3 == 0 {
            &[3, rows / 3, cols]
        } else {
            &[rows, cols]
        };
        let xt = upload(gpu, shape, &x);
        let (gt, bt, dyt) = (
            upload(gpu, &[cols], &gamma),
            upload(gpu, &[cols], &beta),
            upload(gpu, shape, &dy),
        );

        let mut step = Step::new(gpu, "layer norm");
        let (y, stats) = layer_norm_forward(&mut step, &xt, &gt, &bt, BERT_LAYER_NORM_EPS).unwrap();
        assert_eq!(step.len(), 1);
        let grads = layer_norm_backward(&mut step, &xt, &gt, &stats, &dyt, true).unwrap();
        assert_eq!(step.len(), 3);
        let dx_only = layer_norm_backward(&mut step, &xt, &gt, &stats, &dyt, false).unwrap();
        assert_eq!(step.len(), 4);
        assert!(dx_only.d_gamma.is_none());
        step.submit().unwrap();
        assert_eq!(y.shape(), shape);

        let eps = BERT_LAYER_NORM_EPS as f64;
        let (x64, g64, b64, dy64) = (f64s(&x), f64s(&gamma), f64s(&beta), f64s(&dy));
        let label = format!("layer norm {rows}×{cols}");
        check(
            &format!("{label}: y"),
            &read(gpu, &y),
            &reference::layer_norm(&x64, cols, &g64, &b64, eps),
            FWD_ATOL,
            FWD_RTOL,
        );

        let loss_x =
            |x: &[f64]| reference::dot(&reference::layer_norm(x, cols, &g64, &b64, eps), &dy64);
        let fd_x = finite_differences(&x64, H, loss_x);
        let (dx_ref, dg_ref, db_ref) = reference::layer_norm_backward(&x64, cols, &g64, eps, &dy64);
        check(
            &format!("{label}: dx (differences)"),
            &read(gpu, &grads.d_x),
            &fd_x,
            GRAD_ATOL,
            GRAD_RTOL,
        );
        check(
            &format!("{label}: dx (analytic)"),
            &read(gpu, &grads.d_x),
            &dx_ref,
            GRAD_ATOL,
            GRAD_RTOL,
        );
        assert_eq!(read(gpu, &dx_only.d_x), read(gpu, &grads.d_x));
        let fd_g = finite_differences(&g64, H, |g| {
            reference::dot(&reference::layer_norm(&x64, cols, g, &b64, eps), &dy64)
        });
        let fd_b = finite_differences(&b64, H, |b| {
            reference::dot(&reference::layer_norm(&x64, cols, &g64, b, eps), &dy64)
        });
        let (dg, db) = (grads.d_gamma.unwrap(), grads.d_beta.unwrap());
        check(
            &format!("{label}: dγ (differences)"),
            &read(gpu, &dg),
            &fd_g,
            GRAD_ATOL,
            GRAD_RTOL,
        );
        check(
            &format!("{label}: dβ (differences)"),
            &read(gpu, &db),
            &fd_b,
            GRAD_ATOL,
            GRAD_RTOL,
        );
        check(
            &format!("{label}: dγ (analytic)"),
            &read(gpu, &dg),
            &dg_ref,
            GRAD_ATOL,
            GRAD_RTOL,
        );
        check(
            &format!("{label}: dβ (analytic)"),
            &read(gpu, &db),
            &db_ref,
            GRAD_ATOL,
            GRAD_RTOL,
        );
    }
}

#[test]
fn layer_norm_refuses_mismatched_shapes() {
    let Some(gpu) = gpu() else { return };
    let x = Tensor::zeros(gpu, &[4, 8]).unwrap();
    let gamma = Tensor::zeros(gpu, &[7]).unwrap();
    let beta = Tensor::zeros(gpu, &[8]).unwrap();
    let mut step = Step::new(gpu, "bad layer norm");
    let err = layer_norm_forward(&mut step, &x, &gamma, &beta, 1e-12).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{msg}");
    assert!(msg.contains("[7]") && msg.contains("[8]"), "{msg}");
    assert!(step.is_empty());
}

#[test]
fn gelu_forward_and_backward() {
    let Some(gpu) = gpu() else { return };
    // A dense sweep of [−10, 10] (both tails, and 0) and random values.
    let mut x: Vec<f32> = (0..=2000).map(|i| (i as f32 - 1000.0) / 100.0).collect();
    let mut rng = Rng::new(7);
    x.extend(random(&mut rng, 999, 2.0));
    let dy = random(&mut rng, x.len(), 1.0);
    let (xt, dyt) = (upload(gpu, &[x.len()], &x), upload(gpu, &[x.len()], &dy));
    let mut step = Step::new(gpu, "gelu");
    let y = gelu_forward(&mut step, &xt).unwrap();
    let dx = gelu_backward(&mut step, &xt, &dyt).unwrap();
    assert_eq!(step.len(), 2);
    step.submit().unwrap();

    let x64 = f64s(&x);
    let want: Vec<f64> = x64.iter().map(|&v| reference::gelu(v)).collect();
    // Tighter than FWD_ATOL: the erf approximation is 1.4e-8 from exact in gelu; the rest is f32
    // rounding of exp and of x·Φ(x), relative to |y| (up to 10 here).
    check("gelu: y", &read(gpu, &y), &want, 1e-6, 1e-6);
    let want_dx: Vec<f64> = x64
        .iter()
        .zip(&dy)
        .map(|(&v, &g)| reference::gelu_grad(v) * g as f64)
        .collect();
    check("gelu: dx (analytic)", &read(gpu, &dx), &want_dx, 1e-6, 1e-5);
    // Elementwise, so each element's difference is one scalar derivative: cheap for all 3000.
    let fd: Vec<f64> = x64
        .iter()
        .zip(&dy)
        .map(|(&v, &g)| (reference::gelu(v + H) - reference::gelu(v - H)) / (2.0 * H) * g as f64)
        .collect();
    check(
        "gelu: dx (differences)",
        &read(gpu, &dx),
        &fd,
        GRAD_ATOL,
        GRAD_RTOL,
    );
}

#[test]
fn reference_erf_matches_known_values() {
    // erf at 0.5, 1, 2, 3 (Abramowitz–Stegun table 7.1, to 15 digits).
    for (x, want) in [
        (0.5, 0.520_499_877_813_047),
        (1.0, 0.842_700_792_949_715),
        (2.0, 0.995_322_265_018_953),
        (3.0, 0.999_977_909_503_001),
    ] {
        assert!(
            (reference::erf(x) - want).abs() < 1e-14,
            "erf({x}) = {}",
            reference::erf(x)
        );
        assert!((reference::erf(-x) + want).abs() < 1e-14);
    }
}

struct AttentionCase {
    dims: AttentionDims,
    lengths: Vec<usize>,
}

/// Runs forward and backward on the GPU; returns (context, probs, dq, dk, dv) and the inputs.
#[allow(clippy::type_complexity)]
fn run_attention(gpu: &Gpu, case: &AttentionCase, seed: u64) -> (Vec<Vec<f32>>, [Vec<f32>; 5]) {
    let AttentionDims {
        batch,
        seq,
        heads,
        head_dim,
    } = case.dims;
    let width = heads * head_dim;
    let mut rng = Rng::new(seed);
    let n = batch * seq * width;
    let (q, k, v, dc) = (
        random(&mut rng, n, 1.0),
        random(&mut rng, n, 1.0),
        random(&mut rng, n, 1.0),
        random(&mut rng, n, 1.0),
    );
    let mask = padding_mask(seq, &case.lengths);
    let shape = [batch, seq, width];
    let (qt, kt, vt, dct) = (
        upload(gpu, &shape, &q),
        upload(gpu, &shape, &k),
        upload(gpu, &shape, &v),
        upload(gpu, &shape, &dc),
    );
    let mt = upload(gpu, &[batch, seq], &mask);
    let mut step = Step::new(gpu, "attention");
    let (context, probs) = attention_forward(&mut step, &qt, &kt, &vt, &mt, heads).unwrap();
    assert_eq!(step.len(), 1);
    let g = attention_backward(&mut step, &qt, &kt, &vt, &probs, &context, &dct, heads).unwrap();
    assert_eq!(step.len(), 3);
    step.submit().unwrap();
    assert_eq!(probs.shape(), &[batch, heads, seq, seq]);
    let out = [&context, &probs, &g.d_q, &g.d_k, &g.d_v].map(|t| read(gpu, t));
    (vec![q, k, v, mask, dc], out)
}

#[test]
fn attention_forward_and_backward_against_differences() {
    let Some(gpu) = gpu() else { return };
    let cases = [
        // Padding in one sequence, none in the other.
        AttentionCase {
            dims: AttentionDims {
                batch: 2,
                seq: 5,
                heads: 3,
                head_dim: 4,
            },
            lengths: vec![5, 3],
        },
        // Odd sizes, and a sequence with no real token at all (context and gradients 0).
        AttentionCase {
            dims: AttentionDims {
                batch: 3,
                seq: 7,
                heads: 2,
                head_dim: 3,
            },
            lengths: vec![7, 1, 0],
        },
    ];
    for (ci, case) in cases.iter().enumerate() {
        let d = case.dims;
        let label = format!("attention {d:?} lengths {:?}", case.lengths);
        let (inputs, [context, probs, dq, dk, dv]) = run_attention(gpu, case, 100 + ci as u64);
        let [q, k, v, mask, dc] = [0, 1, 2, 3, 4].map(|i| f64s(&inputs[i]));
        let (want_c, want_p) = reference::attention(d, &q, &k, &v, &mask);
        check(
            &format!("{label}: context"),
            &context,
            &want_c,
            FWD_ATOL,
            FWD_RTOL,
        );
        check(&format!("{label}: P"), &probs, &want_p, FWD_ATOL, FWD_RTOL);
        let loss = |q: &[f64], k: &[f64], v: &[f64]| {
            reference::dot(&reference::attention(d, q, k, v, &mask).0, &dc)
        };
        let fd_q = finite_differences(&q, H, |x| loss(x, &k, &v));
        let fd_k = finite_differences(&k, H, |x| loss(&q, x, &v));
        let fd_v = finite_differences(&v, H, |x| loss(&q, &k, x));
        check(
            &format!("{label}: dq (differences)"),
            &dq,
            &fd_q,
            GRAD_ATOL,
            GRAD_RTOL,
        );
        check(
            &format!("{label}: dk (differences)"),
            &dk,
            &fd_k,
            GRAD_ATOL,
            GRAD_RTOL,
        );
        check(
            &format!("{label}: dv (differences)"),
            &dv,
            &fd_v,
            GRAD_ATOL,
            GRAD_RTOL,
        );
        // The analytic reference, used at MiniLM's size below, agrees with the differences.
        let (rq, rk, rv) = reference::attention_backward(d, &q, &k, &v, &mask, &dc);
        for (name, r, fd) in [("dq", &rq, &fd_q), ("dk", &rk, &fd_k), ("dv", &rv, &fd_v)] {
            let worst = r
                .iter()
                .zip(fd.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                worst < 1e-8,
                "{label}: analytic {name} is {worst:e} from the differences"
            );
        }
    }
}

#[test]
fn attention_at_minilm_size() {
    let Some(gpu) = gpu() else { return };
    let cases = [
        // MiniLM's heads and head_dim at full sequence length (2 sequences of the 16, to keep the
        // f64 reference quick), one of them padded. q, k ~ N(0, 1): scores ~ N(0, 1) after the
        // 1/√32, as in a trained model.
        AttentionCase {
            dims: AttentionDims {
                batch: 2,
                seq: 128,
                heads: 12,
                head_dim: 32,
            },
            lengths: vec![128, 77],
        },
        // A sequence that ends part-way into a second 64-row workgroup.
        AttentionCase {
            dims: AttentionDims {
                batch: 2,
                seq: 70,
                heads: 2,
                head_dim: 8,
            },
            lengths: vec![66, 70],
        },
    ];
    for (ci, case) in cases.iter().enumerate() {
        let d = case.dims;
        let label = format!("attention {d:?}");
        let (inputs, [context, probs, dq, dk, dv]) = run_attention(gpu, case, 5 + ci as u64);
        let [q, k, v, mask, dc] = [0, 1, 2, 3, 4].map(|i| f64s(&inputs[i]));
        let (want_c, want_p) = reference::attention(d, &q, &k, &v, &mask);
        check(
            &format!("{label}: context"),
            &context,
            &want_c,
            FWD_ATOL,
            FWD_RTOL,
        );
        check(&format!("{label}: P"), &probs, &want_p, FWD_ATOL, FWD_RTOL);
        // Against the analytic backward (itself checked against differences above): differences
        // over 10⁵ inputs would take minutes.
        let (rq, rk, rv) = reference::attention_backward(d, &q, &k, &v, &mask, &dc);
        check(&format!("{label}: dq"), &dq, &rq, GRAD_ATOL, GRAD_RTOL);
        check(&format!("{label}: dk"), &dk, &rk, GRAD_ATOL, GRAD_RTOL);
        check(&format!("{label}: dv"), &dv, &rv, GRAD_ATOL, GRAD_RTOL);
    }
}

#[test]
fn attention_refuses_bad_shapes() {
    let Some(gpu) = gpu() else { return };
    let q = Tensor::zeros(gpu, &[2, 5, 12]).unwrap();
    let k = Tensor::zeros(gpu, &[2, 4, 12]).unwrap();
    let mask = Tensor::zeros(gpu, &[2, 5]).unwrap();
    let mut step = Step::new(gpu, "bad attention");
    let msg = attention_forward(&mut step, &q, &k, &q, &mask, 3)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("[2, 4, 12]") && msg.contains("[2, 5, 12]"),
        "{msg}"
    );
    let msg = attention_forward(&mut step, &q, &q, &q, &mask, 5)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("5 heads"), "{msg}");
    let bad_mask = Tensor::zeros(gpu, &[5, 2]).unwrap();
    let msg = attention_forward(&mut step, &q, &q, &q, &bad_mask, 3)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("[5, 2]") && msg.contains("[2, 5]"), "{msg}");
    assert!(step.is_empty());
}

#[test]
fn embeddings_sum_the_three_tables() {
    let Some(gpu) = gpu() else { return };
    let (vocab, max_pos, types, width, batch, seq) = (11, 8, 2, 5, 2, 6);
    let mut rng = Rng::new(3);
    let (word, pos, tt) = (
        random(&mut rng, vocab * width, 1.0),
        random(&mut rng, max_pos * width, 1.0),
        random(&mut rng, types * width, 1.0),
    );
    let ids: Vec<u32> = (0..batch * seq).map(|i| (i * 7 % vocab) as u32).collect();
    let type_ids: Vec<u32> = (0..batch * seq).map(|i| (i % seq >= 3) as u32).collect();
    let (wt, pt, tt_t) = (
        upload(gpu, &[vocab, width], &word),
        upload(gpu, &[max_pos, width], &pos),
        upload(gpu, &[types, width], &tt),
    );
    let tables = EmbeddingTables {
        word: &wt,
        position: &pt,
        token_type: &tt_t,
    };
    let mut step = Step::new(gpu, "embeddings");
    let out = embeddings_forward(&mut step, tables, &ids, &type_ids, batch, seq).unwrap();
    assert_eq!(step.len(), 1);
    step.submit().unwrap();
    assert_eq!(out.shape(), &[batch, seq, width]);
    let want = reference::embeddings(
        &f64s(&word),
        &f64s(&pos),
        &f64s(&tt),
        width,
        seq,
        &ids,
        &type_ids,
    );
    // Three f32 additions: within 2 roundings of the exact sum.
    check("embeddings", &read(gpu, &out), &want, 1e-6, 1e-6);

    // Out-of-range ids are errors before anything is recorded.
    let mut step = Step::new(gpu, "bad embeddings");
    let mut bad = ids.clone();
    bad[4] = vocab as u32;
    let err = embeddings_forward(&mut step, tables, &bad, &type_ids, batch, seq).unwrap_err();
    assert_eq!(
        err,
        Error::IndexOutOfRange {
            what: "token ids",
            position: 4,
            value: vocab as u32,
            limit: vocab
        }
    );
    let mut bad_types = type_ids.clone();
    bad_types[0] = 2;
    let err = embeddings_forward(&mut step, tables, &ids, &bad_types, batch, seq).unwrap_err();
    assert!(
        matches!(
            err,
            Error::IndexOutOfRange {
                what: "token type ids",
                position: 0,
                ..
            }
        ),
        "{err}"
    );
    let long: Vec<u32> = vec![0; 9];
    let err = embeddings_forward(&mut step, tables, &long, &long, 1, 9).unwrap_err();
    assert!(err.to_string().contains("position table"), "{err}");
    let err = embeddings_forward(&mut step, tables, &ids[1..], &type_ids, batch, seq).unwrap_err();
    assert!(matches!(err, Error::DataLength { .. }), "{err}");
    assert!(step.is_empty());
}

#[test]
fn mean_pool_forward_and_backward() {
    let Some(gpu) = gpu() else { return };
    let (batch, seq, width) = (3, 6, 7);
    let mut rng = Rng::new(11);
    let x = random(&mut rng, batch * seq * width, 1.0);
    let d_out = random(&mut rng, batch * width, 1.0);
    // Full, padded, and empty (pools to 0) sequences.
    let mask = padding_mask(seq, &[6, 2, 0]);
    let (xt, mt, dt) = (
        upload(gpu, &[batch, seq, width], &x),
        upload(gpu, &[batch, seq], &mask),
        upload(gpu, &[batch, width], &d_out),
    );
    let mut step = Step::new(gpu, "pool");
    let pooled = mean_pool_forward(&mut step, &xt, &mt).unwrap();
    let dx = mean_pool_backward(&mut step, &mt, &dt).unwrap();
    assert_eq!(step.len(), 2);
    step.submit().unwrap();
    let (x64, m64, d64) = (f64s(&x), f64s(&mask), f64s(&d_out));
    check(
        "mean pool",
        &read(gpu, &pooled),
        &reference::mean_pool(&x64, &m64, batch, seq, width),
        FWD_ATOL,
        FWD_RTOL,
    );
    let fd = finite_differences(&x64, H, |x| {
        reference::dot(&reference::mean_pool(x, &m64, batch, seq, width), &d64)
    });
    check(
        "mean pool: dx (differences)",
        &read(gpu, &dx),
        &fd,
        GRAD_ATOL,
        GRAD_RTOL,
    );
}

#[test]
fn cross_entropy_loss_and_gradient() {
    let Some(gpu) = gpu() else { return };
    // Two classes (the sentiment head), and more classes than the 64 invocations per row.
    for (rows, classes) in [(5, 2), (4, 100)] {
        let mut rng = Rng::new(classes as u64);
        let logits = random(&mut rng, rows * classes, 3.0);
        let labels: Vec<u32> = (0..rows).map(|r| ((r * 37 + 1) % classes) as u32).collect();
        let lt = upload(gpu, &[rows, classes], &logits);
        let mut step = Step::new(gpu, "cross entropy");
        let (loss, d_logits) = cross_entropy(&mut step, &lt, &labels).unwrap();
        assert_eq!(step.len(), 3);
        step.submit().unwrap();
        assert_eq!(loss.shape(), &[1]);
        let z = f64s(&logits);
        let label = format!("cross entropy {rows}×{classes}");
        check(
            &format!("{label}: loss"),
            &read(gpu, &loss),
            &[reference::cross_entropy(&z, classes, &labels)],
            FWD_ATOL,
            FWD_RTOL,
        );
        let fd = finite_differences(&z, H, |z| reference::cross_entropy(z, classes, &labels));
        check(
            &format!("{label}: dlogits (differences)"),
            &read(gpu, &d_logits),
            &fd,
            GRAD_ATOL,
            GRAD_RTOL,
        );
    }
    // An out-of-range label is an error before anything is recorded, not a GPU fault.
    let lt = upload(gpu, &[3, 2], &[0.0; 6]);
    let mut step = Step::new(gpu, "bad labels");
    let err = cross_entropy(&mut step, &lt, &[0, 2, 1]).unwrap_err();
    assert_eq!(
        err,
        Error::IndexOutOfRange {
            what: "labels",
            position: 1,
            value: 2,
            limit: 2
        }
    );
    let err = cross_entropy(&mut step, &lt, &[0, 1]).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    assert!(step.is_empty());
}
