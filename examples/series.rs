//! A multichannel time series, end to end through the library: write a `.npy` of f32
//! rows [steps, N] (as `numpy.save` would), open it memory-mapped, and train a GRU to
//! predict each row from the ones before it (the `regress` head, MSE), with the
//! library's own training loop. The result is set beside the persistence baseline
//! (tomorrow = today).
//!
//! Run with `cargo run --release --example series`.

use ndarray::Array2;
use ndarray_npy::WriteNpyExt;
use recur::data::DataFile;
use recur::spec::{HeadKind, Input};
use recur::train::{fit, Feed, FitOptions};
use recur::units::fmt_bytes;
use recur::{compile, CellKind, ModelSpec, TrainSpec, Trainer};

fn main() -> recur::Result<()> {
    // 1. A series of 4 sensor channels: two oscillations, a channel driven by both,
    //    and a slow drift, with a little deterministic noise.
    let (rows, n) = (40_000, 4);
    let noise = |i: usize| {
        (((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            * 0.02
    };
    let x = Array2::from_shape_fn((rows, n), |(t, c)| {
        let t = t as f32;
        let (a, b) = ((t * 0.07).sin(), (t * 0.023).cos());
        let v = match c {
            0 => a,
            1 => b,
            2 => 0.6 * a * b + 0.3 * (t * 0.11).sin(),
            _ => (t * 0.002).sin() * 0.5,
        };
        v + noise(t as usize * n + c)
    });
    let path = std::env::temp_dir().join("recur-series-example.npy");
    let file = std::fs::File::create(&path).map_err(|e| recur::Error::io(&path, e))?;
    x.write_npy(file).map_err(|e| recur::Error::Data {
        path: path.clone(),
        msg: e.to_string(),
    })?;
    // Persistence: predict each row by the row before it.
    let persistence = (1..rows)
        .map(|t| {
            (0..n)
                .map(|c| (x[[t, c]] - x[[t - 1, c]]).powi(2))
                .sum::<f32>()
        })
        .sum::<f32>()
        / ((rows - 1) * n) as f32;

    // 2. The model: features in, one GRU layer, a linear map to the next row.
    let model = ModelSpec::new(
        Input::Features { width: n },
        CellKind::Gru,
        64,
        1,
        HeadKind::Regress,
        n,
    )?;
    let mut train = TrainSpec::new(16, 64)?;
    train.optim.lr = 3e-3;
    let program = compile(&model, &train)?;
    println!(
        "{}: {} planned ({} arena)",
        model.describe(),
        fmt_bytes(program.total_bytes()),
        fmt_bytes(program.arena_bytes)
    );

    // 3. Train on the memory-mapped file.
    let data = DataFile::open(&path)?;
    let mut trainer = Trainer::new(program)?;
    let opts = FitOptions::steps(400);
    let mut feed = Feed::stream(&data, &train)?;
    let summary = fit(&mut trainer, &mut feed, opts, |p| {
        if p.step % 100 == 0 {
            println!("step {:4}  mse {:.5}", p.step, p.loss);
        }
    })?;
    println!(
        "mse {:.5} → {:.5} (last 10 steps); persistence baseline {persistence:.5}",
        summary.first_loss, summary.final_loss_avg10
    );
    let _ = std::fs::remove_file(&path);
    Ok(())
}
