//! Small training jobs of every kind (each cell and head, streams and sets of uneven
//! sequences, dropout, projection, accumulation with checkpointing, TBPTT, a
//! bidirectional model), shared by the tests that run one job several ways
//! (`parallel`: over ranks; `tests/lanes.rs`: on two lanes).

use recur::data::npy::{Dtype, Npy};
use recur::data::sets::Values;
use recur::data::{DataFile, SeqSet, SeriesFile, Source, TokenFile};
use recur::spec::{HeadKind, Input, Policy};
use recur::{CellKind, ModelSpec, TrainSpec};

fn offsets(lens: &[usize]) -> Npy {
    let mut o = vec![0i64];
    for l in lens {
        o.push(o.last().unwrap() + *l as i64);
    }
    let bytes = o.iter().flat_map(|x| x.to_le_bytes()).collect();
    Npy::from_bytes("offsets", Dtype::I64, vec![o.len()], bytes)
}

fn labels(v: &[i64]) -> Npy {
    let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    Npy::from_bytes("labels", Dtype::I64, vec![v.len()], bytes)
}

fn lens(n: usize) -> Vec<usize> {
    (0..n).map(|i| 3 + (i * 7) % 15).collect()
}

/// The data of a case, built afresh by each rank.
#[derive(Clone, Copy, Debug)]
pub enum Data {
    Tokens,
    Series,
    /// Feature sequences with one label each.
    Labelled,
    /// Token sequences with a label per step.
    Tagged,
}

pub fn source(d: Data) -> Source {
    match d {
        Data::Tokens => {
            let t = (0..4000).map(|i| ((i * 31 + i / 7) % 40) as u8).collect();
            Source::Stream(DataFile::Tokens(TokenFile::from_bytes("t", t).unwrap()))
        }
        Data::Series => {
            let v: Vec<f32> = (0..3 * 900)
                .map(|i| ((i as f32) * 0.37).sin() + 0.1 * ((i % 5) as f32))
                .collect();
            Source::Stream(DataFile::Series(
                SeriesFile::from_values("s", 3, &v).unwrap(),
            ))
        }
        Data::Labelled => {
            let ls = lens(40);
            let total: usize = ls.iter().sum();
            let v: Vec<f32> = (0..2 * total)
                .map(|i| ((i * 13) % 17) as f32 / 17.0)
                .collect();
            let lab: Vec<i64> = (0..ls.len() as i64).map(|i| i % 3).collect();
            let series = SeriesFile::from_values("v", 2, &v).unwrap();
            Source::Set(Box::new(
                SeqSet::new(Values::Features(series), offsets(&ls), Some(labels(&lab))).unwrap(),
            ))
        }
        Data::Tagged => {
            let ls = lens(40);
            let total: usize = ls.iter().sum();
            let toks = (0..total).map(|i| ((i * 11) % 30) as u8).collect();
            let lab: Vec<i64> = (0..total as i64).map(|i| (i * 5) % 4).collect();
            let values = Values::Tokens(TokenFile::from_bytes("v", toks).unwrap());
            Source::Set(Box::new(
                SeqSet::new(values, offsets(&ls), Some(labels(&lab))).unwrap(),
            ))
        }
    }
}

pub struct Case {
    pub name: &'static str,
    pub model: ModelSpec,
    pub train: TrainSpec,
    pub data: Data,
    pub bucket: bool,
}

pub fn cases() -> Vec<Case> {
    let spec = |input, cell, layers, head, outputs| {
        ModelSpec::new(input, cell, 8, layers, head, outputs).unwrap()
    };
    let tr = |batch, window| {
        let mut t = TrainSpec::new(batch, window).unwrap();
        t.grain = 4;
        t.optim.lr = 0.01;
        t.clip = Some(1.0);
        t
    };
    let tokens = Input::Tokens {
        vocab: 40,
        embed: 6,
    };
    let mut lm = spec(tokens, CellKind::Lstm, 2, HeadKind::Lm, 40);
    lm.dropout = 0.25;
    let mut proj = spec(tokens, CellKind::Lstm, 2, HeadKind::Lm, 40);
    proj.proj = Some(5);
    let mut acc = tr(6, 10);
    acc.accumulate = 2;
    acc.policy = Policy::Sqrt;
    let mut bidir = spec(
        Input::Features { width: 2 },
        CellKind::Lstm,
        1,
        HeadKind::Classify,
        3,
    );
    bidir.bidirectional = true;
    let mut advance = tr(6, 12);
    advance.advance = Some(4);
    let wide = Input::Tokens {
        vocab: 40,
        embed: 16,
    };
    vec![
        Case {
            name: "lstm lm, layer 0's projection as a table",
            model: spec(wide, CellKind::Lstm, 2, HeadKind::Lm, 40),
            train: tr(6, 32),
            data: Data::Tokens,
            bucket: false,
        },
        Case {
            name: "gru lm, TBPTT advance 4 of 12",
            model: spec(tokens, CellKind::Gru, 1, HeadKind::Lm, 40),
            train: advance,
            data: Data::Tokens,
            bucket: false,
        },
        Case {
            name: "lstm lm, dropout, 2 layers",
            model: lm,
            train: tr(6, 12),
            data: Data::Tokens,
            bucket: false,
        },
        Case {
            name: "lstm lm, projection, accumulate 2, sqrt",
            model: proj,
            train: acc,
            data: Data::Tokens,
            bucket: false,
        },
        Case {
            name: "gru regress",
            model: spec(
                Input::Features { width: 3 },
                CellKind::Gru,
                1,
                HeadKind::Regress,
                3,
            ),
            train: tr(6, 12),
            data: Data::Series,
            bucket: false,
        },
        Case {
            name: "peephole classify, bucketed set",
            model: spec(
                Input::Features { width: 2 },
                CellKind::Peephole,
                1,
                HeadKind::Classify,
                3,
            ),
            train: tr(6, 8),
            data: Data::Labelled,
            bucket: true,
        },
        Case {
            name: "multilag tagger",
            model: spec(tokens, CellKind::MultiLag(3), 1, HeadKind::Lm, 4),
            train: tr(6, 8),
            data: Data::Tagged,
            bucket: false,
        },
        Case {
            name: "bidirectional lstm classify",
            model: bidir,
            train: tr(6, 18),
            data: Data::Labelled,
            bucket: false,
        },
    ]
}
