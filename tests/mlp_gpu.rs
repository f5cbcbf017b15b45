//! The MLP with adapters: the gradient of a whole network (GELU between frozen and adapted
//! layers) against central differences of an f64 reference, and a fine-tune that learns.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::ops::ControlFlow;

use common::{block_on, gpu};
use spectune::adapter::{AdapterConfig, AdapterKind, LayerAdapter, LayerParams};
use spectune::model::mlp::{Mlp, MlpExample, Target};
use spectune::reference::adapter::{adapted_weight, finite_differences, FrozenRef, KindRef};
use spectune::reference::layers::gelu;
use spectune::reference::{assert_close, Rng};
use spectune::train::{AdamW, Trainer, TrainerConfig};
use spectune::{Gpu, Step, Tensor};

fn read(gpu: &Gpu, t: &Tensor) -> Vec<f64> {
    block_on(t.to_vec(gpu))
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .collect()
}

/// A layer as the f64 reference sees it: frozen data, kind, and where its tensors sit among
/// the adapter's (spec order).
enum RefLayer {
    Dense {
        w: Vec<f64>,
        m: usize,
        n: usize,
    },
    Adapted {
        frozen: FrozenRef,
        kind: KindRef,
        params: std::ops::Range<usize>,
    },
}

fn frozen(gpu: &Gpu, l: &LayerAdapter) -> FrozenRef {
    let b = l.basis.as_ref().unwrap();
    FrozenRef {
        m: l.m,
        n: l.n,
        r: l.rank,
        base: read(gpu, l.base.dense().unwrap()),
        u: read(gpu, &b.u),
        s: read(gpu, &b.s),
        v: read(gpu, &b.v),
    }
}

/// Σ dY ⊙ MLP(x) in f64, with every adapter's tensors from `params`.
fn reference_loss(
    layers: &[(RefLayer, Vec<f64>)],
    params: &[Vec<f64>],
    x: &[f64],
    rows: usize,
    d_y: &[f64],
) -> f64 {
    let mut h = x.to_vec();
    for (i, (layer, bias)) in layers.iter().enumerate() {
        let (w, m, n) = match layer {
            RefLayer::Dense { w, m, n } => (w.clone(), *m, *n),
            RefLayer::Adapted {
                frozen,
                kind,
                params: range,
            } => (
                adapted_weight(frozen, *kind, &params[range.clone()]),
                frozen.m,
                frozen.n,
            ),
        };
        let mut y: Vec<f64> = (0..rows * m)
            .map(|idx| {
                bias[idx % m]
                    + (0..n)
                        .map(|k| h[(idx / m) * n + k] * w[(idx % m) * n + k])
                        .sum::<f64>()
            })
            .collect();
        if i + 1 < layers.len() {
            y.iter_mut().for_each(|v| *v = gelu(*v));
        }
        h = y;
    }
    h.iter().zip(d_y).map(|(a, b)| a * b).sum()
}

/// The adapter tensors' gradients through GELU and a frozen middle layer, against central
/// differences (h = 1e-5) of the f64 network. Tolerance atol 1e-4 / rtol 1e-3 (STYLE.md).
#[test]
fn whole_network_gradients_match_finite_differences() {
    let Some(gpu) = gpu() else { return };
    let (widths, rows) = ([5, 7, 6, 3], 4);
    let mut mlp = Mlp::random(gpu, &widths, 3).unwrap();
    block_on(mlp.add_adapter(
        gpu,
        AdapterConfig::new(AdapterKind::SpectralAdditive, 2).train_singular_values(true),
        &["layers.0", "layers.2"],
    ))
    .unwrap();
    let adapter = mlp.adapter().unwrap();
    let mut rng = Rng::new(4);
    for (i, v) in block_on(adapter.params().read_values(gpu))
        .unwrap()
        .iter()
        .enumerate()
    {
        adapter
            .params()
            .write(
                gpu,
                i,
                &v.iter()
                    .map(|x| x + 0.3 * rng.normal() as f32)
                    .collect::<Vec<_>>(),
            )
            .unwrap();
    }
    let x_host = rng.vec_f32(rows * widths[0]);
    let dy_host = rng.vec_f32(rows * widths[3]);
    let x = Tensor::from_slice(gpu, &[rows, widths[0]], &x_host).unwrap();
    let d_y = Tensor::from_slice(gpu, &[rows, widths[3]], &dy_host).unwrap();
    let mut step = Step::new(gpu, "mlp grads");
    let (_, saved) = mlp.forward(&mut step, &x).unwrap();
    mlp.backward(&mut step, &saved, &d_y).unwrap();
    step.submit().unwrap();

    let mut next = 0;
    let layers: Vec<(RefLayer, Vec<f64>)> = mlp
        .layers
        .iter()
        .map(|l| {
            let bias = read(gpu, l.bias.as_ref().unwrap());
            let layer = match adapter.find(&l.name) {
                Some(a) => {
                    let count = if let LayerParams::Additive {
                        offset: Some(_), ..
                    } = a.params
                    {
                        3
                    } else {
                        2
                    };
                    next += count;
                    RefLayer::Adapted {
                        frozen: frozen(gpu, a),
                        kind: KindRef::Additive,
                        params: next - count..next,
                    }
                }
                None => RefLayer::Dense {
                    w: read(gpu, l.weight.dense().unwrap()),
                    m: l.out_features(),
                    n: l.in_features(),
                },
            };
            (layer, bias)
        })
        .collect();
    let params: Vec<Vec<f64>> = block_on(adapter.params().read_values(gpu))
        .unwrap()
        .iter()
        .map(|v| v.iter().map(|&x| x as f64).collect())
        .collect();
    let grads = block_on(adapter.params().read_grads(gpu)).unwrap();
    let (x64, dy64): (Vec<f64>, Vec<f64>) = (
        x_host.iter().map(|&v| v as f64).collect(),
        dy_host.iter().map(|&v| v as f64).collect(),
    );
    for (i, name) in adapter.params().names().enumerate() {
        let fd = finite_differences(&params[i], 1e-5, |p| {
            let mut all = params.clone();
            all[i] = p.to_vec();
            reference_loss(&layers, &all, &x64, rows, &dy64)
        });
        assert_close(&format!("∂{name}"), &grads[i], &fd, 1e-4, 1e-3);
    }
}

/// A student MLP fine-tuned (spectral A, r = 2, every layer) towards a teacher's labels: the
/// cross-entropy falls and the accuracy rises.
#[test]
fn fine_tuning_an_mlp_learns_a_teachers_labels() {
    let Some(gpu) = gpu() else { return };
    let widths = [8, 16, 3];
    let teacher = Mlp::random(gpu, &widths, 100).unwrap();
    let mut student = Mlp::random(gpu, &widths, 200).unwrap();
    let mut rng = Rng::new(5);
    let inputs: Vec<Vec<f32>> = (0..96)
        .map(|_| rng.vec_f32(8).iter().map(|v| v * 2.0).collect())
        .collect();
    let x = Tensor::from_slice(gpu, &[96, 8], &inputs.concat()).unwrap();
    let mut step = Step::new(gpu, "teacher");
    let (logits, _) = teacher.forward(&mut step, &x).unwrap();
    step.submit().unwrap();
    let logits = read(gpu, &logits);
    let label = |i: usize| {
        (0..3)
            .max_by(|&a, &b| logits[i * 3 + a].total_cmp(&logits[i * 3 + b]))
            .unwrap() as u32
    };
    let examples: Vec<MlpExample> = inputs
        .iter()
        .enumerate()
        .map(|(i, x)| MlpExample {
            input: x.clone(),
            target: Target::Class(label(i)),
        })
        .collect();

    block_on(student.add_adapter(
        gpu,
        AdapterConfig::new(AdapterKind::SpectralAdditive, 2),
        &["*"],
    ))
    .unwrap();
    let mut trainer = Trainer::new(
        gpu,
        &student,
        TrainerConfig {
            optimizer: AdamW::default().lr(3e-2),
            batch_size: 32,
            epochs: 40,
            seed: 1,
            log_every: 20,
            ..TrainerConfig::default()
        },
    )
    .unwrap();
    let accuracy = |mlp: &Mlp| {
        let mut step = Step::new(gpu, "eval");
        let (out, _) = mlp.forward(&mut step, &x).unwrap();
        step.submit().unwrap();
        let out = read(gpu, &out);
        (0..96)
            .filter(|&i| {
                (0..3)
                    .max_by(|&a, &b| out[i * 3 + a].total_cmp(&out[i * 3 + b]))
                    .unwrap() as u32
                    == label(i)
            })
            .count() as f64
            / 96.0
    };
    let (loss0, acc0) = (
        block_on(trainer.evaluate(gpu, &student, &examples)).unwrap(),
        accuracy(&student),
    );
    block_on(trainer.fit(gpu, &student, &examples, |_| ControlFlow::Continue(()))).unwrap();
    let (loss1, acc1) = (
        block_on(trainer.evaluate(gpu, &student, &examples)).unwrap(),
        accuracy(&student),
    );
    eprintln!("cross-entropy {loss0:.3} -> {loss1:.3}, accuracy {acc0:.2} -> {acc1:.2}");
    assert!(loss1 < 0.5 * loss0, "{loss0} -> {loss1}");
    assert!(acc1 >= 0.85 && acc1 > acc0, "{acc0} -> {acc1}");
}
