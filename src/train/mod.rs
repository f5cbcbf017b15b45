//! Training: trainable parameters in one flat store ([`Params`]), AdamW with clipping and
//! schedules ([`Optimizer`]), losses, and the loop ([`Trainer`] over any [`Trainable`]). Below `adapter/` and `model/`: it knows tensors and
//! gradients, not layers.

mod adamw;
mod loss;
mod params;
mod schedule;
mod trainer;

pub use adamw::{AdamW, Optimizer};
pub use loss::mse;
pub use params::{Param, ParamSpec, Params};
pub use schedule::Schedule;
pub use trainer::{FitReport, Progress, Trainable, Trainer, TrainerConfig, CHECKPOINT_FORMAT};
