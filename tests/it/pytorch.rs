//! Against PyTorch itself: `tests/data/torch_lstm2.safetensors` holds a 2-layer
//! `nn.LSTM` language model with PyTorch's own initialisation, a batch, a non-zero
//! initial state, and the loss, gradients and final state PyTorch computed
//! (`scripts/ref/torch_fixture.py` regenerates it). recur loads the weights by their
//! state-dict names and must agree to f32 rounding.

use recur::spec::ModelSpec;
use recur::{compile, Batch, TrainSpec, Trainer};
use safetensors::SafeTensors;

fn f32s(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    let t = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("fixture has {name}"));
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn tokens(st: &SafeTensors<'_>, name: &str) -> Vec<u32> {
    let t = st.tensor(name).unwrap();
    t.data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect()
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 2e-6 + 1e-4 * w.abs(),
            "{what}[{k}]: recur {g:e}, PyTorch {w:e}"
        );
    }
}

fn run(grain: usize) {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/torch_lstm2.safetensors"
    ))
    .unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (v, e, h, l, t, b) = (11, 5, 6, 2, 9, 3);
    let m = ModelSpec::lstm(v, e, h, l).unwrap();
    let mut tr = TrainSpec::new(b, t).unwrap();
    tr.grain = grain;
    let mut trainer = Trainer::new(compile(&m, &tr).unwrap()).unwrap();
    let lay = trainer.executor().layout().clone();
    let ex = trainer.executor_mut();
    for tensor in &lay.tensors {
        assert_eq!(
            st.tensor(&tensor.name).unwrap().shape(),
            tensor.shape.as_slice(),
            "{}",
            tensor.name
        );
        ex.params_mut()[tensor.range()].copy_from_slice(&f32s(&st, &tensor.name));
    }
    // PyTorch's state is [L, B, H] for h and for c; recur's is per layer h then c.
    let (h0, c0) = (f32s(&st, "h0"), f32s(&st, "c0"));
    let bh = b * h;
    for layer in 0..l {
        let s = &mut ex.state_mut()[2 * layer * bh..2 * (layer + 1) * bh];
        s[..bh].copy_from_slice(&h0[layer * bh..(layer + 1) * bh]);
        s[bh..].copy_from_slice(&c0[layer * bh..(layer + 1) * bh]);
    }
    let (inp, tgt) = (tokens(&st, "input"), tokens(&st, "target"));
    trainer
        .load_batch(Batch {
            input: &inp,
            target: &tgt,
        })
        .unwrap();
    let loss = trainer.forward_backward();
    close("loss", &[loss], &f32s(&st, "loss"));
    let ex = trainer.executor();
    for tensor in &lay.tensors {
        let name = format!("grad.{}", tensor.name);
        close(&name, &ex.grads()[tensor.range()], &f32s(&st, &name));
    }
    let (hn, cn) = (f32s(&st, "hn"), f32s(&st, "cn"));
    for layer in 0..l {
        let s = &ex.state()[2 * layer * bh..2 * (layer + 1) * bh];
        close("h_n", &s[..bh], &hn[layer * bh..(layer + 1) * bh]);
        close("c_n", &s[bh..], &cn[layer * bh..(layer + 1) * bh]);
    }
}

#[test]
fn matches_pytorch_grain_4() {
    run(4);
}

#[test]
fn matches_pytorch_grain_1_and_whole_window() {
    run(1);
    run(9);
}
