//! Files from an untrusted source: every kept hostile case (tests/data/hostile: written
//! by hand, or found by a fuzzer) and mutations of valid files (bit flips, cuts, splices) through the same entry
//! points the fuzz targets drive (`recur::fuzz`), which must return without a panic;
//! and hostile snapshots, weights and data through the command line, one line each.

use crate::util::recur;
use proptest::prelude::*;
use recur::train::snapshot;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 4] = [
    ("npy", recur::fuzz::npy),
    ("safetensors", recur::fuzz::safetensors),
    ("snapshot", recur::fuzz::snapshot),
    ("config", recur::fuzz::config),
];

fn hostile_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hostile")
}

/// Every kept hostile case (written by hand, or found by a fuzzer) returns, through its
/// target.
#[test]
fn every_kept_hostile_case_returns() {
    let mut seen = 0;
    for (name, target) in TARGETS {
        let dir = hostile_dir().join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let bytes = std::fs::read(e.path()).unwrap();
            let r = std::panic::catch_unwind(|| target(&bytes));
            assert!(r.is_ok(), "{name}: {} panics", e.path().display());
            seen += 1;
        }
    }
    assert!(seen > 0, "no cases in {}", hostile_dir().display());
}

/// A set of 7 token sequences of 2 to 12 steps in `dir`: `v.npy` and `o.npy`.
fn write_small_set(dir: &Path) {
    use ndarray::Array1;
    let mut offsets = vec![0i64];
    for l in [3i64, 9, 4, 12, 5, 2, 7] {
        offsets.push(offsets.last().unwrap() + l);
    }
    let n = *offsets.last().unwrap() as usize;
    ndarray_npy::write_npy(dir.join("o.npy"), &Array1::from(offsets)).unwrap();
    let values = Array1::from_shape_fn(n, |i| (i % 5) as i64);
    ndarray_npy::write_npy(dir.join("v.npy"), &values).unwrap();
}

/// Valid files of every kind, made once: (target, bytes).
fn seeds() -> &'static Vec<(usize, Vec<u8>)> {
    static SEEDS: OnceLock<Vec<(usize, Vec<u8>)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let mut out = Vec::new();
        let npy = |a: &dyn Fn(&Path)| {
            let f = p.join("x.npy");
            a(&f);
            std::fs::read(f).unwrap()
        };
        use ndarray::{Array1, Array2};
        use ndarray_npy::write_npy;
        out.push((
            0,
            npy(&|f| write_npy(f, &Array1::from(vec![0i64, 3, 7, 8, 20])).unwrap()),
        ));
        out.push((
            0,
            npy(&|f| write_npy(f, &Array1::from(vec![1u8, 2, 3, 250, 7, 9, 4])).unwrap()),
        ));
        out.push((
            0,
            npy(&|f| {
                write_npy(f, &Array2::from_shape_fn((9, 2), |(i, j)| (i * j) as f32)).unwrap()
            }),
        ));
        out.push((
            0,
            npy(&|f| write_npy(f, &Array1::from(vec![0i32, 1, 1, 2])).unwrap()),
        ));
        // A run with snapshots: weights, manifest, state, config.
        std::fs::write(
            p.join("t.txt"),
            "snapshots of a small run, ünïcode too. ".repeat(30),
        )
        .unwrap();
        let (code, _, err) = recur(
            &[
                "train",
                "--data",
                "t.txt",
                "--hidden",
                "6",
                "--embed",
                "3",
                "--batch",
                "2",
                "--window",
                "8",
                "--steps",
                "2",
                "--save-every",
                "2",
                "--out",
                "r",
                "--quiet",
            ],
            p,
        );
        assert_eq!(code, 0, "{err}");
        let snap = snapshot::list(&p.join("r")).pop().unwrap().1;
        out.push((1, std::fs::read(snap.join("model.safetensors")).unwrap()));
        out.push((1, std::fs::read(snap.join("state.safetensors")).unwrap()));
        out.push((2, std::fs::read(snap.join("manifest.json")).unwrap()));
        out.push((2, std::fs::read(snap.join("state.json")).unwrap()));
        out.push((3, std::fs::read(snap.join("config.toml")).unwrap()));
        // A set's snapshot: its cursor holds rows and a pool.
        write_small_set(p);
        let (code, _, err) = recur(
            &[
                "train",
                "--data",
                "v.npy",
                "--offsets",
                "o.npy",
                "--bucket",
                "--hidden",
                "6",
                "--embed",
                "3",
                "--batch",
                "2",
                "--window",
                "4",
                "--steps",
                "3",
                "--save-every",
                "3",
                "--out",
                "s",
                "--quiet",
            ],
            p,
        );
        assert_eq!(code, 0, "{err}");
        let snap = snapshot::list(&p.join("s")).pop().unwrap().1;
        out.push((2, std::fs::read(snap.join("state.json")).unwrap()));
        out
    })
}

/// A mutation of a seed: flips, overwrites, a cut, a splice of another seed.
#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
    Digits(usize, u64),
}

fn apply(mut b: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = b.len().max(1);
        match e {
            Edit::Flip(i, m) => {
                if let Some(x) = b.get_mut(i % n) {
                    *x ^= m;
                }
            }
            Edit::Set(i, v) => {
                if let Some(x) = b.get_mut(i % n) {
                    *x = *v;
                }
            }
            Edit::Cut(i) => b.truncate(i % n),
            Edit::Insert(i, v) => {
                let at = i % n;
                let at = at.min(b.len());
                b.splice(at..at, v.iter().copied());
            }
            // Numbers in text formats: a digit run replaced by a large one.
            Edit::Digits(i, v) => {
                let at = (i % n).min(b.len());
                if let Some(k) = b[at..].iter().position(|c| c.is_ascii_digit()) {
                    let s = at + k;
                    let e = s + b[s..].iter().take_while(|c| c.is_ascii_digit()).count();
                    b.splice(s..e, v.to_string().bytes());
                }
            }
        }
    }
    b
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, m)| Edit::Flip(i, m)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Edit::Set(i, v)),
        any::<usize>().prop_map(Edit::Cut),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, v)| Edit::Insert(i, v)),
        (
            any::<usize>(),
            prop_oneof![
                Just(0u64),
                Just(u32::MAX as u64),
                Just(u64::MAX),
                any::<u64>()
            ]
        )
            .prop_map(|(i, v)| Edit::Digits(i, v)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// Mutated valid files return through every target.
    #[test]
    fn mutated_files_return(seed in any::<prop::sample::Index>(), edits in proptest::collection::vec(edit(), 1..6)) {
        let all = seeds();
        let (kind, bytes) = &all[seed.index(all.len())];
        let bytes = apply(bytes.clone(), &edits);
        // Its own kind, and every other: a file can be handed to the wrong reader.
        TARGETS[*kind].1(&bytes);
        for (_, t) in TARGETS {
            t(&bytes);
        }
    }
}

/// Copies the newest snapshot of `run`, edits one of its files with `f`, and fixes
/// the manifest's checksums so that only the content is hostile.
fn forge(run: &Path, file: &str, f: impl Fn(&mut String)) {
    let dir = snapshot::list(run).pop().unwrap().1;
    let path = dir.join(file);
    let mut text = std::fs::read_to_string(&path).unwrap();
    f(&mut text);
    std::fs::write(&path, &text).unwrap();
    let mpath = dir.join(snapshot::MANIFEST);
    let mut m: snapshot::Manifest =
        serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    for s in &mut m.files {
        let bytes = std::fs::read(dir.join(&s.name)).unwrap();
        s.bytes = bytes.len() as u64;
        s.blake3 = blake3_hex(&bytes);
    }
    std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
}

fn blake3_hex(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

fn one_line(err: &str) -> &str {
    assert!(!err.contains("panicked"), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(last.starts_with("recur: "), "{err}");
    last
}

/// A snapshot whose checksums are right but whose contents lie: a cursor beyond the
/// set, a state of another step, a manifest naming a file outside its directory. Each
/// is one line (or a warning and the snapshot before it), never a panic.
#[test]
fn forged_snapshots_are_refused_or_passed_over() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write_small_set(p);
    let train = |out: &str| {
        let (code, _, err) = recur(
            &[
                "train",
                "--data",
                "v.npy",
                "--offsets",
                "o.npy",
                "--hidden",
                "6",
                "--embed",
                "3",
                "--batch",
                "2",
                "--window",
                "4",
                "--steps",
                "4",
                "--save-every",
                "2",
                "--keep",
                "1",
                "--out",
                out,
                "--quiet",
            ],
            p,
        );
        assert_eq!(code, 0, "{err}");
    };
    let resume = |out: &str| recur(&["train", "--resume", out, "--steps", "6", "--quiet"], p);
    // A row naming sequence 99 of 7.
    train("a");
    forge(&p.join("a"), "state.json", |t| {
        let mut v: serde_json::Value = serde_json::from_str(t).unwrap();
        v["cursor"]["rows"][0] = 99.into();
        *t = v.to_string();
    });
    let (code, _, err) = resume("a");
    assert_ne!(code, 0);
    let e = one_line(&err);
    assert!(
        e.contains("state.json") && e.contains("beyond the set"),
        "{e}"
    );
    // A state of another step than its manifest: corrupt, passed over, and with no
    // other snapshot, nothing to resume.
    train("b");
    forge(&p.join("b"), "state.json", |t| {
        *t = t.replacen("\"step\": 4", "\"step\": 3", 1)
    });
    let (code, _, err) = resume("b");
    assert_ne!(code, 0);
    assert!(
        err.contains("skipping corrupt snapshot") && err.contains("step 3"),
        "{err}"
    );
    one_line(&err);
    // A manifest naming a file outside its directory.
    train("c");
    forge(&p.join("c"), "manifest.json", |t| {
        *t = t.replacen("\"config.toml\"", "\"../../config.toml\"", 1)
    });
    let (code, _, err) = resume("c");
    assert_ne!(code, 0);
    assert!(err.contains("lists a file `../../config.toml`"), "{err}");
    // An optimizer state of another length.
    train("e");
    let dir = snapshot::list(&p.join("e")).pop().unwrap().1;
    let w = std::fs::read(p.join("e/model.safetensors")).unwrap();
    std::fs::write(dir.join("state.safetensors"), &w).unwrap();
    forge(&p.join("e"), "config.toml", |_| {});
    let (code, _, err) = resume("e");
    assert_ne!(code, 0);
    let e = one_line(&err);
    assert!(e.contains("state.safetensors"), "{e}");
}

/// Data and weights files that lie about themselves: one line each, no allocation of
/// what they claim.
#[test]
fn lying_headers_are_one_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // A .npy header claiming 2^40 tokens over 16 bytes of data.
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let header = "{'descr': '<i8', 'fortran_order': False, 'shape': (1099511627776,), }";
    let mut h = header.as_bytes().to_vec();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(b' ');
    }
    h.push(b'\n');
    npy.extend((h.len() as u16).to_le_bytes());
    npy.extend(&h);
    npy.extend([0u8; 16]);
    std::fs::write(p.join("big.npy"), &npy).unwrap();
    let (code, _, err) = recur(&["train", "--data", "big.npy", "--steps", "1"], p);
    assert_ne!(code, 0);
    let e = one_line(&err);
    assert!(e.contains("big.npy") && e.contains("truncated"), "{e}");
    // A safetensors header claiming a 2^60-byte header.
    let mut st = (1u64 << 60).to_le_bytes().to_vec();
    st.extend(b"{}");
    std::fs::write(p.join("w.safetensors"), &st).unwrap();
    std::fs::write(p.join("t.txt"), "abc".repeat(100)).unwrap();
    let (code, _, err) = recur(
        &["eval", "--weights", "w.safetensors", "--data", "t.txt"],
        p,
    );
    assert_ne!(code, 0);
    let e = one_line(&err);
    assert!(e.contains("w.safetensors"), "{e}");
}
