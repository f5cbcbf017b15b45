//! The merges people use for LoRAs, on task vectors (each adapter's dense change ΔW_k), as
//! mergekit and PEFT's `add_weighted_adapter` apply them: TIES (Yadav et al. 2023) and DARE
//! (Yu et al. 2024). Baselines for the fusion comparisons (docs/FUSION.md): they run on the
//! host, since a merge is done once, not per step.

use crate::adapter::LayerAdapter;
use crate::error::{Error, Result};
use crate::gpu::{read_many, Gpu, Step, Tensor};
use crate::linalg::add;
use crate::random::Rng;

/// How task vectors are merged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TaskMerge {
    /// TIES: keep each vector's largest `density` fraction of entries by magnitude, elect each
    /// entry's sign as that of the weighted sum, and average the kept entries that agree with
    /// it (weighted by w_k).
    Ties { density: f32 },
    /// DARE: drop each entry with probability `drop` (seeded), scale the rest by 1/(1 − drop),
    /// then sum with the weights (mergekit's `dare_linear`).
    Dare { drop: f32, seed: u64 },
}

/// Merges equally long task vectors with one weight each.
pub fn merge_task_vectors(
    deltas: &[Vec<f32>],
    weights: &[f32],
    how: TaskMerge,
) -> Result<Vec<f32>> {
    let len = deltas.first().map_or(0, Vec::len);
    if deltas.is_empty() || deltas.len() != weights.len() || deltas.iter().any(|d| d.len() != len) {
        return Err(Error::InvalidAdapter(format!(
            "a task merge needs one weight per task vector and vectors of one length, got {} vectors and {} weights",
            deltas.len(),
            weights.len()
        )));
    }
    match how {
        TaskMerge::Ties { density } => {
            if !(density > 0.0 && density <= 1.0) {
                return Err(Error::InvalidAdapter(format!(
                    "TIES density must be in (0, 1], got {density}"
                )));
            }
            let trimmed: Vec<Vec<f32>> = deltas.iter().map(|d| trim(d, density)).collect();
            Ok((0..len)
                .map(|i| {
                    let elected: f32 = trimmed.iter().zip(weights).map(|(t, w)| w * t[i]).sum();
                    let (mut sum, mut weight) = (0.0f32, 0.0f32);
                    for (t, &w) in trimmed.iter().zip(weights) {
                        if t[i] != 0.0 && (t[i] > 0.0) == (elected > 0.0) {
                            sum += w * t[i];
                            weight += w;
                        }
                    }
                    if weight != 0.0 {
                        sum / weight
                    } else {
                        0.0
                    }
                })
                .collect())
        }
        TaskMerge::Dare { drop, seed } => {
            if !(0.0..1.0).contains(&drop) {
                return Err(Error::InvalidAdapter(format!(
                    "DARE drop rate must be in [0, 1), got {drop}"
                )));
            }
            let mut rng = Rng::new(seed);
            let mut out = vec![0.0f32; len];
            for (d, &w) in deltas.iter().zip(weights) {
                let scale = w / (1.0 - drop);
                for (o, &x) in out.iter_mut().zip(d) {
                    if rng.uniform() >= f64::from(drop) {
                        *o += scale * x;
                    }
                }
            }
            Ok(out)
        }
    }
}

/// The vector with all but its largest `density` fraction of entries (by magnitude) zeroed.
fn trim(d: &[f32], density: f32) -> Vec<f32> {
    let keep = ((d.len() as f64 * f64::from(density)).ceil() as usize).clamp(1, d.len().max(1));
    let mut magnitudes: Vec<f32> = d.iter().map(|x| x.abs()).collect();
    let threshold = *magnitudes
        .select_nth_unstable_by(d.len() - keep, f32::total_cmp)
        .1;
    d.iter()
        .map(|&x| if x.abs() >= threshold { x } else { 0.0 })
        .collect()
}

/// W + merge(w_k ΔW_k) of `layers` (each adapting the same m×n base W): their changes are
/// recorded on the GPU, read back in one round trip, merged on the host and added to W.
pub async fn fuse_merged(
    gpu: &Gpu,
    base: &Tensor,
    layers: &[&LayerAdapter],
    weights: &[f32],
    how: TaskMerge,
) -> Result<Tensor> {
    let mut step = Step::new(gpu, "task merge: ΔW_k");
    let deltas = layers
        .iter()
        .map(|l| {
            let d = Tensor::zeros(gpu, base.shape())?;
            l.add_delta(&mut step, &d, 1.0)?;
            Ok(d)
        })
        .collect::<Result<Vec<_>>>()?;
    step.submit()?;
    let values = read_many(gpu, &deltas.iter().collect::<Vec<_>>()).await?;
    let merged = merge_task_vectors(&values, weights, how)?;
    let merged = Tensor::from_slice(gpu, base.shape(), &merged)?;
    let mut step = Step::new(gpu, "task merge: W + merged");
    let fused = add(&mut step, base, &merged)?;
    step.submit()?;
    Ok(fused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_trims_elects_and_averages_the_agreeing() {
        // Density 0.75 keeps 3 of 4 entries: a loses 0.01, b its 0. Entry 0: both positive,
        // averaged. Entry 1: the signs disagree, the weighted sum is negative, only b's is
        // kept. Entries 2 and 3: one vector each.
        let a = vec![1.0, 0.5, 0.01, 2.0];
        let b = vec![3.0, -2.0, 0.02, 0.0];
        let m =
            merge_task_vectors(&[a, b], &[1.0, 1.0], TaskMerge::Ties { density: 0.75 }).unwrap();
        assert_eq!(m, vec![2.0, -2.0, 0.02, 2.0]);
    }

    #[test]
    fn dare_keeps_the_expectation_and_refuses_bad_rates() {
        let d = vec![1.0f32; 20_000];
        let m = merge_task_vectors(&[d.clone()], &[1.0], TaskMerge::Dare { drop: 0.9, seed: 1 })
            .unwrap();
        let mean = m.iter().sum::<f32>() / m.len() as f32;
        assert!((mean - 1.0).abs() < 0.1, "{mean}");
        assert!(m.iter().all(|&x| x == 0.0 || (x - 10.0).abs() < 1e-4));
        assert!(
            merge_task_vectors(&[d.clone()], &[1.0], TaskMerge::Dare { drop: 1.0, seed: 1 })
                .is_err()
        );
        assert!(merge_task_vectors(&[d], &[1.0], TaskMerge::Ties { density: 0.0 }).is_err());
    }
}
