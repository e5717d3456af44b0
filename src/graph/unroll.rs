//! `unroll`: a list of segment-level actions (the schedule a checkpoint policy chose)
//! becomes the nodes and logical buffers of one window. Every forward execution of a
//! segment gets buffers of its own, so liveness frees what the policy does not keep and
//! a recomputation repeats exactly the ops of the first pass.

use super::{Action, BufKind, Buffer, Category, CostClass, Graph, Input, Op, StateSrc};
use crate::ids::BufId;
use crate::spec::{ModelSpec, TrainSpec};

/// The buffers of one forward execution of a segment, per layer.
#[derive(Clone, Debug)]
struct SegFwd {
    seg: usize,
    x: BufId,
    gates: Vec<BufId>,
    h: Vec<BufId>,
    c: Vec<BufId>,
}

impl SegFwd {
    /// What layer `l` reads as input: the embedded tokens, or the layer below's states.
    fn input(&self, l: usize) -> Input {
        if l == 0 {
            Input::Embedded(self.x)
        } else {
            Input::Hidden(self.h[l - 1])
        }
    }
}

/// Where the state entering a segment comes from.
enum Entry<'f> {
    Carried,
    Prev(&'f SegFwd),
    Checkpoint(BufId),
}

/// Unrolls `actions` into a graph.
///
/// # Panics
/// If the actions are not a valid schedule (a backward without a kept forward of the
/// same segment, or a forward whose entry state is nowhere). Policy passes are tested
/// to produce only valid schedules.
pub fn unroll(model: &ModelSpec, train: &TrainSpec, actions: &[Action]) -> Graph {
    let ns = train.segments();
    let mut u = Unroller {
        model,
        train,
        buffers: Vec::new(),
        ops: Vec::new(),
    };
    // Per boundary b (state entering segment b): the latest checkpoint buffer.
    let mut ckpt: Vec<Option<BufId>> = vec![None; ns + 1];
    // Per segment: the live kept forward instance, until its backward.
    let mut kept: Vec<Option<SegFwd>> = vec![None; ns];
    let mut last: Option<SegFwd> = None;
    let mut stored = false;
    let mut carry: Option<Vec<BufId>> = None;
    for &a in actions {
        match a {
            Action::Forward {
                seg,
                keep,
                checkpoint,
            } => {
                let s = seg as usize;
                let f = {
                    let entry = if s == 0 {
                        Entry::Carried
                    } else if let Some(p) = last.as_ref().filter(|p| p.seg + 1 == s) {
                        Entry::Prev(p)
                    } else if let Some(p) = kept[s - 1].as_ref() {
                        Entry::Prev(p)
                    } else {
                        Entry::Checkpoint(ckpt[s].expect("schedule: entry state of a forward"))
                    };
                    u.forward(s, entry)
                };
                if checkpoint {
                    ckpt[s + 1] = Some(u.checkpoint(&f));
                }
                if s + 1 == ns && !stored {
                    u.store_state(&f);
                    stored = true;
                }
                if keep {
                    kept[s] = Some(f.clone());
                }
                last = Some(f);
            }
            Action::Backward { seg } => {
                let s = seg as usize;
                let f = kept[s]
                    .take()
                    .expect("schedule: backward of a kept segment");
                let carry = carry.get_or_insert_with(|| u.zero_carry());
                u.backward(&f, carry);
            }
        }
    }
    Graph {
        model: model.clone(),
        train: train.clone(),
        buffers: u.buffers,
        ops: u.ops,
    }
}

struct Unroller<'a> {
    model: &'a ModelSpec,
    train: &'a TrainSpec,
    buffers: Vec<Buffer>,
    ops: Vec<Op>,
}

impl Unroller<'_> {
    fn push(&mut self, kind: BufKind, elems: usize) -> BufId {
        let (category, class) = match kind {
            BufKind::Embedded { .. } => (Category::SavedActivations, CostClass::MemoryBound),
            BufKind::Gates { .. } | BufKind::Hidden { .. } | BufKind::Cell { .. } => {
                (Category::SavedActivations, CostClass::ComputeBound)
            }
            BufKind::Checkpoint { .. } => (Category::Checkpoints, CostClass::ComputeBound),
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

    /// Embedding, then per layer: entry state, input projection, recurrence.
    fn forward(&mut self, s: usize, entry: Entry<'_>) -> SegFwd {
        let (nl, su) = (self.model.layers, s as u32);
        let x = self.seg_buf(BufKind::Embedded { seg: su }, s, self.model.embed);
        self.ops.push(Op::Embed { seg: su, x });
        let mut f = SegFwd {
            seg: s,
            x,
            gates: Vec::with_capacity(nl),
            h: Vec::new(),
            c: Vec::new(),
        };
        for l in 0..nl {
            let lu = l as u32;
            let h = self.state_buf(BufKind::Hidden { layer: lu, seg: su }, s);
            let c = self.state_buf(BufKind::Cell { layer: lu, seg: su }, s);
            let src = match &entry {
                Entry::Carried => StateSrc::Carried,
                Entry::Prev(p) => StateSrc::Prev {
                    h: p.h[l],
                    c: p.c[l],
                },
                Entry::Checkpoint(b) => StateSrc::Checkpoint(*b),
            };
            self.ops.push(Op::LoadState {
                layer: lu,
                seg: su,
                h,
                c,
                src,
            });
            let gw = self.model.gate_width();
            let g = self.seg_buf(BufKind::Gates { layer: lu, seg: su }, s, gw);
            self.ops.push(Op::InputProj {
                layer: lu,
                seg: su,
                x: f.input(l),
                gates: g,
            });
            self.ops.push(Op::CellForward {
                layer: lu,
                seg: su,
                gates: g,
                h,
                c,
            });
            f.gates.push(g);
            f.h.push(h);
            f.c.push(c);
        }
        f
    }

    /// Saves the state leaving `f` (entering segment f.seg + 1), every layer.
    fn checkpoint(&mut self, f: &SegFwd) -> BufId {
        let (b, h, nl) = (self.train.batch, self.model.hidden, self.model.layers);
        let boundary = f.seg as u32 + 1;
        let ck = self.push(BufKind::Checkpoint { boundary }, 2 * nl * b * h);
        for l in 0..nl {
            self.ops.push(Op::SaveCheckpoint {
                layer: l as u32,
                ckpt: ck,
                h: f.h[l],
                c: f.c[l],
            });
        }
        ck
    }

    fn store_state(&mut self, f: &SegFwd) {
        for l in 0..self.model.layers {
            self.ops.push(Op::StoreState {
                layer: l as u32,
                h: f.h[l],
                c: f.c[l],
            });
        }
    }

    /// [2, B, H] + [H] per layer: dL/dh, dL/dc, and a row of scratch for the kernel.
    fn zero_carry(&mut self) -> Vec<BufId> {
        let (b, h) = (self.train.batch, self.model.hidden);
        (0..self.model.layers as u32)
            .map(|layer| {
                let carry = self.push(BufKind::Carry { layer }, 2 * b * h + h);
                self.ops.push(Op::ZeroCarry { layer, carry });
                carry
            })
            .collect()
    }

    /// Head and loss of the segment, then per layer top-down: the recurrence backward,
    /// weight gradients, input gradient.
    fn backward(&mut self, f: &SegFwd, carry: &[BufId]) {
        let (s, su) = (f.seg, f.seg as u32);
        let (nl, hd) = (self.model.layers, self.model.hidden);
        let top = nl - 1;
        let logits = self.seg_buf(BufKind::Logits { seg: su }, s, self.model.vocab);
        let mut dh = self.seg_buf(
            BufKind::DeltaIn {
                layer: top as u32,
                seg: su,
            },
            s,
            hd,
        );
        self.ops.push(Op::Head {
            seg: su,
            h: f.h[top],
            logits,
            dh,
        });
        for l in (0..nl).rev() {
            let (lu, g) = (l as u32, f.gates[l]);
            let c = f.c[l];
            self.ops.push(Op::CellBackward {
                layer: lu,
                seg: su,
                gates: g,
                c,
                dh,
                carry: carry[l],
            });
            self.ops.push(Op::WeightGrad {
                layer: lu,
                seg: su,
                gates: g,
                x: f.input(l),
                h: f.h[l],
            });
            let dx = if l == 0 {
                self.seg_buf(BufKind::DeltaEmbedded { seg: su }, s, self.model.embed)
            } else {
                self.seg_buf(
                    BufKind::DeltaIn {
                        layer: lu - 1,
                        seg: su,
                    },
                    s,
                    hd,
                )
            };
            self.ops.push(Op::InputGrad {
                layer: lu,
                seg: su,
                gates: g,
                dx,
            });
            dh = dx;
        }
    }
}
