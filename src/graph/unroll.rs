//! `unroll`: a list of segment-level actions (the schedule a checkpoint policy chose)
//! becomes the nodes and logical buffers of one window. Every forward execution of a
//! segment gets buffers of its own, so liveness frees what the policy does not keep and
//! a recomputation repeats exactly the ops of the first pass.

use super::{Action, BufKind, Buffer, Bufs, Category, CostClass, Graph, Input, Op, StateSrc};
use crate::ids::BufId;
use crate::layout::Sizes;
use crate::spec::{HeadKind, ModelSpec, TrainSpec};

/// The buffers of one forward execution of a segment, per layer.
#[derive(Clone, Debug)]
struct SegFwd {
    seg: usize,
    x: Option<BufId>,
    /// Per layer, its input after dropout (layers above 0 under dropout).
    dropped: Vec<Option<BufId>>,
    gates: Vec<BufId>,
    states: Vec<Bufs>,
    saved: Vec<Bufs>,
}

impl SegFwd {
    /// What layer `l` reads as input: the embedded tokens or features, or the layer
    /// below's output state.
    fn input(&self, l: usize) -> Input {
        match (l, self.x, self.dropped.get(l).copied().flatten()) {
            (0, Some(x), _) => Input::Embedded(x),
            (0, None, _) => Input::Features,
            (_, _, Some(d)) => Input::Dropped(d),
            _ => Input::Hidden(self.states[l - 1].id(0)),
        }
    }
}

/// Where the state entering a segment comes from.
enum Entry<'f> {
    Carried,
    Prev(&'f SegFwd),
    Checkpoint(BufId),
}

/// The graph of an evaluation window: every segment's forward, each followed by its
/// head and loss (no backward, nothing kept), and the state after the window (or after
/// `train.advance` steps) stored for the next one.
pub fn unroll_eval(model: &ModelSpec, train: &TrainSpec) -> Graph {
    let sizes = Sizes::new(model, train);
    let mut u = Unroller {
        sz: &sizes,
        buffers: Vec::new(),
        ops: Vec::new(),
    };
    let store = train.stride().div_ceil(train.grain);
    let mut last: Option<SegFwd> = None;
    for s in 0..sizes.segments {
        let entry = match &last {
            None => Entry::Carried,
            Some(p) => Entry::Prev(p),
        };
        let f = u.forward(s, entry);
        if s + 1 == store {
            u.store_state(&f);
        }
        u.head_eval(&f);
        last = Some(f);
    }
    let (buffers, ops) = (u.buffers, u.ops);
    Graph {
        model: model.clone(),
        train: train.clone(),
        sizes,
        buffers,
        ops,
    }
}

/// Unrolls `actions` into a graph.
///
/// # Panics
/// If the actions are not a valid schedule (a backward without a kept forward of the
/// same segment, or a forward whose entry state is nowhere). Policy passes are tested
/// to produce only valid schedules.
pub fn unroll(model: &ModelSpec, train: &TrainSpec, actions: &[Action]) -> Graph {
    let sizes = Sizes::new(model, train);
    let ns = sizes.segments;
    let mut u = Unroller {
        sz: &sizes,
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
                // The state the next window starts from: after the window, or after
                // its first k1 steps (TBPTT(k1, k2)).
                if s + 1 == train.stride().div_ceil(train.grain) && !stored {
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
    let (buffers, ops) = (u.buffers, u.ops);
    Graph {
        model: model.clone(),
        train: train.clone(),
        sizes,
        buffers,
        ops,
    }
}

struct Unroller<'a> {
    sz: &'a Sizes,
    buffers: Vec<Buffer>,
    ops: Vec<Op>,
}

impl Unroller<'_> {
    fn push(&mut self, kind: BufKind, elems: usize) -> BufId {
        let (category, class) = match kind {
            BufKind::Embedded { .. } | BufKind::Dropped { .. } => {
                (Category::SavedActivations, CostClass::MemoryBound)
            }
            BufKind::Gates { .. } | BufKind::State { .. } | BufKind::Saved { .. } => {
                (Category::SavedActivations, CostClass::ComputeBound)
            }
            BufKind::Checkpoint { .. } => (Category::Checkpoints, CostClass::ComputeBound),
            BufKind::DeltaIn { .. } | BufKind::Carry { .. } => {
                (Category::Deltas, CostClass::ComputeBound)
            }
            BufKind::Logits { .. }
            | BufKind::Predictions { .. }
            | BufKind::DeltaEmbedded { .. }
            | BufKind::Work { .. } => (Category::Workspace, CostClass::MemoryBound),
        };
        self.buffers.push(Buffer {
            kind,
            elems,
            category,
            class,
        });
        BufId::new(self.buffers.len() - 1)
    }

    /// `n` consecutive buffers, the i-th of kind and size `each(i)`.
    fn run(&mut self, n: usize, each: impl Fn(usize) -> (BufKind, usize)) -> Bufs {
        let ids: Vec<BufId> = (0..n)
            .map(|i| {
                let (kind, elems) = each(i);
                self.push(kind, elems)
            })
            .collect();
        Bufs::new(&ids)
    }

    /// Embedding, then per layer: entry state, input projection, recurrence.
    fn forward(&mut self, s: usize, entry: Entry<'_>) -> SegFwd {
        let sz = self.sz;
        let (nl, su) = (sz.layers, s as u32);
        let x = sz.embed.map(|_| {
            let x = self.push(BufKind::Embedded { seg: su }, sz.embedded_elems(s));
            self.ops.push(Op::Embed { seg: su, x });
            x
        });
        let mut f = SegFwd {
            seg: s,
            x,
            dropped: Vec::with_capacity(nl),
            gates: Vec::with_capacity(nl),
            states: Vec::with_capacity(nl),
            saved: Vec::with_capacity(nl),
        };
        for l in 0..nl {
            let lu = l as u32;
            let states = self.run(sz.states.len(), |i| {
                let kind = BufKind::State {
                    state: i as u8,
                    layer: lu,
                    seg: su,
                };
                (kind, sz.state_elems(s, i))
            });
            let src = match &entry {
                Entry::Carried => StateSrc::Carried,
                Entry::Prev(p) => StateSrc::Prev(p.states[l]),
                Entry::Checkpoint(b) => StateSrc::Checkpoint(*b),
            };
            self.ops.push(Op::LoadState {
                layer: lu,
                seg: su,
                states,
                src,
            });
            // Dropout of the layer below's output, on its way in.
            let dropped = (l > 0 && sz.dropout > 0.0).then(|| {
                let out = self.push(BufKind::Dropped { layer: lu, seg: su }, sz.dropped_elems(s));
                self.ops.push(Op::Dropout {
                    layer: lu,
                    seg: su,
                    h: f.states[l - 1].id(0),
                    out,
                });
                out
            });
            f.dropped.push(dropped);
            let g = self.push(BufKind::Gates { layer: lu, seg: su }, sz.gates_elems(s));
            self.ops.push(Op::InputProj {
                layer: lu,
                seg: su,
                x: f.input(l),
                gates: g,
            });
            let saved = self.run(sz.saved.len(), |i| {
                let kind = BufKind::Saved {
                    saved: i as u8,
                    layer: lu,
                    seg: su,
                };
                (kind, sz.saved_elems(s, i))
            });
            let work = self.run(usize::from(sz.forward_scratch > 0), |_| {
                (BufKind::Work { layer: lu, seg: su }, sz.forward_scratch)
            });
            self.ops.push(Op::CellForward {
                layer: lu,
                seg: su,
                gates: g,
                states,
                saved,
                work,
            });
            f.gates.push(g);
            f.states.push(states);
            f.saved.push(saved);
        }
        f
    }

    /// Saves the state leaving `f` (entering segment f.seg + 1), every layer.
    fn checkpoint(&mut self, f: &SegFwd) -> BufId {
        let boundary = f.seg as u32 + 1;
        let ck = self.push(BufKind::Checkpoint { boundary }, self.sz.carried());
        for l in 0..self.sz.layers {
            self.ops.push(Op::SaveCheckpoint {
                layer: l as u32,
                ckpt: ck,
                states: f.states[l],
            });
        }
        ck
    }

    fn store_state(&mut self, f: &SegFwd) {
        for l in 0..self.sz.layers {
            self.ops.push(Op::StoreState {
                layer: l as u32,
                states: f.states[l],
            });
        }
    }

    /// The head and loss of a segment, forward only.
    fn head_eval(&mut self, f: &SegFwd) {
        let (sz, su) = (self.sz, f.seg as u32);
        let kind = match sz.head {
            HeadKind::Regress => BufKind::Predictions { seg: su },
            HeadKind::Lm | HeadKind::Classify => BufKind::Logits { seg: su },
        };
        let out = self.push(kind, sz.head_elems(f.seg));
        self.ops.push(Op::HeadEval {
            seg: su,
            h: f.states[sz.layers - 1].id(0),
            out,
        });
    }

    /// Per layer: the gradients carried through time and the cell's backward scratch.
    fn zero_carry(&mut self) -> Vec<BufId> {
        (0..self.sz.layers as u32)
            .map(|layer| {
                let carry = self.push(BufKind::Carry { layer }, self.sz.carry_elems());
                self.ops.push(Op::ZeroCarry { layer, carry });
                carry
            })
            .collect()
    }

    /// Head and loss of the segment, then per layer top-down: the recurrence backward,
    /// weight gradients, input gradient.
    fn backward(&mut self, f: &SegFwd, carry: &[BufId]) {
        let sz = self.sz;
        let (s, su) = (f.seg, f.seg as u32);
        let top = sz.layers - 1;
        let kind = match sz.head {
            HeadKind::Regress => BufKind::Predictions { seg: su },
            HeadKind::Lm | HeadKind::Classify => BufKind::Logits { seg: su },
        };
        let out = self.push(kind, sz.head_elems(s));
        let delta = |layer| BufKind::DeltaIn { layer, seg: su };
        let mut dh = self.push(delta(top as u32), sz.delta_elems(s));
        self.ops.push(Op::Head {
            seg: su,
            h: f.states[top].id(0),
            out,
            dh,
        });
        for l in (0..sz.layers).rev() {
            let (lu, g) = (l as u32, f.gates[l]);
            self.ops.push(Op::CellBackward {
                layer: lu,
                seg: su,
                gates: g,
                states: f.states[l].only(|i| sz.states[i].read_in_backward),
                saved: f.saved[l],
                dh,
                carry: carry[l],
            });
            self.ops.push(Op::WeightGrad {
                layer: lu,
                seg: su,
                gates: g,
                x: f.input(l),
                states: f.states[l].only(|i| sz.states[i].read_in_grads),
                saved: f.saved[l],
            });
            let dx = match (l, sz.embed) {
                (0, None) => break,
                (0, Some(_)) => self.push(BufKind::DeltaEmbedded { seg: su }, sz.embedded_elems(s)),
                _ => self.push(delta(lu - 1), sz.delta_elems(s)),
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
