//! NumPy `.npy` files: the header is parsed (ndarray-npy), the data is memory-mapped
//! (memmap2) and read in place. Nothing is copied at open, and pages a reader is done
//! with are handed back to the kernel (`Npy::release`), so a scan or a walk over a file
//! far larger than memory leaves at most a window of it resident. The writer streams
//! rows to a temporary file and renames it into place once the shape is known.

use crate::{Error, Result};
use memmap2::Mmap;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Element types recur reads: integer tokens and f32 values, little-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// `u1` (also raw bytes).
    U8,
    /// `<u2`.
    U16,
    /// `<u4`.
    U32,
    /// `<i4`.
    I32,
    /// `<i8`.
    I64,
    /// `<f4`.
    F32,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::U16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::I64 => 8,
        }
    }

    /// NumPy's descriptor.
    pub fn descr(self) -> &'static str {
        match self {
            Dtype::U8 => "|u1",
            Dtype::U16 => "<u2",
            Dtype::U32 => "<u4",
            Dtype::I32 => "<i4",
            Dtype::I64 => "<i8",
            Dtype::F32 => "<f4",
        }
    }

    /// NumPy's name (`uint16`, `float32`, …).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::U8 => "uint8",
            Dtype::U16 => "uint16",
            Dtype::U32 => "uint32",
            Dtype::I32 => "int32",
            Dtype::I64 => "int64",
            Dtype::F32 => "float32",
        }
    }

    /// True for the integer types.
    pub fn is_int(self) -> bool {
        self != Dtype::F32
    }

    fn parse(descr: &str) -> Option<Self> {
        Some(match descr {
            "|u1" | "<u1" | "=u1" => Dtype::U8,
            "<u2" => Dtype::U16,
            "<u4" => Dtype::U32,
            "<i4" => Dtype::I32,
            "<i8" => Dtype::I64,
            "<f4" => Dtype::F32,
            _ => return None,
        })
    }

    /// The smallest unsigned type that holds `0..n`.
    pub fn for_count(n: u64) -> Self {
        if n <= 1 << 8 {
            Dtype::U8
        } else if n <= 1 << 16 {
            Dtype::U16
        } else {
            Dtype::U32
        }
    }

    /// Element `i` of `bytes` (little-endian) as i64; f32 is truncated toward zero.
    #[inline]
    pub fn get_i64(self, bytes: &[u8], i: usize) -> i64 {
        let s = self.size();
        let b = &bytes[i * s..(i + 1) * s];
        match self {
            Dtype::U8 => b[0] as i64,
            Dtype::U16 => u16::from_le_bytes([b[0], b[1]]) as i64,
            Dtype::U32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            Dtype::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            Dtype::I64 => i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            Dtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The bytes behind a file: mapped, or owned (data built in memory, or a file that
/// could not be mapped).
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// Maps `file` read-only.
///
/// # Safety
/// The mapping reflects later writes to the file by other processes. recur only reads
/// it; a concurrent writer could change values after they were validated (a wrong token,
/// or a bounds-checked panic), and a concurrent truncation makes reads past the new end
/// fault (SIGBUS), as with any memory-mapped reader. Callers accept that risk by using
/// this function: do not rewrite a data file while a job reads it.
unsafe fn map(file: &std::fs::File) -> std::io::Result<Mmap> {
    // SAFETY: delegated to the caller, as documented above.
    unsafe { Mmap::map(file) }
}

/// An opened array: its type, shape and data, mapped and read in place.
pub struct Npy {
    path: PathBuf,
    bytes: Bytes,
    start: usize,
    dtype: Dtype,
    shape: Vec<usize>,
}

/// The most header bytes read before giving up on a file (NumPy's own limit is 10 000).
const MAX_HEADER: u64 = 1 << 20;

impl Npy {
    /// Opens and maps `path`, checking the header: a supported type, C order, and a
    /// shape that agrees with the file's size. Nothing of the data is read.
    pub fn open(path: &Path) -> Result<Self> {
        let err = |msg: String| data_error(path, msg);
        let (file, len) = open_nonempty(path)?;
        let mut head = Vec::new();
        {
            use std::io::Read;
            (&file)
                .take(MAX_HEADER)
                .read_to_end(&mut head)
                .map_err(|e| err(format!("cannot read: {e}")))?;
        }
        let (dtype, shape, start) = parse_header(&head).map_err(err)?;
        check_size(&shape, dtype, len - start as u64).map_err(err)?;
        Ok(Npy {
            path: path.to_path_buf(),
            bytes: map_or_read(path, &file)?,
            start,
            dtype,
            shape,
        })
    }

    /// A whole `.npy` file's bytes, checked as `open` checks a file; `name` stands for
    /// the path in errors.
    pub fn parse(name: &str, bytes: Vec<u8>) -> Result<Self> {
        let path = Path::new(name);
        let err = |msg: String| data_error(path, msg);
        if bytes.is_empty() {
            return Err(err("is empty".into()));
        }
        let head = &bytes[..bytes.len().min(MAX_HEADER as usize)];
        let (dtype, shape, start) = parse_header(head).map_err(err)?;
        check_size(&shape, dtype, (bytes.len() - start) as u64).map_err(err)?;
        Ok(Npy {
            path: path.to_path_buf(),
            bytes: Bytes::Owned(bytes),
            start,
            dtype,
            shape,
        })
    }

    /// Maps any file as a 1-D array of bytes (a text file read as byte tokens).
    pub fn open_bytes(path: &Path) -> Result<Self> {
        let (file, len) = open_nonempty(path)?;
        Ok(Npy {
            path: path.to_path_buf(),
            bytes: map_or_read(path, &file)?,
            start: 0,
            dtype: Dtype::U8,
            shape: vec![len as usize],
        })
    }

    /// An array held in memory: `data` is the little-endian bytes of `shape` elements of
    /// `dtype`; `name` stands for the path in errors.
    pub fn from_bytes(name: &str, dtype: Dtype, shape: Vec<usize>, data: Vec<u8>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>() * dtype.size(),
            data.len(),
            "shape and bytes agree"
        );
        Npy {
            path: PathBuf::from(name),
            bytes: Bytes::Owned(data),
            start: 0,
            dtype,
            shape,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn elems(&self) -> usize {
        self.shape.iter().product()
    }

    /// The data bytes (little-endian, C order), in place.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.bytes.as_slice()[self.start..]
    }

    /// Element `i` (flat index) as i64.
    #[inline]
    pub fn get_i64(&self, i: usize) -> i64 {
        self.dtype.get_i64(self.data(), i)
    }

    /// Hands the pages holding elements `elems` back to the kernel: they leave the
    /// process's resident set (the page cache keeps them, so reading them again costs a
    /// minor fault). A read fault maps more than the page read: the kernel maps the
    /// page cache's whole folio around it (up to `MAP_UNIT`, 2 MiB) and fault-around
    /// pages beyond it, so the range is widened to whole `MAP_UNIT` blocks of the file,
    /// with `FAULT_AROUND` of margin on each side; releasing only the bytes read would
    /// leave the rest of the folio mapped for good. A neighbour's next read may fault
    /// pages back in. A no-op for data held in memory.
    pub fn release(&self, elems: Range<usize>) {
        if let Bytes::Mapped(m) = &self.bytes {
            let s = self.dtype.size();
            let (a, b) = (self.start + elems.start * s, self.start + elems.end * s);
            if b <= a {
                return;
            }
            let (unit, margin) = (crate::layout::MAP_UNIT, crate::layout::FAULT_AROUND);
            let lo = a.saturating_sub(margin) / unit * unit;
            let hi = ((b + margin).div_ceil(unit) * unit).min(m.len());
            // SAFETY: MADV_DONTNEED on a read-only, file-backed shared mapping only
            // drops the pages from this process's page tables; later reads fault them
            // back in from the file, unchanged, so slices into the mapping stay valid
            // and keep their contents.
            let _ = unsafe {
                m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, lo, hi - lo)
            };
        }
    }

    /// Visits elements `range` in chunks of about `chunk_bytes`, releasing each chunk's
    /// pages after `f` has seen it; `f` gets the first element's index and the chunk's
    /// bytes. Stops at the first error.
    pub fn scan<E>(
        &self,
        range: Range<usize>,
        chunk_bytes: usize,
        mut f: impl FnMut(usize, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let s = self.dtype.size();
        let per = (chunk_bytes / s).max(1);
        let mut i = range.start;
        while i < range.end {
            let j = (i + per).min(range.end);
            let r = f(i, &self.data()[i * s..j * s]);
            self.release(i..j);
            r?;
            i = j;
        }
        Ok(())
    }
}

fn data_error(path: &Path, msg: String) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        msg,
    }
}

/// Opens `path` read-only, refusing an empty file: the file and its length.
fn open_nonempty(path: &Path) -> Result<(std::fs::File, u64)> {
    let file =
        std::fs::File::open(path).map_err(|e| data_error(path, format!("cannot open: {e}")))?;
    let len = file
        .metadata()
        .map_err(|e| data_error(path, format!("cannot read: {e}")))?
        .len();
    if len == 0 {
        return Err(data_error(path, "is empty".into()));
    }
    Ok((file, len))
}

/// The file's bytes: mapped, or read into memory if it cannot be mapped.
fn map_or_read(path: &Path, file: &std::fs::File) -> Result<Bytes> {
    // SAFETY: see `map`; the file is opened read-only and only read.
    match unsafe { map(file) } {
        Ok(m) => Ok(Bytes::Mapped(m)),
        Err(_) => std::fs::read(path)
            .map(Bytes::Owned)
            .map_err(|e| data_error(path, format!("cannot read: {e}"))),
    }
}

/// Bytes a scan reads between releases.
pub const SCAN_CHUNK: usize = 2 << 20;

fn fmt_shape(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

/// Checks that `have` bytes after the header hold exactly the header's shape.
fn check_size(shape: &[usize], dtype: Dtype, have: u64) -> std::result::Result<(), String> {
    let elems = shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
        .and_then(|n| n.checked_mul(dtype.size() as u64));
    match elems {
        Some(need) if need == have => Ok(()),
        Some(need) if need > have => Err(format!(
            "is truncated: its header says {} {} ({need} bytes), but {have} bytes follow the \
             header",
            fmt_shape(shape),
            dtype
        )),
        Some(need) => Err(format!(
            "holds {have} bytes after its header, but its header says {} {} ({need} bytes)",
            fmt_shape(shape),
            dtype
        )),
        None => Err(format!("declares an impossible shape {shape:?}")),
    }
}

/// Parses a `.npy` header: (type, shape, offset of the data).
fn parse_header(head: &[u8]) -> Result<(Dtype, Vec<usize>, usize), String> {
    if !head.starts_with(b"\x93NUMPY") {
        return Err("is not a .npy file (no \\x93NUMPY magic); save arrays with numpy.save".into());
    }
    // The header's declared length, checked against the bytes there before anything
    // is allocated for it.
    let (len, at) = match head.get(6) {
        Some(1) if head.len() >= 10 => (u16::from_le_bytes([head[8], head[9]]) as usize, 10),
        Some(2 | 3) if head.len() >= 12 => {
            let l = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
            (l as usize, 12)
        }
        Some(v @ (1..=3)) => return Err(format!("has a truncated .npy header (version {v})")),
        v => {
            return Err(format!(
                "has an unknown .npy format version {}",
                v.copied().unwrap_or(0)
            ))
        }
    };
    if head.len() < at + len {
        return Err(format!(
            "has a truncated .npy header: it declares {len} bytes, {} follow",
            head.len() - at
        ));
    }
    // A plain array's header is one dict holding one shape tuple; anything nested (a
    // structured dtype, or garbage) is refused before the parser, which is slow on
    // deep nesting.
    let text = &head[at..at + len];
    let count = |c: u8| text.iter().filter(|&&b| b == c).count();
    if count(b'{') > 1 || count(b'(') > 1 || count(b'[') > 0 {
        return Err(
            "has a malformed .npy header (nested structures: recur reads plain arrays, not \
             structured ones)"
                .into(),
        );
    }
    let mut cursor = head;
    let header = ndarray_npy::npy::header::Header::from_reader(&mut cursor).map_err(|e| {
        let e = e.to_string();
        let first = e.lines().next().unwrap_or("").trim_end_matches(':');
        format!("has a malformed .npy header ({first})")
    })?;
    let start = head.len() - cursor.len();
    let descr = header.type_descriptor.to_string();
    let descr = descr.trim_matches('\'');
    let dtype = Dtype::parse(descr).ok_or_else(|| {
        format!(
            "has element type {descr}; recur reads uint8, uint16, uint32, int32 or int64 \
             tokens and little-endian float32 values (numpy: x.astype(numpy.float32) or \
             x.astype(numpy.int64))"
        )
    })?;
    if header.layout.is_fortran() && header.shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(
            "is stored in Fortran order; save it with numpy.ascontiguousarray first".into(),
        );
    }
    Ok((dtype, header.shape, start))
}

/// Writes a `.npy` of unknown length row by row: a fixed-size header is written first
/// and patched with the final shape by `finish`, which also syncs the file and renames
/// it into place (a reader never sees a half-written file). Memory: one buffered
/// writer (64 KiB).
pub struct NpyWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    dtype: Dtype,
    width: Option<usize>,
    rows: u64,
}

/// Header bytes of every file `NpyWriter` writes (room for any shape of two 20-digit
/// dimensions).
const WRITER_HEADER: usize = 128;

fn header_bytes(dtype: Dtype, shape: &str) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        dtype.descr()
    );
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    let len = WRITER_HEADER - 10;
    h.extend_from_slice(&(len as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.resize(WRITER_HEADER - 1, b' ');
    h.push(b'\n');
    h
}

impl NpyWriter {
    /// Starts `path` (written as `path.tmp` until `finish`): a 1-D array if `width` is
    /// `None`, else rows of `width` elements.
    pub fn create(path: &Path, dtype: Dtype, width: Option<usize>) -> Result<Self> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut out = std::io::BufWriter::with_capacity(64 << 10, file);
        out.write_all(&header_bytes(dtype, "(0,)"))
            .map_err(|e| Error::io(&tmp, e))?;
        Ok(NpyWriter {
            path: path.to_path_buf(),
            tmp,
            out,
            dtype,
            width,
            rows: 0,
        })
    }

    /// Appends raw little-endian bytes of whole rows (or elements, for 1-D).
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let row = self.width.unwrap_or(1) * self.dtype.size();
        debug_assert_eq!(bytes.len() % row, 0);
        self.rows += (bytes.len() / row) as u64;
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(&self.tmp, e))
    }

    /// Appends f32 values (whole rows).
    pub fn write_f32(&mut self, values: &[f32]) -> Result<()> {
        let mut buf = [0u8; 4096];
        for chunk in values.chunks(1024) {
            for (o, v) in buf.chunks_exact_mut(4).zip(chunk) {
                o.copy_from_slice(&v.to_le_bytes());
            }
            self.write_raw(&buf[..chunk.len() * 4])?;
        }
        Ok(())
    }

    /// Rows (or elements) written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The temporary file being written (for an in-place pass before `finish`).
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// Byte offset of the first row in the temporary file (the header's fixed size),
    /// for an in-place pass before `finish`.
    pub fn data_offset(&self) -> u64 {
        WRITER_HEADER as u64
    }

    /// Flushes what was written so far (before reading the temporary file back).
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io(&self.tmp, e))
    }

    /// Writes the final shape into the header, syncs, and renames into place.
    pub fn finish(mut self) -> Result<PathBuf> {
        use std::io::Seek;
        let shape = match self.width {
            None => format!("({},)", self.rows),
            Some(w) => format!("({}, {w})", self.rows),
        };
        self.flush()?;
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        let io = |e| Error::io(&self.tmp, e);
        file.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&header_bytes(self.dtype, &shape))
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(self.path)
    }

    /// Removes the temporary file (after an error).
    pub fn abandon(self) {
        let tmp = self.tmp.clone();
        drop(self.out);
        let _ = std::fs::remove_file(tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_output_reads_back_with_its_shape() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.npy");
        let mut w = NpyWriter::create(&p, Dtype::F32, Some(3)).unwrap();
        w.write_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        w.finish().unwrap();
        let n = Npy::open(&p).unwrap();
        assert_eq!(n.shape(), &[2, 3]);
        assert_eq!(n.dtype(), Dtype::F32);
        assert_eq!(
            f32::from_le_bytes(n.data()[20..24].try_into().unwrap()),
            6.0
        );
        let a: ndarray::Array2<f32> = ndarray_npy::read_npy(&p).unwrap();
        assert_eq!(a[[1, 2]], 6.0);
    }
}
