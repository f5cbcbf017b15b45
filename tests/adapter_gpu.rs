//! Adapters on the GPU (DESIGN.md §4): gradients against central finite differences of the f64
//! reference, and the invariants (untrained = base, merge = forward, unmerge = W, rotations
//! orthogonal, save/load bit-identical, disjoint-band fusion = sequential merges).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{block_on, gpu};
use spectune::adapter::{fuse, Adapter, AdapterConfig, AdapterKind, Fusion, LayerParams};
use spectune::reference::adapter::{
    adapted_weight, cayley, finite_differences, linear_loss, matmul, transposed, FrozenRef, KindRef,
};
use spectune::reference::{assert_close, Rng};
use spectune::{Error, Gpu, Step, Tensor};

fn random(rng: &mut Rng, n: usize, scale: f64) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() * scale) as f32).collect()
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

fn read(gpu: &Gpu, t: &Tensor) -> Vec<f32> {
    block_on(t.to_vec(gpu)).unwrap()
}

/// The layer's frozen tensors, read back for the reference.
fn frozen(gpu: &Gpu, adapter: &Adapter) -> FrozenRef {
    let l = adapter.layer(0);
    let (u, s, v) = match &l.basis {
        Some(b) => (
            f64s(&read(gpu, &b.u)),
            f64s(&read(gpu, &b.s)),
            f64s(&read(gpu, &b.v)),
        ),
        None => Default::default(),
    };
    FrozenRef {
        m: l.m,
        n: l.n,
        r: l.rank,
        base: f64s(&read(gpu, &l.base)),
        u,
        s,
        v,
    }
}

fn kind_ref(adapter: &Adapter) -> KindRef {
    match adapter.layer(0).params {
        LayerParams::Additive { .. } => KindRef::Additive,
        LayerParams::Rotation { .. } => KindRef::Rotation,
        LayerParams::Lora { scaling, .. } => KindRef::Lora(scaling as f64),
    }
}

/// Sets every trainable tensor to random values around its initial value, so that no
/// gradient is trivially zero.
fn perturb(gpu: &Gpu, adapter: &Adapter, seed: u64) {
    let mut rng = Rng::new(seed);
    let values = block_on(adapter.params().read_values(gpu)).unwrap();
    for (i, v) in values.iter().enumerate() {
        let moved: Vec<f32> = v.iter().map(|&x| x + (rng.normal() * 0.3) as f32).collect();
        adapter.params().write(gpu, i, &moved).unwrap();
    }
}

struct Case {
    kind: AdapterKind,
    m: usize,
    n: usize,
    r: usize,
    band: usize,
    singular_values: bool,
}

/// Every trainable tensor's gradient and dx against central differences of the f64 reference.
/// Tolerance: atol 1e-4 / rtol 1e-3 (STYLE.md's gradient tolerances); the f32 kernels sum
/// O(10) terms of size O(1), ~1e-6 apart from exact, and the f64 differences are ~1e-9 off.
fn check_gradients(gpu: &Gpu, case: &Case, seed: u64) {
    let &Case {
        kind,
        m,
        n,
        r,
        band,
        singular_values,
    } = case;
    let label = format!("{kind:?} {m}×{n} r={r} band={band} sv={singular_values}");
    let mut rng = Rng::new(seed);
    let w = Tensor::from_slice(gpu, &[m, n], &random(&mut rng, m * n, 1.0)).unwrap();
    let config = AdapterConfig::new(kind, r)
        .band(band)
        .train_singular_values(singular_values)
        .lora_alpha(2.0 * r as f32)
        .seed(seed);
    let adapter = block_on(Adapter::new(gpu, config, &[("layer", &w)])).unwrap();
    perturb(gpu, &adapter, seed + 1);
    // x as (2, 3, n): the layer takes any leading shape.
    let rows = 6;
    let x_host = random(&mut rng, rows * n, 1.0);
    let dy_host = random(&mut rng, rows * m, 1.0);
    let x = Tensor::from_slice(gpu, &[2, 3, n], &x_host).unwrap();
    let d_y = Tensor::from_slice(gpu, &[2, 3, m], &dy_host).unwrap();

    let layer = adapter.layer(0);
    let mut step = Step::new(gpu, "grad check");
    let (y, saved) = layer.forward(&mut step, &x, None).unwrap();
    let d_x = layer
        .backward(&mut step, &x, &saved, &d_y, true)
        .unwrap()
        .unwrap();
    step.submit().unwrap();
    assert_eq!(y.shape(), &[2, 3, m]);
    assert_eq!(d_x.shape(), &[2, 3, n]);

    let f = frozen(gpu, &adapter);
    let kr = kind_ref(&adapter);
    let params: Vec<Vec<f64>> = block_on(adapter.params().read_values(gpu))
        .unwrap()
        .iter()
        .map(|v| f64s(v))
        .collect();
    let grads = block_on(adapter.params().read_grads(gpu)).unwrap();
    let (x64, dy64) = (f64s(&x_host), f64s(&dy_host));

    // The forward itself: y = x W'ᵀ.
    let want_y = matmul(
        &x64,
        &transposed(&adapted_weight(&f, kr, &params), m, n),
        rows,
        n,
        m,
    );
    assert_close(&format!("{label}: y"), &read(gpu, &y), &want_y, 1e-5, 1e-4);

    let h = 1e-5;
    for (i, name) in adapter.params().names().enumerate() {
        let fd = finite_differences(&params[i], h, |p| {
            let mut all = params.clone();
            all[i] = p.to_vec();
            linear_loss(&f, kr, &all, &x64, &dy64)
        });
        assert_close(&format!("{label}: ∂{name}"), &grads[i], &fd, 1e-4, 1e-3);
    }
    let fd_x = finite_differences(&x64, h, |x| linear_loss(&f, kr, &params, x, &dy64));
    assert_close(&format!("{label}: dx"), &read(gpu, &d_x), &fd_x, 1e-4, 1e-3);
}

fn cases(kind: AdapterKind, singular_values: bool) -> Vec<Case> {
    vec![
        Case {
            kind,
            m: 7,
            n: 5,
            r: 2,
            band: 1,
            singular_values,
        },
        Case {
            kind,
            m: 5,
            n: 9,
            r: 1,
            band: 0,
            singular_values,
        },
        Case {
            kind,
            m: 6,
            n: 4,
            r: 4,
            band: 0,
            singular_values,
        },
    ]
}

#[test]
fn spectral_additive_gradients_match_finite_differences() {
    let Some(gpu) = gpu() else { return };
    for (i, sv) in [false, true].into_iter().enumerate() {
        for (j, case) in cases(AdapterKind::SpectralAdditive, sv).iter().enumerate() {
            check_gradients(gpu, case, 10 * i as u64 + j as u64);
        }
    }
}

#[test]
fn spectral_rotation_gradients_match_finite_differences() {
    let Some(gpu) = gpu() else { return };
    for (i, sv) in [false, true].into_iter().enumerate() {
        for (j, case) in cases(AdapterKind::SpectralRotation, sv).iter().enumerate() {
            check_gradients(gpu, case, 100 + 10 * i as u64 + j as u64);
        }
    }
}

#[test]
fn lora_and_pissa_gradients_match_finite_differences() {
    let Some(gpu) = gpu() else { return };
    for kind in [AdapterKind::Lora, AdapterKind::Pissa] {
        for (j, case) in cases(kind, false).iter().enumerate() {
            check_gradients(gpu, case, 200 + j as u64);
        }
    }
}
