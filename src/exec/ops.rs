//! Elementwise and gather kernels of the executor: embedding gather and scatter, bias
//! broadcast and column sums, softmax cross-entropy, copies. No GEMMs here.

/// Copies row `tokens[r]` of `table` ([V, width]) into row r of `out`.
pub fn gather_rows(table: &[f32], width: usize, tokens: &[u32], out: &mut [f32]) {
    for (row, &t) in out.chunks_exact_mut(width).zip(tokens) {
        let t = t as usize;
        row.copy_from_slice(&table[t * width..(t + 1) * width]);
    }
}

/// Adds row r of `rows` onto row `tokens[r]` of `table`.
pub fn scatter_add_rows(table: &mut [f32], width: usize, tokens: &[u32], rows: &[f32]) {
    for (row, &t) in rows.chunks_exact(width).zip(tokens) {
        let t = t as usize;
        for (d, s) in table[t * width..(t + 1) * width].iter_mut().zip(row) {
            *d += s;
        }
    }
}

/// Sets every row of `out` to `a + b` (the two biases of a layer).
pub fn broadcast_bias2(out: &mut [f32], a: &[f32], b: &[f32]) {
    for row in out.chunks_exact_mut(a.len()) {
        for ((o, x), y) in row.iter_mut().zip(a).zip(b) {
            *o = x + y;
        }
    }
}

/// Sets every row of `out` to `a`.
pub fn broadcast_bias(out: &mut [f32], a: &[f32]) {
    for row in out.chunks_exact_mut(a.len()) {
        row.copy_from_slice(a);
    }
}

/// Adds the sum of the rows of `m` onto `acc`.
pub fn add_col_sums(acc: &mut [f32], m: &[f32]) {
    for row in m.chunks_exact(acc.len()) {
        for (a, x) in acc.iter_mut().zip(row) {
            *a += x;
        }
    }
}

/// `dst += src`, elementwise.
pub fn add_assign(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// Softmax cross-entropy over the rows of `logits` ([rows, V]) against `targets`.
/// Returns the summed loss (f64) and replaces the logits by dL/dlogits · `scale`, where
/// `scale` is 1 / (number of terms in the mean).
pub fn softmax_xent(logits: &mut [f32], vocab: usize, targets: &[u32], scale: f32) -> f64 {
    let mut loss = 0.0f64;
    for (row, &t) in logits.chunks_exact_mut(vocab).zip(targets) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let t = t as usize;
        let shifted_target = row[t] - max;
        let mut sum = 0.0f32;
        for x in row.iter_mut() {
            *x = crate::cell::act::exp_nonpos(*x - max);
            sum += *x;
        }
        loss += sum.ln() as f64 - shifted_target as f64;
        let k = scale / sum;
        for x in row.iter_mut() {
            *x *= k;
        }
        row[t] -= scale;
    }
    loss
}
