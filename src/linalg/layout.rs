//! Layout changes (`shaders/layout.wgsl`): transpose, and zero-padded row copies.

use crate::error::Result;
use crate::gpu::{KernelOp, Step, Tensor};
use crate::linalg::{as_batched, grid_stride_groups, to_u32};
use crate::shaders;

/// Mirrors `Params` in `layout.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LayoutParams {
    rows: u32,
    cols: u32,
    batch: u32,
    ld_out: u32,
}

/// Records Y = Xᵀ (per batch for a 3D X) and returns Y.
pub fn transpose(step: &mut Step, x: &Tensor) -> Result<Tensor> {
    let (batch, rows, cols) = as_batched("transpose", "x", x.shape())?;
    let mut shape = x.shape().to_vec();
    let last = shape.len() - 1;
    shape.swap(last - 1, last);
    let y = Tensor::uninit(step.gpu, &shape)?;
    if y.is_empty() {
        return Ok(y);
    }
    let params = LayoutParams {
        rows: to_u32("transpose", rows)?,
        cols: to_u32("transpose", cols)?,
        batch: to_u32("transpose", batch)?,
        ld_out: 0,
    };
    let kernel = step.gpu.kernel(&shaders::LAYOUT, "transpose", vec![]);
    // 16×16 invocations, each moving a 4×4 block.
    let groups = [
        cols.div_ceil(64) as u64,
        rows.div_ceil(64) as u64,
        batch as u64,
    ];
    step.push(KernelOp::new(
        step.gpu,
        "transpose",
        kernel,
        &params,
        &[(1, x), (2, &y)],
        groups,
    )?);
    Ok(y)
}

/// Records a copy of X (…, cols) into rows of length `width ≥ cols`, zero-filled past `cols`.
pub fn pad_rows(step: &mut Step, x: &Tensor, width: usize) -> Result<Tensor> {
    let cols = *x.shape().last().unwrap_or(&1);
    let rows = x.len() / cols.max(1);
    if width < cols {
        return Err(crate::Error::ShapeMismatch {
            op: "pad_rows",
            detail: format!(
                "width {width} is less than the {cols} columns of {:?}",
                x.shape()
            ),
        });
    }
    let mut shape = x.shape().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = width;
    }
    let y = Tensor::uninit(step.gpu, &shape)?;
    if y.is_empty() {
        return Ok(y);
    }
    let params = LayoutParams {
        rows: to_u32("pad_rows", rows)?,
        cols: to_u32("pad_rows", cols)?,
        batch: 1,
        ld_out: to_u32("pad_rows", width)?,
    };
    let kernel = step.gpu.kernel(&shaders::LAYOUT, "pad_rows", vec![]);
    let groups = [grid_stride_groups(y.len(), 64), 1, 1];
    step.push(KernelOp::new(
        step.gpu,
        "pad_rows",
        kernel,
        &params,
        &[(1, x), (2, &y)],
        groups,
    )?);
    Ok(y)
}

/// Records Y[offset + i, :] = X[i, :] for the rows of X (…, cols) into Y (rows_y, cols): appends
/// a step's keys or values to a KV cache without a view (whose start would need alignment).
pub fn write_rows(step: &mut Step, x: &Tensor, y: &Tensor, offset: usize) -> Result<()> {
    let cols = *y.shape().last().unwrap_or(&1);
    let rows = x.len() / cols.max(1);
    let rows_y = y.len() / cols.max(1);
    if x.shape().last() != Some(&cols) || offset + rows > rows_y {
        return Err(crate::Error::ShapeMismatch {
            op: "write_rows",
            detail: format!(
                "{:?} written at row {offset} does not fit in {:?}",
                x.shape(),
                y.shape()
            ),
        });
    }
    if x.is_empty() {
        return Ok(());
    }
    let params = LayoutParams {
        rows: to_u32("write_rows", rows)?,
        cols: to_u32("write_rows", cols)?,
        batch: 1,
        ld_out: to_u32("write_rows", offset)?,
    };
    let kernel = step.gpu.kernel(&shaders::LAYOUT, "write_rows", vec![]);
    let groups = [grid_stride_groups(x.len(), 64), 1, 1];
    step.push(KernelOp::new(
        step.gpu,
        "write_rows",
        kernel,
        &params,
        &[(1, x), (2, y)],
        groups,
    )?);
    Ok(())
}

/// Records a copy of rows start..start + count of X (…, cols) and returns it (count, cols): for
/// a row whose offset a view could not start at.
pub fn read_rows(step: &mut Step, x: &Tensor, start: usize, count: usize) -> Result<Tensor> {
    let cols = *x.shape().last().unwrap_or(&1);
    let rows_x = x.len() / cols.max(1);
    if start + count > rows_x {
        return Err(crate::Error::ShapeMismatch {
            op: "read_rows",
            detail: format!("rows {start}..{} of {:?}", start + count, x.shape()),
        });
    }
    let y = Tensor::uninit(step.gpu, &[count, cols])?;
    if y.is_empty() {
        return Ok(y);
    }
    let params = LayoutParams {
        rows: to_u32("read_rows", count)?,
        cols: to_u32("read_rows", cols)?,
        batch: 1,
        ld_out: to_u32("read_rows", start)?,
    };
    let kernel = step.gpu.kernel(&shaders::LAYOUT, "read_rows", vec![]);
    let groups = [grid_stride_groups(y.len(), 64), 1, 1];
    step.push(KernelOp::new(
        step.gpu,
        "read_rows",
        kernel,
        &params,
        &[(1, x), (2, &y)],
        groups,
    )?);
    Ok(y)
}
