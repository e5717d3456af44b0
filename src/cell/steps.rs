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

/// Elements of a segment-wide memory pass (a bias broadcast, column sums, a gather or
/// scatter of rows) below which it stays on one thread.
pub const PASS_SPLIT_MIN: usize = 1 << 15;

/// Where a pass over rows of `width` columns is cut between two threads by columns: at
/// half the width, rounded up to 16 floats (a cache line where the rows start on one, so
/// the threads do not write one line: a matter of speed only); `None` when the pass
/// stays on one thread.
fn column_cut(mm: &dyn MatMul, elems: usize, width: usize) -> Option<usize> {
    let cut = (width / 2).next_multiple_of(16);
    (mm.parallel() && elems >= PASS_SPLIT_MIN && cut > 0 && cut < width).then_some(cut)
}

/// The first row of a pass over `rows` rows cut between two threads by rows (half of
/// them), or `None` when it stays on one thread.
pub fn row_cut(mm: &dyn MatMul, rows: usize, width: usize) -> Option<usize> {
    (mm.parallel() && rows >= 2 && rows * width >= PASS_SPLIT_MIN).then_some(rows / 2)
}

/// [`add_col_sums`] with the columns shared between `mm`'s two threads: every column is
/// summed over the rows in the same order by one thread, so the bits are the same.
pub fn add_col_sums_par(mm: &dyn MatMul, acc: &mut [f32], m: &[f32], ld: usize) {
    let Some(cut) = column_cut(mm, m.len(), acc.len()) else {
        return add_col_sums(acc, m, ld);
    };
    let (a0, a1) = acc.split_at_mut(cut);
    mm.join(&mut || add_col_sums(a0, m, ld), &mut || {
        add_col_sums(a1, &m[cut..], ld)
    });
}

/// Sets every row of `out` to `row` (the rows shared between `mm`'s two threads).
pub fn broadcast_par(mm: &dyn MatMul, out: &mut [f32], row: &[f32]) {
    let fill = |o: &mut [f32]| {
        for r in o.chunks_exact_mut(row.len()) {
            r.copy_from_slice(row);
        }
    };
    match row_cut(mm, out.len() / row.len().max(1), row.len()) {
        Some(half) => {
            let (o0, o1) = out.split_at_mut(half * row.len());
            mm.join(&mut || fill(o0), &mut || fill(o1));
        }
        None => fill(out),
    }
}

/// `table[t] += rows[r]` for each row r and its token t (rows and table rows of
/// `width`), the columns shared between `mm`'s two threads: each table element gets its
/// additions in row order from one thread, so the bits are the same as one thread's.
///
/// # Panics
/// If a token has no row in `table`.
pub fn scatter_add_rows_par(
    mm: &dyn MatMul,
    table: &mut [f32],
    width: usize,
    tokens: &[u32],
    rows: &[f32],
) {
    let n = table.len() / width.max(1);
    assert!(
        tokens.iter().all(|&t| (t as usize) < n),
        "a token beyond the table"
    );
    let table = Columns(table.as_mut_ptr());
    let Some(cut) = column_cut(mm, rows.len(), width) else {
        // SAFETY: every token's row is in `table` (asserted), borrowed for the call.
        return unsafe { scatter_cols(table, width, 0..width, tokens, rows) };
    };
    // SAFETY (both): as above, and the two threads write disjoint columns.
    mm.join(
        &mut || unsafe { scatter_cols(table, width, 0..cut, tokens, rows) },
        &mut || unsafe { scatter_cols(table, width, cut..width, tokens, rows) },
    );
}

/// A table two threads write at once, in disjoint columns.
#[derive(Clone, Copy)]
struct Columns(*mut f32);

// SAFETY: the threads sharing a `Columns` write disjoint columns of it (`scatter_cols`'s
// contract), and the table outlives them (`MatMul::join` returns when both are done).
unsafe impl Send for Columns {}
// SAFETY: as above.
unsafe impl Sync for Columns {}

/// The columns `cols` of `scatter_add_rows_par`.
///
/// # Safety
/// `table` holds a row of `width` for every token, and nothing else reads or writes
/// those columns of it during the call.
unsafe fn scatter_cols(
    table: Columns,
    width: usize,
    cols: std::ops::Range<usize>,
    tokens: &[u32],
    rows: &[f32],
) {
    for (row, &t) in rows.chunks_exact(width).zip(tokens) {
        // SAFETY: the caller's: in bounds, and no other reference to these columns.
        let dst = unsafe {
            std::slice::from_raw_parts_mut(table.0.add(t as usize * width + cols.start), cols.len())
        };
        for (d, s) in dst.iter_mut().zip(&row[cols.clone()]) {
            *d += s;
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

    /// NaiveMatMul's products, with `join` on two scoped threads and a count of joins.
    struct Threads(std::sync::atomic::AtomicUsize);

    impl MatMul for Threads {
        fn mm(
            &self,
            m: usize,
            n: usize,
            k: usize,
            a: mm::Mat<'_>,
            b: mm::Mat<'_>,
            beta: f32,
            c: &mut [f32],
            c_ld: usize,
        ) {
            mm::NaiveMatMul.mm(m, n, k, a, b, beta, c, c_ld)
        }

        fn join(&self, first: &mut (dyn FnMut() + Send), second: &mut (dyn FnMut() + Send)) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::thread::scope(|s| {
                s.spawn(second);
                first();
            });
        }

        fn parallel(&self) -> bool {
            true
        }
    }

    fn fill(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 1.6e7 - 0.5)
            .collect()
    }

    /// The passes shared between two threads give the one-thread bits, at widths that
    /// are and are not multiples of 16 (1 stays on one thread), with rows of C wider than
    /// the sums (`ld`), repeated tokens, and rows too few to split.
    #[test]
    fn shared_passes_are_the_one_thread_bits() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (width, ld, rows) in [
            (1, 1, 40_000),
            (17, 20, 2_000),
            (33, 33, 1_000),
            (48, 64, 700),
            (300, 300, 120),
            (300, 300, 2),
        ] {
            let two = Threads(Default::default());
            let m = fill((rows - 1) * ld + width, 1);
            let init = fill(width, 2);
            let (mut one, mut par) = (init.clone(), init.clone());
            add_col_sums(&mut one, &m, ld);
            add_col_sums_par(&two, &mut par, &m, ld);
            assert_eq!(bits(&one), bits(&par), "column sums, width {width} ld {ld}");

            let vocab = 7;
            let tokens: Vec<u32> = (0..rows as u32).map(|r| r * 5 % vocab).collect();
            let src = fill(rows * width, 3);
            let table = fill(vocab as usize * width, 4);
            let (mut one, mut par) = (table.clone(), table.clone());
            for (row, &t) in src.chunks_exact(width).zip(&tokens) {
                for (d, s) in one[t as usize * width..][..width].iter_mut().zip(row) {
                    *d += s;
                }
            }
            scatter_add_rows_par(&two, &mut par, width, &tokens, &src);
            assert_eq!(bits(&one), bits(&par), "scatter, width {width}");

            let mut out = vec![f32::NAN; rows * width];
            broadcast_par(&two, &mut out, &init);
            assert!(out.chunks_exact(width).all(|r| bits(r) == bits(&init)));

            let joins = two.0.into_inner();
            let many = rows * width >= PASS_SPLIT_MIN;
            assert_eq!(joins > 0, many, "width {width} rows {rows}: {joins} joins");
        }
    }

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
