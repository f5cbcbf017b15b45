//! An adapter to export as PEFT, shared by peft_export.rs (checked by Python) and peft_read.rs
//! (read back by `read_peft`): random base weights on two targets of different shapes, every
//! trainable tensor moved to random nonzero values, the merged weights and the export.
#![allow(dead_code)] // each test crate uses its own part

use spectune::adapter::peft::PeftExport;
use spectune::adapter::{Adapter, AdapterConfig};
use spectune::io::safetensors::NamedTensor;
use spectune::reference::Rng;
use spectune::{Gpu, Step, Tensor};

use super::block_on;

/// Two targets of different shapes (m × n, out × in), named as in a BERT encoder.
pub const TARGETS: [(&str, usize, usize); 2] = [
    ("encoder.layer.0.attention.self.query", 12, 8),
    ("encoder.layer.0.output.dense", 8, 16),
];

/// What one case gives: the base and merged weights (`<target>.weight`) and the export.
pub struct PeftCase {
    pub base: Vec<NamedTensor>,
    pub merged: Vec<NamedTensor>,
    pub export: PeftExport,
}

/// Builds `config` on random base weights (seeded), moves every trainable value by a random
/// amount, merges and exports. Asserts that no trainable value is zero and that every merged
/// weight moved, so that a check against it cannot pass vacuously.
pub fn peft_case(gpu: &Gpu, config: AdapterConfig, label: &str, seed: u64) -> PeftCase {
    let mut rng = Rng::new(seed);
    let base: Vec<NamedTensor> = TARGETS
        .iter()
        .map(|&(name, m, n)| {
            let w = (0..m * n).map(|_| rng.normal() as f32).collect();
            NamedTensor::new(format!("{name}.weight"), &[m, n], w)
        })
        .collect();
    let weights: Vec<Tensor> = base
        .iter()
        .map(|t| Tensor::from_slice(gpu, &t.shape, &t.values).unwrap())
        .collect();
    let targets: Vec<(&str, &Tensor)> = TARGETS.iter().map(|t| t.0).zip(weights.iter()).collect();
    let adapter = block_on(Adapter::new(gpu, config, &targets)).unwrap();

    // Random values around the initial ones (zeros, ones, Kaiming, PiSSA factors), all nonzero.
    let values = block_on(adapter.params().read_values(gpu)).unwrap();
    for (i, v) in values.iter().enumerate() {
        let moved: Vec<f32> = v.iter().map(|&x| x + (rng.normal() * 0.3) as f32).collect();
        assert!(
            moved.iter().all(|&x| x != 0.0),
            "{label}: a zero trainable value"
        );
        adapter.params().write(gpu, i, &moved).unwrap();
    }

    let mut step = Step::new(gpu, "peft test: merge");
    let merged: Vec<Tensor> = adapter
        .layers()
        .iter()
        .map(|l| l.merged_weight(&mut step).unwrap())
        .collect();
    step.submit().unwrap();
    let merged: Vec<NamedTensor> = merged
        .iter()
        .zip(&base)
        .map(|(w, b)| NamedTensor::new(b.name.clone(), &b.shape, block_on(w.to_vec(gpu)).unwrap()))
        .collect();
    for (w, b) in merged.iter().zip(&base) {
        let moved = w
            .values
            .iter()
            .zip(&b.values)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(
            moved > 1e-3,
            "{label}: training left {} unchanged; the check would be vacuous",
            b.name
        );
    }
    let export = block_on(adapter.export_peft(gpu)).unwrap();
    PeftCase {
        base,
        merged,
        export,
    }
}
