//! Losses, each returning the loss (a one-element tensor, read back only when wanted) and its
//! gradient with respect to the prediction.

use crate::error::{Error, Result};
use crate::gpu::{Step, Tensor};
use crate::linalg::{axpby, scale, sum_squares};

/// Mean squared error L = (1/N) Σ (y − t)² over all N elements; returns (L, ∂L/∂y).
pub fn mse(step: &mut Step, y: &Tensor, target: &Tensor) -> Result<(Tensor, Tensor)> {
    if y.shape() != target.shape() {
        return Err(Error::ShapeMismatch {
            op: "mse",
            detail: format!(
                "prediction {:?} and target {:?} differ",
                y.shape(),
                target.shape()
            ),
        });
    }
    let n = y.len().max(1) as f32;
    // dy = (2/N)(y − t); then L = Σ dy² · N/4, with no second pass over y and t.
    let dy = axpby(step, 2.0 / n, y, -2.0 / n, target)?;
    let loss = sum_squares(step, &dy)?;
    scale(step, n / 4.0, &loss)?;
    Ok((loss, dy))
}
