//! Adapters on the GPU (DESIGN.md §4): gradients against central finite differences of the f64
//! reference, and the invariants (untrained = base, merge = forward, unmerge = W, rotations
//! orthogonal, save/load bit-identical, disjoint-band fusion = sequential merges).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{block_on, gpu};
use spectune::adapter::{fuse, Adapter, AdapterConfig, AdapterKind, Fusion, LayerParams};
use spectune::reference::adapter::{
    adapted_weight, finite_differences, linear_loss, matmul, transposed, FrozenRef, KindRef,
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
        base: f64s(&read(gpu, l.base.dense().unwrap())),
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

fn all_kinds() -> Vec<AdapterConfig> {
    vec![
        AdapterConfig::new(AdapterKind::SpectralAdditive, 3)
            .band(1)
            .train_singular_values(true),
        AdapterConfig::new(AdapterKind::SpectralRotation, 3)
            .band(1)
            .train_singular_values(true),
        AdapterConfig::new(AdapterKind::Lora, 3),
        AdapterConfig::new(AdapterKind::Pissa, 3).band(1),
    ]
}

/// ‖a − b‖ / ‖b‖.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

fn layer_setup(
    gpu: &Gpu,
    m: usize,
    n: usize,
    rows: usize,
    seed: u64,
) -> (Tensor, Vec<f32>, Tensor, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let w_host = random(&mut rng, m * n, 1.0);
    let x_host = random(&mut rng, rows * n, 1.0);
    (
        Tensor::from_slice(gpu, &[m, n], &w_host).unwrap(),
        w_host,
        Tensor::from_slice(gpu, &[rows, n], &x_host).unwrap(),
        x_host,
    )
}

/// y = x Wᵀ (+ b) by the plain GEMM.
fn dense_forward(gpu: &Gpu, x: &Tensor, w: &Tensor) -> Vec<f32> {
    let y = Tensor::uninit(gpu, &[x.shape()[0], w.shape()[0]]).unwrap();
    let mut step = Step::new(gpu, "dense");
    spectune::linalg::gemm(
        &mut step,
        &spectune::linalg::Gemm::default().trans_b(true),
        x,
        w,
        &y,
    )
    .unwrap();
    step.submit().unwrap();
    read(gpu, &y)
}

/// Untrained, every kind reproduces x Wᵀ: W_res is exact whatever the SVD's accuracy. The
/// measured error is ~1e-7 (f32 rounding of W_res and of the two products).
#[test]
fn untrained_adapters_reproduce_the_base_layer() {
    let Some(gpu) = gpu() else { return };
    let (w, _, x, _) = layer_setup(gpu, 48, 40, 16, 1);
    let want = dense_forward(gpu, &x, &w);
    for config in all_kinds() {
        let adapter = block_on(Adapter::new(gpu, config, &[("layer", &w)])).unwrap();
        let mut step = Step::new(gpu, "untrained");
        let (y, _) = adapter.layer(0).forward(&mut step, &x, None).unwrap();
        step.submit().unwrap();
        let err = rel_err(&read(gpu, &y), &want);
        eprintln!("{:?}: untrained relative error {err:.2e}", config.kind);
        assert!(err <= 1e-6, "{:?}: {err:e}", config.kind);
    }
}

/// Merge writes exactly the forward's weight W' (against the f64 definition, and x W'ᵀ against
/// the factored forward); unmerge restores W (f32 rounding of W_res + U₁S₁V₁ᵀ: ~1e-7).
#[test]
fn merge_is_the_forward_weight_and_unmerge_restores_the_base() {
    let Some(gpu) = gpu() else { return };
    let (m, n) = (24, 20);
    let (w, w_host, x, _) = layer_setup(gpu, m, n, 8, 2);
    for (i, config) in all_kinds().into_iter().enumerate() {
        let adapter = block_on(Adapter::new(gpu, config, &[("layer", &w)])).unwrap();
        perturb(gpu, &adapter, 40 + i as u64);
        let layer = adapter.layer(0);
        let mut step = Step::new(gpu, "merge");
        let merged = layer.merged_weight(&mut step).unwrap();
        let restored = layer.base_weight(&mut step).unwrap();
        let (y, _) = layer.forward(&mut step, &x, None).unwrap();
        step.submit().unwrap();
        let params: Vec<Vec<f64>> = block_on(adapter.params().read_values(gpu))
            .unwrap()
            .iter()
            .map(|v| f64s(v))
            .collect();
        let want = adapted_weight(&frozen(gpu, &adapter), kind_ref(&adapter), &params);
        let label = format!("{:?}", config.kind);
        assert_close(
            &format!("{label}: merged W'"),
            &read(gpu, &merged),
            &want,
            1e-6,
            1e-5,
        );
        let forward_err = rel_err(&read(gpu, &y), &dense_forward(gpu, &x, &merged));
        let unmerge_err = rel_err(&read(gpu, &restored), &w_host);
        eprintln!(
            "{label}: forward vs x·mergedᵀ {forward_err:.2e}, unmerged vs W {unmerge_err:.2e}"
        );
        assert!(forward_err <= 1e-6, "{label}: {forward_err:e}");
        assert!(unmerge_err <= 1e-6, "{label}: {unmerge_err:e}");
    }
}

/// Adapter files: a saved-then-loaded adapter gives bit-identical outputs; a file is refused
/// on another base weight, another shape, another format version, or when truncated.
#[test]
fn adapter_files_round_trip_bit_identically_and_refuse_other_bases() {
    let Some(gpu) = gpu() else { return };
    let (w, w_host, x, _) = layer_setup(gpu, 20, 12, 5, 3);
    let (w2, _, _, _) = layer_setup(gpu, 16, 12, 5, 33);
    for (i, config) in all_kinds().into_iter().enumerate() {
        let label = format!("{:?}", config.kind);
        let adapter = block_on(Adapter::new(gpu, config, &[("a.q", &w), ("a.v", &w2)])).unwrap();
        perturb(gpu, &adapter, 50 + i as u64);
        let bytes = block_on(adapter.save(gpu)).unwrap();
        let loaded = block_on(Adapter::load(gpu, &bytes, &[("a.v", &w2), ("a.q", &w)])).unwrap();
        assert_eq!(loaded.config, adapter.config, "{label}");
        let mut step = Step::new(gpu, "round trip");
        let (y1, _) = adapter.layer(0).forward(&mut step, &x, None).unwrap();
        let (y2, _) = loaded
            .find("a.q")
            .unwrap()
            .forward(&mut step, &x, None)
            .unwrap();
        step.submit().unwrap();
        let (a, b) = (read(gpu, &y1), read(gpu, &y2));
        assert!(
            a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{label}: outputs differ after save/load"
        );

        // Another base: one weight changed by one ulp-ish nudge.
        let mut other = w_host.clone();
        other[7] += 1e-3;
        let w_other = Tensor::from_slice(gpu, &[20, 12], &other).unwrap();
        let err = block_on(Adapter::load(
            gpu,
            &bytes,
            &[("a.q", &w_other), ("a.v", &w2)],
        ))
        .unwrap_err();
        assert!(
            matches!(err, Error::AdapterMismatch(ref s) if s.contains("a.q") && s.contains("sha256")),
            "{label}: {err}"
        );
        // Another shape, a missing target.
        let err = block_on(Adapter::load(gpu, &bytes, &[("a.q", &w2), ("a.v", &w2)])).unwrap_err();
        assert!(
            matches!(err, Error::AdapterMismatch(ref s) if s.contains("[20, 12]")),
            "{label}: {err}"
        );
        let err = block_on(Adapter::load(gpu, &bytes, &[("a.q", &w)])).unwrap_err();
        assert!(
            matches!(err, Error::AdapterMismatch(ref s) if s.contains("a.v")),
            "{label}: {err}"
        );
        // Truncated bytes.
        let err = block_on(Adapter::load(
            gpu,
            &bytes[..bytes.len() - 9],
            &[("a.q", &w), ("a.v", &w2)],
        ))
        .unwrap_err();
        assert!(matches!(err, Error::BadFile { .. }), "{label}: {err}");
    }
    // An unknown version.
    let adapter = block_on(Adapter::new(
        gpu,
        AdapterConfig::new(AdapterKind::SpectralAdditive, 2),
        &[("a.q", &w)],
    ))
    .unwrap();
    let mut file =
        spectune::io::safetensors::read("test", &block_on(adapter.save(gpu)).unwrap()).unwrap();
    file.metadata.insert("format_version".into(), "99".into());
    let bytes = spectune::io::safetensors::write_f32("test", &file.tensors, file.metadata).unwrap();
    let err = block_on(Adapter::load(gpu, &bytes, &[("a.q", &w)])).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedVersion { ref found, .. } if found == "99"),
        "{err}"
    );
}

/// Disjoint-band fusion adds the changes: x W_fusedᵀ equals the two adapters' own forwards
/// applied one after the other to the base output (y₁ + y₂ − y); `mean` halves them; bands
/// that overlap are refused for `sum`.
#[test]
fn disjoint_band_fusion_adds_the_adapters_changes() {
    let Some(gpu) = gpu() else { return };
    let (m, n) = (24, 20);
    let (w, _, x, _) = layer_setup(gpu, m, n, 8, 4);
    let base_y = dense_forward(gpu, &x, &w);
    let a0 = block_on(Adapter::new(
        gpu,
        AdapterConfig::new(AdapterKind::SpectralAdditive, 3).band(0),
        &[("l", &w)],
    ))
    .unwrap();
    let a1 = block_on(Adapter::new(
        gpu,
        AdapterConfig::new(AdapterKind::SpectralRotation, 3)
            .band(1)
            .train_singular_values(true),
        &[("l", &w)],
    ))
    .unwrap();
    perturb(gpu, &a0, 60);
    perturb(gpu, &a1, 61);
    let mut step = Step::new(gpu, "fusion");
    let (y0, _) = a0.layer(0).forward(&mut step, &x, None).unwrap();
    let (y1, _) = a1.layer(0).forward(&mut step, &x, None).unwrap();
    let sum = fuse(&mut step, &w, &[a0.layer(0), a1.layer(0)], &Fusion::Sum).unwrap();
    let mean = fuse(&mut step, &w, &[a0.layer(0), a1.layer(0)], &Fusion::Mean).unwrap();
    step.submit().unwrap();
    let (y0, y1) = (read(gpu, &y0), read(gpu, &y1));
    let sequential: Vec<f32> = (0..base_y.len())
        .map(|i| y0[i] + y1[i] - base_y[i])
        .collect();
    let halves: Vec<f32> = (0..base_y.len())
        .map(|i| base_y[i] + 0.5 * (y0[i] - base_y[i]) + 0.5 * (y1[i] - base_y[i]))
        .collect();
    let (e_sum, e_mean) = (
        rel_err(&dense_forward(gpu, &x, &sum), &sequential),
        rel_err(&dense_forward(gpu, &x, &mean), &halves),
    );
    eprintln!("fusion: sum {e_sum:.2e}, mean {e_mean:.2e}");
    assert!(
        e_sum <= 1e-6 && e_mean <= 1e-6,
        "sum {e_sum:e}, mean {e_mean:e}"
    );

    let same_band = block_on(Adapter::new(
        gpu,
        AdapterConfig::new(AdapterKind::SpectralAdditive, 3).band(0),
        &[("l", &w)],
    ))
    .unwrap();
    let mut step = Step::new(gpu, "overlap");
    let err = fuse(
        &mut step,
        &w,
        &[a0.layer(0), same_band.layer(0)],
        &Fusion::Sum,
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::InvalidAdapter(ref s) if s.contains("overlap")),
        "{err}"
    );
}

/// Same-band fusion averages the trainable tensors.
#[test]
fn same_band_adapters_average_their_tensors() {
    let Some(gpu) = gpu() else { return };
    let (w, _, _, _) = layer_setup(gpu, 12, 10, 4, 5);
    let config = AdapterConfig::new(AdapterKind::SpectralAdditive, 2).band(1);
    let a = block_on(Adapter::new(gpu, config, &[("l", &w)])).unwrap();
    let b = block_on(Adapter::new(gpu, config, &[("l", &w)])).unwrap();
    perturb(gpu, &a, 70);
    perturb(gpu, &b, 71);
    let avg = block_on(spectune::adapter::average(gpu, &[(&a, 0.25), (&b, 0.75)])).unwrap();
    let (pa, pb, pc) = (
        block_on(a.params().read_values(gpu)).unwrap(),
        block_on(b.params().read_values(gpu)).unwrap(),
        block_on(avg.params().read_values(gpu)).unwrap(),
    );
    for i in 0..pa.len() {
        let want: Vec<f64> = pa[i]
            .iter()
            .zip(&pb[i])
            .map(|(x, y)| 0.25 * *x as f64 + 0.75 * *y as f64)
            .collect();
        assert_close("averaged tensor", &pc[i], &want, 1e-7, 1e-6);
    }
    let lora = block_on(Adapter::new(
        gpu,
        AdapterConfig::new(AdapterKind::Lora, 2),
        &[("l", &w)],
    ))
    .unwrap();
    assert!(block_on(spectune::adapter::average(gpu, &[(&a, 0.5), (&lora, 0.5)])).is_err());
}

/// Bad configurations are named errors.
#[test]
fn bad_adapter_configurations_are_named_errors() {
    let Some(gpu) = gpu() else { return };
    let (w, _, x, _) = layer_setup(gpu, 8, 6, 2, 6);
    let new = |c: AdapterConfig| block_on(Adapter::new(gpu, c, &[("l", &w)])).unwrap_err();
    assert!(matches!(
        new(AdapterConfig::new(AdapterKind::SpectralAdditive, 0)),
        Error::InvalidRank { rank: 0, .. }
    ));
    assert!(matches!(
        new(AdapterConfig::new(AdapterKind::Lora, 7)),
        Error::InvalidRank {
            rank: 7,
            max: 6,
            ..
        }
    ));
    assert!(
        matches!(new(AdapterConfig::new(AdapterKind::SpectralAdditive, 3).band(2)), Error::InvalidAdapter(ref s) if s.contains("band 2"))
    );
    // A band so far out that band × rank overflows is refused the same way, not a panic.
    let far = usize::MAX / 2;
    assert!(
        matches!(new(AdapterConfig::new(AdapterKind::SpectralRotation, 3).band(far)), Error::InvalidAdapter(ref s) if s.contains(&format!("band {far}")))
    );
    let err = block_on(Adapter::new(
        gpu,
        AdapterConfig::new(AdapterKind::Lora, 2),
        &[("l", &w), ("l", &w)],
    ))
    .unwrap_err();
    assert!(matches!(err, Error::InvalidAdapter(_)), "{err}");
    let adapter = block_on(Adapter::new(
        gpu,
        AdapterConfig::new(AdapterKind::Lora, 2),
        &[("l", &w)],
    ))
    .unwrap();
    let wrong = Tensor::zeros(gpu, &[2, 5]).unwrap();
    let mut step = Step::new(gpu, "bad input");
    assert!(matches!(
        adapter
            .layer(0)
            .forward(&mut step, &wrong, None)
            .unwrap_err(),
        Error::ShapeMismatch { .. }
    ));
    let (_, saved) = adapter.layer(0).forward(&mut step, &x, None).unwrap();
    assert!(matches!(
        adapter
            .layer(0)
            .backward(&mut step, &x, &saved, &wrong, true)
            .unwrap_err(),
        Error::ShapeMismatch { .. }
    ));
}
