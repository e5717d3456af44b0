//! The GEMMs are OpenBLAS's: the gateway's results equal a direct `cblas_sgemm` call bit
//! for bit on every shape and transposition the executor uses (ndarray's own fallback
//! sums in another order and would differ), and the `cblas_sgemm` the process calls
//! lives in libopenblas.

use recur::exec::gemm::{gemm, gemm_calls, sgemm_direct, Tr};

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

#[test]
fn gateway_equals_direct_cblas_bitwise() {
    let shapes = [
        (32, 1024, 256),
        (32, 256, 1024),
        (1024, 256, 512),
        (7, 9, 300),
        (3, 5, 7),
        (64, 16, 2),
    ];
    let before = gemm_calls();
    for &(m, n, k) in &shapes {
        for (ta, tb) in [(Tr::N, Tr::N), (Tr::N, Tr::T), (Tr::T, Tr::N)] {
            let (a, b) = (data(m * k, 1), data(k * n, 2));
            let c0 = data(m * n, 3);
            let (mut c1, mut c2) = (c0.clone(), c0.clone());
            gemm(m, n, k, &a, ta, &b, tb, 1.0, &mut c1);
            sgemm_direct(m, n, k, &a, ta, &b, tb, 1.0, &mut c2);
            assert!(
                c1.iter().zip(&c2).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{m}x{n}x{k} {ta:?}{tb:?}"
            );
        }
    }
    assert!(gemm_calls() >= before + 3 * shapes.len() as u64);
}

/// The bitwise comparison above can tell implementations apart: a plain loop in
/// another summation order differs from BLAS in some bits on a long product.
#[test]
fn bitwise_comparison_discriminates() {
    let (m, n, k) = (16, 16, 4096);
    let (a, b) = (data(m * k, 5), data(k * n, 6));
    let mut c = vec![0.0f32; m * n];
    sgemm_direct(m, n, k, &a, Tr::N, &b, Tr::N, 0.0, &mut c);
    let naive: Vec<f32> = (0..m * n)
        .map(|ij| (0..k).map(|p| a[ij / n * k + p] * b[p * n + ij % n]).sum())
        .collect();
    assert!(c
        .iter()
        .zip(&naive)
        .any(|(x, y)| x.to_bits() != y.to_bits()));
    assert!(c.iter().zip(&naive).all(|(x, y)| (x - y).abs() < 1e-2));
}

#[test]
fn cblas_sgemm_resolves_into_libopenblas() {
    let addr = cblas_sys::cblas_sgemm as *const () as usize;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let owner = maps.lines().find(|l| {
        let range = l.split_whitespace().next().unwrap_or("");
        let (lo, hi) = range.split_once('-').unwrap_or(("0", "0"));
        let (lo, hi) = (
            usize::from_str_radix(lo, 16).unwrap_or(0),
            usize::from_str_radix(hi, 16).unwrap_or(0),
        );
        lo <= addr && addr < hi
    });
    let owner = owner.unwrap_or("<not mapped>");
    assert!(
        owner.contains("openblas"),
        "cblas_sgemm at {addr:#x} is in: {owner}"
    );
}

/// `recur` runs the best kernels OpenBLAS has for the CPU when OpenBLAS's own choice is
/// older (it starts itself anew with `OPENBLAS_CORETYPE` set), and leaves a core the
/// user set as it is; its summary says which.
#[test]
fn recur_runs_the_cpus_kernels_or_the_users() {
    use recur::exec::gemm::{better_core, core};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.txt"), "abcabcabd ".repeat(40)).unwrap();
    let blas_of = |set: Option<&str>| -> String {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_recur"));
        cmd.args([
            "train", "--data", "t.txt", "--hidden", "8", "--embed", "4", "--batch", "2",
            "--window", "8", "--steps", "1", "--json", "--quiet",
        ])
        .current_dir(dir.path());
        match set {
            Some(c) => cmd.env("OPENBLAS_CORETYPE", c),
            None => cmd.env_remove("OPENBLAS_CORETYPE"),
        };
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = text.lines().last().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(summary).unwrap();
        v["blas"].as_str().unwrap_or_default().to_string()
    };
    // The user's choice stands, even where a better one exists.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        assert!(blas_of(Some("Haswell")).starts_with("OpenBLAS Haswell,"));
    }
    // Unset: the better core where OpenBLAS chose worse, else OpenBLAS's own (this
    // process's choice when it was started without the variable too).
    if std::env::var_os("OPENBLAS_CORETYPE").is_none() {
        let want = better_core().map_or_else(core, str::to_string);
        let got = blas_of(None);
        assert!(
            got.starts_with(&format!("OpenBLAS {want},")),
            "{got} (want {want})"
        );
    }
}

/// The executor runs every cell's per-step recurrent products from packed copies where
/// the CPU has the vector kernel (and none elsewhere), and the thread sharing their
/// panels and (LSTM, GRU) half of each step's elementwise rows changes no bit of a
/// training run.
#[test]
fn packed_recurrent_products_for_every_cell_and_the_helper_changes_no_bit() {
    use recur::data::windows::Windows;
    use recur::data::{DataFile, TokenFile};
    use recur::exec::packed::{products, splits, Packed};
    use recur::{compile, CellKind, ModelSpec, TrainSpec, Trainer};
    let toks: Vec<u8> = (0..20_000u32).map(|i| (i * 31 % 61) as u8).collect();
    let data = DataFile::Tokens(TokenFile::from_bytes("tokens", toks).unwrap());
    let (batch, window, layers, steps) = (32, 24, 2, 2);
    for cell in CellKind::ALL.iter().copied() {
        // H128: a forward product is 32 × 4·128 × 128 multiply-adds (2^21 for the
        // LSTM), enough for the helper to take half.
        let m = ModelSpec::language_model(cell, 61, 16, 128, layers).unwrap();
        let tr = TrainSpec::new(batch, window).unwrap();
        let run = |helper: bool| -> Vec<f32> {
            let mut t = Trainer::new(compile(&m, &tr).unwrap()).unwrap();
            t.executor_mut().set_helper(helper);
            assert_eq!(t.executor().helper_active(), helper);
            let mut win = Windows::new(data.len(), batch, window, data.path()).unwrap();
            for _ in 0..steps {
                t.load_window(&data, &mut win).unwrap();
                assert!(t.step_loaded().loss.is_finite());
            }
            t.executor().params().to_vec()
        };
        let (before, split_before) = (products(), splits());
        let shared = run(true);
        let (used, split) = (products() - before, splits() - split_before);
        let alone = run(false);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&shared), bits(&alone), "{cell}");
        // At least the forward's product of every step and layer (other tests running
        // at the same time only add to the count).
        let forward = (steps * window * layers) as u64;
        if matches!(cell, CellKind::Lstm | CellKind::Gru) {
            // Every step's forward and backward, of every layer.
            assert!(split >= 2 * forward, "{cell}: {split} split steps");
        }
        if Packed::fast() {
            assert!(used >= forward, "{cell}: {used} packed products");
        } else {
            assert_eq!(used, 0, "{cell}");
        }
    }
}

/// A step split by batch rows between the executor's thread and its helper gives the
/// same bits as one thread, with rows that start a new sequence mid-window (reset
/// flags cut with the rows) and masks, for every cell: the LSTM, the GRU, the peephole
/// LSTM, the multi-lag unit (M = 1, the GRU's path, and M = 3) and the projected LSTM;
/// and so do the segment-wide passes shared with it where these sizes make them large
/// enough (the gates' bias broadcasts and column sums, the token table's gather and
/// scatter), with token inputs one way (layer 0's projection a table) and both ways.
/// The narrower passes (the head's, the embedding's scatter) stay on one thread here;
/// `cell::steps`'s own test splits them.
#[test]
fn split_steps_with_resets_change_no_bit() {
    use crate::cases::{Shape, Window};
    use recur::exec::packed::splits;
    use recur::spec::HeadKind;
    use recur::{compile, CellKind, Trainer};
    let regress = |cell, proj| {
        let mut s = Shape::new(cell, Some(3), HeadKind::Regress);
        s.proj = proj;
        s
    };
    let tokens = |cell, bidirectional| {
        let mut s = Shape::new(cell, None, HeadKind::Lm);
        s.bidirectional = bidirectional;
        s
    };
    let shapes = [
        regress(CellKind::Lstm, None),
        regress(CellKind::Gru, None),
        regress(CellKind::Peephole, None),
        regress(CellKind::MultiLag(1), None),
        regress(CellKind::MultiLag(3), None),
        regress(CellKind::Lstm, Some(24)),
        tokens(CellKind::Lstm, false),
        tokens(CellKind::Gru, true),
    ];
    for mut s in shapes {
        // B32 H48: 32 × 3·48 elements or more a step, above `SPLIT_MIN`.
        (s.hidden, s.layers, s.batch, s.window, s.grain) = (48, 2, 32, 20, 8);
        (s.masks, s.resets) = (true, true);
        let run = |helper: bool| {
            let mut t = Trainer::new(compile(&s.model(), &s.train()).unwrap()).unwrap();
            t.executor_mut().set_helper(helper);
            assert_eq!(t.executor().helper_active(), helper);
            let mut bits = Vec::new();
            for w in 0..2 {
                t.load_batch(Window::new(s, 5 + w).batch()).unwrap();
                bits.push(t.forward_backward().to_bits());
            }
            bits.extend(t.executor().grads().iter().map(|x| x.to_bits()));
            bits
        };
        let before = splits();
        let shared = run(true);
        assert!(splits() > before, "{s:?}: no step split");
        assert!(shared == run(false), "{s:?}: the split changed bits");
    }
}

/// Subnormals flushed on OpenBLAS's threads too (`exec::fp::flush_subnormals`): each
/// product of 1e-20 by 1e-20 is subnormal, so a thread that flushes sums zeros where
/// one that keeps them sums 2.56e-38. OpenBLAS's threads copy the mode only when
/// restarted, which no other test may see: the check runs in a child process of this
/// test binary.
#[test]
fn blas_threads_flush_subnormals_after_a_restart() {
    use recur::exec::fp;
    const CHILD: &str = "RECUR_TEST_FP_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let exe = std::env::current_exe().expect("the test binary");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "blas::blas_threads_flush_subnormals_after_a_restart",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .expect("the child runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("1 passed"), "the child ran the check: {text}");
        return;
    }
    extern "C" {
        fn openblas_get_parallel() -> std::os::raw::c_int;
    }
    // SAFETY: OpenBLAS's getter. Only its pthreads build (1) has a pool to restart.
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64"))
        || unsafe { openblas_get_parallel() } != 1
    {
        return;
    }
    recur::exec::gemm::set_threads(2);
    let n = 256;
    let (a, b) = (vec![1e-20f32; n * n], vec![1e-20f32; n * n]);
    let product = || {
        let mut c = vec![1.0f32; n * n];
        sgemm_direct(n, n, n, &a, Tr::N, &b, Tr::N, 0.0, &mut c);
        c
    };
    let kept = product();
    assert!(
        kept.iter().all(|&x| (x - 2.56e-38).abs() < 1e-40),
        "gradual underflow"
    );
    // This thread alone: OpenBLAS's other thread still keeps them, so its share of C
    // is not zero (unless the build copies the caller's mode into its threads itself,
    // as OpenBLAS built with CONSISTENT_FPCSR does).
    assert!(fp::set_thread(true));
    let half = product();
    let zeros = half.iter().filter(|&&x| x == 0.0).count();
    assert!(0 < zeros, "this thread's share flushed");
    // Restarted: every thread flushes.
    // SAFETY: this process runs no other GEMM (the child runs this test alone).
    assert!(unsafe { fp::flush_subnormals(true) });
    assert!(
        product().iter().all(|&x| x == 0.0),
        "flushed on every thread"
    );
    // And back.
    // SAFETY: as above.
    assert!(unsafe { fp::flush_subnormals(false) });
    assert_eq!(product(), kept);
}
