//! Streams: a 1-D integer `.npy` (or any file, as bytes) of tokens, or a 2-D f32 `.npy`
//! series [steps, N]. Both are memory-mapped and read in place. Opening validates every
//! value (tokens non-negative and below 2^31, series finite) in chunks whose pages are
//! released as the scan goes, so a file larger than memory is checked without staying
//! resident.

use super::npy::{Dtype, Npy, SCAN_CHUNK};
use crate::{Error, Result};
use std::ops::Range;
use std::path::Path;

/// A training stream: tokens or an f32 series.
pub enum DataFile {
    /// Integer tokens (a language model's stream).
    Tokens(TokenFile),
    /// f32 rows [steps, N] (a multichannel time series).
    Series(SeriesFile),
}

/// True if `path` names a `.npy` file (by extension, or by its magic bytes).
pub fn is_npy(path: &Path) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
    {
        return true;
    }
    use std::io::Read;
    let mut magic = [0u8; 6];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|_| &magic == b"\x93NUMPY")
}

impl DataFile {
    /// Opens `path`: a `.npy` holding a 1-D integer array (tokens) or a 2-D f32 array
    /// (a series); any other file is read as byte tokens.
    pub fn open(path: &Path) -> Result<Self> {
        if !is_npy(path) {
            return TokenFile::from_npy(Npy::open_bytes(path)?).map(DataFile::Tokens);
        }
        Self::from_npy(Npy::open(path)?)
    }

    /// Tokens or a series, as the array's type and rank say.
    pub fn from_npy(npy: Npy) -> Result<Self> {
        match (npy.shape().len(), npy.dtype()) {
            (1, d) if d.is_int() => TokenFile::from_npy(npy).map(DataFile::Tokens),
            (2, Dtype::F32) => SeriesFile::from_npy(npy).map(DataFile::Series),
            (1, _) => Err(data_err(
                npy.path(),
                format!(
                    "holds 1-D {} values; a series must be 2-D float32 [steps, N] (numpy: \
                     x.reshape(-1, 1).astype(numpy.float32)), tokens 1-D integers",
                    npy.dtype()
                ),
            )),
            (2, d) => Err(data_err(
                npy.path(),
                format!(
                    "holds a 2-D {d} array; tokens are 1-D integers, a series 2-D float32 \
                     (numpy: x.astype(numpy.float32))"
                ),
            )),
            (n, _) => Err(data_err(
                npy.path(),
                format!(
                    "holds a {n}-D array; expected 1-D integer tokens or a 2-D float32 \
                     series [steps, N]"
                ),
            )),
        }
    }

    /// Steps in the stream.
    pub fn len(&self) -> usize {
        match self {
            DataFile::Tokens(t) => t.len(),
            DataFile::Series(s) => s.steps(),
        }
    }

    /// True if the stream is empty (never, after `open`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        match self {
            DataFile::Tokens(t) => t.path(),
            DataFile::Series(s) => s.path(),
        }
    }

    /// What one position is called: `tokens` or `rows`.
    pub fn unit(&self) -> &'static str {
        match self {
            DataFile::Tokens(_) => "tokens",
            DataFile::Series(_) => "rows",
        }
    }
}

pub(crate) fn data_err(path: &Path, msg: String) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        msg,
    }
}

/// The largest token recur accepts.
pub const MAX_TOKEN: i64 = (u32::MAX / 2) as i64;

/// A validated token stream, read in place.
pub struct TokenFile {
    npy: Npy,
    max: u32,
}

impl TokenFile {
    /// Opens and validates `path`: a 1-D integer `.npy`, or any other file as bytes.
    pub fn open(path: &Path) -> Result<Self> {
        match DataFile::open(path)? {
            DataFile::Tokens(t) => Ok(t),
            DataFile::Series(_) => Err(data_err(
                path,
                "holds a float32 series; tokens are a 1-D integer array".into(),
            )),
        }
    }

    /// Validates a 1-D integer array: every token non-negative and at most 2^31 − 1
    /// (scanned in chunks, released as it goes).
    pub fn from_npy(npy: Npy) -> Result<Self> {
        if npy.shape().len() != 1 || !npy.dtype().is_int() {
            return Err(data_err(npy.path(), "is not a 1-D integer array".into()));
        }
        if npy.elems() == 0 {
            return Err(data_err(npy.path(), "holds 0 tokens".into()));
        }
        let dtype = npy.dtype();
        let mut max = 0i64;
        npy.scan(0..npy.elems(), SCAN_CHUNK, |first, bytes| {
            let n = bytes.len() / dtype.size();
            let mut m = i64::MIN;
            let mut lo = i64::MAX;
            for i in 0..n {
                let t = dtype.get_i64(bytes, i);
                m = m.max(t);
                lo = lo.min(t);
            }
            if lo < 0 || m > MAX_TOKEN {
                let i = (0..n)
                    .find(|&i| !(0..=MAX_TOKEN).contains(&dtype.get_i64(bytes, i)))
                    .unwrap_or(0);
                let t = dtype.get_i64(bytes, i);
                let why = if t < 0 {
                    "is negative".to_string()
                } else {
                    format!("is too large (at most {MAX_TOKEN})")
                };
                return Err(data_err(
                    npy.path(),
                    format!("token {t} at index {} {why}", first + i),
                ));
            }
            max = max.max(m);
            Ok(())
        })?;
        Ok(TokenFile {
            npy,
            max: max as u32,
        })
    }

    /// A stream of byte tokens held in memory (vocabulary ≤ 256), named `name` in errors.
    pub fn from_bytes(name: &str, tokens: Vec<u8>) -> Result<Self> {
        let n = tokens.len();
        TokenFile::from_npy(Npy::from_bytes(name, Dtype::U8, vec![n], tokens))
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.npy.elems()
    }

    /// True if there are no tokens (never, after `open`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The largest token.
    pub fn max_token(&self) -> u32 {
        self.max
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.npy.path()
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        self.npy.dtype()
    }

    /// True if the file is not a `.npy` but raw bytes.
    pub fn is_raw_bytes(&self) -> bool {
        !is_npy(self.path()) && self.dtype() == Dtype::U8
    }

    /// Token `i`.
    ///
    /// # Panics
    /// If `i ≥ len()`.
    #[inline]
    pub fn get(&self, i: usize) -> u32 {
        self.npy.get_i64(i) as u32
    }

    /// Calls `f(k, token)` for the tokens `range`, k counting from 0.
    #[inline]
    pub fn each(&self, range: Range<usize>, mut f: impl FnMut(usize, u32)) {
        let s = self.dtype().size();
        let b = &self.npy.data()[range.start * s..range.end * s];
        match self.dtype() {
            Dtype::U8 => b.iter().enumerate().for_each(|(k, &t)| f(k, t as u32)),
            Dtype::U16 => (b.chunks_exact(2).enumerate())
                .for_each(|(k, c)| f(k, u16::from_le_bytes([c[0], c[1]]) as u32)),
            Dtype::U32 | Dtype::I32 => (b.chunks_exact(4).enumerate())
                .for_each(|(k, c)| f(k, u32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
            Dtype::I64 | Dtype::F32 => {
                (0..range.len()).for_each(|k| f(k, self.get(range.start + k)))
            }
        }
    }

    /// Hands the pages of tokens `range` back to the kernel (see `Npy::release`).
    pub fn release(&self, range: Range<usize>) {
        self.npy.release(range);
    }

    /// Checks that every token is below `vocab`, naming the first that is not.
    pub fn check_vocab(&self, vocab: usize) -> Result<()> {
        if (self.max as usize) < vocab {
            return Ok(());
        }
        let mut found = None;
        let _ = self.npy.scan(0..self.len(), SCAN_CHUNK, |first, _| {
            let end = (first + SCAN_CHUNK / self.dtype().size()).min(self.len());
            match (first..end).find(|&i| self.get(i) as usize >= vocab) {
                Some(i) => {
                    found = Some(i);
                    Err(())
                }
                None => Ok(()),
            }
        });
        let i = found.unwrap_or(0);
        Err(data_err(
            self.path(),
            format!(
                "token {} at index {i} is not below the vocabulary size {vocab}",
                self.get(i)
            ),
        ))
    }
}

/// A validated 2-D f32 series [steps, N], read in place, optionally standardised on
/// the way out (`set_scaling`).
pub struct SeriesFile {
    npy: Npy,
    width: usize,
    /// Per column (mean, std), applied by `read_row` as `recur data csv` does.
    scaling: Option<Vec<(f64, f64)>>,
}

impl SeriesFile {
    /// Opens and validates `path`, a `.npy` of a 2-D little-endian f32 array in C order.
    pub fn open(path: &Path) -> Result<Self> {
        match DataFile::open(path)? {
            DataFile::Series(s) => Ok(s),
            DataFile::Tokens(_) => Err(data_err(
                path,
                "holds tokens; a series is a 2-D float32 array [steps, N]".into(),
            )),
        }
    }

    /// Validates a 2-D f32 array: at least one column, one row, every value finite
    /// (scanned in chunks, released as it goes; the first bad value is named by row and
    /// column).
    pub fn from_npy(npy: Npy) -> Result<Self> {
        let &[steps, width] = npy.shape() else {
            return Err(data_err(npy.path(), "is not a 2-D array".into()));
        };
        if npy.dtype() != Dtype::F32 {
            return Err(data_err(npy.path(), "is not float32".into()));
        }
        if width == 0 || steps == 0 {
            return Err(data_err(
                npy.path(),
                format!("holds [{steps}, {width}]: a series needs at least one row and column"),
            ));
        }
        npy.scan(0..npy.elems(), SCAN_CHUNK, |first, bytes| {
            for (k, c) in bytes.chunks_exact(4).enumerate() {
                let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                if !v.is_finite() {
                    let i = first + k;
                    return Err(data_err(
                        npy.path(),
                        format!(
                            "value {v} at row {}, column {} is not finite",
                            i / width,
                            i % width
                        ),
                    ));
                }
            }
            Ok(())
        })?;
        Ok(SeriesFile {
            npy,
            width,
            scaling: None,
        })
    }

    /// A series held in memory (`values` is [steps, width] row-major), named `name`.
    pub fn from_values(name: &str, width: usize, values: &[f32]) -> Result<Self> {
        if width == 0 || !values.len().is_multiple_of(width) {
            return Err(data_err(
                Path::new(name),
                format!("{} values are not rows of {width} columns", values.len()),
            ));
        }
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let shape = vec![values.len() / width, width];
        SeriesFile::from_npy(Npy::from_bytes(name, Dtype::F32, shape, bytes))
    }

    /// Rows (time steps).
    pub fn steps(&self) -> usize {
        self.npy.shape()[0]
    }

    /// Columns (features per step) N.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.npy.path()
    }

    /// Standardises every row read from now on: column j becomes (x − mean[j]) /
    /// std[j] (a model trained on standardised data, given the raw series).
    pub fn set_scaling(&mut self, mean: &[f64], std: &[f64]) -> Result<()> {
        if mean.len() != self.width || std.len() != self.width {
            return Err(data_err(
                self.path(),
                format!(
                    "has {} columns, but the standardisation has {}",
                    self.width,
                    mean.len()
                ),
            ));
        }
        self.scaling = Some(mean.iter().copied().zip(std.iter().copied()).collect());
        Ok(())
    }

    /// Row `i` into `out` ([N]).
    #[inline]
    pub fn read_row(&self, i: usize, out: &mut [f32]) {
        let n = self.width;
        let b = &self.npy.data()[i * n * 4..(i + 1) * n * 4];
        for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        if let Some(s) = &self.scaling {
            // In f64, as the converter standardises, so both give the same bits.
            for (o, &(m, sd)) in out.iter_mut().zip(s) {
                *o = ((*o as f64 - m) / sd) as f32;
            }
        }
    }

    /// Hands the pages of rows `rows` back to the kernel (see `Npy::release`).
    pub fn release(&self, rows: Range<usize>) {
        let n = self.width;
        self.npy.release(rows.start * n..rows.end * n);
    }
}
