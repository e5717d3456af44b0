//! `recur grads` against the in-process gradients of the same weights and batch, for
//! every cell × input × head (with masks and resets): the same plan runs the same
//! arithmetic, so every value must match bit for bit. The cell, the input and the head
//! come from the files alone.

use crate::cases::{Shape, Window};
use crate::util::recur;
use recur::io::safetensors as st;
use recur::spec::HeadKind;
use recur::{compile, Trainer};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::path::Path;

/// Writes `w` as a `recur grads` batch file.
pub fn write_batch(path: &Path, w: &Window) {
    let s = w.shape;
    let (t, b) = (s.window, s.batch);
    let i64s =
        |x: &[u32]| -> Vec<u8> { x.iter().flat_map(|&k| (k as i64).to_le_bytes()).collect() };
    let f32s = |x: &[f32]| -> Vec<u8> { x.iter().flat_map(|v| v.to_le_bytes()).collect() };
    let mut tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    match s.features {
        Some(n) => tensors.push(("input", Dtype::F32, vec![t, b, n], f32s(&w.features))),
        None => tensors.push(("input", Dtype::I64, vec![t, b], i64s(&w.tokens))),
    }
    match s.head {
        HeadKind::Lm => tensors.push(("target", Dtype::I64, vec![t, b], i64s(&w.labels))),
        HeadKind::Regress => {
            let k = s.outputs();
            tensors.push(("target", Dtype::F32, vec![t, b, k], f32s(&w.values)));
        }
        HeadKind::Classify => tensors.push(("label", Dtype::I64, vec![b], i64s(&w.labels))),
    }
    if let Some(m) = &w.mask {
        tensors.push(("mask", Dtype::U8, vec![t, b], m.clone()));
    }
    if let Some(r) = &w.reset {
        tensors.push(("reset", Dtype::BOOL, vec![t, b], r.clone()));
    }
    let views = tensors
        .iter()
        .map(|(n, d, s, bytes)| (*n, TensorView::new(*d, s.clone(), bytes).unwrap()));
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn check(shape: Shape) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (m, mut tr) = (shape.model(), shape.train());
    tr.seed = 9;
    tr.grain = 16.min(shape.window);
    let mut trainer = Trainer::new(compile(&m, &tr).unwrap()).unwrap();
    let lay = trainer.executor().layout().clone();
    st::save_params(&p.join("w.safetensors"), &lay, trainer.executor().params()).unwrap();
    let w = Window::new(shape, 5);
    write_batch(&p.join("b.safetensors"), &w);
    let (code, _, err) = recur(
        &[
            "grads",
            "--weights",
            "w.safetensors",
            "--batch",
            "b.safetensors",
            "--out",
            "g.safetensors",
        ],
        p,
    );
    assert_eq!(code, 0, "{shape:?}: {err}");

    trainer.load_batch(w.batch()).unwrap();
    let loss = trainer.forward_backward();
    let bytes = std::fs::read(p.join("g.safetensors")).unwrap();
    let out = SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |name: &str| -> Vec<f32> {
        let t = out.tensor(name).unwrap();
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    assert_eq!(f32s("loss")[0].to_bits(), loss.to_bits(), "{shape:?}");
    let grads = trainer.executor().grads();
    for tensor in &lay.tensors {
        let name = format!("grad.{}", tensor.name);
        assert_eq!(out.tensor(&name).unwrap().shape(), tensor.shape.as_slice());
        let want = &grads[tensor.range()];
        assert!(
            want.iter().any(|&g| g != 0.0),
            "{shape:?}: {} has a gradient",
            tensor.name
        );
        for (k, (a, w)) in f32s(&name).iter().zip(want).enumerate() {
            assert_eq!(a.to_bits(), w.to_bits(), "{shape:?}: {name}[{k}]");
        }
    }
}

#[test]
fn cli_grads_match_in_process_bitwise() {
    for mut shape in Shape::all() {
        shape.window = 20;
        check(shape);
    }
}
