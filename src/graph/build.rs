//! `build`: the unrolled window of a model — forward (embedding, cells, head + loss per
//! segment of G steps), then backward (segments in reverse, layers top-down) — as nodes
//! over logical buffers.

use super::{BufKind, Buffer, Category, CostClass, Graph, Input, Op};
use crate::ids::BufId;
use crate::spec::{ModelSpec, TrainSpec};

/// Builds the graph of one window. Sizes must already be validated (`plan::compile`
/// checks the node count before calling this).
pub fn build(model: &ModelSpec, train: &TrainSpec) -> Graph {
    let mut b = Builder {
        model,
        train,
        buffers: Vec::new(),
    };
    let (nl, ns) = (model.layers, train.segments());
    let mut forward = Vec::with_capacity(ns * (3 * nl + 2) + nl);
    let mut backward = Vec::with_capacity(ns * 3 * nl + nl);
    // Per (layer, segment): gates, hidden, cell buffers, and the delta arriving from above.
    let mut gates = vec![Vec::with_capacity(ns); nl];
    let mut hidden = vec![Vec::with_capacity(ns); nl];
    let mut cell = vec![Vec::with_capacity(ns); nl];
    let mut delta_in = vec![Vec::with_capacity(ns); nl];
    let mut embedded = Vec::with_capacity(ns);
    for s in 0..ns {
        let x = b.seg_buf(BufKind::Embedded { seg: s as u32 }, s, model.embed);
        embedded.push(x);
        forward.push(Op::Embed { seg: s as u32, x });
        for l in 0..nl {
            let (lu, su) = (l as u32, s as u32);
            let g = b.seg_buf(BufKind::Gates { layer: lu, seg: su }, s, model.gate_width());
            let h = b.state_buf(BufKind::Hidden { layer: lu, seg: su }, s);
            let c = b.state_buf(BufKind::Cell { layer: lu, seg: su }, s);
            let prev = (s > 0).then(|| (hidden[l][s - 1], cell[l][s - 1]));
            forward.push(Op::LoadState {
                layer: lu,
                seg: su,
                h,
                c,
                prev,
            });
            let x = layer_input(l, x, &hidden, s);
            forward.push(Op::InputProj {
                layer: lu,
                seg: su,
                x,
                gates: g,
            });
            forward.push(Op::CellForward {
                layer: lu,
                seg: su,
                gates: g,
                h,
                c,
            });
            gates[l].push(g);
            hidden[l].push(h);
            cell[l].push(c);
            delta_in[l].push(b.delta_buf(lu, s));
        }
        let logits = b.seg_buf(BufKind::Logits { seg: s as u32 }, s, model.vocab);
        let top = nl - 1;
        forward.push(Op::Head {
            seg: s as u32,
            h: hidden[top][s],
            logits,
            dh: delta_in[top][s],
        });
    }
    for l in 0..nl {
        let (h, c) = (hidden[l][ns - 1], cell[l][ns - 1]);
        forward.push(Op::StoreState {
            layer: l as u32,
            h,
            c,
        });
    }
    let carry: Vec<BufId> = (0..nl).map(|l| b.carry_buf(l as u32)).collect();
    for (l, &carry) in carry.iter().enumerate() {
        backward.push(Op::ZeroCarry {
            layer: l as u32,
            carry,
        });
    }
    for s in (0..ns).rev() {
        for l in (0..nl).rev() {
            let (lu, su) = (l as u32, s as u32);
            let g = gates[l][s];
            backward.push(Op::CellBackward {
                layer: lu,
                seg: su,
                gates: g,
                c: cell[l][s],
                dh: delta_in[l][s],
                carry: carry[l],
            });
            let x = layer_input(l, embedded[s], &hidden, s);
            backward.push(Op::WeightGrad {
                layer: lu,
                seg: su,
                gates: g,
                x,
                h: hidden[l][s],
            });
            let dx = if l == 0 {
                b.seg_buf(BufKind::DeltaEmbedded { seg: su }, s, model.embed)
            } else {
                delta_in[l - 1][s]
            };
            backward.push(Op::InputGrad {
                layer: lu,
                seg: su,
                gates: g,
                dx,
            });
        }
    }
    Graph {
        model: model.clone(),
        train: train.clone(),
        buffers: b.buffers,
        forward,
        backward,
    }
}

fn layer_input(l: usize, embedded: BufId, hidden: &[Vec<BufId>], s: usize) -> Input {
    if l == 0 {
        Input::Embedded(embedded)
    } else {
        Input::Hidden(hidden[l - 1][s])
    }
}

struct Builder<'a> {
    model: &'a ModelSpec,
    train: &'a TrainSpec,
    buffers: Vec<Buffer>,
}

impl Builder<'_> {
    fn push(&mut self, kind: BufKind, elems: usize) -> BufId {
        let (category, class) = match kind {
            BufKind::Embedded { .. } => (Category::SavedActivations, CostClass::MemoryBound),
            BufKind::Gates { .. } => (Category::SavedActivations, CostClass::ComputeBound),
            BufKind::Hidden { .. } | BufKind::Cell { .. } => {
                (Category::SavedActivations, CostClass::ComputeBound)
            }
            BufKind::DeltaIn { .. } | BufKind::Carry { .. } => {
                (Category::Deltas, CostClass::ComputeBound)
            }
            BufKind::Logits { .. } | BufKind::DeltaEmbedded { .. } => {
                (Category::Workspace, CostClass::MemoryBound)
            }
        };
        self.buffers.push(Buffer {
            kind,
            elems,
            category,
            class,
        });
        BufId::new(self.buffers.len() - 1)
    }

    /// [g·B, width] for segment `s`.
    fn seg_buf(&mut self, kind: BufKind, s: usize, width: usize) -> BufId {
        let rows = self.train.seg_len(s) * self.train.batch;
        self.push(kind, rows * width)
    }

    /// [(g+1)·B, H]: block 0 holds the state entering the segment.
    fn state_buf(&mut self, kind: BufKind, s: usize) -> BufId {
        let rows = (self.train.seg_len(s) + 1) * self.train.batch;
        self.push(kind, rows * self.model.hidden)
    }

    fn delta_buf(&mut self, layer: u32, s: usize) -> BufId {
        self.seg_buf(
            BufKind::DeltaIn {
                layer,
                seg: s as u32,
            },
            s,
            self.model.hidden,
        )
    }

    /// [2, B, H] + [H]: dL/dh, dL/dc, and a row of scratch for the cell's backward.
    fn carry_buf(&mut self, layer: u32) -> BufId {
        let (b, h) = (self.train.batch, self.model.hidden);
        self.push(BufKind::Carry { layer }, 2 * b * h + h)
    }
}
