//! `recur grads` against the in-process gradients of the same weights and batch: the
//! same plan runs the same arithmetic, so every value must match bit for bit.

use crate::util::{recur, tiny, tokens};
use recur::io::safetensors as st;
use recur::{compile, Batch, Trainer};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

#[test]
fn cli_grads_match_in_process_bitwise() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (v, b, t) = (11, 3, 20);
    let (m, mut tr) = tiny(v, 5, 6, 2, b, t, 16);
    tr.seed = 9;
    let mut trainer = Trainer::new(compile(&m, &tr).unwrap()).unwrap();
    let lay = trainer.executor().layout().clone();
    st::save_params(&p.join("w.safetensors"), &lay, trainer.executor().params()).unwrap();
    let (inp, tgt) = (tokens(t * b, v, 5), tokens(t * b, v, 6));
    let as_i64 =
        |x: &[u32]| -> Vec<u8> { x.iter().flat_map(|&k| (k as i64).to_le_bytes()).collect() };
    let (ib, tb) = (as_i64(&inp), as_i64(&tgt));
    let views = [
        (
            "input",
            TensorView::new(Dtype::I64, vec![t, b], &ib).unwrap(),
        ),
        (
            "target",
            TensorView::new(Dtype::I64, vec![t, b], &tb).unwrap(),
        ),
    ];
    std::fs::write(
        p.join("b.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
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
    assert_eq!(code, 0, "{err}");

    trainer
        .load_batch(Batch {
            input: &inp,
            target: &tgt,
        })
        .unwrap();
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
    assert_eq!(f32s("loss")[0].to_bits(), loss.to_bits());
    let grads = trainer.executor().grads();
    for tensor in &lay.tensors {
        let got = f32s(&format!("grad.{}", tensor.name));
        assert_eq!(
            out.tensor(&format!("grad.{}", tensor.name))
                .unwrap()
                .shape(),
            tensor.shape.as_slice()
        );
        let want = &grads[tensor.range()];
        assert!(
            want.iter().any(|&g| g != 0.0),
            "{} has a gradient",
            tensor.name
        );
        for (k, (a, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(a.to_bits(), w.to_bits(), "{}[{k}]", tensor.name);
        }
    }
}
