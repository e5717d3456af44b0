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
    /// The stage's first layer (`Sizes::stage`): the per-layer vectors start there.
    first: usize,
    /// The embedded tokens (layer 0), or a pipeline stage's received input.
    x: Option<BufId>,
    /// Layer 0's projection table, when it has one (`Sizes::table`).
    table: Option<BufId>,
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
        let i = l - self.first;
        if let (0, Some(p)) = (l, self.table) {
            return Input::Table(p);
        }
        match (l, self.x, self.dropped.get(i).copied().flatten()) {
            (0, Some(x), _) => Input::Embedded(x),
            (0, None, _) => Input::Features,
            (_, _, Some(d)) => Input::Dropped(d),
            // A pipeline stage's first layer reads what the stage before sent.
            (_, Some(x), _) if i == 0 => Input::Hidden(x),
            _ => Input::Hidden(self.states[i - 1].id(0)),
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
    if model.bidirectional {
        return unroll_bidir(model, train, None);
    }
    let sizes = Sizes::new(model, train);
    let mut u = Unroller {
        sz: &sizes,
        buffers: Vec::new(),
        ops: Vec::new(),
        store: train.stride().div_ceil(train.grain),
        recv: vec![None; sizes.segments],
        sent: vec![false; sizes.segments],
        table: None,
    };
    u.table(false);
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
    if model.bidirectional {
        return unroll_bidir(model, train, Some(actions));
    }
    let sizes = Sizes::new(model, train);
    let ns = sizes.segments;
    let mut u = Unroller {
        sz: &sizes,
        buffers: Vec::new(),
        ops: Vec::new(),
        store: train.stride().div_ceil(train.grain),
        recv: vec![None; sizes.segments],
        sent: vec![false; sizes.segments],
        table: None,
    };
    u.table(true);
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
                if carry.is_none() {
                    if let Some((_, Some(dp))) = u.table {
                        // Not live through the forward: zeroed where the backward starts.
                        u.ops.push(Op::ZeroDelta { buf: dp });
                    }
                }
                let carry = carry.get_or_insert_with(|| u.zero_carry());
                u.backward(&f, carry);
            }
        }
    }
    if let Some((_, Some(dp))) = u.table {
        u.ops.push(Op::TableGrad { part: 0, dp });
        u.ops.push(Op::TableGrad { part: 1, dp });
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
    /// The segment after which the next window's state is taken (`TrainSpec::stride`).
    store: usize,
    /// A pipeline stage's input per segment, once received (recomputations read it
    /// again), and whether its output was sent on.
    recv: Vec<Option<BufId>>,
    sent: Vec<bool>,
    /// Layer 0's projection table and (training) its gradient (`Sizes::table`).
    table: Option<(BufId, Option<BufId>)>,
}

impl Unroller<'_> {
    /// Layer 0's projection table at the window's start, and for training its gradient
    /// (`Sizes::table`).
    fn table(&mut self, train: bool) {
        let Some(v) = self.sz.table else { return };
        let elems = v * self.sz.gate_width;
        let p = self.push(BufKind::Table, elems);
        self.ops.push(Op::Table { p });
        // Its gradient is zeroed where the backward starts (in `unroll`).
        let dp = train.then(|| self.push(BufKind::TableGrad, elems));
        self.table = Some((p, dp));
    }

    fn push(&mut self, kind: BufKind, elems: usize) -> BufId {
        let (category, class) = match kind {
            BufKind::Embedded { .. }
            | BufKind::Dropped { .. }
            | BufKind::LayerIn { .. }
            | BufKind::Received { .. } => (Category::SavedActivations, CostClass::MemoryBound),
            BufKind::Table => (Category::SavedActivations, CostClass::ComputeBound),
            BufKind::TableGrad => (Category::Deltas, CostClass::ComputeBound),
            BufKind::Output { .. } => (Category::SavedActivations, CostClass::ComputeBound),
            BufKind::LayerCheckpoint { .. } => (Category::Checkpoints, CostClass::ComputeBound),
            BufKind::DeltaOut { .. } | BufKind::DeltaX { .. } => {
                (Category::Deltas, CostClass::ComputeBound)
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
        let (first, end) = (sz.stage.start, sz.stage.end);
        let (nl, su) = (end - first, s as u32);
        let x = match first {
            0 if self.table.is_some() => None,
            0 => sz.embed.map(|_| {
                let x = self.push(BufKind::Embedded { seg: su }, sz.embedded_elems(s));
                self.ops.push(Op::Embed {
                    seg: su,
                    x,
                    layer: 0,
                });
                x
            }),
            // A later pipeline stage: the layer below's output, from the stage before,
            // received once and kept for recomputations and the backward.
            _ => Some(match self.recv[s] {
                Some(x) => x,
                None => {
                    let x = self.push(BufKind::Received { seg: su }, sz.received_elems(s));
                    self.ops.push(Op::Recv { seg: su, x });
                    self.recv[s] = Some(x);
                    x
                }
            }),
        };
        let mut f = SegFwd {
            seg: s,
            first,
            x,
            table: self.table.filter(|_| first == 0).map(|(p, _)| p),
            dropped: Vec::with_capacity(nl),
            gates: Vec::with_capacity(nl),
            states: Vec::with_capacity(nl),
            saved: Vec::with_capacity(nl),
        };
        for l in first..end {
            let (lu, i) = (l as u32, l - first);
            // Dropout of the layer below's output, on its way in.
            let dropped = (l > 0 && sz.dropout > 0.0).then(|| {
                let out = self.push(BufKind::Dropped { layer: lu, seg: su }, sz.dropped_elems(s));
                let h = match (i, x) {
                    (0, Some(x)) => x,
                    _ => f.states[i - 1].id(0),
                };
                self.ops.push(Op::Dropout {
                    layer: lu,
                    seg: su,
                    h,
                    out,
                });
                out
            });
            f.dropped.push(dropped);
            let src = match &entry {
                Entry::Carried => StateSrc::Carried,
                Entry::Prev(p) => StateSrc::Prev(p.states[i]),
                Entry::Checkpoint(b) => StateSrc::Checkpoint(*b),
            };
            let (g, states, saved) = self.recurrence(lu, s, src, f.input(l));
            f.gates.push(g);
            f.states.push(states);
            f.saved.push(saved);
        }
        // A pipeline stage sends its top layer's output on, once per segment.
        if end < sz.layers && !self.sent[s] {
            self.sent[s] = true;
            self.ops.push(Op::SendOut {
                seg: su,
                h: f.states[nl - 1].id(0),
            });
        }
        f
    }

    /// One layer's (one chain's) recurrence over segment `s` reading `x`: its state
    /// buffers filled from `src`, the input projection, the cell's forward. Returns the
    /// gates, states and saved tensors the backward reads.
    fn recurrence(&mut self, layer: u32, s: usize, src: StateSrc, x: Input) -> (BufId, Bufs, Bufs) {
        let (sz, seg) = (self.sz, s as u32);
        let states = self.run(sz.states.len(), |i| {
            let kind = BufKind::State {
                state: i as u8,
                layer,
                seg,
            };
            (kind, sz.state_elems(s, i))
        });
        self.ops.push(Op::LoadState {
            layer,
            seg,
            states,
            src,
        });
        let gates = self.push(BufKind::Gates { layer, seg }, sz.gates_elems(s));
        self.ops.push(Op::InputProj {
            layer,
            seg,
            x,
            gates,
        });
        let saved = self.run(sz.saved.len(), |i| {
            let kind = BufKind::Saved {
                saved: i as u8,
                layer,
                seg,
            };
            (kind, sz.saved_elems(s, i))
        });
        let work = self.run(usize::from(sz.forward_scratch > 0), |_| {
            (BufKind::Work { layer, seg }, sz.forward_scratch)
        });
        self.ops.push(Op::CellForward {
            layer,
            seg,
            gates,
            states,
            saved,
            work,
        });
        (gates, states, saved)
    }

    /// Saves the state leaving `f` (entering segment f.seg + 1), every layer.
    fn checkpoint(&mut self, f: &SegFwd) -> BufId {
        let boundary = f.seg as u32 + 1;
        let ck = self.push(BufKind::Checkpoint { boundary }, self.sz.ckpt_elems());
        for l in self.sz.stage.clone() {
            self.ops.push(Op::SaveCheckpoint {
                layer: l as u32,
                ckpt: ck,
                states: f.states[l - f.first],
            });
        }
        ck
    }

    fn store_state(&mut self, f: &SegFwd) {
        for l in self.sz.stage.clone() {
            self.ops.push(Op::StoreState {
                layer: l as u32,
                states: f.states[l - f.first],
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
        let stage = self.sz.stage.clone();
        (stage.start as u32..stage.end as u32)
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
        let (first, top) = (sz.stage.start, sz.stage.end - 1);
        let out = (top + 1 == sz.layers).then(|| {
            let kind = match sz.head {
                HeadKind::Regress => BufKind::Predictions { seg: su },
                HeadKind::Lm | HeadKind::Classify => BufKind::Logits { seg: su },
            };
            self.push(kind, sz.head_elems(s))
        });
        let delta = |layer| BufKind::DeltaIn { layer, seg: su };
        let mut dh = self.push(delta(top as u32), sz.delta_elems(s));
        match out {
            Some(out) => self.ops.push(Op::Head {
                seg: su,
                h: f.states[top - first].id(0),
                out,
                dh,
            }),
            // A pipeline stage below the head: dL/dh of its top from the stage after.
            None => self.ops.push(Op::RecvGrad { seg: su, dh }),
        }
        for l in (first..=top).rev() {
            let (lu, i) = (l as u32, l - first);
            let g = f.gates[i];
            self.ops.push(Op::CellBackward {
                layer: lu,
                seg: su,
                gates: g,
                states: f.states[i].only(|k| sz.states[k].read_in_backward),
                saved: f.saved[i],
                dh,
                carry: carry[i],
            });
            let x = match (l, self.table) {
                (0, Some((_, Some(dp)))) => Input::Table(dp),
                _ => f.input(l),
            };
            self.ops.push(Op::WeightGrad {
                layer: lu,
                seg: su,
                gates: g,
                x,
                states: f.states[i].only(|k| sz.states[k].read_in_grads),
                saved: f.saved[i],
            });
            let dx = match (l, sz.embed) {
                // Features, or a table: nothing below layer 0 wants dL/dx.
                (0, None) => break,
                (0, Some(_)) if self.table.is_some() => break,
                (0, Some(_)) => self.push(BufKind::DeltaEmbedded { seg: su }, sz.embedded_elems(s)),
                _ => self.push(delta(lu - 1), sz.delta_elems(s)),
            };
            self.ops.push(Op::InputGrad {
                layer: lu,
                seg: su,
                gates: g,
                dx,
            });
            if l == first && first > 0 {
                // dL/d(the stage's input) goes to the stage before.
                self.ops.push(Op::SendGrad { seg: su, dx });
                break;
            }
            dh = dx;
        }
    }
}

/// One chain of a bidirectional model (a layer's forward or reverse direction) as the
/// unroller walks it: its segments' buffers where they are kept or were last run, and
/// its checkpoints.
struct Chain {
    vl: usize,
    kept: Vec<Option<ChainSeg>>,
    ckpt: Vec<Option<BufId>>,
    last: Option<ChainSeg>,
    emitted: Vec<bool>,
    stored: bool,
}

/// The buffers of one forward execution of a chain's segment.
#[derive(Clone, Copy, Debug)]
struct ChainSeg {
    seg: usize,
    x: Input,
    gates: BufId,
    states: Bufs,
    saved: Bufs,
}

/// A bidirectional model's window (training with `actions`, else evaluation), layer by
/// layer: each layer's two directions are chains of segments run under the schedule —
/// its forwards up to the first backward in the forward sweep, the rest in the backward
/// sweep — the reverse one over the window in reverse time, from a zero state. Each
/// direction's first forward of a segment writes its rows into the layer's `Output`,
/// which the layer above (or the head) reads whole; the backward gathers each
/// direction's dL/dh from the layer's `DeltaOut` and adds its dL/dx into the one below.
pub(super) fn unroll_bidir(
    model: &ModelSpec,
    train: &TrainSpec,
    actions: Option<&[Action]>,
) -> Graph {
    let sizes = Sizes::new(model, train);
    let mut u = Unroller {
        sz: &sizes,
        buffers: Vec::new(),
        ops: Vec::new(),
        store: train.stride().div_ceil(train.grain),
        recv: vec![None; sizes.segments],
        sent: vec![false; sizes.segments],
        table: None,
    };
    let (nl, ns) = (sizes.layers, sizes.segments);
    let eval_actions: Vec<Action> = (0..ns as u32)
        .map(|seg| Action::Forward {
            seg,
            keep: false,
            checkpoint: false,
        })
        .collect();
    let actions = actions.unwrap_or(&eval_actions);
    let split = (actions.iter())
        .position(|a| matches!(a, Action::Backward { .. }))
        .unwrap_or(actions.len());
    let (sweep, back) = actions.split_at(split);
    let covers = (0..ns as u32).all(|s| {
        (actions.iter()).any(
            |a| matches!(*a, Action::Forward { seg, .. } | Action::Backward { seg } if seg == s),
        )
    });
    let training = !back.is_empty();
    let mut chains: Vec<Chain> = (0..sizes.vlayers())
        .map(|vl| Chain {
            vl,
            kept: vec![None; ns],
            ckpt: vec![None; ns + 1],
            last: None,
            emitted: vec![false; ns],
            stored: false,
        })
        .collect();
    let mut outputs: Vec<BufId> = Vec::with_capacity(nl);
    for l in 0..nl {
        let y = u.push(BufKind::Output { layer: l as u32 }, sizes.window_elems());
        let below = l.checked_sub(1).map(|b| outputs[b]);
        for chain in &mut chains[2 * l..2 * l + 2] {
            for &a in sweep {
                u.chain_action(chain, a, below, y, None);
            }
            // Every policy runs each segment forward before the first backward: the
            // layer's output is whole before anything reads it. (A budget search's
            // estimate unrolls a few segments of the window only: nothing runs it.)
            assert!(
                !covers || chain.emitted.iter().all(|&e| e),
                "schedule: a segment not run before the first backward"
            );
        }
        outputs.push(y);
    }
    let top = outputs[nl - 1];
    let classify = sizes.head == HeadKind::Classify;
    if classify {
        u.ops.push(Op::FirstStep { y: top });
    }
    let head_kind = |seg| match sizes.head {
        HeadKind::Regress => BufKind::Predictions { seg },
        HeadKind::Lm | HeadKind::Classify => BufKind::Logits { seg },
    };
    if !training {
        for s in 0..ns {
            let out = u.push(head_kind(s as u32), sizes.head_elems(s));
            u.ops.push(Op::HeadEval {
                seg: s as u32,
                h: top,
                out,
            });
        }
    } else {
        let mut dy = u.push(
            BufKind::DeltaOut {
                layer: nl as u32 - 1,
            },
            sizes.window_elems(),
        );
        for s in 0..ns {
            let out = u.push(head_kind(s as u32), sizes.head_elems(s));
            u.ops.push(Op::Head {
                seg: s as u32,
                h: top,
                out,
                dh: dy,
            });
        }
        if classify {
            u.ops.push(Op::FirstStepGrad { dy });
        }
        for l in (0..nl).rev() {
            let below = l.checked_sub(1).map(|b| outputs[b]);
            let dy_below = below.map(|_| {
                let buf = u.push(
                    BufKind::DeltaOut {
                        layer: l as u32 - 1,
                    },
                    sizes.window_elems(),
                );
                u.ops.push(Op::ZeroDelta { buf });
                buf
            });
            for chain in &mut chains[2 * l..2 * l + 2] {
                let layer = chain.vl as u32;
                let carry = u.push(BufKind::Carry { layer }, sizes.carry_elems());
                u.ops.push(Op::ZeroCarry { layer, carry });
                for &a in back {
                    u.chain_action(chain, a, below, outputs[l], Some((dy, dy_below, carry)));
                }
            }
            if let Some(d) = dy_below {
                dy = d;
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

impl Unroller<'_> {
    /// One action of a chain: a forward (from its entry state, checkpointing and
    /// keeping as told; emitting its rows into `y` the first time), or, in the backward
    /// sweep (`grads`: this layer's `DeltaOut`, the one below's, the chain's carry), a
    /// backward.
    fn chain_action(
        &mut self,
        c: &mut Chain,
        a: Action,
        below: Option<BufId>,
        y: BufId,
        grads: Option<(BufId, Option<BufId>, BufId)>,
    ) {
        let sz = self.sz;
        match a {
            Action::Forward {
                seg,
                keep,
                checkpoint,
            } => {
                let s = seg as usize;
                let src = if s == 0 {
                    match sz.reverse(c.vl) {
                        true => StateSrc::Zero,
                        false => StateSrc::Carried,
                    }
                } else if let Some(p) = c.last.filter(|p| p.seg + 1 == s) {
                    StateSrc::Prev(p.states)
                } else if let Some(p) = c.kept[s - 1] {
                    StateSrc::Prev(p.states)
                } else {
                    StateSrc::Checkpoint(c.ckpt[s].expect("schedule: entry state of a forward"))
                };
                let f = self.chain_forward(c.vl, s, src, below);
                if !c.emitted[s] {
                    c.emitted[s] = true;
                    self.ops.push(Op::Emit {
                        layer: c.vl as u32,
                        seg,
                        h: f.states.id(0),
                        out: y,
                    });
                }
                if checkpoint {
                    let ck = self.push(
                        BufKind::LayerCheckpoint {
                            layer: c.vl as u32,
                            boundary: seg + 1,
                        },
                        sz.carried_per_layer(),
                    );
                    self.ops.push(Op::SaveCheckpoint {
                        layer: c.vl as u32,
                        ckpt: ck,
                        states: f.states,
                    });
                    c.ckpt[s + 1] = Some(ck);
                }
                // The state after the window (after `advance` steps) for a forward
                // direction; a reverse one's after its last segment (time 0), as
                // PyTorch's h_n.
                let store_at = match sz.reverse(c.vl) {
                    true => sz.segments,
                    false => self.store,
                };
                if s + 1 == store_at && !c.stored {
                    self.ops.push(Op::StoreState {
                        layer: c.vl as u32,
                        states: f.states,
                    });
                    c.stored = true;
                }
                if keep {
                    c.kept[s] = Some(f);
                }
                c.last = Some(f);
            }
            Action::Backward { seg } => {
                let s = seg as usize;
                let f = c.kept[s]
                    .take()
                    .expect("schedule: backward of a kept segment");
                let (dy, dy_below, carry) = grads.expect("a backward in the backward sweep");
                let layer = c.vl as u32;
                let dh = self.push(BufKind::DeltaIn { layer, seg }, sz.delta_elems(s));
                self.ops.push(Op::DirDelta {
                    layer,
                    seg,
                    dy,
                    out: dh,
                });
                self.ops.push(Op::CellBackward {
                    layer,
                    seg,
                    gates: f.gates,
                    states: f.states.only(|i| sz.states[i].read_in_backward),
                    saved: f.saved,
                    dh,
                    carry,
                });
                self.ops.push(Op::WeightGrad {
                    layer,
                    seg,
                    gates: f.gates,
                    x: f.x,
                    states: f.states.only(|i| sz.states[i].read_in_grads),
                    saved: f.saved,
                });
                if dy_below.is_none() && sz.embed.is_none() {
                    return;
                }
                let dx = self.push(BufKind::DeltaX { layer, seg }, sz.layer_in_elems(c.vl, s));
                self.ops.push(Op::InputGrad {
                    layer,
                    seg,
                    gates: f.gates,
                    dx,
                });
                if let Some(dy) = dy_below {
                    self.ops.push(Op::ScatterDx { layer, seg, dx, dy });
                }
            }
        }
    }

    /// A chain's forward of segment `s`: its input rows (embedded, gathered, reversed,
    /// dropped as needed), entry state, input projection and recurrence.
    fn chain_forward(
        &mut self,
        vl: usize,
        s: usize,
        src: StateSrc,
        below: Option<BufId>,
    ) -> ChainSeg {
        let sz = self.sz;
        let (layer, seg) = (vl as u32, s as u32);
        let rev = sz.reverse(vl);
        let gather = |u: &mut Self, src: Option<BufId>| {
            let out = u.push(BufKind::LayerIn { layer, seg }, sz.layer_in_elems(vl, s));
            u.ops.push(Op::LayerIn {
                layer,
                seg,
                src,
                out,
            });
            Input::Dropped(out)
        };
        let x = match (below, sz.embed) {
            (None, Some(_)) => {
                let x = self.push(BufKind::LayerIn { layer, seg }, sz.layer_in_elems(vl, s));
                self.ops.push(Op::Embed { seg, x, layer });
                Input::Embedded(x)
            }
            (None, None) if !rev => Input::Features,
            (None, None) => gather(self, None),
            (Some(y), _) if !rev && sz.dropout == 0.0 => Input::Hidden(y),
            (Some(y), _) => gather(self, Some(y)),
        };
        let (gates, states, saved) = self.recurrence(layer, s, src, x);
        ChainSeg {
            seg: s,
            x,
            gates,
            states,
            saved,
        }
    }
}
