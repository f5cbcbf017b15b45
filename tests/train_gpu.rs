//! Training on the GPU: AdamW and the MSE loss against f64 references, rotations that stay
//! orthogonal under training, and the two small experiments of DESIGN.md §4 — fusion of
//! disjoint-band adapters, and spectral A against LoRA at equal parameter count.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{block_on, gpu};
use spectune::adapter::{fuse, Adapter, AdapterConfig, AdapterKind, Fusion, LayerParams};
use spectune::linalg::{gemm, Gemm};
use spectune::reference::{assert_close, matrix_with_spectrum, svd, Rng};
use spectune::train::{mse, AdamW, Optimizer, ParamSpec, Params, Schedule};
use spectune::{Gpu, Step, Tensor};

fn read(gpu: &Gpu, t: &Tensor) -> Vec<f32> {
    block_on(t.to_vec(gpu)).unwrap()
}

/// AdamW with decay on some tensors, clipping and a cosine schedule, six steps, against the
/// f64 update of PyTorch's torch.optim.AdamW. Tolerance 1e-6 abs / 1e-5 rel: one f32 rounding
/// per operation of the update, no accumulation.
#[test]
fn adamw_matches_the_reference_update() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(7);
    let sizes = [37, 5, 12];
    let specs = vec![
        ParamSpec::with_values("w", &[sizes[0]], rng.vec_f32(sizes[0])),
        ParamSpec::with_values("scale", &[sizes[1]], rng.vec_f32(sizes[1])).no_decay(),
        ParamSpec::with_values("b", &[3, 4], rng.vec_f32(sizes[2])),
    ];
    let decays = [true, false, true];
    let mut want: Vec<Vec<f64>> = specs.iter().map(|s| s.init.iter().map(|&v| v as f64).collect()).collect();
    let params = Params::new(gpu, specs).unwrap();
    let config = AdamW { lr: 0.05, weight_decay: 0.1, max_grad_norm: Some(1.5), schedule: Schedule::Cosine { warmup: 2, total: 6 }, ..AdamW::default() };
    let mut opt = Optimizer::new(gpu, &params, config).unwrap();
    let mut m: Vec<Vec<f64>> = sizes.iter().map(|&n| vec![0.0; n]).collect();
    let mut v = m.clone();
    for t in 1..=6u64 {
        let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| rng.vec_f32(n).iter().map(|g| g * t as f32 * 0.4).collect()).collect();
        for (p, g) in params.tensors().iter().zip(&grads) {
            p.grad.write(gpu, g).unwrap();
        }
        let mut step = Step::new(gpu, "adamw");
        opt.step(&mut step, &params).unwrap();
        step.submit().unwrap();

        let norm: f64 = grads.iter().flatten().map(|&g| (g as f64).powi(2)).sum::<f64>().sqrt();
        let clip = (1.5 / (norm + 1e-6)).min(1.0);
        let lr = 0.05 * config.schedule.factor(t - 1) as f64;
        let (b1, b2, eps, wd) = (0.9f64, 0.999f64, 1e-8, 0.1);
        for k in 0..sizes.len() {
            for i in 0..sizes[k] {
                let g = grads[k][i] as f64 * clip;
                if decays[k] {
                    want[k][i] -= lr * wd * want[k][i];
                }
                m[k][i] = b1 * m[k][i] + (1.0 - b1) * g;
                v[k][i] = b2 * v[k][i] + (1.0 - b2) * g * g;
                let (mh, vh) = (m[k][i] / (1.0 - b1.powi(t as i32)), v[k][i] / (1.0 - b2.powi(t as i32)));
                want[k][i] -= lr * mh / (vh.sqrt() + eps);
            }
        }
        let got = block_on(params.read_values(gpu)).unwrap();
        for k in 0..sizes.len() {
            assert_close(&format!("step {t}, tensor {k}"), &got[k], &want[k], 1e-6, 1e-5);
        }
        let norm_sq = read(gpu, opt.grad_norm_sq().unwrap())[0] as f64;
        assert!((norm_sq - norm * norm).abs() <= 1e-5 * norm * norm, "‖g‖² {norm_sq} vs {}", norm * norm);
    }
    assert_eq!(opt.steps(), 6);
}

/// L = mean (y − t)², ∂L/∂y = 2(y − t)/N.
#[test]
fn mse_matches_the_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(8);
    let (y, t) = (rng.vec_f32(1003), rng.vec_f32(1003));
    let (yt, tt) = (Tensor::from_slice(gpu, &[17, 59], &y).unwrap(), Tensor::from_slice(gpu, &[17, 59], &t).unwrap());
    let mut step = Step::new(gpu, "mse");
    let (loss, dy) = mse(&mut step, &yt, &tt).unwrap();
    step.submit().unwrap();
    let want: f64 = y.iter().zip(&t).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / 1003.0;
    assert_close("loss", &read(gpu, &loss), &[want], 1e-7, 1e-5);
    let want_dy: Vec<f64> = y.iter().zip(&t).map(|(a, b)| 2.0 * (a - b) as f64 / 1003.0).collect();
    assert_close("dy", &read(gpu, &dy), &want_dy, 1e-9, 1e-5);
}

/// A regression task for one layer: inputs X (rows × n) and targets X W*ᵀ.
struct Task {
    x: Tensor,
    target: Tensor,
}

fn task(gpu: &Gpu, x: &[f32], rows: usize, n: usize, w_star: &[f32], m: usize) -> Task {
    let x_t = Tensor::from_slice(gpu, &[rows, n], x).unwrap();
    let w_t = Tensor::from_slice(gpu, &[m, n], w_star).unwrap();
    let target = Tensor::uninit(gpu, &[rows, m]).unwrap();
    let mut step = Step::new(gpu, "targets");
    gemm(&mut step, &Gemm::default().trans_b(true), &x_t, &w_t, &target).unwrap();
    step.submit().unwrap();
    Task { x: x_t, target }
}

/// Full-batch training of one adapted layer for `steps` steps; returns the final loss.
fn train(gpu: &Gpu, adapter: &Adapter, task: &Task, steps: usize, config: AdamW) -> f32 {
    let mut opt = Optimizer::new(gpu, adapter.params(), config).unwrap();
    let layer = adapter.layer(0);
    for _ in 0..steps {
        let mut step = Step::new(gpu, "train");
        let (y, saved) = layer.forward(&mut step, &task.x, None).unwrap();
        let (_, d_y) = mse(&mut step, &y, &task.target).unwrap();
        layer.backward(&mut step, &task.x, &saved, &d_y, false).unwrap();
        opt.step(&mut step, adapter.params()).unwrap();
        step.submit().unwrap();
    }
    loss_with(gpu, |step| Ok(layer.forward(step, &task.x, None)?.0), task)
}

/// MSE of a prediction recorded by `predict` against the task's targets.
fn loss_with(gpu: &Gpu, predict: impl FnOnce(&mut Step) -> spectune::Result<Tensor>, task: &Task) -> f32 {
    let mut step = Step::new(gpu, "eval");
    let y = predict(&mut step).unwrap();
    let (loss, _) = mse(&mut step, &y, &task.target).unwrap();
    step.submit().unwrap();
    read(gpu, &loss)[0]
}

fn dense_loss(gpu: &Gpu, w: &Tensor, task: &Task) -> f32 {
    loss_with(
        gpu,
        |step| {
            let y = Tensor::uninit(step.gpu(), task.target.shape())?;
            gemm(step, &Gemm::default().trans_b(true), &task.x, w, &y)?;
            Ok(y)
        },
        task,
    )
}

/// After training with a large step size, R_U and R_V are still orthogonal to 1e-5 (Frobenius).
#[test]
fn rotations_stay_orthogonal_under_training() {
    let Some(gpu) = gpu() else { return };
    let (m, n, r, rows) = (32, 24, 8, 64);
    let mut rng = Rng::new(9);
    let w = rng.vec_f32(m * n);
    let w_star: Vec<f32> = w.iter().map(|&v| v + 0.3 * rng.normal() as f32).collect();
    let t = task(gpu, &rng.vec_f32(rows * n), rows, n, &w_star, m);
    let w_t = Tensor::from_slice(gpu, &[m, n], &w).unwrap();
    let adapter = block_on(Adapter::new(gpu, AdapterConfig::new(AdapterKind::SpectralRotation, r).train_singular_values(true), &[("l", &w_t)])).unwrap();
    let before = dense_loss(gpu, &w_t, &t);
    let after = train(gpu, &adapter, &t, 60, AdamW::default().lr(0.05));
    assert!(after < before, "training lowered the loss: {before} -> {after}");
    let LayerParams::Rotation { state, .. } = &adapter.layer(0).params else { unreachable!() };
    let cayley = read(gpu, &state.cayley);
    let moved: f32 = block_on(adapter.params().read_values(gpu)).unwrap()[0].iter().map(|v| v.abs()).sum();
    assert!(moved > 0.1, "P_U moved away from 0 ({moved})");
    for (k, name) in [(2, "R_U"), (3, "R_V")] {
        let rot = &cayley[k * r * r..(k + 1) * r * r];
        let mut err = 0.0f64;
        for i in 0..r {
            for j in 0..r {
                let dot: f64 = (0..r).map(|l| rot[l * r + i] as f64 * rot[l * r + j] as f64).sum();
                err += (dot - if i == j { 1.0 } else { 0.0 }).powi(2);
            }
        }
        eprintln!("{name}: ‖RᵀR − I‖_F = {:.2e} (loss {before:.4} -> {after:.4})", err.sqrt());
        assert!(err.sqrt() <= 1e-5, "{name}: {}", err.sqrt());
    }
}
