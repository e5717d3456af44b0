//! The gradient noise scale of a language model on a text: how large a batch can grow
//! before more of it stops buying progress per step (McCandlish et al., "An Empirical
//! Model of Large-Batch Training", 2018: the simple noise scale B = tr(Σ) / |G|²,
//! estimated from the squared norms of mean gradients at two batch sizes). It bounds
//! what data parallelism can do for convergence: past ~B tokens per step, R ranks
//! make steps R times larger but not R times fewer. docs/SCALING.md records its output.
//!
//! Trains config A's model (E64 H256 L1, vocab 256) at B32 for `steps`, then, from those
//! weights, measures |G|² over windows of B_small and B_big rows.
//!
//! Run with `cargo run --release --example noise_scale -- TEXT [steps] [window]`.

use recur::data::{DataFile, TokenFile};
use recur::train::{fit, Feed, FitOptions};
use recur::{compile, ModelSpec, TrainSpec, Trainer};

/// Mean over `windows` windows of |G|², G the mean gradient of a window of `batch` rows.
fn mean_sq_norm(
    model: &ModelSpec,
    params: &[f32],
    data: &DataFile,
    batch: usize,
    window: usize,
    windows: usize,
) -> recur::Result<f64> {
    let mut tr = TrainSpec::new(batch, window)?;
    tr.seed = 1;
    let mut t = Trainer::new(compile(model, &tr)?)?;
    t.executor_mut().params_mut().copy_from_slice(params);
    let mut feed = Feed::stream(data, &tr)?;
    let mut sum = 0.0;
    for _ in 0..windows {
        t.load(&mut feed)?;
        t.forward_backward();
        sum += t
            .executor()
            .grads()
            .iter()
            .map(|&g| (g as f64).powi(2))
            .sum::<f64>();
    }
    Ok(sum / windows as f64)
}

fn main() -> recur::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = std::path::PathBuf::from(args.next().unwrap_or_else(|| {
        eprintln!("usage: noise_scale TEXT [steps] [window]");
        std::process::exit(2)
    }));
    let steps: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(300);
    let window: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100);
    let bytes = std::fs::read(&path).map_err(|e| recur::Error::io(&path, e))?;
    let data = DataFile::Tokens(TokenFile::from_bytes("text", bytes)?);
    let model = ModelSpec::lstm(256, 64, 256, 1)?;
    let mut tr = TrainSpec::new(32, window)?;
    tr.optim.lr = 3e-3;
    let mut t = Trainer::new(compile(&model, &tr)?)?;
    let mut feed = Feed::stream(&data, &tr)?;
    let s = fit(&mut t, &mut feed, FitOptions::steps(steps), |_| {})?;
    let params = t.executor().params().to_vec();
    let (small, big) = (4, 128);
    let g_small = mean_sq_norm(&model, &params, &data, small, window, 48)?;
    let g_big = mean_sq_norm(&model, &params, &data, big, window, 12)?;
    // E|G_B|² = |G|² + tr(Σ)/B, B in tokens.
    let (bs, bb) = ((small * window) as f64, (big * window) as f64);
    let g2 = (bb * g_big - bs * g_small) / (bb - bs);
    let trace = (g_small - g_big) / (1.0 / bs - 1.0 / bb);
    println!(
        "after {steps} steps (loss {:.3} nats/token): |G_{small}x{window}|² {g_small:.4e}, \
         |G_{big}x{window}|² {g_big:.4e}; |G|² {g2:.4e}, tr(Σ) {trace:.4e}; noise scale \
         B_simple {:.0} tokens ({:.0} rows of {window})",
        s.final_loss_avg10,
        trace / g2,
        trace / g2 / window as f64
    );
    Ok(())
}
