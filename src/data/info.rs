//! `recur data info`: what a `.npy` file holds. Integer arrays (tokens, offsets, labels)
//! get their count, min and max; float32 arrays get per-column mean, std, min and max
//! and the first non-finite value, if any. The file is scanned chunk by chunk and each
//! chunk's pages are handed back (`Npy::scan`), so a file larger than memory is fine.

use super::convert::Welford;
use super::npy::{self, Dtype, Npy};
use crate::Result;
use serde::Serialize;
use std::path::Path;

/// Statistics of an integer array, over all its elements.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TokenStats {
    /// Elements.
    pub count: u64,
    /// The smallest (none if empty).
    pub min: Option<i64>,
    /// The largest (none if empty).
    pub max: Option<i64>,
    /// max + 1: the least vocabulary that holds these tokens (none if empty or
    /// negative values occur).
    pub vocab_at_least: Option<u64>,
}

/// Statistics of one column of a float32 array, over its finite values.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ColumnStats {
    /// Finite values.
    pub count: u64,
    /// Their mean (accumulated in f64; none if there are none).
    pub mean: Option<f64>,
    /// Their population standard deviation (ddof = 0).
    pub std: Option<f64>,
    /// The smallest.
    pub min: Option<f64>,
    /// The largest.
    pub max: Option<f64>,
}

/// Where a float32 array holds NaN or ±infinity.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NonFinite {
    /// How many values are not finite.
    pub count: u64,
    /// The first one's row (0-based; for arrays of more than two dimensions, the row
    /// over all axes but the last).
    pub row: u64,
    /// The first one's column (0-based).
    pub column: usize,
}

/// What `recur data info` reports about an array.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Info {
    /// The file.
    pub path: String,
    /// Element type (NumPy's name in JSON: `uint16`, `float32`, …).
    #[serde(serialize_with = "super::convert::dtype_name")]
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Integer arrays (any shape, over all elements).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenStats>,
    /// Float32 arrays: one entry per column (the last axis; a 1-D array is one column).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<ColumnStats>>,
    /// Float32 arrays: the non-finite values, or none if all are finite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub non_finite: Option<NonFinite>,
}

impl Info {
    /// Rows and columns of a float32 array as `info` reads it (columns are the last
    /// axis); `None` for integer arrays.
    pub fn rows_columns(&self) -> Option<(u64, usize)> {
        self.columns.as_ref().map(|c| {
            let width = c.len();
            let elems: u64 = self.shape.iter().map(|&d| d as u64).product();
            (elems.checked_div(width as u64).unwrap_or(0), width)
        })
    }
}

/// Opens the `.npy` at `path` and describes it (see [`describe`]). Errors: the file is
/// missing, not a `.npy`, of an unsupported type, or truncated.
pub fn info(path: &Path) -> Result<Info> {
    Ok(describe(&Npy::open(path)?))
}

/// Describes an opened array, reading it once in chunks of [`npy::SCAN_CHUNK`] bytes
/// whose pages are released as the scan goes. Memory: per column 48 bytes of statistics.
pub fn describe(a: &Npy) -> Info {
    describe_with(a, npy::SCAN_CHUNK)
}

fn describe_with(a: &Npy, chunk: usize) -> Info {
    let mut info = Info {
        path: a.path().display().to_string(),
        dtype: a.dtype(),
        shape: a.shape().to_vec(),
        tokens: None,
        columns: None,
        non_finite: None,
    };
    let elems = a.elems();
    if a.dtype().is_int() {
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        let _ = a.scan(0..elems, chunk, |_, bytes| {
            min_max(a.dtype(), bytes, &mut lo, &mut hi);
            Ok::<(), std::convert::Infallible>(())
        });
        let any = elems > 0;
        info.tokens = Some(TokenStats {
            count: elems as u64,
            min: any.then_some(lo),
            max: any.then_some(hi),
            vocab_at_least: (any && lo >= 0).then(|| hi as u64 + 1),
        });
        return info;
    }
    let width = match a.shape() {
        [] | [_] => 1,
        s => s[s.len() - 1],
    };
    let mut w = vec![Welford::default(); width];
    let mut lo = vec![f64::INFINITY; width];
    let mut hi = vec![f64::NEG_INFINITY; width];
    let mut bad = 0u64;
    let mut first_bad = None;
    if width > 0 {
        let _ = a.scan(0..elems, chunk, |start, bytes| {
            let mut col = start % width;
            for (k, b) in bytes.chunks_exact(4).enumerate() {
                let x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                if x.is_finite() {
                    let x = x as f64;
                    w[col].push(x);
                    lo[col] = lo[col].min(x);
                    hi[col] = hi[col].max(x);
                } else {
                    bad += 1;
                    first_bad.get_or_insert(start + k);
                }
                col += 1;
                if col == width {
                    col = 0;
                }
            }
            Ok::<(), std::convert::Infallible>(())
        });
    }
    info.columns = Some(
        (0..width)
            .map(|c| {
                let any = w[c].count() > 0;
                ColumnStats {
                    count: w[c].count(),
                    mean: any.then(|| w[c].mean()),
                    std: any.then(|| w[c].std()),
                    min: any.then_some(lo[c]),
                    max: any.then_some(hi[c]),
                }
            })
            .collect(),
    );
    info.non_finite = first_bad.map(|i| NonFinite {
        count: bad,
        row: (i / width) as u64,
        column: i % width,
    });
    info
}

/// Folds the little-endian integers of `bytes` into `lo` and `hi`.
fn min_max(dtype: Dtype, bytes: &[u8], lo: &mut i64, hi: &mut i64) {
    fn fold<const N: usize>(
        bytes: &[u8],
        lo: &mut i64,
        hi: &mut i64,
        get: impl Fn([u8; N]) -> i64,
    ) {
        let (mut l, mut h) = (*lo, *hi);
        for b in bytes.chunks_exact(N) {
            let mut a = [0u8; N];
            a.copy_from_slice(b);
            let v = get(a);
            l = l.min(v);
            h = h.max(v);
        }
        (*lo, *hi) = (l, h);
    }
    match dtype {
        Dtype::U8 => fold::<1>(bytes, lo, hi, |a| a[0] as i64),
        Dtype::U16 => fold::<2>(bytes, lo, hi, |a| u16::from_le_bytes(a) as i64),
        Dtype::U32 => fold::<4>(bytes, lo, hi, |a| u32::from_le_bytes(a) as i64),
        Dtype::I32 => fold::<4>(bytes, lo, hi, |a| i32::from_le_bytes(a) as i64),
        Dtype::I64 => fold::<8>(bytes, lo, hi, i64::from_le_bytes),
        Dtype::F32 => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_npy(shape: Vec<usize>, v: &[f32]) -> Npy {
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Npy::from_bytes("x.npy", Dtype::F32, shape, bytes)
    }

    #[test]
    fn column_statistics_survive_chunks_that_cut_rows() {
        let (rows, width) = (23, 3);
        let v: Vec<f32> = (0..rows * width)
            .map(|i| ((i * 37) % 101) as f32 * 0.25 - (i % width) as f32 * 10.0)
            .collect();
        let a = f32_npy(vec![rows, width], &v);
        for chunk in [4, 8, 20, 1 << 20] {
            let i = describe_with(&a, chunk);
            let cols = i.columns.as_ref().unwrap();
            assert_eq!(cols.len(), width);
            assert_eq!(i.rows_columns(), Some((rows as u64, width)));
            for (c, s) in cols.iter().enumerate() {
                let col: Vec<f64> = v.iter().skip(c).step_by(width).map(|&x| x as f64).collect();
                let mean = col.iter().sum::<f64>() / rows as f64;
                let var = col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / rows as f64;
                assert_eq!(s.count, rows as u64);
                assert!((s.mean.unwrap() - mean).abs() < 1e-9, "chunk {chunk}");
                assert!((s.std.unwrap() - var.sqrt()).abs() < 1e-9);
                assert_eq!(s.min.unwrap(), col.iter().cloned().fold(f64::MAX, f64::min));
                assert_eq!(s.max.unwrap(), col.iter().cloned().fold(f64::MIN, f64::max));
            }
            assert_eq!(i.non_finite, None);
        }
    }

    #[test]
    fn the_first_non_finite_value_is_located() {
        let mut v = vec![1.0f32; 12];
        v[7] = f32::NAN; // row 2, column 1 of [4, 3]
        v[11] = f32::INFINITY; // row 3, column 2
        for chunk in [4, 16] {
            let i = describe_with(&f32_npy(vec![4, 3], &v), chunk);
            assert_eq!(
                i.non_finite,
                Some(NonFinite {
                    count: 2,
                    row: 2,
                    column: 1
                })
            );
            let cols = i.columns.unwrap();
            assert_eq!(cols[1].count, 3);
            assert_eq!(cols[1].mean, Some(1.0));
        }
        // A 1-D array is one column.
        let i = describe(&f32_npy(vec![3], &[1.0, 2.0, 6.0]));
        assert_eq!(i.columns.as_ref().unwrap()[0].mean, Some(3.0));
        assert_eq!(i.rows_columns(), Some((3, 1)));
    }

    #[test]
    fn integer_ranges_and_vocabulary() {
        let v: Vec<u16> = vec![5, 900, 3, 77];
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let a = Npy::from_bytes("t.npy", Dtype::U16, vec![4], bytes);
        for chunk in [2, 4, 1 << 20] {
            let t = describe_with(&a, chunk).tokens.unwrap();
            assert_eq!(
                t,
                TokenStats {
                    count: 4,
                    min: Some(3),
                    max: Some(900),
                    vocab_at_least: Some(901)
                }
            );
        }
        let v: Vec<i64> = vec![0, -4, 1 << 40];
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let t = describe(&Npy::from_bytes("o.npy", Dtype::I64, vec![3], bytes))
            .tokens
            .unwrap();
        assert_eq!(
            (t.min, t.max, t.vocab_at_least),
            (Some(-4), Some(1 << 40), None)
        );
        let t = describe(&Npy::from_bytes("e.npy", Dtype::U8, vec![0], vec![]))
            .tokens
            .unwrap();
        assert_eq!((t.count, t.min, t.vocab_at_least), (0, None, None));
    }
}
