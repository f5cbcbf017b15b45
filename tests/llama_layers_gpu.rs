//! The Llama decoder's layers on the GPU (model::layers: RMSNorm, RoPE, SwiGLU, causal
//! grouped-query attention, also over a KV cache): every forward against the f64 reference
//! (reference::layers), every backward against central finite differences of that reference
//! and against its analytic backward, dispatch counts, and bad shapes as error values.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{block_on, gpu};
use spectune::model::layers::{
    attention_backward_with, attention_forward, attention_forward_with, rms_norm_backward,
    rms_norm_forward, rope_backward, rope_forward, swiglu_backward, swiglu_forward,
    AttentionConfig, RopeTable,
};
use spectune::reference::adapter::finite_differences;
use spectune::reference::layers::{self as reference, AttentionDims, GroupedAttentionDims};
use spectune::reference::{assert_close, compare, Rng};
use spectune::{Error, Gpu, Step, Tensor};

/// STYLE.md's tolerances, as in tests/layers_gpu.rs. Forward: f32 kernels summing O(100) terms
/// of size O(1) are ~1e-6 from exact. Gradients: the same, plus the differences' own error
/// (h = 1e-5 in f64: ~1e-10 truncation, ~1e-11 rounding).
const FWD_ATOL: f64 = 1e-5;
const FWD_RTOL: f64 = 1e-4;
const GRAD_ATOL: f64 = 1e-4;
const GRAD_RTOL: f64 = 1e-3;
const H: f64 = 1e-5;

/// SmolLM2-135M (DESIGN.md §5): `llama.rope.freq_base` and `layer_norm_rms_epsilon`.
const SMOLLM2_THETA: f64 = 100_000.0;
const SMOLLM2_RMS_EPS: f32 = 1e-5;

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

#[test]
fn rms_norm_forward_and_backward() {
    let Some(gpu) = gpu() else { return };
    // SmolLM2's width, an odd one, and 1 (y = ±weight·(1 − O(eps))).
    for (rows, cols) in [(3, 576), (5, 17), (3, 1)] {
        let mut rng = Rng::new(cols as u64);
        // Off-centre rows: RMSNorm does not subtract the mean, so the offset matters.
        let x: Vec<f32> = random(&mut rng, rows * cols, 1.0)
            .iter()
            .map(|v| v + 0.5)
            .collect();
        let weight: Vec<f32> = random(&mut rng, cols, 0.3)
            .iter()
            .map(|v| v + 1.0)
            .collect();
        let dy = random(&mut rng, rows * cols, 1.0);
        let shape: &[usize] = if rows % 3 == 0 {
            &[3, rows / 3, cols]
        } else {
            &[rows, cols]
        };
        let (xt, wt, dyt) = (
            upload(gpu, shape, &x),
            upload(gpu, &[cols], &weight),
            upload(gpu, shape, &dy),
        );
        let mut step = Step::new(gpu, "rms norm");
        let (y, rstd) = rms_norm_forward(&mut step, &xt, &wt, SMOLLM2_RMS_EPS).unwrap();
        assert_eq!(step.len(), 1);
        let grads = rms_norm_backward(&mut step, &xt, &wt, &rstd, &dyt, true).unwrap();
        assert_eq!(step.len(), 3);
        let dx_only = rms_norm_backward(&mut step, &xt, &wt, &rstd, &dyt, false).unwrap();
        assert_eq!(step.len(), 4);
        assert!(dx_only.d_weight.is_none());
        step.submit().unwrap();
        assert_eq!(y.shape(), shape);
        assert_eq!(rstd.shape(), &[rows]);

        let eps = SMOLLM2_RMS_EPS as f64;
        let (x64, w64, dy64) = (f64s(&x), f64s(&weight), f64s(&dy));
        let label = format!("rms norm {rows}×{cols}");
        check(
            &format!("{label}: y"),
            &read(gpu, &y),
            &reference::rms_norm(&x64, cols, &w64, eps),
            FWD_ATOL,
            FWD_RTOL,
        );
        let fd_x = finite_differences(&x64, H, |x| {
            reference::dot(&reference::rms_norm(x, cols, &w64, eps), &dy64)
        });
        let fd_w = finite_differences(&w64, H, |w| {
            reference::dot(&reference::rms_norm(&x64, cols, w, eps), &dy64)
        });
        let (dx_ref, dw_ref) = reference::rms_norm_backward(&x64, cols, &w64, eps, &dy64);
        let dx = read(gpu, &grads.d_x);
        let dw = read(gpu, grads.d_weight.as_ref().unwrap());
        check(
            &format!("{label}: dx (differences)"),
            &dx,
            &fd_x,
            GRAD_ATOL,
            GRAD_RTOL,
        );
        check(
            &format!("{label}: dx (analytic)"),
            &dx,
            &dx_ref,
            GRAD_ATOL,
            GRAD_RTOL,
        );
        check(
            &format!("{label}: dweight (differences)"),
            &dw,
            &fd_w,
            GRAD_ATOL,
            GRAD_RTOL,
        );
        check(
            &format!("{label}: dweight (analytic)"),
            &dw,
            &dw_ref,
            GRAD_ATOL,
            GRAD_RTOL,
        );
        assert_eq!(read(gpu, &dx_only.d_x), dx);
    }
}

#[test]
fn rms_norm_refuses_mismatched_shapes() {
    let Some(gpu) = gpu() else { return };
    let x = Tensor::zeros(gpu, &[4, 8]).unwrap();
    let weight = Tensor::zeros(gpu, &[7]).unwrap();
    let mut step = Step::new(gpu, "bad rms norm");
    let err = rms_norm_forward(&mut step, &x, &weight, 1e-5).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{msg}");
    assert!(msg.contains("[7]") && msg.contains("[8]"), "{msg}");
    assert!(step.is_empty());
}

#[test]
fn rope_forward_and_backward() {
    let Some(gpu) = gpu() else { return };
    // (batch, seq, heads, head_dim, offset): small odd sizes from position 0 and past a cache,
    // SmolLM2's head_dim at long positions, and the smallest head (one pair).
    for (batch, seq, heads, head_dim, offset) in [
        (2, 5, 3, 8, 0),
        (1, 3, 2, 6, 13),
        (1, 4, 3, 64, 8000),
        (3, 2, 1, 2, 1),
    ] {
        let table = RopeTable::new(gpu, head_dim, SMOLLM2_THETA, 8192).unwrap();
        let mut rng = Rng::new((head_dim + offset) as u64);
        let n = batch * seq * heads * head_dim;
        let (x, dy) = (random(&mut rng, n, 1.0), random(&mut rng, n, 1.0));
        // The one-pair case as (batch, seq, heads, head_dim), the others as the projections
        // make them.
        let shape = if head_dim == 2 {
            vec![batch, seq, heads, head_dim]
        } else {
            vec![batch, seq, heads * head_dim]
        };
        let (xt, dyt) = (upload(gpu, &shape, &x), upload(gpu, &shape, &dy));
        let mut step = Step::new(gpu, "rope");
        let y = rope_forward(&mut step, &table, &xt, offset).unwrap();
        assert_eq!(step.len(), 1);
        let dx = rope_backward(&mut step, &table, &dyt, offset).unwrap();
        assert_eq!(step.len(), 2);
        let round_trip = rope_backward(&mut step, &table, &y, offset).unwrap();
        step.submit().unwrap();
        assert_eq!(y.shape(), &shape[..]);

        let label = format!("rope {shape:?} offset {offset}");
        let (x64, dy64) = (f64s(&x), f64s(&dy));
        let rope =
            |x: &[f64]| reference::rope(x, batch, seq, heads, head_dim, SMOLLM2_THETA, offset);
        // Tighter than FWD_*: each output is x_a·cos − x_b·sin with cos and sin rounded once
        // from f64 (6e-8 relative): a few 1e-7 for |x| up to ~4.
        check(
            &format!("{label}: y"),
            &read(gpu, &y),
            &rope(&x64),
            1e-6,
            1e-5,
        );
        let fd = finite_differences(&x64, H, |x| reference::dot(&rope(x), &dy64));
        let dx = read(gpu, &dx);
        check(
            &format!("{label}: dx (differences)"),
            &dx,
            &fd,
            GRAD_ATOL,
            GRAD_RTOL,
        );
        let dx_ref =
            reference::rope_backward(&dy64, batch, seq, heads, head_dim, SMOLLM2_THETA, offset);
        check(&format!("{label}: dx (analytic)"), &dx, &dx_ref, 1e-6, 1e-5);
        // The backward undoes the forward (a rotation's transpose is its inverse).
        check(
            &format!("{label}: round trip"),
            &read(gpu, &round_trip),
            &x64,
            1e-6,
            1e-5,
        );
    }
}

#[test]
fn rope_refuses_positions_past_the_table_and_bad_widths() {
    let Some(gpu) = gpu() else { return };
    let table = RopeTable::new(gpu, 8, SMOLLM2_THETA, 16).unwrap();
    let x = Tensor::zeros(gpu, &[1, 4, 24]).unwrap();
    let mut step = Step::new(gpu, "bad rope");
    assert!(rope_forward(&mut step, &table, &x, 12).is_ok());
    let msg = rope_forward(&mut step, &table, &x, 13)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("13..17") && msg.contains("16 positions"),
        "{msg}"
    );
    let odd = Tensor::zeros(gpu, &[1, 4, 20]).unwrap();
    let msg = rope_backward(&mut step, &table, &odd, 0)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("heads of 8"), "{msg}");
    assert_eq!(step.len(), 1);
    assert!(RopeTable::new(gpu, 7, SMOLLM2_THETA, 16).is_err());
    assert!(RopeTable::new(gpu, 8, f64::NAN, 16).is_err());
}

#[test]
fn swiglu_forward_and_backward() {
    let Some(gpu) = gpu() else { return };
    // The gate swept over [−30, 30] (both saturated tails, and 0), then random gates and ups.
    let mut rng = Rng::new(17);
    let mut gate: Vec<f32> = (0..=600).map(|i| (i as f32 - 300.0) / 10.0).collect();
    gate.extend(random(&mut rng, 399, 3.0));
    let up = random(&mut rng, gate.len(), 1.0);
    let dh = random(&mut rng, gate.len(), 1.0);
    let shape = [2, 5, 100]; // (batch, seq, ffn)
    let (gt, ut, dht) = (
        upload(gpu, &shape, &gate),
        upload(gpu, &shape, &up),
        upload(gpu, &shape, &dh),
    );
    let mut step = Step::new(gpu, "swiglu");
    let h = swiglu_forward(&mut step, &gt, &ut).unwrap();
    assert_eq!(step.len(), 1);
    let (d_gate, d_up) = swiglu_backward(&mut step, &gt, &ut, &dht).unwrap();
    assert_eq!(step.len(), 2);
    step.submit().unwrap();
    assert_eq!(h.shape(), &shape);

    let (g64, u64_, dh64) = (f64s(&gate), f64s(&up), f64s(&dh));
    // Tighter than FWD_*: one exp (WGSL: 3 + 2|x| ulp, |x| ≤ 30 here, so ≤ 6e-6 relative in
    // e^{−|x|}, which moves σ by far less where σ is not tiny) and a few roundings, relative to
    // |h|; absolute 1e-6 covers the saturated tail, where h ≈ 0.
    check(
        "swiglu: h",
        &read(gpu, &h),
        &reference::swiglu(&g64, &u64_),
        1e-6,
        1e-5,
    );
    let (dg_ref, du_ref) = reference::swiglu_backward(&g64, &u64_, &dh64);
    let (dg, du) = (read(gpu, &d_gate), read(gpu, &d_up));
    check("swiglu: d_gate (analytic)", &dg, &dg_ref, 1e-6, 1e-5);
    check("swiglu: d_up (analytic)", &du, &du_ref, 1e-6, 1e-5);
    // Elementwise, so each element's difference is one scalar derivative: cheap for all 1000.
    let fd_gate: Vec<f64> = (0..gate.len())
        .map(|i| {
            let f = |g: f64| reference::silu(g) * u64_[i];
            (f(g64[i] + H) - f(g64[i] - H)) / (2.0 * H) * dh64[i]
        })
        .collect();
    let fd_up: Vec<f64> = (0..gate.len())
        .map(|i| reference::silu(g64[i]) * dh64[i])
        .collect();
    check(
        "swiglu: d_gate (differences)",
        &dg,
        &fd_gate,
        GRAD_ATOL,
        GRAD_RTOL,
    );
    check(
        "swiglu: d_up (differences)",
        &du,
        &fd_up,
        GRAD_ATOL,
        GRAD_RTOL,
    );

    let bad = Tensor::zeros(gpu, &[2, 5, 99]).unwrap();
    let mut step = Step::new(gpu, "bad swiglu");
    let msg = swiglu_forward(&mut step, &gt, &bad)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("[2, 5, 99]") && msg.contains("[2, 5, 100]"),
        "{msg}"
    );
    assert!(swiglu_backward(&mut step, &gt, &ut, &bad).is_err());
    assert!(step.is_empty());
}

/// One attention case: its sizes, its padding (None: no mask), and how many cache positions
/// past offset + q_len hold garbage (NaN on the GPU) that must never be read.
struct Case {
    dims: GroupedAttentionDims,
    lengths: Option<Vec<usize>>,
    garbage: usize,
}

impl Case {
    fn config(&self) -> AttentionConfig {
        let d = self.dims;
        AttentionConfig {
            heads: d.heads,
            kv_heads: d.kv_heads,
            causal: d.causal,
            offset: d.offset,
        }
    }
}

/// Inputs of a case (finite everywhere: the reference reads them all), as f32.
struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    mask: Option<Vec<f32>>,
    dc: Vec<f32>,
}

fn inputs(case: &Case, seed: u64) -> Inputs {
    let d = case.dims;
    let mut rng = Rng::new(seed);
    let nq = d.batch * d.q_len * d.heads * d.head_dim;
    let nkv = d.batch * d.kv_len * d.kv_heads * d.head_dim;
    let mask = case.lengths.as_ref().map(|lengths| {
        lengths
            .iter()
            .flat_map(|&len| (0..d.kv_len).map(move |t| if t < len { 1.0 } else { 0.0 }))
            .collect()
    });
    Inputs {
        q: random(&mut rng, nq, 1.0),
        k: random(&mut rng, nkv, 1.0),
        v: random(&mut rng, nkv, 1.0),
        mask,
        dc: random(&mut rng, nq, 1.0),
    }
}

/// Runs forward (and backward, when asked) on the GPU: [context, P] or [context, P, dq, dk, dv].
fn run(gpu: &Gpu, case: &Case, x: &Inputs, backward: bool) -> Vec<Vec<f32>> {
    let d = case.dims;
    let q_shape = [d.batch, d.q_len, d.heads * d.head_dim];
    let kv_shape = [d.batch, d.kv_len, d.kv_heads * d.head_dim];
    // The cache positions past offset + q_len hold NaN on the GPU: reading one would show.
    let poison = |kv: &[f32]| -> Vec<f32> {
        let row = d.kv_heads * d.head_dim;
        let valid = d.kv_len - case.garbage;
        kv.chunks(row)
            .enumerate()
            .flat_map(|(r, chunk)| {
                let keep = r % d.kv_len < valid;
                chunk.iter().map(move |&v| if keep { v } else { f32::NAN })
            })
            .collect()
    };
    let (qt, kt, vt, dct) = (
        upload(gpu, &q_shape, &x.q),
        upload(gpu, &kv_shape, &poison(&x.k)),
        upload(gpu, &kv_shape, &poison(&x.v)),
        upload(gpu, &q_shape, &x.dc),
    );
    let mt = x
        .mask
        .as_ref()
        .map(|m| upload(gpu, &[d.batch, d.kv_len], m));
    let cfg = case.config();
    let mut step = Step::new(gpu, "attention");
    let (context, probs) =
        attention_forward_with(&mut step, &cfg, &qt, &kt, &vt, mt.as_ref()).unwrap();
    assert_eq!(step.len(), 1);
    let mut out = vec![context, probs];
    if backward {
        let g = attention_backward_with(&mut step, &cfg, &qt, &kt, &vt, &out[1], &out[0], &dct)
            .unwrap();
        assert_eq!(step.len(), 3);
        assert_eq!(g.d_k.shape(), &kv_shape);
        out.extend([g.d_q, g.d_k, g.d_v]);
    }
    step.submit().unwrap();
    assert_eq!(out[1].shape(), &[d.batch, d.heads, d.q_len, d.kv_len]);
    out.iter().map(|t| read(gpu, t)).collect()
}

fn dims(
    (batch, q_len, kv_len): (usize, usize, usize),
    (heads, kv_heads, head_dim): (usize, usize, usize),
    causal: bool,
    offset: usize,
) -> GroupedAttentionDims {
    GroupedAttentionDims {
        batch,
        q_len,
        kv_len,
        heads,
        kv_heads,
        head_dim,
        causal,
        offset,
    }
}

#[test]
fn grouped_attention_against_differences() {
    let Some(gpu) = gpu() else { return };
    let cases = [
        // Causal, 2 query heads per KV head.
        Case {
            dims: dims((2, 6, 6), (4, 2, 4), true, 0),
            lengths: None,
            garbage: 0,
        },
        // Causal, one KV head for 3 query heads, odd head_dim, a right-padded sequence.
        Case {
            dims: dims((2, 7, 7), (3, 1, 3), true, 0),
            lengths: Some(vec![7, 4]),
            garbage: 0,
        },
        // Bidirectional with grouped KV heads and padding (BERT's mask, Llama's sharing).
        Case {
            dims: dims((2, 5, 5), (6, 2, 2), false, 0),
            lengths: Some(vec![5, 2]),
            garbage: 0,
        },
        // Bidirectional over a longer, padded key sequence (cross-attention shapes).
        Case {
            dims: dims((1, 3, 5), (2, 1, 4), false, 0),
            lengths: Some(vec![4]),
            garbage: 0,
        },
        // New queries over a KV cache: 3 queries at positions 4..7 of a 9-slot cache whose
        // last 2 slots are unwritten (NaN on the GPU).
        Case {
            dims: dims((2, 3, 9), (6, 3, 4), true, 4),
            lengths: None,
            garbage: 2,
        },
    ];
    for (ci, case) in cases.iter().enumerate() {
        let d = case.dims;
        let label = format!("attention {:?} lengths {:?}", d, case.lengths);
        let x = inputs(case, 200 + ci as u64);
        let out = run(gpu, case, &x, true);
        let [context, probs, dq, dk, dv] = [0, 1, 2, 3, 4].map(|i| out[i].clone());
        let (q, k, v, dc) = (f64s(&x.q), f64s(&x.k), f64s(&x.v), f64s(&x.dc));
        let mask = x.mask.as_ref().map(|m| f64s(m));
        let mask = mask.as_deref();
        let (want_c, want_p) = reference::grouped_attention(d, &q, &k, &v, mask);
        check(
            &format!("{label}: context"),
            &context,
            &want_c,
            FWD_ATOL,
            FWD_RTOL,
        );
        check(&format!("{label}: P"), &probs, &want_p, FWD_ATOL, FWD_RTOL);
        let loss = |q: &[f64], k: &[f64], v: &[f64]| {
            reference::dot(&reference::grouped_attention(d, q, k, v, mask).0, &dc)
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
        // The analytic reference, used at SmolLM2's size below, agrees with the differences.
        let (rq, rk, rv) = reference::grouped_attention_backward(d, &q, &k, &v, mask, &dc);
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
fn grouped_attention_matches_the_bert_path_when_heads_are_not_shared() {
    let Some(gpu) = gpu() else { return };
    // attention_forward (BERT's entry) is the bidirectional config with a mask: same kernel,
    // same numbers.
    let case = Case {
        dims: dims((2, 5, 5), (3, 3, 4), false, 0),
        lengths: Some(vec![5, 3]),
        garbage: 0,
    };
    let x = inputs(&case, 9);
    let out = run(gpu, &case, &x, false);
    let shape = [2, 5, 12];
    let (qt, kt, vt) = (
        upload(gpu, &shape, &x.q),
        upload(gpu, &shape, &x.k),
        upload(gpu, &shape, &x.v),
    );
    let mt = upload(gpu, &[2, 5], x.mask.as_ref().unwrap());
    let mut step = Step::new(gpu, "bert attention");
    let (context, probs) = attention_forward(&mut step, &qt, &kt, &vt, &mt, 3).unwrap();
    step.submit().unwrap();
    assert_eq!(read(gpu, &context), out[0]);
    assert_eq!(read(gpu, &probs), out[1]);
    // And the grouped reference reduces to BERT's.
    let (q, k, v, mask) = (
        f64s(&x.q),
        f64s(&x.k),
        f64s(&x.v),
        f64s(x.mask.as_ref().unwrap()),
    );
    let bert_dims = AttentionDims {
        batch: 2,
        seq: 5,
        heads: 3,
        head_dim: 4,
    };
    assert_eq!(
        reference::grouped_attention(case.dims, &q, &k, &v, Some(&mask)),
        reference::attention(bert_dims, &q, &k, &v, &mask)
    );
}

#[test]
fn grouped_attention_at_smollm2_size() {
    let Some(gpu) = gpu() else { return };
    // SmolLM2's heads (9 query, 3 KV, head_dim 64), causal over 100 tokens (past one 64-row
    // workgroup), 2 sequences. q, k ~ N(0, 1): scores ~ N(0, 1) after the 1/√64.
    let case = Case {
        dims: dims((2, 100, 100), (9, 3, 64), true, 0),
        lengths: None,
        garbage: 0,
    };
    let d = case.dims;
    let x = inputs(&case, 31);
    let out = run(gpu, &case, &x, true);
    let (q, k, v, dc) = (f64s(&x.q), f64s(&x.k), f64s(&x.v), f64s(&x.dc));
    let label = format!("attention {d:?}");
    let (want_c, want_p) = reference::grouped_attention(d, &q, &k, &v, None);
    check(
        &format!("{label}: context"),
        &out[0],
        &want_c,
        FWD_ATOL,
        FWD_RTOL,
    );
    check(&format!("{label}: P"), &out[1], &want_p, FWD_ATOL, FWD_RTOL);
    // Against the analytic backward (itself checked against differences above): differences
    // over 10⁵ inputs would take minutes.
    let (rq, rk, rv) = reference::grouped_attention_backward(d, &q, &k, &v, None, &dc);
    check(&format!("{label}: dq"), &out[2], &rq, GRAD_ATOL, GRAD_RTOL);
    check(&format!("{label}: dk"), &out[3], &rk, GRAD_ATOL, GRAD_RTOL);
    check(&format!("{label}: dv"), &out[4], &rv, GRAD_ATOL, GRAD_RTOL);
}

#[test]
fn decoding_over_a_kv_cache_matches_the_full_causal_pass() {
    let Some(gpu) = gpu() else { return };
    // SmolLM2's heads. A 12-token causal pass, then the same queries 10 and 11 alone at offset
    // 10 over a 16-slot cache whose last 4 slots are unwritten (NaN): the same rows out.
    let (batch, tokens, slots, heads, kv_heads, head_dim) = (2, 12, 16, 9, 3, 64);
    let full = Case {
        dims: dims(
            (batch, tokens, tokens),
            (heads, kv_heads, head_dim),
            true,
            0,
        ),
        lengths: None,
        garbage: 0,
    };
    let x = inputs(&full, 77);
    let full_out = run(gpu, &full, &x, false);

    let (new, offset) = (2, 10);
    let (q_row, kv_row) = (heads * head_dim, kv_heads * head_dim);
    // Queries offset.. of each sequence; the cache holds all 12 keys and values, then 4 slots.
    let take_rows = |t: &[f32], row: usize, len: usize, from: usize, count: usize| -> Vec<f32> {
        (0..batch)
            .flat_map(|b| t[(b * len + from) * row..(b * len + from + count) * row].to_vec())
            .collect()
    };
    let pad_cache = |t: &[f32]| -> Vec<f32> {
        (0..batch)
            .flat_map(|b| {
                let mut seq = t[b * tokens * kv_row..(b + 1) * tokens * kv_row].to_vec();
                seq.resize(slots * kv_row, 0.5); // finite for the reference; NaN on the GPU
                seq
            })
            .collect()
    };
    let decode = Case {
        dims: dims(
            (batch, new, slots),
            (heads, kv_heads, head_dim),
            true,
            offset,
        ),
        lengths: None,
        garbage: slots - tokens,
    };
    let dx = Inputs {
        q: take_rows(&x.q, q_row, tokens, offset, new),
        k: pad_cache(&x.k),
        v: pad_cache(&x.v),
        mask: None,
        dc: take_rows(&x.dc, q_row, tokens, offset, new),
    };
    let out = run(gpu, &decode, &dx, false);
    let want_c =
        reference::grouped_attention(decode.dims, &f64s(&dx.q), &f64s(&dx.k), &f64s(&dx.v), None).0;
    check("decode: context", &out[0], &want_c, FWD_ATOL, FWD_RTOL);
    // Bit-identical to the full pass: same kernel, same keys in the same order.
    assert_eq!(out[0], take_rows(&full_out[0], q_row, tokens, offset, new));
    // No probability on a cache slot past the new tokens.
    for row in out[1].chunks(slots) {
        assert!(row[tokens..].iter().all(|&p| p == 0.0));
    }
}

#[test]
fn attention_refuses_bad_configs() {
    let Some(gpu) = gpu() else { return };
    let q = Tensor::zeros(gpu, &[2, 5, 24]).unwrap(); // 6 heads of 4
    let kv = Tensor::zeros(gpu, &[2, 5, 8]).unwrap(); // 2 KV heads of 4
    let mut step = Step::new(gpu, "bad attention");
    let fwd = |step: &mut Step, cfg: AttentionConfig, k: &Tensor| {
        attention_forward_with(step, &cfg, &q, k, k, None)
            .unwrap_err()
            .to_string()
    };
    // 6 query heads cannot share 4 KV heads.
    let msg = fwd(&mut step, AttentionConfig::causal(6, 4), &kv);
    assert!(
        msg.contains("6 query heads") && msg.contains("4 key/value heads"),
        "{msg}"
    );
    // K of the wrong width for 3 KV heads.
    let msg = fwd(&mut step, AttentionConfig::causal(6, 3), &kv);
    assert!(
        msg.contains("[2, 5, 8]") && msg.contains("[2, 5, 12]"),
        "{msg}"
    );
    // 5 queries at offset 1 need 6 keys.
    let msg = fwd(&mut step, AttentionConfig::causal(6, 2).with_offset(1), &kv);
    assert!(msg.contains("need 6 keys"), "{msg}");
    // An offset without causality.
    let cfg = AttentionConfig {
        offset: 2,
        ..AttentionConfig::bidirectional(6)
    };
    let msg = fwd(&mut step, cfg, &q);
    assert!(msg.contains("offset"), "{msg}");
    // A mask over the queries rather than the keys.
    let long_kv = Tensor::zeros(gpu, &[2, 7, 8]).unwrap();
    let mask = Tensor::zeros(gpu, &[2, 5]).unwrap();
    let msg = attention_forward_with(
        &mut step,
        &AttentionConfig::causal(6, 2),
        &q,
        &long_kv,
        &long_kv,
        Some(&mask),
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("[2, 5]") && msg.contains("[2, 7]"), "{msg}");
    assert!(step.is_empty());
}
