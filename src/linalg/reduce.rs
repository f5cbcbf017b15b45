//! Reductions (`shaders/reduce.wgsl`): sums and sums of squares, per row and whole.

use crate::error::Result;
use crate::gpu::{KernelOp, Step, Tensor};
use crate::linalg::to_u32;
use crate::shaders;

/// Mirrors `Params` in `reduce.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ReduceParams {
    rows: u32,
    cols: u32,
    total: u32,
    grid_x: u32,
}

/// Elements per partial sum in the first pass of a whole-tensor reduction.
const CHUNK: usize = 4096;

/// Records out[r] = Σ_j f(x[r, j]) for x viewed as (rows, cols).
fn reduce_rows(
    step: &mut Step,
    entry: &'static str,
    x: &Tensor,
    rows: usize,
    cols: usize,
) -> Result<Tensor> {
    let out = Tensor::uninit(step.gpu, &[rows])?;
    if rows == 0 {
        return Ok(out);
    }
    let grid_x = rows.min(65535);
    let params = ReduceParams {
        rows: to_u32(entry, rows)?,
        cols: to_u32(entry, cols)?,
        total: to_u32(entry, x.len())?,
        grid_x: to_u32(entry, grid_x)?,
    };
    let kernel = step.gpu.kernel(&shaders::REDUCE, entry, vec![]);
    let groups = [grid_x as u64, rows.div_ceil(grid_x) as u64, 1];
    step.push(KernelOp::new(
        step.gpu,
        entry,
        kernel,
        &params,
        &[(1, x), (2, &out)],
        groups,
    )?);
    Ok(out)
}

fn last_dim(x: &Tensor) -> (usize, usize) {
    let cols = x.shape().last().copied().unwrap_or(1);
    (x.len().checked_div(cols).unwrap_or(0), cols)
}

/// Records the sum of each row (last dimension) of X; returns a tensor of X's row count.
pub fn sum_rows(step: &mut Step, x: &Tensor) -> Result<Tensor> {
    let (rows, cols) = last_dim(x);
    reduce_rows(step, "sum_rows", x, rows, cols)
}

/// Records the sum of squares of each row (last dimension) of X.
pub fn sum_squares_rows(step: &mut Step, x: &Tensor) -> Result<Tensor> {
    let (rows, cols) = last_dim(x);
    reduce_rows(step, "sum_squares_rows", x, rows, cols)
}

/// Two passes: partial sums over chunks, then the sum of the partials. Returns shape [1].
fn reduce_all(step: &mut Step, entry: &'static str, x: &Tensor) -> Result<Tensor> {
    let chunks = x.len().div_ceil(CHUNK).max(1);
    let partial = reduce_rows(step, entry, x, chunks, CHUNK)?;
    let total = reduce_rows(step, "sum_rows", &partial, 1, chunks)?;
    total.reshape(&[1])
}

/// Records Σ x over all elements; returns shape [1].
pub fn sum(step: &mut Step, x: &Tensor) -> Result<Tensor> {
    reduce_all(step, "sum_rows", x)
}

/// Records Σ x² over all elements (the squared Frobenius norm); returns shape [1].
pub fn sum_squares(step: &mut Step, x: &Tensor) -> Result<Tensor> {
    reduce_all(step, "sum_squares_rows", x)
}
