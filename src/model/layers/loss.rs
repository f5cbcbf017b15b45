//! Softmax cross-entropy over classes with integer labels (`shaders/loss.wgsl`): the
//! classifier head's loss.

use crate::error::{Error, Result};
use crate::gpu::{KernelOp, Step, Tensor};
use crate::linalg::{sum, to_u32};
use crate::model::layers::{row_grid, upload_ids};
use crate::shaders;

/// Mirrors `Params` in `loss.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LossParams {
    rows: u32,
    classes: u32,
    grid_x: u32,
    inv_rows: f32,
}

/// Records the mean softmax cross-entropy L = (1/rows) Σ_r (logsumexp(z_r) − z_r[labels[r]])
/// of logits z (rows, classes) and returns (L as a one-element tensor, ∂L/∂z (rows, classes)).
/// A label ≥ classes is an [`Error::IndexOutOfRange`] before anything is recorded. Three
/// dispatches: the rows (one workgroup each), then `linalg::sum`'s two passes.
///
/// ```no_run
/// # fn demo(step: &mut spectune::Step, logits: &spectune::Tensor) -> spectune::Result<()> {
/// use spectune::model::layers::cross_entropy;
/// let (loss, d_logits) = cross_entropy(step, logits, &[1, 0, 1])?; // logits (3, 2)
/// # Ok(()) }
/// ```
pub fn cross_entropy(step: &mut Step, logits: &Tensor, labels: &[u32]) -> Result<(Tensor, Tensor)> {
    const OP: &str = "cross_entropy";
    let &[rows, classes] = logits.shape() else {
        return Err(Error::ShapeMismatch {
            op: OP,
            detail: format!(
                "logits have shape {:?}: they must be (rows, classes)",
                logits.shape()
            ),
        });
    };
    if labels.len() != rows {
        return Err(Error::ShapeMismatch {
            op: OP,
            detail: format!(
                "{} labels for logits of shape {:?}",
                labels.len(),
                logits.shape()
            ),
        });
    }
    if rows == 0 || classes == 0 {
        return Err(Error::EmptyMatrix {
            what: "cross-entropy logits".into(),
            shape: logits.shape().to_vec(),
        });
    }
    let gpu = step.gpu();
    let labels = upload_ids(gpu, "labels", &[rows], labels, classes)?;
    let d_logits = Tensor::uninit(gpu, logits.shape())?;
    let row_loss = Tensor::uninit(gpu, &[rows])?;
    let (grid_x, grid_y) = row_grid(rows);
    let params = LossParams {
        rows: to_u32(OP, rows)?,
        classes: to_u32(OP, classes)?,
        grid_x: to_u32(OP, grid_x)?,
        inv_rows: 1.0 / rows as f32,
    };
    to_u32(OP, logits.len())?;
    let kernel = gpu.kernel(&shaders::LOSS, OP, vec![]);
    step.push(KernelOp::new(
        gpu,
        OP,
        kernel,
        &params,
        &[(1, logits), (2, &labels), (3, &d_logits), (4, &row_loss)],
        [grid_x as u64, grid_y as u64, 1],
    )?);
    let loss = sum(step, &row_loss)?;
    Ok((loss, d_logits))
}
