//! Bad data never panics: random bytes, truncations and corrupted headers thrown at the
//! `.npy` reader give an error or a valid array, and a truncated file is always refused;
//! random offsets and labels are accepted exactly when they describe a set (start at 0,
//! strictly increasing, end at the values' length; one non-negative label per sequence).

use proptest::prelude::*;
use recur::data::npy::{Dtype, Npy};
use recur::data::sets::Values;
use recur::data::{DataFile, SeqSet, TokenFile};

fn npy_bytes(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    let mut body = dict.into_bytes();
    while (10 + body.len() + 1) % 64 != 0 {
        body.push(b' ');
    }
    body.push(b'\n');
    h.extend_from_slice(&(body.len() as u16).to_le_bytes());
    h.extend_from_slice(&body);
    h.extend_from_slice(data);
    h
}

fn open_bytes(bytes: &[u8]) -> (Result<Npy, recur::Error>, Result<DataFile, recur::Error>) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.npy");
    std::fs::write(&p, bytes).unwrap();
    (Npy::open(&p), DataFile::open(&p))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), magic in any::<bool>()) {
        let mut b = bytes;
        if magic {
            let mut m = b"\x93NUMPY\x01\x00".to_vec();
            m.extend_from_slice(&b);
            b = m;
        }
        let _ = open_bytes(&b);
    }

    #[test]
    fn truncated_or_corrupted_files_are_refused_without_panic(
        kind in 0usize..6,
        n in 1usize..50,
        cut in 1usize..40,
        flip in any::<(usize, u8)>(),
    ) {
        let (descr, size, shape) = match kind {
            0 => ("|u1", 1, format!("({n},)")),
            1 => ("<u2", 2, format!("({n},)")),
            2 => ("<u4", 4, format!("({n},)")),
            3 => ("<i4", 4, format!("({n},)")),
            4 => ("<i8", 8, format!("({n},)")),
            _ => ("<f4", 4, format!("({n}, 3)")),
        };
        let elems = if kind == 5 { 3 * n } else { n };
        let data: Vec<u8> = match kind {
            5 => (0..elems).flat_map(|i| (i as f32 * 0.5).to_le_bytes()).collect(),
            _ => (0..elems * size).map(|i| if i % size == 0 { (i % 7) as u8 } else { 0 }).collect(),
        };
        let full = npy_bytes(descr, &shape, &data);
        let (npy, df) = open_bytes(&full);
        prop_assert!(npy.is_ok() && df.is_ok(), "a valid file opens");
        let cut = cut.min(full.len());
        let (npy, df) = open_bytes(&full[..full.len() - cut]);
        prop_assert!(npy.is_err() && df.is_err(), "a truncated file is refused");
        let mut bad = full.clone();
        let i = flip.0 % bad.len();
        bad[i] ^= flip.1 | 1;
        let _ = open_bytes(&bad);
    }

    #[test]
    fn offsets_and_labels_are_checked(
        lens in proptest::collection::vec(0i64..6, 1..12),
        tweak in 0usize..5,
        at in any::<usize>(),
        labels_delta in -1i64..2,
        neg_label in any::<bool>(),
    ) {
        // Offsets from lengths, then perhaps broken.
        let mut offsets = vec![0i64];
        for l in &lens {
            offsets.push(offsets.last().unwrap() + l);
        }
        // The values: the lengths' sum of tokens (at least one: an empty array is
        // refused before any offsets are read).
        let steps = (*offsets.last().unwrap() as usize).max(1);
        let i = at % offsets.len();
        match tweak {
            1 => offsets[i] += 1,
            2 => offsets[i] -= 1,
            3 => { offsets.pop(); }
            _ => {}
        }
        let n = offsets.len().saturating_sub(1);
        let nl = (n as i64 + labels_delta).max(0) as usize;
        let mut labels: Vec<i64> = (0..nl as i64).map(|j| j % 3).collect();
        if neg_label && !labels.is_empty() {
            let j = at % labels.len();
            labels[j] = -1;
        }
        let valid_offsets = offsets.len() >= 2
            && offsets[0] == 0
            && offsets.windows(2).all(|w| w[1] > w[0])
            && *offsets.last().unwrap() as usize == steps;
        // One label per sequence, or one per step (a tagger's).
        let valid_labels = (nl == n || nl == steps) && (!neg_label || labels.is_empty());
        let i64s = |name: &str, v: &[i64]| {
            Npy::from_bytes(name, Dtype::I64, vec![v.len()], v.iter().flat_map(|x| x.to_le_bytes()).collect())
        };
        let values = || {
            let toks: Vec<u8> = (0..steps).map(|i| (i % 5) as u8).collect();
            Values::Tokens(TokenFile::from_bytes("values", toks).unwrap())
        };
        let plain = SeqSet::new(values(), i64s("offsets", &offsets), None);
        prop_assert_eq!(plain.is_ok(), valid_offsets, "offsets {:?} over {} steps", offsets, steps);
        if valid_offsets {
            let with = SeqSet::new(values(), i64s("offsets", &offsets), Some(i64s("labels", &labels)));
            prop_assert_eq!(with.is_ok(), valid_labels, "labels {:?} for {} sequences", labels, n);
            if let Ok(set) = with {
                prop_assert_eq!(set.per_step_labels(), nl == steps);
                prop_assert_eq!(set.per_sequence_labels(), nl == n);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(120))]

    /// Offsets and labels files that are random bytes, truncated or of the wrong type
    /// or rank: an error or a valid set, never a panic; a truncated one is refused.
    #[test]
    fn offsets_and_labels_files_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        cut in 1usize..30,
        which in 0usize..4,
    ) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let values: Vec<u8> = (0..12u8).collect();
        std::fs::write(p.join("v.npy"), npy_bytes("|u1", "(12,)", &values)).unwrap();
        let offs: Vec<u8> = [0i64, 5, 12].iter().flat_map(|x| x.to_le_bytes()).collect();
        let good_o = npy_bytes("<i8", "(3,)", &offs);
        let labs: Vec<u8> = [1i64, 0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let good_l = npy_bytes("<i8", "(2,)", &labs);
        let bad = match which {
            0 => bytes.clone(),
            1 => good_o[..good_o.len() - cut.min(good_o.len())].to_vec(),
            2 => npy_bytes("<i8", "(1, 3)", &offs),
            _ => npy_bytes("<i8", "(3,)", &[i64::MAX, 5, 12].iter().flat_map(|x: &i64| x.to_le_bytes()).collect::<Vec<u8>>()),
        };
        std::fs::write(p.join("good_o.npy"), &good_o).unwrap();
        std::fs::write(p.join("good_l.npy"), &good_l).unwrap();
        std::fs::write(p.join("bad.npy"), &bad).unwrap();
        let (v, go, gl, b) = (p.join("v.npy"), p.join("good_o.npy"), p.join("good_l.npy"), p.join("bad.npy"));
        prop_assert!(SeqSet::open(&v, &go, Some(&gl)).is_ok());
        let as_offsets = SeqSet::open(&v, &b, None);
        let as_labels = SeqSet::open(&v, &go, Some(&b));
        if which >= 1 {
            prop_assert!(as_offsets.is_err(), "bad offsets accepted ({which})");
        }
        if which == 1 || which == 2 {
            prop_assert!(as_labels.is_err(), "bad labels accepted ({which})");
        }
    }
}
