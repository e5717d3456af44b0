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

/// `recur train --trace` writes a Chrome trace: valid JSON, every span closed in
/// order, compile passes inside `compile`, forward / recompute / head / backward
/// inside a window inside a step, the optimizer inside the step.
#[test]
fn train_writes_a_chrome_trace_of_its_spans() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let text: Vec<u8> = (0..5000).map(|i| b"abcdefgh "[i % 9]).collect();
    std::fs::write(p.join("d.txt"), text).unwrap();
    let args = [
        "train",
        "--data",
        "d.txt",
        "--hidden",
        "8",
        "--batch",
        "2",
        "--window",
        "32",
        "--grain",
        "8",
        "--checkpoint",
        "sqrt",
        "--steps",
        "2",
        "--trace",
        "t.json",
        "--quiet",
    ];
    let (code, _, err) = recur(&args, p);
    assert_eq!(code, 0, "{err}");
    let events: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(p.join("t.json")).unwrap()).unwrap();
    let seen = nesting(&events);

    for name in [
        "compile",
        "policy",
        "unroll",
        "liveness",
        "arena",
        "link",
        "step",
        "window",
        "forward",
        "recompute",
        "head",
        "backward",
        "optimizer",
    ] {
        assert!(seen.contains_key(name), "{name} in {seen:?}");
    }
    assert_eq!(seen["step"], 2);
    // 4 segments a window; sqrt recomputes some of them.
    assert_eq!(seen["forward"], 2 * 4, "{seen:?}");
}

/// `plan --json --listing` stays one JSON object: the listing is two arrays in it, an
/// instruction per program position and a buffer per arena buffer.
#[test]
fn json_listing_is_one_object() {
    let d = tempfile::tempdir().unwrap();
    let (code, out, err) = crate::util::recur(
        &[
            "plan",
            "--json",
            "--listing",
            "--hidden",
            "8",
            "--window",
            "8",
            "--grain",
            "4",
        ],
        d.path(),
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let ops = v["instructions_listing"].as_array().unwrap();
    let bufs = v["buffers_listing"].as_array().unwrap();
    assert_eq!(ops.len() as u64, v["instructions"].as_u64().unwrap());
    assert_eq!(bufs.len() as u64, v["buffers"].as_u64().unwrap());
    for b in bufs {
        let end = b["offset"].as_u64().unwrap() + b["bytes"].as_u64().unwrap();
        assert!(end <= v["arena_bytes"].as_u64().unwrap(), "{b}");
        assert!(b["first"].as_u64() <= b["last"].as_u64(), "{b}");
    }
}

/// Checks a Chrome trace's nesting (compile passes inside `compile`, a window's parts
/// inside a window inside a step, the optimizer inside a step; every span closed in
/// order) and counts the spans by name.
pub(crate) fn nesting(events: &[Value]) -> std::collections::HashMap<String, usize> {
    let mut stacks: std::collections::HashMap<u64, Vec<String>> = Default::default();
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    for e in events {
        let (Some(name), Some(ph)) = (e["name"].as_str(), e["ph"].as_str()) else {
            continue;
        };
        let stack = stacks.entry(e["tid"].as_u64().unwrap_or(0)).or_default();
        match ph {
            "B" => {
                let within = |outer: &str| stack.iter().any(|s| s == outer);
                match name {
                    "policy" | "unroll" | "liveness" | "arena" | "link" => {
                        assert!(within("compile"), "{name} outside compile: {stack:?}")
                    }
                    "forward" | "recompute" | "head" | "backward" | "load" => assert!(
                        within("window") && within("step"),
                        "{name} outside a window: {stack:?}"
                    ),
                    "window" | "optimizer" => assert!(within("step"), "{name}: {stack:?}"),
                    _ => {}
                }
                *seen.entry(name.to_string()).or_default() += 1;
                stack.push(name.to_string());
            }
            "E" => assert_eq!(stack.pop().as_deref(), Some(name), "spans close in order"),
            _ => {}
        }
    }
    assert!(
        stacks.values().all(Vec::is_empty),
        "every span closed: {stacks:?}"
    );
    seen
}
