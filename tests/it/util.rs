//! Small helpers shared by the integration tests: tiny models, token streams, running
//! the binary.

use recur::spec::{ModelSpec, TrainSpec};
use std::path::Path;
use std::process::Command;

/// A tiny LSTM and window.
pub fn tiny(
    v: usize,
    e: usize,
    h: usize,
    l: usize,
    b: usize,
    t: usize,
    g: usize,
) -> (ModelSpec, TrainSpec) {
    let m = ModelSpec::lstm(v, e, h, l).expect("valid model");
    let mut tr = TrainSpec::new(b, t).expect("valid window");
    tr.grain = g;
    (m, tr)
}

/// The `recur` binary on the OpenBLAS kernels this test process runs (`recur` would
/// otherwise start itself anew on better ones, `gemm::restart_with_blas_settings`; it
/// still does for the threads' spinning, which changes no bit), so that what it
/// computes equals the same run in process, bit for bit.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_recur"));
    c.env("OPENBLAS_CORETYPE", recur::exec::gemm::core());
    c
}

/// Runs the `recur` binary; returns (exit code, stdout, stderr).
pub fn recur(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = bin()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the recur binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
