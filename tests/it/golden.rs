//! Golden plan dumps: `recur plan` (table and JSON) for standard configurations, and the
//! full listing of a small one, are checked into `tests/golden/`. A refactor must leave
//! them unchanged; `RECUR_BLESS=1 cargo test --test it golden` rewrites them after an
//! intended change.

use recur::plan::compile;
use recur::report::{listing, PlanReport};
use recur::{ModelSpec, TrainSpec};
use std::path::PathBuf;

fn check(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("RECUR_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing: run with RECUR_BLESS=1", path.display()));
    if want != got {
        let diff: Vec<String> = (want.lines().zip(got.lines()).enumerate())
            .filter(|(_, (w, g))| w != g)
            .take(5)
            .map(|(i, (w, g))| format!("line {}:\n  - {w}\n  + {g}", i + 1))
            .collect();
        panic!(
            "{name} changed ({} vs {} lines):\n{}",
            want.lines().count(),
            got.lines().count(),
            diff.join("\n")
        );
    }
}

fn plan(v: usize, e: usize, h: usize, l: usize, b: usize, t: usize, g: usize) -> recur::Program {
    let m = ModelSpec::lstm(v, e, h, l).unwrap();
    let mut tr = TrainSpec::new(b, t).unwrap();
    tr.grain = g;
    compile(&m, &tr).unwrap()
}

#[test]
fn standard_plans_are_unchanged() {
    for (name, p) in [
        ("h256_l1_b32_t64", plan(256, 64, 256, 1, 32, 64, 16)),
        ("h512_l2_b32_t1000", plan(256, 64, 512, 2, 32, 1000, 16)),
        ("h128_l3_b16_t257_g8", plan(256, 32, 128, 3, 16, 257, 8)),
    ] {
        let r = PlanReport::new(&p);
        check(&format!("{name}.txt"), &r.table());
        check(
            &format!("{name}.json"),
            &(serde_json::to_string_pretty(&r).unwrap() + "\n"),
        );
    }
}

#[test]
fn small_listing_is_unchanged() {
    check(
        "listing_v7_h4_l2_b2_t5_g2.txt",
        &listing(&plan(7, 3, 4, 2, 2, 5, 2)),
    );
}
