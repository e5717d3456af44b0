//! An independent f64 reference model for finite-difference gradient checks.
//!
//! Written from PyTorch's equations with plain loops; it shares no code with the crate
//! (nothing here uses `recur`). Parameters are looked up by their PyTorch state-dict
//! names in a map of row-major f64 vectors with PyTorch's shapes:
//! `embedding.weight` [V, E] (token input only), `lstm.`/`gru.` + `weight_ih_l{k}`
//! [G*H, I], `weight_hh_l{k}` [G*H, H], `bias_ih_l{k}` / `bias_hh_l{k}` [G*H] (G = 4
//! for LSTM, gates i, f, g, o; G = 3 for GRU, gates r, z, n), `fc.weight` [K, H] and
//! `fc.bias` [K].
//!
//! Semantics (the project's definitions):
//! - `reset[t, b] = 1`: the state entering step t for row b is zero (every layer, every
//!   state);
//! - the recurrence always runs over all T steps; the mask only selects what the loss
//!   sees, and the returned state is the one after step T − 1;
//! - `lm`: mean cross-entropy over the positions with mask = 1 (all when no mask);
//! - `regress`: squared error summed over unmasked positions / (their count × K), which
//!   is `nn.MSELoss()` when there is no mask;
//! - `classify`: row b is predicted from the top layer's h at its last step with
//!   mask = 1 (step T − 1 when no mask; a row without one contributes nothing);
//!   cross-entropy mean over the contributing rows;
//! - a loss with nothing contributing is 0.

use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefCell {
    Lstm,
    Gru,
    /// The LSTM with diagonal peepholes `weight_ci`, `weight_cf` (on c_{t-1}) and
    /// `weight_co` (on c_t), [H] each, under the `lstm.` prefix.
    Peephole,
    /// The multi-lag unit of M lags: a GRU whose `weight_hh` is [3H, M*H] over the
    /// stacked [h_{t-1}; ...; h_{t-M}] (zero where a lag lies before the row's sequence),
    /// whose update uses h_{t-1} alone; under `multilag.`. The reference keeps each
    /// row's whole history and where its sequence starts; its state in and out per layer
    /// is recur's form: the last M h (oldest first, [M, B, H]) and the age [B], how many
    /// of them belong to the current sequence.
    MultiLag(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefHead {
    Lm,
    Regress,
    Classify,
}

#[derive(Clone, Debug)]
pub struct RefModel {
    pub cell: RefCell,
    pub layers: usize,
    pub hidden: usize,
    pub head: RefHead,
    /// None: token input via `embedding.weight`; Some(n): f32 features of width n
    pub features: Option<usize>,
    /// An LSTM's output projection P (`weight_hr_l{k}` [P, H], `weight_hh_l{k}`
    /// [4H, P]): h = W_hr (o ⊙ tanh c) is P wide, and so are the next layer's input,
    /// the head's and the state's h block.
    pub proj: Option<usize>,
    /// Dropout between layers: each layer's input above layer 0 is the layer below's
    /// output, unit j of position t·B + b kept (and scaled by 1/(1 − p)) or zeroed as
    /// `dropout_keep` says.
    pub dropout: Option<RefDropout>,
    /// Each layer also runs in reverse time (`_reverse` tensors), from a zero state at
    /// the window's last step and afresh before every reset; the next layer and the
    /// head read [forward; reverse] at each step, except that a classifier reads the
    /// reverse half at its sequence's first step (PyTorch's h_n). The state per layer
    /// is the forward direction's, then the reverse one's (after step 0, never read).
    pub bidirectional: bool,
}

/// Dropout's drop probability and the key of its masks (the run's seed and the
/// window's round).
#[derive(Clone, Copy, Debug)]
pub struct RefDropout {
    pub p: f64,
    pub seed: u64,
    pub round: u64,
}

/// The documented mask (docs/cells.md, "Dropout"), written again from its definition:
/// splitmix64's finaliser chained over seed, round, layer, position and unit; kept when
/// the top 32 bits are at least p·2³².
pub fn dropout_keep(d: &RefDropout, layer: u64, position: u64, unit: u64) -> bool {
    fn fin(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    const G: u64 = 0x9E3779B97F4A7C15;
    let mut k = fin(d.seed ^ G);
    k = fin(k ^ d.round.wrapping_mul(G));
    k = fin(k ^ layer.wrapping_mul(0xD6E8FEB86659FD93));
    k = fin(k ^ position.wrapping_mul(0xA0761D6478BD642F));
    let u = fin(k ^ unit.wrapping_mul(G)) >> 32;
    u >= (d.p * 4294967296.0) as u64
}

/// The input of one window, time-major.
#[derive(Clone, Debug)]
pub enum RefInput {
    /// [T, B]
    Tokens(Vec<u32>),
    /// [T, B, N]
    Features(Vec<f64>),
}

/// What the head is scored against.
#[derive(Clone, Debug)]
pub enum RefTarget {
    /// [T, B] (lm)
    Tokens(Vec<u32>),
    /// [T, B, K] (regress)
    Values(Vec<f64>),
    /// [B] (classify)
    Labels(Vec<u32>),
}

#[derive(Clone, Debug)]
pub struct RefBatch {
    pub batch: usize,
    pub input: RefInput,
    pub target: RefTarget,
    /// [T, B], 1 = the position counts
    pub mask: Option<Vec<u8>>,
    /// [T, B], 1 = a new sequence starts at this step for this row
    pub reset: Option<Vec<u8>>,
}

impl RefCell {
    fn prefix(self) -> &'static str {
        match self {
            RefCell::Lstm | RefCell::Peephole => "lstm",
            RefCell::Gru => "gru",
            RefCell::MultiLag(_) => "multilag",
        }
    }

    /// Past states each step reads.
    fn lags(self) -> usize {
        match self {
            RefCell::MultiLag(m) => m,
            _ => 1,
        }
    }

    /// State elements per layer: [h, c] or [h] blocks of [B, H] (h [B, P] when
    /// projected); a multi-lag ring and its age.
    fn state_len(self, nb: usize, hid: usize, out: usize) -> usize {
        match self {
            RefCell::Lstm | RefCell::Peephole => nb * out + nb * hid,
            RefCell::Gru => nb * hid,
            RefCell::MultiLag(m) => m * nb * hid + nb,
        }
    }

    /// Gate blocks in the weight rows.
    fn gates(self) -> usize {
        match self {
            RefCell::Lstm | RefCell::Peephole => 4,
            RefCell::Gru | RefCell::MultiLag(_) => 3,
        }
    }
}

fn get<'a>(p: &'a HashMap<String, Vec<f64>>, name: &str) -> &'a [f64] {
    p.get(name)
        .unwrap_or_else(|| panic!("reference: no parameter {name}"))
}

fn param<'a>(p: &'a HashMap<String, Vec<f64>>, name: &str, len: usize) -> &'a [f64] {
    let v = get(p, name);
    assert_eq!(
        v.len(),
        len,
        "reference: {name} has {} values, expected {len}",
        v.len()
    );
    v
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `w x + b` for `w` [b.len(), x.len()] row-major.
fn affine(w: &[f64], b: &[f64], x: &[f64]) -> Vec<f64> {
    let n = x.len();
    assert_eq!(w.len(), b.len() * n, "reference: weight shape");
    b.iter()
        .enumerate()
        .map(|(k, &bk)| {
            bk + w[k * n..(k + 1) * n]
                .iter()
                .zip(x)
                .map(|(w, x)| w * x)
                .sum::<f64>()
        })
        .collect()
}

/// −log softmax(logits)[target].
fn cross_entropy(logits: &[f64], target: u32) -> f64 {
    let t = target as usize;
    assert!(t < logits.len(), "reference: class {t} of {}", logits.len());
    let mx = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = mx + logits.iter().map(|z| (z - mx).exp()).sum::<f64>().ln();
    lse - logits[t]
}

/// One layer's weights, `[G*H, I]`, `[G*H, H]`, `[G*H]`, `[G*H]`.
struct Layer<'a> {
    w_ih: &'a [f64],
    w_hh: &'a [f64],
    b_ih: &'a [f64],
    b_hh: &'a [f64],
    /// Peepholes p_i, p_f, p_o [H] (a peephole LSTM only).
    peep: Option<[&'a [f64]; 3]>,
    /// The output projection [P, H] (a projected LSTM only).
    w_hr: Option<&'a [f64]>,
}

impl<'a> Layer<'a> {
    fn get(m: &RefModel, p: &'a HashMap<String, Vec<f64>>, l: usize, input: usize) -> Self {
        let (pre, gh) = (m.cell.prefix(), m.cell.gates() * m.hidden);
        let out = m.proj.unwrap_or(m.hidden);
        Layer {
            w_ih: param(p, &format!("{pre}.weight_ih_l{l}"), gh * input),
            w_hh: param(
                p,
                &format!("{pre}.weight_hh_l{l}"),
                gh * out * m.cell.lags(),
            ),
            b_ih: param(p, &format!("{pre}.bias_ih_l{l}"), gh),
            b_hh: param(p, &format!("{pre}.bias_hh_l{l}"), gh),
            peep: (m.cell == RefCell::Peephole).then(|| {
                ["ci", "cf", "co"].map(|k| param(p, &format!("{pre}.weight_{k}_l{l}"), m.hidden))
            }),
            w_hr: m
                .proj
                .map(|pw| param(p, &format!("{pre}.weight_hr_l{l}"), pw * m.hidden)),
        }
    }

    /// One LSTM step: (h, c) -> (h', c'); h' = W_hr (o ⊙ tanh c') when projected.
    fn lstm(&self, x: &[f64], h: &[f64], c: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let n = c.len();
        let gi = affine(self.w_ih, self.b_ih, x);
        let gh = affine(self.w_hh, self.b_hh, h);
        let gate = |k: usize| gi[k] + gh[k];
        let (mut h2, mut c2) = (vec![0.0; n], vec![0.0; n]);
        // Peepholes: i and f see c_{t-1}, o sees c_t.
        let peep = |k: usize, j: usize| self.peep.map_or(0.0, |p| p[k][j]);
        for j in 0..n {
            let i = sigmoid(gate(j) + peep(0, j) * c[j]);
            let f = sigmoid(gate(n + j) + peep(1, j) * c[j]);
            let g = gate(2 * n + j).tanh();
            c2[j] = f * c[j] + i * g;
            let o = sigmoid(gate(3 * n + j) + peep(2, j) * c2[j]);
            h2[j] = o * c2[j].tanh();
        }
        if let Some(w_hr) = self.w_hr {
            let zero = vec![0.0; w_hr.len() / n];
            h2 = affine(w_hr, &zero, &h2);
        }
        (h2, c2)
    }

    /// One GRU step: h -> h', the recurrent product over `s` (h itself, or a
    /// multi-lag unit's stacked lags).
    fn gru(&self, x: &[f64], s: &[f64], h: &[f64]) -> Vec<f64> {
        let n = h.len();
        let gi = affine(self.w_ih, self.b_ih, x);
        let gh = affine(self.w_hh, self.b_hh, s);
        (0..n)
            .map(|j| {
                let r = sigmoid(gi[j] + gh[j]);
                let z = sigmoid(gi[n + j] + gh[n + j]);
                let cand = (gi[2 * n + j] + r * gh[2 * n + j]).tanh();
                (1.0 - z) * cand + z * h[j]
            })
            .collect()
    }
}

/// Loss of one window from `state0` (per layer, per state in order [h, c] for LSTM, [h]
/// for GRU, each [B, H] row-major; i.e. layer l's h at offset l*S*B*H where S = states
/// per layer), and the final state in the same layout.
pub fn loss(
    m: &RefModel,
    p: &HashMap<String, Vec<f64>>,
    b: &RefBatch,
    state0: &[f64],
) -> (f64, Vec<f64>) {
    if m.bidirectional {
        return loss_bidir(m, p, b, state0);
    }
    let (hid, nb) = (m.hidden, b.batch);
    // Each layer's output width: P when projected.
    let out = m.proj.unwrap_or(hid);
    let per_layer = m.cell.state_len(nb, hid, out);
    // The first layer's input width: N, or the embedding width E.
    let w_ih0 = format!("{}.weight_ih_l0", m.cell.prefix());
    let in_width = get(p, &w_ih0).len() / (m.cell.gates() * hid);
    let steps = match (&b.input, m.features) {
        (RefInput::Tokens(tok), None) => tok.len() / nb,
        (RefInput::Features(x), Some(n)) => {
            assert_eq!(n, in_width, "reference: {w_ih0} takes {in_width} features");
            x.len() / (nb * n)
        }
        _ => panic!("reference: input kind does not match the model's"),
    };
    let emb: &[f64] = match m.features {
        None => {
            let emb = get(p, "embedding.weight");
            assert!(
                in_width > 0 && emb.len().is_multiple_of(in_width),
                "reference: embedding.weight shape"
            );
            emb
        }
        Some(_) => &[],
    };
    assert_eq!(
        state0.len(),
        m.layers * per_layer,
        "reference: state0 length"
    );
    let layers: Vec<Layer> = (0..m.layers)
        .map(|l| Layer::get(m, p, l, if l == 0 { in_width } else { out }))
        .collect();
    let flag = |v: &Option<Vec<u8>>, t: usize, r: usize| {
        v.as_ref().map(|v| {
            assert_eq!(v.len(), steps * nb, "reference: mask/reset is [T, B]");
            v[t * nb + r] != 0
        })
    };

    let mut st = state0.to_vec();
    // A multi-lag unit's history, kept apart from recur's (ring, age) form: per layer
    // and row, every h so far (the carried ring's M first, oldest first, then each
    // step's) and the position where the row's current sequence starts. Lag k of the
    // step about to run is the history's entry len - k if that is at or after the start,
    // else zero. Converted back to (ring, age) at the end.
    let mut hist: Vec<Vec<(Vec<Vec<f64>>, usize)>> = Vec::new();
    if let RefCell::MultiLag(lags) = m.cell {
        for l in 0..m.layers {
            let base = l * per_layer;
            hist.push(
                (0..nb)
                    .map(|r| {
                        let ring: Vec<Vec<f64>> = (0..lags)
                            .map(|j| {
                                let at = base + (j * nb + r) * hid;
                                st[at..at + hid].to_vec()
                            })
                            .collect();
                        let age = st[base + lags * nb * hid + r] as usize;
                        (ring, lags - age.min(lags))
                    })
                    .collect(),
            );
        }
    }
    // Top layer's h at every (t, b): [T, B, out].
    let mut top = vec![0.0; steps * nb * out];
    for t in 0..steps {
        for r in 0..nb {
            if flag(&b.reset, t, r) == Some(true) {
                // The new sequence starts here: nothing before counts.
                for rows in hist.iter_mut() {
                    rows[r].1 = rows[r].0.len();
                }
                if !matches!(m.cell, RefCell::MultiLag(_)) {
                    for l in 0..m.layers {
                        // h [B, out], then c [B, H] for an LSTM.
                        let h_at = l * per_layer + r * out;
                        st[h_at..h_at + out].fill(0.0);
                        if per_layer > nb * out {
                            let c_at = l * per_layer + nb * out + r * hid;
                            st[c_at..c_at + hid].fill(0.0);
                        }
                    }
                }
            }
            let mut x: Vec<f64> = match &b.input {
                RefInput::Tokens(tok) => {
                    let row = tok[t * nb + r] as usize;
                    emb[row * in_width..(row + 1) * in_width].to_vec()
                }
                RefInput::Features(f) => {
                    f[(t * nb + r) * in_width..(t * nb + r + 1) * in_width].to_vec()
                }
            };
            for (l, layer) in layers.iter().enumerate() {
                if let (Some(d), true) = (&m.dropout, l > 0) {
                    let pos = (t * nb + r) as u64;
                    for (j, v) in x.iter_mut().enumerate() {
                        *v = match dropout_keep(d, l as u64, pos, j as u64) {
                            true => *v / (1.0 - d.p),
                            false => 0.0,
                        };
                    }
                }
                if let RefCell::MultiLag(lags) = m.cell {
                    let (seq, start) = &mut hist[l][r];
                    let now = seq.len();
                    // S = [h_{t-1}; ...; h_{t-M}], zero before the sequence's start.
                    let mut stacked = vec![0.0; lags * hid];
                    for k in 1..=lags {
                        if now >= k && now - k >= *start {
                            stacked[(k - 1) * hid..k * hid].copy_from_slice(&seq[now - k]);
                        }
                    }
                    let h_prev = stacked[..hid].to_vec();
                    let h2 = layer.gru(&x, &stacked, &h_prev);
                    seq.push(h2.clone());
                    x = h2;
                    continue;
                }
                let h_at = l * per_layer + r * out;
                let h = st[h_at..h_at + out].to_vec();
                let h2 = match m.cell {
                    RefCell::Lstm | RefCell::Peephole => {
                        let c_at = l * per_layer + nb * out + r * hid;
                        let (h2, c2) = layer.lstm(&x, &h, &st[c_at..c_at + hid]);
                        st[c_at..c_at + hid].copy_from_slice(&c2);
                        h2
                    }
                    RefCell::Gru => layer.gru(&x, &h, &h),
                    RefCell::MultiLag(_) => unreachable!("handled above"),
                };
                st[h_at..h_at + out].copy_from_slice(&h2);
                x = h2;
            }
            top[(t * nb + r) * out..(t * nb + r + 1) * out].copy_from_slice(&x);
        }
    }

    let fc_b = get(p, "fc.bias");
    let k_out = fc_b.len();
    let fc_w = param(p, "fc.weight", k_out * out);
    let head =
        |t: usize, r: usize| affine(fc_w, fc_b, &top[(t * nb + r) * out..(t * nb + r + 1) * out]);
    let counts = |t: usize, r: usize| flag(&b.mask, t, r).unwrap_or(true);
    let (mut total, mut n) = (0.0, 0usize);
    match (m.head, &b.target) {
        (RefHead::Lm, RefTarget::Tokens(y)) => {
            assert_eq!(y.len(), steps * nb, "reference: lm target is [T, B]");
            for t in 0..steps {
                for r in (0..nb).filter(|&r| counts(t, r)) {
                    total += cross_entropy(&head(t, r), y[t * nb + r]);
                    n += 1;
                }
            }
        }
        (RefHead::Regress, RefTarget::Values(y)) => {
            assert_eq!(
                y.len(),
                steps * nb * k_out,
                "reference: regress target is [T, B, K]"
            );
            for t in 0..steps {
                for r in (0..nb).filter(|&r| counts(t, r)) {
                    let want = &y[(t * nb + r) * k_out..(t * nb + r + 1) * k_out];
                    total += head(t, r)
                        .iter()
                        .zip(want)
                        .map(|(a, w)| (a - w).powi(2))
                        .sum::<f64>();
                    n += k_out;
                }
            }
        }
        (RefHead::Classify, RefTarget::Labels(y)) => {
            assert_eq!(y.len(), nb, "reference: labels are [B]");
            for (r, &label) in y.iter().enumerate() {
                if let Some(t) = (0..steps).rev().find(|&t| counts(t, r)) {
                    total += cross_entropy(&head(t, r), label);
                    n += 1;
                }
            }
        }
        (head, _) => panic!("reference: target kind does not match head {head:?}"),
    }
    let loss = if n == 0 { 0.0 } else { total / n as f64 };
    // The multi-lag state in recur's form: the last M h, and how many belong to the
    // current sequence.
    if let RefCell::MultiLag(lags) = m.cell {
        for (l, rows) in hist.iter().enumerate() {
            let base = l * per_layer;
            for (r, (seq, start)) in rows.iter().enumerate() {
                for j in 0..lags {
                    let at = base + (j * nb + r) * hid;
                    st[at..at + hid].copy_from_slice(&seq[seq.len() - lags + j]);
                }
                st[base + lags * nb * hid + r] = (seq.len() - start).min(lags) as f64;
            }
        }
    }
    (loss, st)
}

/// The layer-major computation of a bidirectional model (see `RefModel::bidirectional`).
fn loss_bidir(
    m: &RefModel,
    p: &HashMap<String, Vec<f64>>,
    b: &RefBatch,
    state0: &[f64],
) -> (f64, Vec<f64>) {
    let (hid, nb) = (m.hidden, b.batch);
    let out = m.proj.unwrap_or(hid);
    let per_layer = m.cell.state_len(nb, hid, out);
    let pre = m.cell.prefix();
    let in_width = get(p, &format!("{pre}.weight_ih_l0")).len() / (m.cell.gates() * hid);
    let steps = match &b.input {
        RefInput::Tokens(tok) => tok.len() / nb,
        RefInput::Features(x) => x.len() / (nb * in_width),
    };
    assert_eq!(
        state0.len(),
        2 * m.layers * per_layer,
        "reference: state0 length"
    );
    let flag =
        |v: &Option<Vec<u8>>, t: usize, r: usize| v.as_ref().is_some_and(|v| v[t * nb + r] != 0);
    // xs[t][r]: the layer's input at (t, r).
    let mut xs: Vec<Vec<Vec<f64>>> = (0..steps)
        .map(|t| {
            (0..nb)
                .map(|r| match &b.input {
                    RefInput::Tokens(tok) => {
                        let row = tok[t * nb + r] as usize;
                        get(p, "embedding.weight")[row * in_width..(row + 1) * in_width].to_vec()
                    }
                    RefInput::Features(f) => {
                        f[(t * nb + r) * in_width..(t * nb + r + 1) * in_width].to_vec()
                    }
                })
                .collect()
        })
        .collect();
    let mut st = state0.to_vec();
    for l in 0..m.layers {
        if let (Some(d), true) = (&m.dropout, l > 0) {
            for (t, rows) in xs.iter_mut().enumerate() {
                for (r, x) in rows.iter_mut().enumerate() {
                    let pos = (t * nb + r) as u64;
                    for (j, v) in x.iter_mut().enumerate() {
                        *v = match dropout_keep(d, l as u64, pos, j as u64) {
                            true => *v / (1.0 - d.p),
                            false => 0.0,
                        };
                    }
                }
            }
        }
        let width = xs[0][0].len();
        let mut ys: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); nb]; steps];
        for dir in 0..2 {
            let suffix = if dir == 1 { "_reverse" } else { "" };
            // The layer's tensors under this direction's names.
            let mut q: HashMap<String, Vec<f64>> = HashMap::new();
            for (k, v) in p {
                if let Some(base) = k.strip_suffix(&format!("_l{l}{suffix}")) {
                    if !base.ends_with("_reverse") {
                        q.insert(format!("{base}_l0"), v.clone());
                    }
                }
            }
            let layer = Layer::get(m, &q, 0, width);
            let base = (2 * l + dir) * per_layer;
            let order: Vec<usize> = match dir {
                0 => (0..steps).collect(),
                _ => (0..steps).rev().collect(),
            };
            for r in 0..nb {
                // Per row: the state (h, c) or a multi-lag unit's history and start.
                let h_at = base + r * out;
                let c_at = base + nb * out + r * hid;
                let (mut h, mut c) = match dir {
                    0 => (
                        st[h_at..h_at + out].to_vec(),
                        st.get(c_at..c_at + hid)
                            .map_or(vec![0.0; hid], |s| s.to_vec()),
                    ),
                    _ => (vec![0.0; out], vec![0.0; hid]),
                };
                let lags = m.cell.lags();
                let (mut seq, mut start): (Vec<Vec<f64>>, usize) = match (m.cell, dir) {
                    (RefCell::MultiLag(_), 0) => {
                        let ring = (0..lags)
                            .map(|j| st[base + (j * nb + r) * hid..][..hid].to_vec())
                            .collect();
                        let age = st[base + lags * nb * hid + r] as usize;
                        (ring, lags - age.min(lags))
                    }
                    _ => (vec![vec![0.0; hid]; lags], lags),
                };
                for (k, &t) in order.iter().enumerate() {
                    let fresh = match dir {
                        0 => flag(&b.reset, t, r),
                        _ => k > 0 && flag(&b.reset, t + 1, r),
                    };
                    if fresh {
                        h.fill(0.0);
                        c.fill(0.0);
                        start = seq.len();
                    }
                    let x = &xs[t][r];
                    let h2 = match m.cell {
                        RefCell::Lstm | RefCell::Peephole => {
                            let (h2, c2) = layer.lstm(x, &h, &c);
                            c = c2;
                            h2
                        }
                        RefCell::Gru => layer.gru(x, &h, &h),
                        RefCell::MultiLag(_) => {
                            let now = seq.len();
                            let mut stacked = vec![0.0; lags * hid];
                            for kk in 1..=lags {
                                if now >= kk && now - kk >= start {
                                    stacked[(kk - 1) * hid..kk * hid]
                                        .copy_from_slice(&seq[now - kk]);
                                }
                            }
                            let h_prev = stacked[..hid].to_vec();
                            let h2 = layer.gru(x, &stacked, &h_prev);
                            seq.push(h2.clone());
                            h2
                        }
                    };
                    h = h2.clone();
                    ys[t][r].extend_from_slice(&h2);
                    if dir == 1 {
                        // Reverse after forward: [forward; reverse].
                        debug_assert_eq!(ys[t][r].len(), 2 * out);
                    }
                }
                match m.cell {
                    RefCell::MultiLag(_) => {
                        for j in 0..lags {
                            st[base + (j * nb + r) * hid..][..hid]
                                .copy_from_slice(&seq[seq.len() - lags + j]);
                        }
                        st[base + lags * nb * hid + r] = (seq.len() - start).min(lags) as f64;
                    }
                    _ => {
                        st[h_at..h_at + out].copy_from_slice(&h);
                        if per_layer > nb * out {
                            st[c_at..c_at + hid].copy_from_slice(&c);
                        }
                    }
                }
            }
        }
        xs = ys;
    }
    let counts = |t: usize, r: usize| b.mask.as_ref().is_none_or(|v| v[t * nb + r] != 0);
    let fc_b = get(p, "fc.bias");
    let k_out = fc_b.len();
    let fc_w = param(p, "fc.weight", k_out * 2 * out);
    let (mut total, mut n) = (0.0, 0usize);
    match (m.head, &b.target) {
        (RefHead::Lm, RefTarget::Tokens(y)) => {
            for t in 0..steps {
                for r in (0..nb).filter(|&r| counts(t, r)) {
                    total += cross_entropy(&affine(fc_w, fc_b, &xs[t][r]), y[t * nb + r]);
                    n += 1;
                }
            }
        }
        (RefHead::Regress, RefTarget::Values(y)) => {
            for t in 0..steps {
                for r in (0..nb).filter(|&r| counts(t, r)) {
                    let want = &y[(t * nb + r) * k_out..(t * nb + r + 1) * k_out];
                    total += (affine(fc_w, fc_b, &xs[t][r]).iter().zip(want))
                        .map(|(a, w)| (a - w).powi(2))
                        .sum::<f64>();
                    n += k_out;
                }
            }
        }
        (RefHead::Classify, RefTarget::Labels(y)) => {
            for (r, &label) in y.iter().enumerate() {
                if let Some(t) = (0..steps).rev().find(|&t| counts(t, r)) {
                    // Forward at the last step, reverse at the sequence's first.
                    let t0 = (0..=t).rev().find(|&u| flag(&b.reset, u, r)).unwrap_or(0);
                    let mut v = xs[t][r][..out].to_vec();
                    v.extend_from_slice(&xs[t0][r][out..]);
                    total += cross_entropy(&affine(fc_w, fc_b, &v), label);
                    n += 1;
                }
            }
        }
        (head, _) => panic!("reference: target kind does not match head {head:?}"),
    }
    let loss = if n == 0 { 0.0 } else { total / n as f64 };
    (loss, st)
}

/// Central difference (f(p + eps e) − f(p − eps e)) / 2 eps along `name[idx]`.
pub fn fd_grad(
    f: impl Fn(&HashMap<String, Vec<f64>>) -> f64,
    p: &HashMap<String, Vec<f64>>,
    name: &str,
    idx: usize,
    eps: f64,
) -> f64 {
    let mut q = p.clone();
    let x = *q
        .get(name)
        .and_then(|v| v.get(idx))
        .unwrap_or_else(|| panic!("reference: no {name}[{idx}]"));
    let mut at = |v: f64| {
        q.get_mut(name).unwrap()[idx] = v;
        f(&q)
    };
    let (up, down) = (at(x + eps), at(x - eps));
    (up - down) / (2.0 * eps)
}
