//! An independent f64 reference of the LSTM language model, written from PyTorch's
//! equations with plain loops (no shared code with the executor beyond the parameter
//! layout's names and offsets). Used for finite-difference gradient checks.

use recur::spec::{ModelSpec, ParamLayout};

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Mean cross-entropy of one window ([T, B] time-major tokens) from initial state
/// `state` (per layer: h [B, H] then c [B, H]); returns the loss and the final state.
pub fn loss(
    m: &ModelSpec,
    lay: &ParamLayout,
    p: &[f64],
    input: &[u32],
    target: &[u32],
    batch: usize,
    state: &[f64],
) -> (f64, Vec<f64>) {
    let (h, e, v) = (m.hidden, m.embed, m.vocab);
    let t_len = input.len() / batch;
    let mut st = state.to_vec();
    let mut total = 0.0;
    for t in 0..t_len {
        for b in 0..batch {
            let tok = input[t * batch + b] as usize;
            let emb = &p[lay.embedding().range()];
            let mut x: Vec<f64> = emb[tok * e..(tok + 1) * e].to_vec();
            for l in 0..m.layers {
                let iw = x.len();
                let (wi, wh) = (&p[lay.w_ih(l).range()], &p[lay.w_hh(l).range()]);
                let (bi, bh) = (&p[lay.b_ih(l).range()], &p[lay.b_hh(l).range()]);
                let base = 2 * l * batch * h;
                let hp: Vec<f64> = st[base + b * h..base + (b + 1) * h].to_vec();
                let cbase = base + batch * h;
                let cp: Vec<f64> = st[cbase + b * h..cbase + (b + 1) * h].to_vec();
                let gate = |k: usize| -> f64 {
                    let mut s = bi[k] + bh[k];
                    for j in 0..iw {
                        s += wi[k * iw + j] * x[j];
                    }
                    for j in 0..h {
                        s += wh[k * h + j] * hp[j];
                    }
                    s
                };
                let mut hn = vec![0.0; h];
                for j in 0..h {
                    let i = sigmoid(gate(j));
                    let f = sigmoid(gate(h + j));
                    let g = gate(2 * h + j).tanh();
                    let o = sigmoid(gate(3 * h + j));
                    let c = f * cp[j] + i * g;
                    hn[j] = o * c.tanh();
                    st[cbase + b * h + j] = c;
                }
                st[base + b * h..base + (b + 1) * h].copy_from_slice(&hn);
                x = hn;
            }
            let (fw, fb) = (&p[lay.fc_w().range()], &p[lay.fc_b().range()]);
            let logits: Vec<f64> = (0..v)
                .map(|k| fb[k] + (0..h).map(|j| fw[k * h + j] * x[j]).sum::<f64>())
                .collect();
            let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = mx + logits.iter().map(|z| (z - mx).exp()).sum::<f64>().ln();
            total += lse - logits[target[t * batch + b] as usize];
        }
    }
    (total / (t_len * batch) as f64, st)
}
