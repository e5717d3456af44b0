//! `recur plan`'s formats and its terminal view of the arena.

use crate::util::recur;
use serde_json::Value;

fn ok(args: &[&str]) -> String {
    let d = tempfile::tempdir().unwrap();
    let (code, out, err) = recur(args, d.path());
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

/// `--format json` is `--json`; with `--timeline` it adds the arena over the
/// instructions, whose peak is the plan's lower bound, and the buffers live there,
/// which add up to it.
#[test]
fn json_timeline_agrees_with_the_plan() {
    let base = [
        "plan",
        "--hidden",
        "64",
        "--window",
        "128",
        "--checkpoint",
        "sqrt",
    ];
    let plain: Value = serde_json::from_str(&ok(&[&base[..], &["--json"]].concat())).unwrap();
    let same: Value =
        serde_json::from_str(&ok(&[&base[..], &["--format", "json"]].concat())).unwrap();
    assert_eq!(plain, same);
    let v: Value = serde_json::from_str(&ok(
        &[&base[..], &["--format", "json", "--timeline"]].concat()
    ))
    .unwrap();
    let t = &v["timeline"];
    assert_eq!(t["peak_bytes"], v["arena_lower_bound_bytes"]);
    assert_eq!(t["arena_bytes"], v["arena_bytes"]);
    let live = t["live"].as_array().unwrap();
    assert_eq!(live.len(), t["categories"].as_array().unwrap().len());
    assert_eq!(
        live[0].as_array().unwrap().len() as u64,
        v["instructions"].as_u64().unwrap()
    );
    let peak: u64 = (v["peak_buffers"].as_array().unwrap().iter())
        .map(|b| b["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(peak, v["arena_lower_bound_bytes"].as_u64().unwrap());
}

/// Markdown and the terminal view say what the table says.
#[test]
fn markdown_and_the_terminal_timeline() {
    let base = ["plan", "--hidden", "64", "--window", "128"];
    let v: Value = serde_json::from_str(&ok(&[&base[..], &["--json"]].concat())).unwrap();
    let md = ok(&[&base[..], &["--format", "markdown"]].concat());
    assert!(md.contains("| category | region | bytes |"), "{md}");
    let rows = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.contains("**"))
        .count();
    // The header row and one row per category.
    assert_eq!(rows, 1 + v["categories"].as_array().unwrap().len(), "{md}");
    let total = recur::report::fmt_bytes(v["total_bytes"].as_u64().unwrap());
    assert!(
        md.contains(&format!("| **total** | | **{total}** |")),
        "{md}"
    );
    let cmp = ok(&[&base[..], &["--compare", "--format", "markdown"]].concat());
    assert!(
        cmp.contains("| `none` |") && cmp.contains("| `sqrt"),
        "{cmp}"
    );
    let text = ok(&[&base[..], &["--timeline"]].concat());
    let lower = recur::report::fmt_bytes(v["arena_lower_bound_bytes"].as_u64().unwrap());
    assert!(
        text.contains(&format!("^ peak {lower} at instruction")),
        "{text}"
    );
    assert!(text.contains("live at the peak:"), "{text}");
    assert!(text.contains('█'), "{text}");
}
