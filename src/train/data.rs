//! Streams from files: NumPy `.npy` 1-D integer token arrays (u8, u16, u32, i32, i64;
//! little-endian, C order) memory-mapped and read in place, 2-D f32 series [steps, N]
//! read window by window, or any other file as raw bytes (vocabulary 256). Every token
//! is checked once, when the file is opened; series values are checked as windows read
//! them.

use crate::{Error, Result};
use memmap2::Mmap;
use ndarray::ArrayView1;
use ndarray_npy::ViewNpyExt;
use std::path::{Path, PathBuf};

/// A training stream: tokens or an f32 series.
pub enum DataFile {
    /// Integer tokens (a language model's stream).
    Tokens(TokenFile),
    /// f32 rows [steps, N] (a multichannel time series).
    Series(SeriesFile),
}

impl DataFile {
    /// Opens `path`: a `.npy` holding a 1-D integer array (tokens) or a 2-D f32 array
    /// (series); any other file is read as byte tokens.
    pub fn open(path: &Path) -> Result<Self> {
        let is_npy = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
        if is_npy && npy_ndim(path)? == 2 {
            return SeriesFile::open(path).map(DataFile::Series);
        }
        TokenFile::open(path).map(DataFile::Tokens)
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
}

/// The number of dimensions a `.npy` file declares (its header only is read).
fn npy_ndim(path: &Path) -> Result<usize> {
    use std::io::Read;
    let err = |msg: String| Error::Data {
        path: path.to_path_buf(),
        msg,
    };
    let mut head = Vec::new();
    std::fs::File::open(path)
        .map_err(|e| err(format!("cannot open: {e}")))?
        .take(1 << 16)
        .read_to_end(&mut head)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    let header = ndarray_npy::npy::header::Header::from_reader(&mut &head[..])
        .map_err(|e| err(format!("is not a valid .npy file: {e}")))?;
    Ok(header.shape.len())
}

/// A 2-D f32 series [steps, N]. Rows are read with positioned reads (through the page
/// cache, not mapped into the process), one stripe of a window at a time into a staging
/// buffer the plan counts, so the process's memory does not grow with the file however
/// large it is. A non-finite value is refused when a window reaches it, naming its row
/// and column.
pub struct SeriesFile {
    path: PathBuf,
    source: Source,
    start: u64,
    steps: usize,
    width: usize,
}

enum Source {
    File(std::fs::File),
    Memory(Vec<u8>),
}

impl SeriesFile {
    /// Opens `path`, a `.npy` of a 2-D little-endian f32 array in C order; only its
    /// header is read.
    pub fn open(path: &Path) -> Result<Self> {
        use std::io::Read;
        let err = |msg: String| Error::Data {
            path: path.to_path_buf(),
            msg,
        };
        let mut file = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
        let mut head = Vec::new();
        (&mut file)
            .take(1 << 16)
            .read_to_end(&mut head)
            .map_err(|e| err(format!("cannot read: {e}")))?;
        let mut cursor = &head[..];
        let header = ndarray_npy::npy::header::Header::from_reader(&mut cursor)
            .map_err(|e| err(format!("is not a valid .npy file: {e}")))?;
        let start = (head.len() - cursor.len()) as u64;
        let dtype = header.type_descriptor.to_string();
        if dtype.trim_matches('\'') != "<f4" {
            return Err(err(format!(
                "has element type {dtype}; a 2-D series must be little-endian f32 \
                 (numpy: x.astype(numpy.float32))"
            )));
        }
        if header.layout.is_fortran() {
            return Err(err(
                "is stored in Fortran order; save it with numpy.ascontiguousarray".into(),
            ));
        }
        let [steps, width] = <[usize; 2]>::try_from(header.shape.as_slice())
            .map_err(|_| err(format!("holds shape {:?}; a series is 2-D", header.shape)))?;
        if width == 0 {
            return Err(err(format!(
                "holds [{steps}, 0]: a series needs at least one column"
            )));
        }
        if steps < 2 {
            return Err(err(format!(
                "holds {steps} rows; at least 2 are needed (an input and a target)"
            )));
        }
        let len = file
            .metadata()
            .map_err(|e| err(format!("cannot read: {e}")))?
            .len();
        let need = (steps as u128 * width as u128 * 4) as u64;
        if len.saturating_sub(start) < need {
            return Err(err(format!(
                "is truncated: its header says [{steps}, {width}] f32 ({need} bytes), but \
                 {} bytes follow it",
                len.saturating_sub(start)
            )));
        }
        Ok(SeriesFile {
            path: path.to_path_buf(),
            source: Source::File(file),
            start,
            steps,
            width,
        })
    }

    /// A series held in memory (`values` is [steps, width] row-major), named `name`.
    pub fn from_values(name: &str, width: usize, values: &[f32]) -> Result<Self> {
        let path = PathBuf::from(name);
        if width == 0 || values.len() % width != 0 || values.len() / width < 2 {
            return Err(Error::Data {
                path,
                msg: format!(
                    "{} values are not at least 2 rows of {width} columns",
                    values.len()
                ),
            });
        }
        Ok(SeriesFile {
            path,
            source: Source::Memory(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            start: 0,
            steps: values.len() / width,
            width,
        })
    }

    /// Rows (time steps).
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Columns (features per step) N.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads rows `first..first + rows` as raw little-endian bytes into `out`
    /// (`rows · N · 4` bytes). Allocates nothing.
    pub fn read_rows(&self, first: usize, rows: usize, out: &mut [u8]) -> Result<()> {
        let w = self.width * 4;
        let out = &mut out[..rows * w];
        let at = self.start + (first * w) as u64;
        match &self.source {
            Source::File(f) => {
                use std::os::unix::fs::FileExt;
                f.read_exact_at(out, at).map_err(|e| Error::Data {
                    path: self.path.clone(),
                    msg: format!("cannot read rows {first}..{}: {e}", first + rows),
                })
            }
            Source::Memory(v) => {
                out.copy_from_slice(&v[at as usize..at as usize + out.len()]);
                Ok(())
            }
        }
    }

    /// Converts row `i` of the stream, held as bytes in `bytes`, into `out` ([N]),
    /// refusing a non-finite value.
    pub fn decode_row(&self, i: usize, bytes: &[u8], out: &mut [f32]) -> Result<()> {
        for (j, (o, c)) in out.iter_mut().zip(bytes.chunks_exact(4)).enumerate() {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            if !o.is_finite() {
                return Err(Error::Data {
                    path: self.path.clone(),
                    msg: format!("value {o} at row {i}, column {j} is not finite"),
                });
            }
        }
        Ok(())
    }
}

/// The integer type of a token file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// Raw bytes or `<u1`.
    U8,
    /// `<u2`.
    U16,
    /// `<u4`.
    U32,
    /// `<i4`.
    I32,
    /// `<i8`.
    I64,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::U16 => 2,
            Dtype::U32 | Dtype::I32 => 4,
            Dtype::I64 => 8,
        }
    }
}

enum Bytes {
    Mapped(Mmap),
    Read(Vec<u8>),
}

/// A validated token stream, memory-mapped when possible.
pub struct TokenFile {
    path: PathBuf,
    bytes: Bytes,
    start: usize,
    len: usize,
    dtype: Dtype,
    max: u32,
}

/// Maps `file` read-only.
///
/// # Safety
/// The mapping reflects later writes to the file by other processes. recur only reads
/// it; a concurrent writer could change tokens after they were validated, which at worst
/// makes a bounds-checked lookup panic. Callers accept that risk by using this function;
/// `TokenFile::open` falls back to reading the file if mapping fails.
unsafe fn map(file: &std::fs::File) -> std::io::Result<Mmap> {
    // SAFETY: delegated to the caller, as documented above.
    unsafe { Mmap::map(file) }
}

impl TokenFile {
    /// Opens and validates `path`. `.npy` files must hold a 1-D integer array; any other
    /// file is read as bytes.
    pub fn open(path: &Path) -> Result<Self> {
        let err = |msg: String| Error::Data {
            path: path.to_path_buf(),
            msg,
        };
        let file = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
        // SAFETY: see `map`; the file is opened read-only and only read.
        let bytes = match unsafe { map(&file) } {
            Ok(m) => Bytes::Mapped(m),
            Err(_) => {
                Bytes::Read(std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?)
            }
        };
        let raw: &[u8] = match &bytes {
            Bytes::Mapped(m) => m,
            Bytes::Read(v) => v,
        };
        let is_npy = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
        let (start, len, dtype) = if is_npy {
            npy_layout(raw).map_err(err)?
        } else {
            (0, raw.len(), Dtype::U8)
        };
        if len < 2 {
            return Err(err(format!(
                "holds {len} tokens; at least 2 are needed (an input and a target)"
            )));
        }
        let mut tf = TokenFile {
            path: path.to_path_buf(),
            bytes,
            start,
            len,
            dtype,
            max: 0,
        };
        tf.max = tf.scan().map_err(err)?;
        Ok(tf)
    }

    /// A stream of byte tokens held in memory (vocabulary ≤ 256), named `name` in errors.
    pub fn from_bytes(name: &str, tokens: Vec<u8>) -> Result<Self> {
        let path = PathBuf::from(name);
        if tokens.len() < 2 {
            return Err(Error::Data {
                path,
                msg: "holds fewer than 2 tokens".into(),
            });
        }
        let max = tokens.iter().copied().max().unwrap_or(0) as u32;
        let len = tokens.len();
        Ok(TokenFile {
            path,
            bytes: Bytes::Read(tokens),
            start: 0,
            len,
            dtype: Dtype::U8,
            max,
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if there are no tokens (never, after `open`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The largest token.
    pub fn max_token(&self) -> u32 {
        self.max
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn raw(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Mapped(m) => m,
            Bytes::Read(v) => v,
        }
    }

    /// Token `i` as stored (signed values are returned as i64).
    fn get_i64(&self, i: usize) -> i64 {
        let s = self.dtype.size();
        let b = &self.raw()[self.start + i * s..self.start + (i + 1) * s];
        match self.dtype {
            Dtype::U8 => b[0] as i64,
            Dtype::U16 => u16::from_le_bytes([b[0], b[1]]) as i64,
            Dtype::U32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            Dtype::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            Dtype::I64 => i64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
        }
    }

    /// Token `i`.
    ///
    /// # Panics
    /// If `i ≥ len()`.
    #[inline]
    pub fn get(&self, i: usize) -> u32 {
        self.get_i64(i) as u32
    }

    fn scan(&self) -> Result<u32, String> {
        let mut max = 0i64;
        for i in 0..self.len {
            let t = self.get_i64(i);
            if t < 0 {
                return Err(format!("token {t} at index {i} is negative"));
            }
            if t > u32::MAX as i64 / 2 {
                return Err(format!(
                    "token {t} at index {i} is too large (at most {})",
                    u32::MAX / 2
                ));
            }
            max = max.max(t);
        }
        Ok(max as u32)
    }

    /// Checks that every token is below `vocab`.
    pub fn check_vocab(&self, vocab: usize) -> Result<()> {
        if self.max as usize >= vocab {
            let i = (0..self.len)
                .find(|&i| self.get(i) as usize >= vocab)
                .unwrap_or(0);
            return Err(Error::Data {
                path: self.path.clone(),
                msg: format!(
                    "token {} at index {i} is not below the vocabulary size {vocab}",
                    self.get(i)
                ),
            });
        }
        Ok(())
    }
}

/// Finds the data of a 1-D integer `.npy`: (byte offset, elements, type).
fn npy_layout(raw: &[u8]) -> Result<(usize, usize, Dtype), String> {
    macro_rules! try_view {
        ($t:ty, $d:expr) => {
            match ArrayView1::<$t>::view_npy(raw) {
                Ok(v) => {
                    let start = v.as_ptr() as usize - raw.as_ptr() as usize;
                    return Ok((start, v.len(), $d));
                }
                Err(ndarray_npy::ViewNpyError::WrongNdim(_, n)) => {
                    return Err(format!(
                        "holds a {n}-D array; expected 1-D integer tokens or a 2-D f32 series \
                         [steps, N]"
                    ))
                }
                Err(e) => e,
            }
        };
    }
    try_view!(u8, Dtype::U8);
    try_view!(u16, Dtype::U16);
    try_view!(u32, Dtype::U32);
    try_view!(i32, Dtype::I32);
    let last = try_view!(i64, Dtype::I64);
    Err(match last {
        ndarray_npy::ViewNpyError::WrongDescriptor(d) if d.to_string().contains('f') => {
            format!(
                "holds 1-D {d} values; a series must be 2-D f32 [steps, N] (numpy: \
                 x.reshape(-1, 1).astype(numpy.float32)), tokens 1-D integers"
            )
        }
        ndarray_npy::ViewNpyError::WrongDescriptor(d) => {
            format!("has element type {d}; expected little-endian u1, u2, u4, i4 or i8 tokens")
        }
        e => format!("is not a valid 1-D .npy array: {e}"),
    })
}
