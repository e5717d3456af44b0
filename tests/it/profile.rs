//! `recur profile`: the HTML report parses and holds each chart and the peak table,
//! and its JSON twin holds the figures `recur plan --json` gives for the same flags.

use crate::util::recur;
use serde_json::Value;

#[test]
fn the_report_parses_and_agrees_with_the_plan() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // 64 segments: more buffers live at the peak than the table shows unfolded.
    let flags = [
        "--hidden",
        "32",
        "--batch",
        "8",
        "--window",
        "512",
        "--grain",
        "8",
        "--checkpoint",
        "sqrt",
    ];
    let args = [
        &["profile"][..],
        &flags,
        &["--steps", "3", "--out", "r.html"],
    ]
    .concat();
    let (code, out, err) = recur(&args, p);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("r.html") && out.contains("r.json"), "{out}");
    let html = std::fs::read_to_string(p.join("r.html")).unwrap();
    let doc = scraper::Html::parse_document(&html);
    assert!(doc.errors.is_empty(), "{:?}", doc.errors);
    let sel = |s: &str| scraper::Selector::parse(s).unwrap();
    // Timeline, offsets, categories, policies: four charts, and no script or link.
    assert_eq!(doc.select(&sel("svg")).count(), 4);
    assert_eq!(doc.select(&sel("script, link, img")).count(), 0);
    for id in [
        "measured",
        "timeline",
        "offsets",
        "peak",
        "categories",
        "policies",
    ] {
        assert_eq!(doc.select(&sel(&format!("#{id}"))).count(), 1, "#{id}");
    }
    // Each chart holds what it draws: the timeline an area per category live and the
    // planned line and peak in its legend; the offset map a box per buffer; the policy
    // chart this run's measured step.
    let svgs: Vec<String> = doc.select(&sel("svg")).map(|e| e.html()).collect();
    assert!(
        svgs[0].contains("planned arena") && svgs[0].contains("peak"),
        "timeline legend"
    );
    assert!(svgs[2].contains("Bytes by category"));
    assert!(
        svgs[3].contains("s/step measured"),
        "the chosen policy's step time"
    );
    // Every buffer live at the peak, the largest first and the rest folded.
    let rows = doc.select(&sel("#peak-table tr")).count()
        + doc
            .select(&sel("#peak-table-rest tr"))
            .count()
            .saturating_sub(1);
    // The profile as JSON: the plan's figures are `recur plan --json`'s, the peak
    // table holds the buffers live at the peak.
    let j: Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("r.json")).unwrap()).unwrap();
    let prof = &j["profile"];
    let (code, plan, err) = recur(&[&["plan"][..], &flags, &["--json"]].concat(), p);
    assert_eq!(code, 0, "{err}");
    let plan: Value = serde_json::from_str(&plan).unwrap();
    // The profile's batch comes from generated data of the same shape: the same plan,
    // every figure and category.
    assert_eq!(prof["plan"], plan);
    let live = prof["timeline"]["live"].as_array().unwrap();
    let cats = prof["timeline"]["categories"].as_array().unwrap();
    let areas = svgs[0].matches("<polygon").count();
    let nonzero = live
        .iter()
        .filter(|l| l.as_array().unwrap().iter().any(|v| v.as_u64() != Some(0)))
        .count();
    assert_eq!(cats.len(), live.len());
    assert!(
        areas >= nonzero && nonzero > 0,
        "{areas} areas, {nonzero} categories"
    );
    let boxes = svgs[1].matches("<rect").count();
    let buffers = prof["buffers"].as_array().unwrap().len();
    assert!(boxes >= buffers, "{boxes} boxes for {buffers} buffers");
    // The timeline and the peak's buffers are `plan --timeline --json`'s.
    let (code, tl, err) = recur(
        &[&["plan"][..], &flags, &["--json", "--timeline"]].concat(),
        p,
    );
    assert_eq!(code, 0, "{err}");
    let tl: Value = serde_json::from_str(&tl).unwrap();
    assert_eq!(prof["timeline"], tl["timeline"]);
    assert_eq!(prof["peak_buffers"], tl["peak_buffers"]);
    let peak = prof["peak_buffers"].as_array().unwrap();
    assert_eq!(rows, peak.len() + 1, "a row per buffer and the header");
    assert!(peak.len() > 20, "some folded: {}", peak.len());
    assert_eq!(
        prof["timeline"]["peak_bytes"],
        plan["arena_lower_bound_bytes"]
    );
    let m = &prof["measured"];
    assert_eq!(m["steps"], 3);
    let phases = m["phases"].as_object().unwrap();
    for k in ["forward", "recompute", "head", "backward", "optimizer"] {
        assert!(phases[k].as_f64().unwrap() > 0.0, "{k}: {m}");
    }
    // The phases split the timed pass's step: together no more than it.
    let parts: f64 = phases.values().map(|v| v.as_f64().unwrap()).sum();
    assert!(
        parts <= m["timed_step_seconds"].as_f64().unwrap() * 1.05,
        "{m}"
    );
    assert!(m["step_seconds"].as_f64().unwrap() > 0.0, "{m}");
    let chosen = prof["chosen"].as_u64().unwrap() as usize;
    assert_eq!(prof["policies"][chosen]["policy"], plan["policy"]);
}

/// `--vs` profiles a second run and names the difference at the peak.
#[test]
fn vs_draws_two_runs_and_names_the_difference() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let args = [
        "profile",
        "--hidden",
        "32",
        "--batch",
        "8",
        "--window",
        "64",
        "--steps",
        "2",
        "--checkpoint",
        "sqrt",
        "--vs",
        "--checkpoint none",
        "--out",
        "v.html",
    ];
    let (code, _, err) = recur(&args, p);
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(p.join("v.html")).unwrap();
    assert!(html.contains("with --checkpoint none"), "named");
    assert!(
        html.contains("At the arena's peak, with --checkpoint none holds"),
        "difference"
    );
    let j: Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("v.json")).unwrap()).unwrap();
    let (a, b) = (&j["profile"], &j["vs"]);
    assert_eq!(b["plan"]["policy"], "none");
    let peak = |x: &Value| x["timeline"]["peak_bytes"].as_u64().unwrap();
    assert!(peak(b) > peak(a));
    // The second run keeps the first's flags it does not change.
    assert_eq!(b["plan"]["hidden"], 32);
    assert_eq!(b["plan"]["window"], 64);
    // The difference named is the one between the two peaks.
    let d = peak(b) - peak(a);
    let named = format!("(+{}", recur::units::fmt_bytes(d));
    assert!(html.contains(&named), "{named}");
    // Both runs drawn: the overlay, then each run's timeline and offsets.
    let doc = scraper::Html::parse_document(&html);
    let svgs = doc
        .select(&scraper::Selector::parse("svg").unwrap())
        .count();
    assert_eq!(svgs, 7);
    assert!(html.contains("id=\"peak-table-2\""));
    // What changes nothing, and what names the report, are refused.
    for (vs, says) in [
        ("--hidden 32", "changes nothing"),
        ("--out other.html", "--out"),
        ("--trace t.json", "--trace"),
        ("--help", "recur profile --help"),
        ("--data 'unclosed", "quote"),
    ] {
        let args = [
            "profile", "--hidden", "32", "--steps", "1", "--vs", vs, "--out", "w.html",
        ];
        let (code, _, err) = recur(&args, p);
        assert_eq!(code, 2, "{vs}");
        assert!(
            err.contains(says) && err.lines().count() == 1,
            "{vs}: {err}"
        );
    }
    // A path with spaces passes in quotes.
    std::fs::write(p.join("my text.txt"), "a b c d e f g ".repeat(300)).unwrap();
    let args = [
        "profile",
        "--hidden",
        "8",
        "--batch",
        "2",
        "--window",
        "16",
        "--steps",
        "1",
        "--vs",
        "--data 'my text.txt'",
        "--out",
        "q.html",
    ];
    let (code, _, err) = recur(&args, p);
    assert_eq!(code, 0, "{err}");
    let j: Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("q.json")).unwrap()).unwrap();
    assert_eq!(j["vs"]["config"][0][1], "my text.txt");
    let (code, _, err) = recur(&["profile", "--vs", "--bogus"], p);
    assert_ne!(code, 0);
    assert!(err.contains("--vs") && err.lines().count() == 1, "{err}");
}

/// A trace path that names anything but an earlier trace is refused before it is
/// touched; `--vs` swaps a policy for a budget and refuses nothing to change.
#[test]
fn traces_never_overwrite_data_and_vs_swaps_pairs() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("d.txt"), "precious data ".repeat(500)).unwrap();
    let (code, _, err) = recur(
        &[
            "train", "--data", "d.txt", "--steps", "1", "--trace", "d.txt",
        ],
        p,
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--trace") && err.contains("not a trace"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(p.join("d.txt")).unwrap(),
        "precious data ".repeat(500)
    );
    let (code, _, err) = recur(&["profile", "--out", "q.html", "--trace", "q.json"], p);
    assert_ne!(code, 0);
    assert!(err.contains("--trace"), "{err}");
    let (code, _, err) = recur(&["profile", "--vs", ""], p);
    assert_ne!(code, 0);
    assert!(err.contains("--vs") && err.contains("empty"), "{err}");
    let args = [
        "profile",
        "--hidden",
        "16",
        "--batch",
        "4",
        "--window",
        "64",
        "--steps",
        "1",
        "--checkpoint",
        "sqrt",
        "--vs",
        "--memory-budget 1MiB",
        "--out",
        "b.html",
    ];
    let (code, _, err) = recur(&args, p);
    assert_eq!(code, 0, "{err}");
    let j: Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("b.json")).unwrap()).unwrap();
    let policy = j["vs"]["plan"]["policy"].as_str().unwrap();
    assert!(policy.starts_with("budget 1.0 MiB"), "{policy}");
}

/// `recur profile --trace` writes the run's spans as a Chrome trace beside the report.
#[test]
fn profile_writes_a_trace_too() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let args = [
        "profile",
        "--hidden",
        "16",
        "--batch",
        "4",
        "--window",
        "32",
        "--steps",
        "2",
        "--out",
        "t.html",
        "--trace",
        "t-trace.json",
    ];
    let (code, _, err) = recur(&args, p);
    assert_eq!(code, 0, "{err}");
    let events: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(p.join("t-trace.json")).unwrap()).unwrap();
    let seen = crate::report::nesting(&events);
    for n in [
        "compile",
        "step",
        "window",
        "forward",
        "head",
        "backward",
        "optimizer",
        "profile_run",
        "warmup",
        "plain",
        "timed",
    ] {
        assert!(seen.contains_key(n), "{n} in {seen:?}");
    }
    // One warm-up step, then each measured step twice, plain and timed in turn.
    assert_eq!(seen["step"], 1 + 2 * 2, "{seen:?}");
    let order: Vec<&str> = (events.iter())
        .filter(|e| e["ph"] == "B")
        .filter_map(|e| e["name"].as_str())
        .filter(|n| ["profile_run", "warmup", "plain", "timed"].contains(n))
        .collect();
    assert_eq!(
        order,
        ["profile_run", "warmup", "plain", "timed", "plain", "timed"]
    );
    assert_eq!((seen["plain"], seen["timed"]), (2, 2));
}

/// `recur report` draws a profile again from its JSON twin, and two twins together
/// (named by their files); anything but a twin is one error line.
#[test]
fn report_redraws_one_twin_and_sets_two_side_by_side() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let base = ["profile", "--hidden", "16", "--batch", "4", "--steps", "1"];
    for (window, name) in [("32", "short.html"), ("64", "long.html")] {
        let args = [&base[..], &["--window", window, "--out", name]].concat();
        let (code, _, err) = recur(&args, p);
        assert_eq!(code, 0, "{err}");
    }
    let (code, out, err) = recur(&["report", "short.json", "--out", "again.html"], p);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("again.html"), "{out}");
    // Drawn from the JSON alone, the report is the one `profile` wrote.
    assert_eq!(
        std::fs::read_to_string(p.join("again.html")).unwrap(),
        std::fs::read_to_string(p.join("short.html")).unwrap()
    );
    let (code, _, err) = recur(
        &["report", "short.json", "long.json", "--out", "both.html"],
        p,
    );
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(p.join("both.html")).unwrap();
    let doc = scraper::Html::parse_document(&html);
    assert!(doc.errors.is_empty(), "{:?}", doc.errors);
    // Both timelines together, then each run's timeline and offsets; categories,
    // policies.
    let svgs = doc
        .select(&scraper::Selector::parse("svg").unwrap())
        .count();
    assert_eq!(svgs, 7);
    // The two models are named.
    assert!(html.contains("T32") && html.contains("T64"));
    assert!(
        html.contains("At the arena's peak, long holds"),
        "difference named"
    );
    // Bad input: not JSON, JSON that is not a profile, a twin of another format.
    std::fs::write(p.join("text.json"), "hello").unwrap();
    std::fs::write(p.join("other.json"), r#"{"steps": 3}"#).unwrap();
    let twin = std::fs::read_to_string(p.join("short.json")).unwrap();
    std::fs::write(
        p.join("future.json"),
        twin.replacen("recur-profile-1", "recur-profile-9", 1),
    )
    .unwrap();
    // Hand-edited twins that would draw out of bounds, or inject markup.
    let mut v: Value = serde_json::from_str(&twin).unwrap();
    let edit = |f: &dyn Fn(&mut Value), name: &str| {
        let mut e = v.clone();
        f(&mut e);
        std::fs::write(p.join(name), e.to_string()).unwrap();
    };
    edit(
        &|e| {
            for l in e["profile"]["timeline"]["live"].as_array_mut().unwrap() {
                *l = Value::Array(vec![]);
            }
        },
        "empty.json",
    );
    edit(
        &|e| e["profile"]["timeline"]["peak_position"] = 1_000_000.into(),
        "peak.json",
    );
    edit(
        &|e| e["profile"]["buffers"][0]["offset"] = u64::MAX.into(),
        "offset.json",
    );
    edit(&|e| e["profile"]["chosen"] = 99.into(), "chosen.json");
    for (file, says) in [
        ("text.json", "not JSON"),
        ("other.json", "not a profile"),
        ("future.json", "recur-profile-9"),
        ("missing.json", "missing.json"),
        ("empty.json", "empty"),
        ("peak.json", "peak"),
        ("offset.json", "outside"),
        ("chosen.json", "chosen"),
    ] {
        let (code, _, err) = recur(&["report", file], p);
        assert_ne!(code, 0, "{file}");
        assert!(
            err.contains(says) && err.lines().count() == 1,
            "{file}: {err}"
        );
        assert!(!err.contains("panicked"), "{file}: {err}");
    }
    let (code, _, err) = recur(&["report", "short.json", "long.json", "short.json"], p);
    assert_eq!(code, 2);
    assert!(err.contains("not 3"), "{err}");
    v["profile"]["peak_buffers"][0]["category"] = "<script>x</script>".into();
    std::fs::write(p.join("inject.json"), v.to_string()).unwrap();
    let (code, _, err) = recur(&["report", "inject.json", "--out", "inject.html"], p);
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(p.join("inject.html")).unwrap();
    assert!(!html.contains("<script"), "escaped");
    // A report never replaces a file that is not one.
    std::fs::write(p.join("notes.html"), "my notes").unwrap();
    let (code, _, err) = recur(&["report", "short.json", "--out", "notes.html"], p);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        std::fs::read_to_string(p.join("notes.html")).unwrap(),
        "my notes"
    );
}

/// Without --data, a classifier profiles on a generated labelled set of uneven
/// sequences and a regression on a generated series; bad sizes are refused by name.
#[test]
fn generated_data_follows_the_head() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let base = [
        "profile", "--hidden", "16", "--batch", "4", "--window", "32", "--steps", "1",
    ];
    for (head, extra, input) in [
        ("classify", &["--outputs", "3"][..], "tokens"),
        ("classify", &["--features", "2"][..], "features"),
        ("regress", &[][..], "features"),
    ] {
        let args = [&base[..], &["--head", head, "--out", "g.html"], extra].concat();
        let (code, _, err) = recur(&args, p);
        assert_eq!(code, 0, "{head} {extra:?}: {err}");
        let j: Value =
            serde_json::from_str(&std::fs::read_to_string(p.join("g.json")).unwrap()).unwrap();
        assert_eq!(j["profile"]["plan"]["head"], head);
        assert_eq!(j["profile"]["plan"]["input"], input);
    }
    // A small vocabulary: the generated tokens stay below it.
    let args = [&base[..], &["--vocab", "5", "--out", "g.html"]].concat();
    let (code, _, err) = recur(&args, p);
    assert_eq!(code, 0, "{err}");
    for (flags, names) in [
        (&["--features", "0"][..], "--features"),
        (&["--epochs", "1"][..], "--epochs"),
        (&["--valid", "v.npy"][..], "--valid"),
    ] {
        let args = [&["profile"][..], flags].concat();
        let (code, _, err) = recur(&args, p);
        assert_eq!(code, 2, "{flags:?}");
        assert!(err.contains(names) && err.lines().count() == 1, "{err}");
    }
}

/// With held-out data the validation program's bytes join the planned total and the
/// validations are timed apart from the step (their forward passes are not the step's).
#[test]
fn validation_is_planned_and_timed_apart() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("t.txt"), "naïve café, déjà vu — ".repeat(400)).unwrap();
    std::fs::write(p.join("v.txt"), "déjà vu, naïve café — ".repeat(100)).unwrap();
    let args = [
        "profile",
        "--data",
        "t.txt",
        "--valid",
        "v.txt",
        "--valid-every",
        "3",
        "--hidden",
        "16",
        "--batch",
        "4",
        "--window",
        "32",
        "--steps",
        "4",
        "--out",
        "v.html",
    ];
    let (code, _, err) = recur(&args, p);
    assert_eq!(code, 0, "{err}");
    let j: Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("v.json")).unwrap()).unwrap();
    let m = &j["profile"]["measured"];
    let v = &m["validation"];
    // Every 3 steps and after the last of 4, as training validates.
    assert_eq!(v["runs"], 2, "{m}");
    assert!(v["seconds"].as_f64().unwrap() > 0.0, "{m}");
    let total = j["profile"]["plan"]["total_bytes"].as_u64().unwrap();
    let valid = v["planned_bytes"].as_u64().unwrap();
    assert!(valid > 0);
    assert_eq!(m["planned_bytes"].as_u64().unwrap(), total + valid);
    let html = std::fs::read_to_string(p.join("v.html")).unwrap();
    assert!(html.contains("validation (its own program)"));
}

/// The report and its twin never replace the data or a file that is not a report.
#[test]
fn outputs_never_replace_inputs() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("notes.json"), "{\"mine\": 1}").unwrap();
    std::fs::write(p.join("doc.html"), "words ".repeat(400)).unwrap();
    let base = [
        "profile", "--hidden", "8", "--batch", "2", "--window", "16", "--steps", "1",
    ];
    for (extra, says) in [
        (
            &["--data", "notes.json", "--bytes", "--out", "notes.html"][..],
            "notes.json",
        ),
        (
            &["--data", "doc.html", "--bytes", "--out", "doc.html"][..],
            "doc.html",
        ),
        (&["--out", "doc.html"][..], "not an earlier report"),
        (&["--out", "sub"][..], "not an .html file"),
        (&["--out", ".html"][..], "names no file"),
    ] {
        let (code, _, err) = recur(&[&base[..], extra].concat(), p);
        assert_eq!(code, 2, "{extra:?}");
        assert!(
            err.contains(says) && err.lines().count() == 1,
            "{extra:?}: {err}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(p.join("notes.json")).unwrap(),
        "{\"mine\": 1}"
    );
    assert_eq!(
        std::fs::read_to_string(p.join("doc.html")).unwrap(),
        "words ".repeat(400)
    );
    // A new directory for the report is made; an earlier report is replaced.
    for _ in 0..2 {
        let (code, _, err) = recur(&[&base[..], &["--out", "new/dir/r.html"]].concat(), p);
        assert_eq!(code, 0, "{err}");
    }
    assert!(p.join("new/dir/r.json").exists());
    // An earlier twin is replaced, but not when the run reads it (as data or trace).
    let twin = std::fs::read(p.join("new/dir/r.json")).unwrap();
    for extra in [
        &[
            "--data",
            "new/dir/r.json",
            "--bytes",
            "--out",
            "new/dir/r.html",
        ][..],
        &["--out", "new/dir/r.html", "--trace", "new/dir/./r.json"][..],
        &[
            "--data", "doc.html", "--bytes", "--trace", "doc.html", "--out", "t.html",
        ][..],
    ] {
        let (code, _, err) = recur(&[&base[..], extra].concat(), p);
        assert_eq!(code, 2, "{extra:?}");
        assert!(
            err.contains("replace") || err.contains("goes"),
            "{extra:?}: {err}"
        );
    }
    assert_eq!(std::fs::read(p.join("new/dir/r.json")).unwrap(), twin);
    assert_eq!(
        std::fs::read_to_string(p.join("doc.html")).unwrap(),
        "words ".repeat(400)
    );
}

/// A training run's config drives a profile: its data, held-out data, bucketing and
/// trace are used, its steps are not (they are training's); a flag for a budget replaces
/// the config's policy; a --vs that resolves to the same run is refused.
#[test]
fn a_training_config_drives_a_profile() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("t.txt"), "the quick brown fox — ".repeat(300)).unwrap();
    std::fs::write(p.join("v.txt"), "jumps over the lazy dog ".repeat(60)).unwrap();
    std::fs::write(
        p.join("run.toml"),
        "data = \"t.txt\"\nvalid = \"v.txt\"\ntrace = \"tr.json\"\nsteps = 5000\n\
         hidden = 16\nbatch = 4\nwindow = 32\ncheckpoint = \"sqrt\"\nlog-every = 10\n",
    )
    .unwrap();
    let (code, _, err) = recur(&["profile", "--config", "run.toml", "--steps", "2"], p);
    assert_eq!(code, 0, "{err}");
    let j: Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("profile.json")).unwrap()).unwrap();
    let prof = &j["profile"];
    assert_eq!(prof["measured"]["steps"], 2);
    assert_eq!(prof["measured"]["traced"], true);
    assert!(prof["measured"]["validation"]["runs"].as_u64() >= Some(1));
    assert!(prof["plan"]["policy"].as_str().unwrap().starts_with("sqrt"));
    assert!(p.join("tr.json").exists(), "the config's trace");
    let html = std::fs::read_to_string(p.join("profile.html")).unwrap();
    assert!(html.contains(&recur::units::fmt_bytes(
        prof["plan"]["total_bytes"].as_u64().unwrap()
    )));
    // Without --steps: the profile's own 20, not the config's 5000.
    let args = [
        "profile",
        "--config",
        "run.toml",
        "--memory-budget",
        "1MiB",
        "--out",
        "b.html",
    ];
    let (code, _, err) = recur(&args, p);
    assert_eq!(code, 0, "{err}");
    let j: Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("b.json")).unwrap()).unwrap();
    assert_eq!(j["profile"]["measured"]["steps"], 20);
    let policy = j["profile"]["plan"]["policy"].as_str().unwrap();
    assert!(policy.starts_with("budget"), "{policy}");
    // The default grain for a 32-step window is 16: a --vs of it changes nothing.
    let args = [
        "profile",
        "--config",
        "run.toml",
        "--steps",
        "1",
        "--vs",
        "--grain 16",
        "--out",
        "g.html",
    ];
    let (code, _, err) = recur(&args, p);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("changes nothing"), "{err}");
}
