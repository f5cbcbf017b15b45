//! Training: trainable parameters in one flat store ([`Params`]), AdamW with clipping and
//! schedules ([`Optimizer`]), and losses. Below `adapter/` and `model/`: it knows tensors and
//! gradients, not layers.

mod adamw;
mod loss;
mod params;
mod schedule;

pub use adamw::{AdamW, Optimizer};
pub use loss::mse;
pub use params::{Param, ParamSpec, Params};
pub use schedule::Schedule;
