//! Helpers the cells' step loops share: the per-step recurrent product that leaves rows
//! starting a new sequence alone, zeroing the rows a reset cut, and small slice loops.

use super::{MatMul, Tr};

/// `out[B, n] (β·out +) = h_prev[B, k] · wᵀ` for the batch rows that do not start a new
/// sequence at this step (`reset_t[r] == 0`); rows that do are left as they are (their
/// previous state is zero, so it adds nothing). One product when no row resets.
#[allow(clippy::too_many_arguments)]
pub fn recurrent_product(
    mm: &dyn MatMul,
    batch: usize,
    n: usize,
    k: usize,
    h_prev: &[f32],
    w: &[f32],
    beta: f32,
    out: &mut [f32],
    reset_t: &[u8],
) {
    if reset_t.iter().all(|&f| f == 0) {
        mm.gemm(batch, n, k, h_prev, Tr::N, w, Tr::T, beta, out);
        return;
    }
    let mut r = 0;
    while r < batch {
        if reset_t[r] != 0 {
            r += 1;
            continue;
        }
        let end = (r..batch).find(|&e| reset_t[e] != 0).unwrap_or(batch);
        mm.gemm(
            end - r,
            n,
            k,
            &h_prev[r * k..end * k],
            Tr::N,
            w,
            Tr::T,
            beta,
            &mut out[r * n..end * n],
        );
        r = end;
    }
}

/// Elements (rows × gate width) of a step's elementwise pass below which it stays on
/// one thread: handing half to the helper costs a few microseconds.
pub const SPLIT_MIN: usize = 4096;

/// The batch rows of a step's first half when its elementwise pass over `batch` rows
/// of `width` elements is split between two threads (`MatMul::parallel`), else
/// `batch`: every row is computed alone, so the split changes no bit.
pub fn split_rows(mm: &dyn MatMul, batch: usize, width: usize) -> usize {
    if mm.parallel() && batch >= 2 && batch * width >= SPLIT_MIN {
        batch / 2
    } else {
        batch
    }
}

/// A step's reset flags cut after `rows` rows (an empty slice stays empty for both).
pub fn split_flags(flags: &[u8], rows: usize) -> (&[u8], &[u8]) {
    if flags.is_empty() {
        (flags, flags)
    } else {
        flags.split_at(rows)
    }
}

/// Zeroes the rows of `rows` ([B, width]) whose flag in `reset_t` is set.
pub fn zero_reset_rows_of(rows: &mut [f32], width: usize, reset_t: &[u8]) {
    for (row, &f) in rows.chunks_exact_mut(width).zip(reset_t) {
        if f != 0 {
            row.fill(0.0);
        }
    }
}

/// Zeroes, in a state buffer with one entry block (`[(1 + steps)·B, width]`), the rows
/// a step read as its previous state where that step starts a new sequence: what the
/// recurrent weight gradient must see. A cell whose state needs several past steps
/// (`history > 1`) must treat a reset as zeroing all of them for the steps that would
/// still see them; this helper covers `history == 1`.
pub fn zero_reset_rows(state: &mut [f32], batch: usize, width: usize, reset: &[u8]) {
    if reset.is_empty() {
        return;
    }
    for (block, flags) in state
        .chunks_exact_mut(batch * width)
        .zip(reset.chunks_exact(batch))
    {
        zero_reset_rows_of(block, width, flags);
    }
}

/// `dst += src`, elementwise.
pub fn add_assign(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// Adds the sum of the rows of `m` (rows `ld` apart, the first `acc.len()` columns)
/// onto `acc`.
pub fn add_col_sums(acc: &mut [f32], m: &[f32], ld: usize) {
    let w = acc.len();
    for row in m.chunks(ld) {
        for (a, x) in acc.iter_mut().zip(&row[..w]) {
            *a += x;
        }
    }
}

/// The reset flags of step `t` of a segment ([steps·B] flags), or an empty slice.
#[inline]
pub fn step_flags(reset: &[u8], t: usize, batch: usize) -> &[u8] {
    if reset.is_empty() {
        reset
    } else {
        &reset[t * batch..(t + 1) * batch]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::mm;

    #[test]
    fn recurrent_product_skips_reset_rows() {
        let (b, n, k) = (4, 3, 2);
        let h: Vec<f32> = (0..b * k).map(|x| x as f32 + 1.0).collect();
        let w: Vec<f32> = (0..n * k).map(|x| 0.5 * x as f32 - 1.0).collect();
        let mut full = vec![1.0f32; b * n];
        recurrent_product(&mm::NaiveMatMul, b, n, k, &h, &w, 1.0, &mut full, &[]);
        let mut cut = vec![1.0f32; b * n];
        let flags = [0, 1, 0, 0];
        recurrent_product(&mm::NaiveMatMul, b, n, k, &h, &w, 1.0, &mut cut, &flags);
        for r in 0..b {
            let (f, c) = (&full[r * n..(r + 1) * n], &cut[r * n..(r + 1) * n]);
            if flags[r] == 1 {
                assert!(c.iter().all(|&x| x == 1.0));
            } else {
                assert_eq!(f, c);
            }
        }
    }
}
