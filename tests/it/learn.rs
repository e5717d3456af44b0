//! Training learns: on the built-in bracket stream the loss falls well below the
//! unigram entropy (which no context-free model can beat), with both optimisers.

use recur::data::windows::Windows;
use recur::data::{DataFile, TokenFile};
use recur::spec::OptimKind;
use recur::train::synth;
use recur::{compile, ModelSpec, TrainSpec, Trainer};

fn learn(kind: OptimKind, lr: f32, steps: usize) -> (f64, f32) {
    let toks = synth::brackets(200_000, 1);
    let baseline = synth::unigram_entropy(&toks);
    let data = DataFile::Tokens(TokenFile::from_bytes("brackets", toks).unwrap());
    let m = ModelSpec::lstm(synth::BRACKET_VOCAB, 8, 32, 1).unwrap();
    let mut tr = TrainSpec::new(16, 32).unwrap();
    tr.optim.kind = kind;
    tr.optim.lr = lr;
    let mut trainer = Trainer::new(compile(&m, &tr).unwrap()).unwrap();
    let mut win = Windows::new(data.len(), 16, 32, data.path()).unwrap();
    let mut last = Vec::new();
    for _ in 0..steps {
        trainer.load_window(&data, &mut win).unwrap();
        last.push(trainer.step_loaded().loss);
    }
    let tail = &last[steps - 20..];
    (baseline, tail.iter().sum::<f32>() / 20.0)
}

#[test]
fn adam_beats_the_unigram_baseline() {
    let (baseline, loss) = learn(OptimKind::Adam, 1e-2, 400);
    assert!(
        (loss as f64) < 0.8 * baseline,
        "loss {loss} vs unigram {baseline}"
    );
}

#[test]
fn sgd_momentum_beats_the_unigram_baseline() {
    let (baseline, loss) = learn(OptimKind::Sgd, 0.5, 400);
    assert!(
        (loss as f64) < 0.9 * baseline,
        "loss {loss} vs unigram {baseline}"
    );
}
