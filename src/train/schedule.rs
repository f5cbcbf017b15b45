//! Learning-rate schedules: a multiplier of the base rate for each optimizer step, with the
//! shapes Hugging Face's `get_*_schedule_with_warmup` use.

/// How the learning rate changes over training. Step numbers count from 0.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Schedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Linear warm-up from 0 over `warmup` steps, then the base rate.
    LinearWarmup { warmup: u64 },
    /// Linear warm-up over `warmup` steps, then half a cosine down to 0 at `total`.
    Cosine { warmup: u64, total: u64 },
}

impl Schedule {
    /// The multiplier of the base rate at `step`.
    pub fn factor(&self, step: u64) -> f32 {
        let warm = |warmup: u64| {
            if step < warmup {
                (step + 1) as f64 / warmup as f64
            } else {
                1.0
            }
        };
        let f = match *self {
            Schedule::Constant => 1.0,
            Schedule::LinearWarmup { warmup } => warm(warmup),
            Schedule::Cosine { warmup, total } => {
                if step < warmup {
                    warm(warmup)
                } else {
                    let span = total.saturating_sub(warmup).max(1) as f64;
                    let progress = ((step - warmup) as f64 / span).min(1.0);
                    0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            }
        };
        f as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_have_their_shapes() {
        assert_eq!(Schedule::Constant.factor(123), 1.0);
        let w = Schedule::LinearWarmup { warmup: 4 };
        let f: Vec<f32> = (0..6).map(|s| w.factor(s)).collect();
        assert_eq!(f, vec![0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
        let c = Schedule::Cosine {
            warmup: 2,
            total: 12,
        };
        assert_eq!(c.factor(0), 0.5);
        assert_eq!(c.factor(2), 1.0);
        assert!((c.factor(7) - 0.5).abs() < 1e-6, "half way down is 0.5");
        assert!(
            c.factor(12).abs() < 1e-7 && c.factor(50).abs() < 1e-7,
            "0 at and after total"
        );
        let steps: Vec<f32> = (2..=12).map(|s| c.factor(s)).collect();
        assert!(
            steps.windows(2).all(|p| p[1] <= p[0]),
            "cosine decays monotonically: {steps:?}"
        );
    }
}
