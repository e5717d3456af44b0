//! Embedding recur as a library: describe a model and a window, compile them, read the
//! memory plan before anything runs, train on an iterator of batches, save the weights
//! with PyTorch's names.
//!
//! Run with `cargo run --release --example embed`.

use recur::report::{fmt_bytes, PlanReport};
use recur::train::synth;
use recur::{compile, Batch, ModelSpec, TrainSpec, Trainer};

fn main() -> recur::Result<()> {
    // 1. What to train: a 1-layer LSTM over the 16-token bracket stream, B = 16, T = 32.
    let model = ModelSpec::lstm(synth::BRACKET_VOCAB, 16, 64, 1)?;
    let mut train = TrainSpec::new(16, 32)?;
    train.optim.lr = 1e-2;

    // 2. Compile: the whole memory footprint is known here, before any allocation.
    let program = compile(&model, &train)?;
    println!(
        "arena {} (lower bound {}), persistent {}",
        fmt_bytes(program.arena_bytes),
        fmt_bytes(program.arena_lower_bound),
        fmt_bytes(program.persistent_bytes())
    );
    let report = PlanReport::new(&program);
    println!(
        "{} instructions over {} buffers",
        report.instructions, report.buffers
    );

    // 3. Train on any iterator of [T, B] time-major batches.
    let stream: Vec<u32> = synth::brackets(200_000, 1)
        .into_iter()
        .map(u32::from)
        .collect();
    let (b, t) = (train.batch, train.window);
    let stripe = (stream.len() - 1) / b;
    let windows: Vec<(Vec<u32>, Vec<u32>)> = (0..150)
        .map(|k| {
            let mut input = vec![0; t * b];
            let mut target = vec![0; t * b];
            for row in 0..b {
                for step in 0..t {
                    let at = row * stripe + k * t + step;
                    input[step * b + row] = stream[at];
                    target[step * b + row] = stream[at + 1];
                }
            }
            (input, target)
        })
        .collect();
    let mut trainer = Trainer::new(program)?;
    let batches = windows.iter().map(|(i, o)| Batch::tokens(i, o));
    let stats = trainer.train(batches, |step, s| {
        if step % 50 == 0 {
            println!("step {step:4}  loss {:.4}", s.loss);
        }
    })?;
    println!(
        "final loss {:.4}",
        stats.last().map_or(f32::NAN, |s| s.loss)
    );

    // 4. Save: loads into torch.nn.LSTM + nn.Embedding + nn.Linear with load_state_dict.
    let out = std::env::temp_dir().join("recur-embed-example.safetensors");
    trainer.save_weights(&out)?;
    println!("weights written to {}", out.display());
    Ok(())
}
