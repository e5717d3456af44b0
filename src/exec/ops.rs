//! Elementwise and gather kernels of the executor: embedding gather and the heads'
//! losses (softmax cross-entropy, squared error). No GEMMs here. The passes that may be
//! shared between two threads (bias broadcast, column sums, scatter) are in
//! `cell::steps`.

/// Copies row `tokens[r]` of `table` ([V, width]) into row r of `out`.
pub fn gather_rows(table: &[f32], width: usize, tokens: &[u32], out: &mut [f32]) {
    for (row, &t) in out.chunks_exact_mut(width).zip(tokens) {
        let t = t as usize;
        row.copy_from_slice(&table[t * width..(t + 1) * width]);
    }
}

/// The index of the largest value (the first of equals).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

/// Softmax cross-entropy over the rows of `logits` ([rows, V]) against `targets`, for
/// the rows whose `mask` is set. Returns the summed loss (f64) and replaces the logits
/// by dL/dlogits · `scale` (zero on masked rows), where `scale` is 1 / (number of terms
/// in the mean).
pub fn softmax_xent(
    logits: &mut [f32],
    vocab: usize,
    targets: &[u32],
    mask: &[u8],
    scale: f32,
) -> f64 {
    let mut loss = 0.0f64;
    for ((row, &t), &m) in logits.chunks_exact_mut(vocab).zip(targets).zip(mask) {
        if m == 0 {
            row.fill(0.0);
            continue;
        }
        let max = row_max(row);
        let t = t as usize;
        let shifted_target = row[t] - max;
        // The exponentials in one vectorised pass, then their sum.
        for x in row.iter_mut() {
            *x = crate::cell::act::exp_nonpos(*x - max);
        }
        let sum = row_sum(row);
        loss += sum.ln() as f64 - shifted_target as f64;
        let k = scale / sum;
        for x in row.iter_mut() {
            *x *= k;
        }
        row[t] -= scale;
    }
    loss
}

/// Partial maxima and sums kept by the loops below (eight: one AVX2 vector).
const PARTS: usize = 8;

/// The largest element (NaN ignored, as `f32::max` does), eight lanes at a time: the
/// maximum of a set does not depend on the order it is taken in.
fn row_max(row: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; PARTS];
    let mut chunks = row.chunks_exact(PARTS);
    for c in &mut chunks {
        for (m, &x) in m.iter_mut().zip(c) {
            *m = m.max(x);
        }
    }
    let tail = chunks.remainder().iter().copied();
    m.into_iter().chain(tail).fold(f32::NEG_INFINITY, f32::max)
}

/// The sum of `row` in eight interleaved partial sums, added in a fixed order: the
/// same bits on every run and under every policy, and a loop that vectorises.
fn row_sum(row: &[f32]) -> f32 {
    let mut s = [0.0f32; PARTS];
    let mut chunks = row.chunks_exact(PARTS);
    for c in &mut chunks {
        for (s, &x) in s.iter_mut().zip(c) {
            *s += x;
        }
    }
    let lanes = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
    chunks.remainder().iter().fold(lanes, |acc, &x| acc + x)
}

/// Squared error of the rows of `pred` ([rows, K]) against `targets` ([rows, K]), for
/// the rows whose `mask` is set. Returns the summed squared error (f64) and replaces
/// the predictions by dL/dpred = 2·(pred − target)·`scale` (zero on masked rows), where
/// `scale` is 1 / (number of terms in the mean).
pub fn squared_error(pred: &mut [f32], k: usize, targets: &[f32], mask: &[u8], scale: f32) -> f64 {
    let mut loss = 0.0f64;
    let two = 2.0 * scale;
    for ((row, y), &m) in pred
        .chunks_exact_mut(k)
        .zip(targets.chunks_exact(k))
        .zip(mask)
    {
        if m == 0 {
            row.fill(0.0);
            continue;
        }
        for (p, &y) in row.iter_mut().zip(y) {
            let d = *p - y;
            loss += d as f64 * d as f64;
            *p = two * d;
        }
    }
    loss
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_rows_add_nothing() {
        let mut z = vec![0.5f32, -1.0, 2.0, 0.0, 3.0, 1.0];
        let loss = softmax_xent(&mut z, 3, &[2, 0], &[1, 0], 1.0);
        let p2 = 2f64.exp() / (0.5f64.exp() + (-1f64).exp() + 2f64.exp());
        assert!((loss + p2.ln()).abs() < 1e-6, "{loss}");
        assert_eq!(&z[3..], &[0.0, 0.0, 0.0]);
        assert!(
            (z.iter().take(3).sum::<f32>()).abs() < 1e-6,
            "softmax − one-hot sums to 0"
        );
        let mut p = vec![1.0f32, 2.0, 5.0, 5.0];
        let loss = squared_error(&mut p, 2, &[0.0, 0.0, 1.0, 1.0], &[1, 0], 0.25);
        assert_eq!(loss, 5.0);
        assert_eq!(p, vec![0.5, 1.0, 0.0, 0.0]);
    }
}
