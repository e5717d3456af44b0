//! `recur data` through the binary: text and CSV converted and read back with
//! ndarray-npy, statistics checked against the test's own f64 arithmetic, `info` against
//! values computed here, and bad input ending in one `recur:` line.

use crate::util::recur;
use ndarray::{Array1, Array2};
use ndarray_npy::{read_npy, write_npy};
use recur::data::convert::Vocab;
use serde_json::Value;
use std::path::Path;

/// Runs `args` and checks the one-line error; returns the line.
fn fails(args: &[&str], dir: &Path) -> String {
    let (code, _out, err) = recur(args, dir);
    assert_ne!(code, 0, "{args:?} should fail; stderr: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?} should print one line, got: {err}");
    assert!(lines[0].starts_with("recur: "), "{err}");
    lines[0].to_string()
}

/// Runs `args`, which must succeed; returns (stdout, stderr).
fn ok(args: &[&str], dir: &Path) -> (String, String) {
    let (code, out, err) = recur(args, dir);
    assert_eq!(code, 0, "{args:?} failed: {err}");
    (out, err)
}

/// A price table: (open, close, volume) per day, all exactly representable in f32.
fn prices(rows: usize, seed: usize) -> Vec<[f32; 3]> {
    (0..rows)
        .map(|i| {
            let open = 100.0 + ((i * 37 + seed) % 41) as f32 * 0.25;
            let close = open + ((i * 11 + seed) % 9) as f32 * 0.5 - 2.0;
            let volume = (1000 * ((i * 7 + seed) % 13 + 1)) as f32;
            [open, close, volume]
        })
        .collect()
}

fn write_prices(path: &Path, rows: &[[f32; 3]]) {
    let mut s = String::from("date,open,close,volume\n");
    for (i, r) in rows.iter().enumerate() {
        s += &format!(
            "2024-{:02}-{:02},{},{},{}\n",
            i / 28 % 12 + 1,
            i % 28 + 1,
            r[0],
            r[1],
            r[2]
        );
    }
    std::fs::write(path, s).unwrap();
}

/// Column `c` of `rows` as f64.
fn column(rows: &[[f32; 3]], c: usize) -> Vec<f64> {
    rows.iter().map(|r| r[c] as f64).collect()
}

/// Mean and population std, two passes in f64.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (
        m,
        (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n).sqrt(),
    )
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn csv_with_a_header_and_a_date_column() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let rows = prices(30, 0);
    write_prices(&p.join("px.csv"), &rows);

    // Every numeric column; the date column is skipped with a note.
    let (out, err) = ok(&["data", "csv", "px.csv", "px.npy"], p);
    assert!(out.contains("[30, 3]"), "{out}");
    let notes: Vec<&str> = err.lines().collect();
    assert_eq!(notes.len(), 1, "{err}");
    assert!(notes[0].contains("`date` (0)"), "{err}");
    let a: Array2<f32> = read_npy(p.join("px.npy")).unwrap();
    assert_eq!(a.dim(), (30, 3));
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(a.row(i).to_vec(), r.to_vec(), "row {i}");
    }
    assert!(!p.join("px.norm.json").exists());

    // Chosen columns, by name and by index, in the order given.
    let (_, err) = ok(
        &["data", "csv", "px.csv", "sel.npy", "--columns", "volume,1"],
        p,
    );
    assert!(err.is_empty(), "{err}");
    let a: Array2<f32> = read_npy(p.join("sel.npy")).unwrap();
    assert_eq!(a.dim(), (30, 2));
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(a.row(i).to_vec(), vec![r[2], r[0]], "row {i}");
    }
}

#[test]
fn csv_without_a_header_and_other_delimiters() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("n.tsv"), "1\t-2.5\t1e-3\n 4 \t5\t6e2\n").unwrap();
    ok(&["data", "csv", "n.tsv", "n.npy", "--delimiter", "tab"], p);
    let a: Array2<f32> = read_npy(p.join("n.npy")).unwrap();
    assert_eq!(a.dim(), (2, 3));
    assert_eq!(a.row(0).to_vec(), vec![1.0, -2.5, 1e-3]);
    assert_eq!(a.row(1).to_vec(), vec![4.0, 5.0, 600.0]);
    ok(
        &[
            "data",
            "csv",
            "n.tsv",
            "c.npy",
            "--delimiter",
            "\t",
            "--columns",
            "2,0",
        ],
        p,
    );
    let a: Array2<f32> = read_npy(p.join("c.npy")).unwrap();
    assert_eq!(a.column(0).to_vec(), vec![1e-3, 600.0]);
    assert_eq!(a.column(1).to_vec(), vec![1.0, 4.0]);
    std::fs::write(p.join("s.csv"), "a;b\n1;2\n").unwrap();
    ok(&["data", "csv", "s.csv", "s.npy", "--delimiter", ";"], p);
    let a: Array2<f32> = read_npy(p.join("s.npy")).unwrap();
    assert_eq!(a.row(0).to_vec(), vec![1.0, 2.0]);
}

#[test]
fn standardize_then_apply_the_training_statistics() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let train = prices(200, 3);
    write_prices(&p.join("train.csv"), &train);
    ok(
        &["data", "csv", "train.csv", "train.npy", "--standardize"],
        p,
    );

    let a: Array2<f32> = read_npy(p.join("train.npy")).unwrap();
    assert_eq!(a.dim(), (200, 3));
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("train.norm.json")).unwrap()).unwrap();
    assert_eq!(
        json["columns"],
        serde_json::json!(["open", "close", "volume"])
    );
    for c in 0..3 {
        let (m, s) = mean_std(&column(&train, c));
        assert!(s > 0.1, "the test's columns vary");
        let jm = json["mean"][c].as_f64().unwrap();
        let js = json["std"][c].as_f64().unwrap();
        assert!(close(jm, m, 1e-12), "column {c}: mean {jm} vs {m}");
        assert!(close(js, s, 1e-9), "column {c}: std {js} vs {s}");
        let out: Vec<f64> = a.column(c).iter().map(|&x| x as f64).collect();
        let (om, os) = mean_std(&out);
        assert!(om.abs() < 1e-5, "column {c}: standardized mean {om}");
        assert!((os - 1.0).abs() < 1e-5, "column {c}: standardized std {os}");
        for (i, r) in train.iter().enumerate() {
            let want = ((r[c] as f64 - m) / s) as f32;
            assert!((a[[i, c]] - want).abs() <= 1e-6, "[{i}, {c}]");
        }
    }

    // A second file with the training file's statistics.
    let test = prices(50, 17);
    write_prices(&p.join("test.csv"), &test);
    ok(
        &[
            "data",
            "csv",
            "test.csv",
            "test.npy",
            "--norm",
            "train.norm.json",
        ],
        p,
    );
    let b: Array2<f32> = read_npy(p.join("test.npy")).unwrap();
    assert_eq!(b.dim(), (50, 3));
    for c in 0..3 {
        let m = json["mean"][c].as_f64().unwrap();
        let s = json["std"][c].as_f64().unwrap();
        for (i, r) in test.iter().enumerate() {
            let want = ((r[c] as f64 - m) / s) as f32;
            assert!((b[[i, c]] - want).abs() <= 1e-6, "[{i}, {c}]");
        }
    }
    assert_eq!(
        std::fs::read(p.join("test.norm.json")).unwrap(),
        std::fs::read(p.join("train.norm.json")).unwrap()
    );

    // Statistics of three columns do not fit two.
    let e = fails(
        &[
            "data",
            "csv",
            "test.csv",
            "t2.npy",
            "--norm",
            "train.norm.json",
            "--columns",
            "open,close",
        ],
        p,
    );
    assert!(
        e.contains("train.norm.json") && e.contains("3 columns"),
        "{e}"
    );
    assert!(!p.join("t2.npy").exists() && !p.join("t2.norm.json").exists());
    let e = fails(
        &[
            "data",
            "csv",
            "test.csv",
            "t3.npy",
            "--norm",
            "train.norm.json",
            "--standardize",
        ],
        p,
    );
    assert!(e.contains("--standardize") || e.contains("--norm"), "{e}");
}

#[test]
fn text_as_bytes_and_as_characters() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let text = "héllo wörld — ñ\nhello again, wörld ñ.\n";
    std::fs::write(p.join("t.txt"), text).unwrap();

    let (out, _) = ok(&["data", "text", "t.txt", "b.npy"], p);
    assert!(out.contains(&format!("{} tokens", text.len())), "{out}");
    let b: Array1<u8> = read_npy(p.join("b.npy")).unwrap();
    assert_eq!(b.to_vec(), text.as_bytes());
    assert!(!p.join("b.vocab.json").exists());

    ok(&["data", "text", "t.txt", "c.npy", "--vocab", "chars"], p);
    let c: Array1<u8> = read_npy(p.join("c.npy")).unwrap();
    assert_eq!(c.len(), text.chars().count());
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("c.vocab.json")).unwrap()).unwrap();
    assert_eq!(json["kind"], "chars");
    let mut want: Vec<char> = text.chars().collect();
    want.sort();
    want.dedup();
    let listed: Vec<char> = json["chars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let s = v.as_str().unwrap();
            assert_eq!(s.chars().count(), 1, "{s:?}");
            s.chars().next().unwrap()
        })
        .collect();
    assert_eq!(listed, want);
    let decoded: String = c.iter().map(|&t| listed[t as usize]).collect();
    assert_eq!(decoded, text);
    // The library's vocabulary reads the same file.
    let v = Vocab::load(&p.join("c.vocab.json")).unwrap();
    let toks: Vec<u32> = c.iter().map(|&t| t as u32).collect();
    assert_eq!(v.decode(&toks), text);
    assert_eq!(v.encode("wörld").unwrap(), toks[6..11].to_vec());
}

#[test]
fn invalid_utf8_as_characters_names_the_offset() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let mut bytes = "ok é ".as_bytes().to_vec();
    let at = bytes.len();
    bytes.extend_from_slice(b"\xc3(rest");
    std::fs::write(p.join("bad.txt"), &bytes).unwrap();
    let e = fails(&["data", "text", "bad.txt", "x.npy", "--vocab", "chars"], p);
    assert!(
        e.contains("bad.txt") && e.contains(&format!("byte offset {at}")),
        "{e}"
    );
    assert!(e.contains("--vocab bytes"), "{e}");
    assert!(!p.join("x.npy").exists() && !p.join("x.vocab.json").exists());
    // As bytes it converts.
    ok(&["data", "text", "bad.txt", "x.npy"], p);
    let b: Array1<u8> = read_npy(p.join("x.npy")).unwrap();
    assert_eq!(b.to_vec(), bytes);
}

#[test]
fn info_on_tokens_and_series() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let toks: Vec<u16> = (0..1000u32)
        .map(|i| ((i * 7919) % 3001 + 5) as u16)
        .collect();
    write_npy(p.join("t.npy"), &Array1::from(toks.clone())).unwrap();
    let (out, _) = ok(&["data", "info", "t.npy", "--json"], p);
    assert_eq!(out.lines().count(), 1, "{out}");
    let j: Value = serde_json::from_str(&out).unwrap();
    let (lo, hi) = (*toks.iter().min().unwrap(), *toks.iter().max().unwrap());
    assert_eq!(j["dtype"], "uint16");
    assert_eq!(j["shape"], serde_json::json!([1000]));
    assert_eq!(j["tokens"]["count"], 1000);
    assert_eq!(j["tokens"]["min"], lo as u64);
    assert_eq!(j["tokens"]["max"], hi as u64);
    assert_eq!(j["tokens"]["vocab_at_least"], hi as u64 + 1);
    let (out, _) = ok(&["data", "info", "t.npy"], p);
    assert!(
        out.contains("uint16") && out.contains(&format!("≥ {}", hi + 1)),
        "{out}"
    );

    // Offsets: any 1-D integer array.
    write_npy(p.join("o.npy"), &Array1::from(vec![0i64, 4, 9, 30])).unwrap();
    let (out, _) = ok(&["data", "info", "o.npy", "--json"], p);
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (j["tokens"]["min"].as_i64(), j["tokens"]["max"].as_i64()),
        (Some(0), Some(30))
    );

    // A series: per-column statistics against the test's own.
    let (rows, width) = (101, 4);
    let v: Vec<f32> = (0..rows * width)
        .map(|i| ((i * 13) % 29) as f32 * 0.75 - (i % width) as f32 * 3.0)
        .collect();
    let a = Array2::from_shape_vec((rows, width), v.clone()).unwrap();
    write_npy(p.join("s.npy"), &a).unwrap();
    let (out, _) = ok(&["data", "info", "s.npy", "--json"], p);
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["dtype"], "float32");
    assert_eq!(j["non_finite"], Value::Null);
    let cols = j["columns"].as_array().unwrap();
    assert_eq!(cols.len(), width);
    for (c, s) in cols.iter().enumerate() {
        let col: Vec<f64> = a.column(c).iter().map(|&x| x as f64).collect();
        let (m, sd) = mean_std(&col);
        assert!(close(s["mean"].as_f64().unwrap(), m, 1e-12), "column {c}");
        assert!(close(s["std"].as_f64().unwrap(), sd, 1e-9), "column {c}");
        let lo = col.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = col.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(s["min"].as_f64().unwrap(), lo, "column {c}");
        assert_eq!(s["max"].as_f64().unwrap(), hi, "column {c}");
    }
    let (out, _) = ok(&["data", "info", "s.npy"], p);
    assert!(
        out.contains("float32") && out.contains("non-finite  none"),
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.contains("column")).count(),
        2,
        "{out}"
    );

    // A non-finite value is located.
    let mut b = a.clone();
    b[[57, 2]] = f32::NAN;
    write_npy(p.join("nan.npy"), &b).unwrap();
    let (out, _) = ok(&["data", "info", "nan.npy", "--json"], p);
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        j["non_finite"],
        serde_json::json!({"count": 1, "row": 57, "column": 2})
    );

    // A 1-D f32 array is one column.
    write_npy(p.join("f.npy"), &Array1::from(vec![2.0f32, 4.0, 9.0])).unwrap();
    let (out, _) = ok(&["data", "info", "f.npy", "--json"], p);
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["columns"][0]["mean"], 5.0);
}

#[test]
fn bad_csv_inputs() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(
        p.join("x.csv"),
        "date,open,close\n2024-01-02,1,2\n2024-01-03,1.5,2.5\n2024-01-04,2,n/a\n",
    )
    .unwrap();
    let e = fails(&["data", "csv", "x.csv", "x.npy"], p);
    assert!(
        e.contains("x.csv") && e.contains("line 4, column `close` (2): \"n/a\" is not a number"),
        "{e}"
    );
    assert!(!p.join("x.npy").exists() && !p.join("x.npy.tmp").exists());
    let e = fails(
        &["data", "csv", "x.csv", "x.npy", "--columns", "open,date"],
        p,
    );
    assert!(e.contains("line 2, column `date` (0)"), "{e}");
    let e = fails(
        &["data", "csv", "x.csv", "x.npy", "--columns", "open,volume"],
        p,
    );
    assert!(e.contains("--columns") && e.contains("`volume`"), "{e}");
    assert!(e.contains("`date`, `open`, `close`"), "{e}");
    // Empty cells, non-finite values, ragged rows.
    std::fs::write(p.join("e.csv"), "a,b\n1,2\n3,\n").unwrap();
    let e = fails(&["data", "csv", "e.csv", "e.npy"], p);
    assert!(e.contains("line 3, column `b` (1) is empty"), "{e}");
    std::fs::write(p.join("n.csv"), "a,b\n1,2\n3,4\nnan,5\n").unwrap();
    let e = fails(&["data", "csv", "n.csv", "n.npy"], p);
    assert!(
        e.contains("line 4, column `a` (0)") && e.contains("finite"),
        "{e}"
    );
    std::fs::write(p.join("r.csv"), "1,2\n3,4\n5\n").unwrap();
    let e = fails(&["data", "csv", "r.csv", "r.npy"], p);
    assert!(e.contains("line 3") && e.contains("1 fields"), "{e}");
    // Nothing to convert.
    std::fs::write(p.join("empty.csv"), "").unwrap();
    let e = fails(&["data", "csv", "empty.csv", "o.npy"], p);
    assert!(e.contains("empty.csv") && e.contains("empty"), "{e}");
    std::fs::write(p.join("head.csv"), "a,b\n").unwrap();
    let e = fails(&["data", "csv", "head.csv", "o.npy"], p);
    assert!(e.contains("no data rows"), "{e}");
    std::fs::write(p.join("words.csv"), "a,b\nx,y\n").unwrap();
    let e = fails(&["data", "csv", "words.csv", "o.npy"], p);
    assert!(e.contains("line 2") && e.contains("--columns"), "{e}");
    // Split by another delimiter than the one asked: the line names it.
    std::fs::write(p.join("semi.csv"), "date;open\n2024-01-02;1.5\n").unwrap();
    let e = fails(&["data", "csv", "semi.csv", "o.npy"], p);
    assert!(e.contains("--delimiter ';'"), "{e}");
    std::fs::write(p.join("tab.csv"), "date\topen\n2024-01-02\t1.5\n").unwrap();
    let e = fails(&["data", "csv", "tab.csv", "o.npy"], p);
    assert!(e.contains("--delimiter tab"), "{e}");
    // Missing input, missing output directory, bad flags.
    let e = fails(&["data", "csv", "missing.csv", "o.npy"], p);
    assert!(
        e.contains("missing.csv") && e.contains("cannot open"),
        "{e}"
    );
    let e = fails(&["data", "csv", "x.csv", "nodir/o.npy"], p);
    assert!(e.contains("nodir") && e.contains("output directory"), "{e}");
    let e = fails(&["data", "csv", "x.csv", "o.npy", "--delimiter", "ab"], p);
    assert!(e.contains("--delimiter"), "{e}");
    let e = fails(&["data", "csv", "x.csv", "o.npy", "--norm", "none.json"], p);
    assert!(e.contains("none.json"), "{e}");
    std::fs::write(p.join("bad.json"), "{\"columns\": 3}").unwrap();
    let e = fails(&["data", "csv", "x.csv", "o.npy", "--norm", "bad.json"], p);
    assert!(e.contains("bad.json") && e.contains("statistics"), "{e}");
    assert!(!p.join("o.npy").exists());
}

#[test]
fn bad_text_and_npy_inputs() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let e = fails(&["data", "text", "missing.txt", "o.npy"], p);
    assert!(
        e.contains("missing.txt") && e.contains("cannot open"),
        "{e}"
    );
    std::fs::write(p.join("empty.txt"), "").unwrap();
    for vocab in ["bytes", "chars"] {
        let e = fails(&["data", "text", "empty.txt", "o.npy", "--vocab", vocab], p);
        assert!(e.contains("empty.txt") && e.contains("empty"), "{e}");
    }
    std::fs::write(p.join("t.txt"), "abc").unwrap();
    let e = fails(&["data", "text", "t.txt", "o.npy", "--vocab", "words"], p);
    assert!(e.contains("words") && e.contains("chars"), "{e}");
    let e = fails(&["data", "text", "t.txt", "nodir/o.npy"], p);
    assert!(e.contains("output directory"), "{e}");
    assert!(!p.join("o.npy").exists());

    let e = fails(&["data", "info", "missing.npy"], p);
    assert!(
        e.contains("missing.npy") && e.contains("cannot open"),
        "{e}"
    );
    std::fs::write(p.join("junk.npy"), "not an array").unwrap();
    let e = fails(&["data", "info", "junk.npy"], p);
    assert!(e.contains("junk.npy") && e.contains("not a .npy"), "{e}");
    write_npy(p.join("f64.npy"), &Array1::from(vec![1.0f64, 2.0])).unwrap();
    let e = fails(&["data", "info", "f64.npy"], p);
    assert!(e.contains("f64.npy") && e.contains("<f8"), "{e}");
    write_npy(p.join("full.npy"), &Array1::from(vec![1u32; 100])).unwrap();
    let bytes = std::fs::read(p.join("full.npy")).unwrap();
    std::fs::write(p.join("cut.npy"), &bytes[..bytes.len() - 10]).unwrap();
    let e = fails(&["data", "info", "cut.npy"], p);
    assert!(e.contains("cut.npy") && e.contains("truncated"), "{e}");
    let e = fails(&["data"], p);
    assert!(!e.is_empty(), "{e}");
}

/// About 5 MB of CSV: converted in one streaming pass and read back value for value.
#[test]
fn a_larger_csv_streams_through() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let rows = 160_000;
    let mut s = String::with_capacity(rows * 48);
    s += "t,a,b,c\n";
    let val = |i: usize, c: usize| ((i * (31 + c) + c * 7) % 100_003) as f32 * 0.125 - 5000.0;
    for i in 0..rows {
        s += &format!("{i},{},{},{}\n", val(i, 0), val(i, 1), val(i, 2));
    }
    assert!(s.len() > 4 << 20, "{} bytes", s.len());
    std::fs::write(p.join("big.csv"), &s).unwrap();
    ok(
        &["data", "csv", "big.csv", "big.npy", "--columns", "c,a"],
        p,
    );
    let a: Array2<f32> = read_npy(p.join("big.npy")).unwrap();
    assert_eq!(a.dim(), (rows, 2));
    for i in 0..rows {
        assert_eq!((a[[i, 0]], a[[i, 1]]), (val(i, 2), val(i, 0)), "row {i}");
    }
    // `info` agrees with the values.
    let (out, _) = ok(&["data", "info", "big.npy", "--json"], p);
    let j: Value = serde_json::from_str(&out).unwrap();
    let col: Vec<f64> = (0..rows).map(|i| val(i, 2) as f64).collect();
    let (m, sd) = mean_std(&col);
    assert!(close(j["columns"][0]["mean"].as_f64().unwrap(), m, 1e-10));
    assert!(close(j["columns"][0]["std"].as_f64().unwrap(), sd, 1e-9));
}
