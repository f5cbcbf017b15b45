//! The training loop on one adapted layer: it learns, stops between steps when asked, and a run
//! interrupted and resumed from its checkpoint ends bit-identical to an uninterrupted one.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::ops::ControlFlow;

use common::{block_on, gpu};
use spectune::adapter::{Adapter, AdapterConfig, AdapterKind};
use spectune::reference::Rng;
use spectune::train::{mse, AdamW, Params, Schedule, Trainable, Trainer, TrainerConfig};
use spectune::{Error, Gpu, Step, Tensor};

/// Regression onto x W*ᵀ through a spectral adapter on W.
struct Regression {
    adapter: Adapter,
    m: usize,
    n: usize,
}

struct Example {
    x: Vec<f32>,
    y: Vec<f32>,
}

impl Regression {
    fn upload(&self, gpu: &Gpu, batch: &[&Example]) -> spectune::Result<(Tensor, Tensor)> {
        let x: Vec<f32> = batch.iter().flat_map(|e| e.x.iter().copied()).collect();
        let y: Vec<f32> = batch.iter().flat_map(|e| e.y.iter().copied()).collect();
        Ok((
            Tensor::from_slice(gpu, &[batch.len(), self.n], &x)?,
            Tensor::from_slice(gpu, &[batch.len(), self.m], &y)?,
        ))
    }
}

impl Trainable for Regression {
    type Example = Example;

    fn record_loss_and_grads(
        &self,
        step: &mut Step,
        batch: &[&Example],
    ) -> spectune::Result<Tensor> {
        let (x, target) = self.upload(step.gpu(), batch)?;
        let layer = self.adapter.layer(0);
        let (y, saved) = layer.forward(step, &x, None)?;
        let (loss, d_y) = mse(step, &y, &target)?;
        layer.backward(step, &x, &saved, &d_y, false)?;
        Ok(loss)
    }

    fn record_loss(&self, step: &mut Step, batch: &[&Example]) -> spectune::Result<Tensor> {
        let (x, target) = self.upload(step.gpu(), batch)?;
        let (y, _) = self.adapter.layer(0).forward(step, &x, None)?;
        Ok(mse(step, &y, &target)?.0)
    }

    fn params(&self) -> Vec<&Params> {
        vec![self.adapter.params()]
    }
}

const M: usize = 16;
const N: usize = 12;

fn setup(gpu: &Gpu) -> (Regression, Vec<Example>) {
    let mut rng = Rng::new(21);
    let w = rng.vec_f32(M * N);
    let w_star: Vec<f32> = w.iter().map(|&v| v + 0.2 * rng.normal() as f32).collect();
    let examples = (0..37)
        .map(|_| {
            let x = rng.vec_f32(N);
            let y = (0..M)
                .map(|i| (0..N).map(|j| w_star[i * N + j] * x[j]).sum())
                .collect();
            Example { x, y }
        })
        .collect();
    let w_t = Tensor::from_slice(gpu, &[M, N], &w).unwrap();
    let adapter = block_on(Adapter::new(
        gpu,
        AdapterConfig::new(AdapterKind::SpectralAdditive, 4),
        &[("l", &w_t)],
    ))
    .unwrap();
    (
        Regression {
            adapter,
            m: M,
            n: N,
        },
        examples,
    )
}

fn config(epochs: usize) -> TrainerConfig {
    TrainerConfig {
        optimizer: AdamW::default().lr(1e-2).schedule(Schedule::Cosine {
            warmup: 3,
            total: 30,
        }),
        batch_size: 8,
        epochs,
        seed: 5,
        log_every: 2,
        group_by_length: false,
        snapshot_every: 25,
        max_bad_steps: 5,
    }
}

#[test]
fn fit_lowers_the_loss_and_reports_progress() {
    let Some(gpu) = gpu() else { return };
    let (model, examples) = setup(gpu);
    let mut trainer = Trainer::new(gpu, &model, config(6)).unwrap();
    let before = block_on(trainer.evaluate(gpu, &model, &examples)).unwrap();
    let mut seen = Vec::new();
    let report = block_on(trainer.fit(gpu, &model, &examples, |p| {
        seen.push(p.step);
        ControlFlow::Continue(())
    }))
    .unwrap();
    let after = block_on(trainer.evaluate(gpu, &model, &examples)).unwrap();
    eprintln!(
        "loss {before:.4} -> {after:.4} in {} steps; progress at {seen:?}",
        report.steps
    );
    assert_eq!(
        report.steps, 30,
        "37 examples in batches of 8 is 5 steps an epoch"
    );
    assert!(!report.cancelled);
    assert!(after < 0.5 * before, "{before} -> {after}");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]) && seen.last() == Some(&30),
        "{seen:?}"
    );
}

#[test]
fn the_callback_stops_training_between_steps() {
    let Some(gpu) = gpu() else { return };
    let (model, examples) = setup(gpu);
    let mut trainer = Trainer::new(
        gpu,
        &model,
        TrainerConfig {
            log_every: 1,
            ..config(6)
        },
    )
    .unwrap();
    let report = block_on(trainer.fit(gpu, &model, &examples, |p| {
        if p.step >= 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }))
    .unwrap();
    assert!(report.cancelled);
    assert_eq!((report.steps, trainer.steps()), (3, 3));
}

#[test]
fn a_run_resumed_from_its_checkpoint_equals_an_uninterrupted_one() {
    let Some(gpu) = gpu() else { return };
    let (model_a, examples) = setup(gpu);
    let mut a = Trainer::new(gpu, &model_a, config(4)).unwrap();
    block_on(a.fit(gpu, &model_a, &examples, |_| ControlFlow::Continue(()))).unwrap();

    // B: two epochs, a checkpoint, then a fresh model and trainer restored from it, two more.
    let (model_b, _) = setup(gpu);
    let mut b = Trainer::new(gpu, &model_b, config(2)).unwrap();
    block_on(b.fit(gpu, &model_b, &examples, |_| ControlFlow::Continue(()))).unwrap();
    let checkpoint = block_on(b.checkpoint(gpu, &model_b)).unwrap();
    let (model_c, _) = setup(gpu);
    let mut c = Trainer::new(gpu, &model_c, config(4)).unwrap();
    c.restore(gpu, &model_c, &checkpoint).unwrap();
    assert_eq!(c.steps(), 10);
    let report = block_on(c.fit(gpu, &model_c, &examples, |_| ControlFlow::Continue(()))).unwrap();
    assert_eq!(report.steps, 10);

    let pa = block_on(model_a.adapter.params().read_values(gpu)).unwrap();
    let pc = block_on(model_c.adapter.params().read_values(gpu)).unwrap();
    assert_eq!(
        pa.concat().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        pc.concat().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );

    // An adapter file is not a checkpoint.
    let adapter_file = block_on(model_a.adapter.save(gpu)).unwrap();
    assert!(matches!(
        c.restore(gpu, &model_c, &adapter_file),
        Err(Error::BadFile { .. })
    ));
}

/// The trainable values and both moments (in name order), from a checkpoint (its step count
/// left out).
fn state(gpu: &Gpu, trainer: &Trainer, model: &Regression) -> Vec<Vec<f32>> {
    let bytes = block_on(trainer.checkpoint(gpu, model)).unwrap();
    let mut file = spectune::io::safetensors::read("checkpoint", &bytes).unwrap();
    file.tensors.sort_by(|a, b| a.name.cmp(&b.name));
    file.tensors.into_iter().map(|t| t.values).collect()
}

/// The NaN guard: a step whose loss is not finite (an input with NaN) leaves the values and the
/// optimizer's moments exactly as they were, bit for bit; `fit` skips such steps and reports
/// them, and stops with a named error after `max_bad_steps` of them in a row.
#[test]
fn non_finite_steps_are_skipped_and_too_many_stop_training() {
    let Some(gpu) = gpu() else { return };
    let (model, examples) = setup(gpu);
    let poisoned = || Example {
        x: vec![f32::NAN; N],
        y: vec![0.0; M],
    };
    let mut config = config(1);
    config.batch_size = 1;
    config.log_every = 1;
    config.max_bad_steps = 3;
    let mut trainer = Trainer::new(gpu, &model, config).unwrap();
    // A good step first, so that the moments are not zero.
    let loss = trainer.step(gpu, &model, &[&examples[0]]).unwrap();
    assert!(block_on(loss.to_vec(gpu)).unwrap()[0].is_finite());
    let before = state(gpu, &trainer, &model);
    let bad = poisoned();
    let loss = trainer.step(gpu, &model, &[&bad]).unwrap();
    assert!(block_on(loss.to_vec(gpu)).unwrap()[0].is_nan());
    assert_eq!(
        state(gpu, &trainer, &model),
        before,
        "a NaN step changed nothing"
    );
    let bits = |s: &[Vec<f32>]| -> Vec<u32> { s.iter().flatten().map(|v| v.to_bits()).collect() };
    assert_eq!(bits(&state(gpu, &trainer, &model)), bits(&before));

    // Six good examples and two poisoned ones, one per step: two skipped, training goes on.
    let mut mixed: Vec<Example> = examples[..6]
        .iter()
        .map(|e| Example {
            x: e.x.clone(),
            y: e.y.clone(),
        })
        .collect();
    mixed.insert(2, poisoned());
    mixed.insert(5, poisoned());
    let mut trainer = Trainer::new(gpu, &model, config).unwrap();
    let mut flagged = 0;
    let report = block_on(trainer.fit(gpu, &model, &mixed, |p| {
        flagged += usize::from(p.skipped);
        ControlFlow::Continue(())
    }))
    .unwrap();
    assert_eq!(
        (report.steps, report.skipped, flagged),
        (8, 2, 2),
        "{report:?}"
    );
    let after = block_on(trainer.evaluate(gpu, &model, &examples)).unwrap();
    assert!(after.is_finite());

    // Only poisoned examples: three bad steps in a row stop it, with the adapter untouched.
    let all_bad: Vec<Example> = (0..6).map(|_| poisoned()).collect();
    let mut trainer = Trainer::new(gpu, &model, config).unwrap();
    let before = state(gpu, &trainer, &model);
    let err =
        block_on(trainer.fit(gpu, &model, &all_bad, |_| ControlFlow::Continue(()))).unwrap_err();
    assert!(
        matches!(&err, Error::NonFinite(m) if m.contains("3 steps in a row")),
        "{err}"
    );
    assert_eq!(
        state(gpu, &trainer, &model)[0],
        before[0],
        "values unchanged"
    );
}

/// A GPU lost in the middle of `fit` (forced by destroying the device after step 7): the error
/// says so and names the step the trainer kept in host memory (snapshots every 3 steps: step
/// 6); that snapshot restored on a new GPU, with the model rebuilt there, trains on to the end
/// and ends bit-identical to a run that was never interrupted.
#[test]
fn training_resumes_on_a_new_gpu_after_the_device_is_lost() {
    if gpu().is_none() {
        return;
    }
    let fresh = || block_on(Gpu::request()).unwrap();
    let mut config = config(4);
    config.log_every = 1;
    config.snapshot_every = 3;

    let whole_gpu = fresh();
    let (whole_model, examples) = setup(&whole_gpu);
    let mut whole = Trainer::new(&whole_gpu, &whole_model, config).unwrap();
    block_on(whole.fit(&whole_gpu, &whole_model, &examples, |_| {
        ControlFlow::Continue(())
    }))
    .unwrap();

    let lost_gpu = fresh();
    let (lost_model, _) = setup(&lost_gpu);
    let mut lost = Trainer::new(&lost_gpu, &lost_model, config).unwrap();
    let err = block_on(lost.fit(&lost_gpu, &lost_model, &examples, |p| {
        if p.step == 7 {
            lost_gpu.destroy();
        }
        ControlFlow::Continue(())
    }))
    .unwrap_err();
    assert!(
        matches!(&err, Error::DeviceLost(m) if m.contains("state of step 6")),
        "{err}"
    );
    let snapshot = lost.last_good().expect("a snapshot was kept").to_vec();

    let new_gpu = fresh();
    let (model, _) = setup(&new_gpu);
    let mut resumed = Trainer::new(&new_gpu, &model, config).unwrap();
    resumed.restore(&new_gpu, &model, &snapshot).unwrap();
    assert_eq!(resumed.steps(), 6);
    let report =
        block_on(resumed.fit(&new_gpu, &model, &examples, |_| ControlFlow::Continue(()))).unwrap();
    assert_eq!(
        report.steps, 14,
        "20 steps in all, 6 of them before the loss"
    );

    let bits = |gpu: &Gpu, m: &Regression| -> Vec<u32> {
        let values = block_on(m.adapter.params().read_values(gpu)).unwrap();
        values.concat().iter().map(|v| v.to_bits()).collect()
    };
    assert_eq!(bits(&new_gpu, &model), bits(&whole_gpu, &whole_model));
}
