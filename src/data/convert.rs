//! The converters behind `recur data`: a text file into a 1-D token `.npy` (bytes, or
//! characters with a vocabulary saved beside it), and a CSV file into a 2-D float32
//! `.npy` [rows, columns], optionally standardized with the per-column statistics saved
//! beside it. Both stream: a converter holds fixed-size buffers and whatever grows with
//! the number of distinct characters or columns, never the file.
//!
//! Files beside an output `OUT.npy`: `OUT.vocab.json` ([`vocab_path`], read by
//! [`Vocab::load`]) and `OUT.norm.json` ([`norm_path`], read by [`Norm::load`]). Outputs
//! appear only when a conversion succeeds: the `.npy` is written to a temporary name and
//! renamed into place, and so are the JSON files beside it.

use super::npy::{Dtype, NpyWriter};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes a converter reads at a time (text reads, the in-place pass of `--standardize`).
pub const CHUNK: usize = 1 << 20;

/// Bytes the token writer gathers before handing them to the `.npy` writer.
const OUT_BUF: usize = 64 << 10;

fn data_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// `path` with `.npy` (if it ends so) replaced by `.{suffix}`, else with `.{suffix}`
/// appended.
fn beside(npy_path: &Path, suffix: &str) -> PathBuf {
    let is_npy = npy_path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if is_npy {
        npy_path.with_extension(suffix)
    } else {
        let mut s = npy_path.as_os_str().to_owned();
        s.push(".");
        s.push(suffix);
        PathBuf::from(s)
    }
}

/// The vocabulary file beside a token file: `corpus.npy` → `corpus.vocab.json` (a name
/// without the `.npy` extension gets `.vocab.json` appended).
pub fn vocab_path(npy_path: &Path) -> PathBuf {
    beside(npy_path, "vocab.json")
}

/// The statistics file beside a series: `x.npy` → `x.norm.json` (a name without the
/// `.npy` extension gets `.norm.json` appended).
pub fn norm_path(npy_path: &Path) -> PathBuf {
    beside(npy_path, "norm.json")
}

/// Serializes a dtype as NumPy's name (`uint16`, `float32`, …).
pub(crate) fn dtype_name<S: serde::Serializer>(d: &Dtype, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(d.name())
}

fn tmp_of(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Writes `bytes` to `path.tmp` and returns that name (renamed into place by the
/// caller once everything else succeeded).
fn write_tmp(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let tmp = tmp_of(path);
    let res = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    Ok(tmp)
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = write_tmp(path, bytes)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Finishes `w` and then moves the files beside it (`(tmp, final)` pairs) into place;
/// if the `.npy` cannot be finished, the temporary files beside it are removed.
fn commit(w: NpyWriter, beside: &[(PathBuf, PathBuf)]) -> Result<PathBuf> {
    match w.finish() {
        Ok(p) => {
            for (tmp, path) in beside {
                std::fs::rename(tmp, path).map_err(|e| Error::io(path, e))?;
            }
            Ok(p)
        }
        Err(e) => {
            for (tmp, _) in beside {
                let _ = std::fs::remove_file(tmp);
            }
            Err(e)
        }
    }
}

/// Runs `fill` on a fresh writer for `out`; on error the temporary file is removed and
/// nothing is left at `out`.
fn with_writer<T>(
    out: &Path,
    dtype: Dtype,
    width: Option<usize>,
    fill: impl FnOnce(&mut NpyWriter) -> Result<T>,
) -> Result<(NpyWriter, T)> {
    check_out(out)?;
    let mut w = NpyWriter::create(out, dtype, width)?;
    match fill(&mut w) {
        Ok(t) => Ok((w, t)),
        Err(e) => {
            w.abandon();
            Err(e)
        }
    }
}

/// Refuses an output whose directory is missing or that names a directory, before
/// anything is read.
fn check_out(out: &Path) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the output directory does not exist",
                ),
            ));
        }
    }
    if out.is_dir() {
        return Err(Error::io(
            out,
            std::io::Error::other("is a directory; name the output file, e.g. out.npy"),
        ));
    }
    Ok(())
}

/// Removes a file beside the output that this conversion does not write (left by an
/// earlier run: `train` would copy it beside the model, and `sample` or `eval` would
/// apply it), with a note saying so.
fn stale_note(path: &Path, what: &str) -> Option<String> {
    path.exists().then(|| match std::fs::remove_file(path) {
        Ok(()) => format!(
            "removed {} (from an earlier run): it does not describe this output: {what}",
            path.display()
        ),
        Err(e) => format!(
            "{} (from an earlier run) does not describe this output ({what}), and could not \
             be removed: {e}",
            path.display()
        ),
    })
}

fn open_input(path: &Path) -> Result<std::fs::File> {
    let f = std::fs::File::open(path).map_err(|e| data_err(path, format!("cannot open: {e}")))?;
    if f.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(data_err(path, "is a directory, not a file"));
    }
    Ok(f)
}

/// `read` that retries on interruption; maps errors to the input file.
fn read_some(path: &Path, r: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(data_err(path, format!("cannot read: {e}"))),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Text

/// How `recur data text` turns text into tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TextVocab {
    /// Every byte is a token (uint8, vocabulary 256); any file works.
    #[default]
    Bytes,
    /// Every character (Unicode scalar value) of UTF-8 text is a token: its index in
    /// the sorted set of the file's distinct characters, saved as `OUT.vocab.json`.
    Chars,
}

/// What a text conversion wrote.
#[derive(Clone, Debug, Serialize)]
pub struct TextSummary {
    /// Tokens written.
    pub tokens: u64,
    /// Their type (NumPy's name in JSON).
    #[serde(serialize_with = "dtype_name")]
    pub dtype: Dtype,
    /// Distinct characters (chars mode).
    pub vocab: Option<usize>,
    /// The vocabulary file written beside the output (chars mode).
    pub vocab_path: Option<PathBuf>,
    /// Things the user should know (a stale file beside the output).
    pub notes: Vec<String>,
}

/// Converts the text file `input` into the token file `out` (1-D `.npy`).
///
/// `Bytes`: one uint8 token per byte. `Chars`: the file is read twice, once to collect
/// its distinct characters (the vocabulary, sorted by code point and saved as
/// [`vocab_path`]`(out)`) and once to write their indices, as the smallest of
/// uint8/uint16/uint32 that holds the vocabulary ([`Dtype::for_count`]). Invalid UTF-8
/// is refused with its byte offset.
///
/// Memory: a 1 MiB read buffer (plus 3 bytes for a character split between reads), a
/// 64 KiB token buffer and the `.npy` writer's 64 KiB, plus, in chars mode, the
/// vocabulary: at most 1 112 064 distinct characters, a few tens of bytes each (a few
/// KiB for ordinary text, under 50 MiB if every Unicode scalar value occurs) — whatever
/// the file's size.
pub fn text_to_npy(input: &Path, out: &Path, vocab: TextVocab) -> Result<TextSummary> {
    text_to_npy_with(input, out, vocab, CHUNK, None)
}

/// Converts `input` with an existing character vocabulary (a model's, so held-out text
/// gets the same token for the same character); a character outside it is refused,
/// naming it. The vocabulary is saved beside the output as [`vocab_path`]`(out)`.
/// Memory as [`text_to_npy`].
pub fn text_to_npy_with_vocab(input: &Path, out: &Path, vocab: &Vocab) -> Result<TextSummary> {
    text_to_npy_with(input, out, TextVocab::Chars, CHUNK, Some(vocab))
}

fn text_to_npy_with(
    input: &Path,
    out: &Path,
    vocab: TextVocab,
    buf_size: usize,
    given: Option<&Vocab>,
) -> Result<TextSummary> {
    let vpath = vocab_path(out);
    match vocab {
        TextVocab::Bytes => {
            let mut f = open_input(input)?;
            let (w, tokens) = with_writer(out, Dtype::U8, None, |w| {
                let mut buf = vec![0u8; buf_size.max(1)];
                loop {
                    let n = read_some(input, &mut f, &mut buf)?;
                    if n == 0 {
                        break;
                    }
                    w.write_raw(&buf[..n])?;
                }
                if w.rows() == 0 {
                    return Err(data_err(input, "is empty: there is no text to convert"));
                }
                Ok(w.rows())
            })?;
            commit(w, &[])?;
            Ok(TextSummary {
                tokens,
                dtype: Dtype::U8,
                vocab: None,
                vocab_path: None,
                notes: stale_note(&vpath, "byte tokens need no vocabulary")
                    .into_iter()
                    .collect(),
            })
        }
        TextVocab::Chars => {
            check_out(out)?;
            // Pass 1: the distinct characters (unless a vocabulary is given).
            let (v, chars) = match given {
                Some(v) => (v.clone(), None),
                None => {
                    let mut ascii = [false; 128];
                    let mut other = BTreeSet::new();
                    let chars = scan_utf8(input, open_input(input)?, buf_size, |s| {
                        for c in s.chars() {
                            match ascii.get_mut(c as usize) {
                                Some(seen) => *seen = true,
                                None => {
                                    other.insert(c);
                                }
                            }
                        }
                        Ok(())
                    })?;
                    if chars == 0 {
                        return Err(data_err(input, "is empty: there is no text to convert"));
                    }
                    let v = Vocab::new(
                        (0u8..128)
                            .filter(|&b| ascii[b as usize])
                            .map(char::from)
                            .chain(other),
                    );
                    (v, Some(chars))
                }
            };
            let dtype = Dtype::for_count(v.len() as u64);
            // Pass 2: the tokens.
            let f = open_input(input)?;
            let (w, tokens) = with_writer(out, dtype, None, |w| {
                let mut buf: Vec<u8> = Vec::with_capacity(OUT_BUF + 4);
                let mut count = 0u64;
                scan_utf8(input, f, buf_size, |s| {
                    for c in s.chars() {
                        let t = v.index(c).ok_or_else(|| {
                            let msg = match chars {
                                Some(_) => format!(
                                    "changed while being converted: character {c:?} was not \
                                     there on the first reading"
                                ),
                                None => format!(
                                    "character {c:?} (U+{:04X}) at character {count} is not in \
                                     the given vocabulary of {} characters",
                                    c as u32,
                                    v.len()
                                ),
                            };
                            data_err(input, msg)
                        })?;
                        match dtype {
                            Dtype::U8 => buf.push(t as u8),
                            Dtype::U16 => buf.extend_from_slice(&(t as u16).to_le_bytes()),
                            _ => buf.extend_from_slice(&t.to_le_bytes()),
                        }
                        count += 1;
                        if buf.len() >= OUT_BUF {
                            w.write_raw(&buf)?;
                            buf.clear();
                        }
                    }
                    Ok(())
                })?;
                w.write_raw(&buf)?;
                if count == 0 {
                    return Err(data_err(input, "is empty: there is no text to convert"));
                }
                if chars.is_some_and(|n| n != count) {
                    return Err(data_err(
                        input,
                        format!(
                            "changed while being converted: {} characters on the first \
                             reading, {count} on the second",
                            chars.unwrap_or(0)
                        ),
                    ));
                }
                Ok(count)
            })?;
            let tmp = match write_tmp(&vpath, v.to_json().as_bytes()) {
                Ok(t) => t,
                Err(e) => {
                    w.abandon();
                    return Err(e);
                }
            };
            commit(w, &[(tmp, vpath.clone())])?;
            Ok(TextSummary {
                tokens,
                dtype,
                vocab: Some(v.len()),
                vocab_path: Some(vpath),
                notes: Vec::new(),
            })
        }
    }
}

/// Reads `r` as UTF-8 in reads of `buf_size` bytes and hands `f` the text of each read;
/// a character split between two reads is carried over to the next. Returns the number
/// of characters. Invalid UTF-8 (including a sequence cut off by the end of the file)
/// is an error naming its byte offset.
fn scan_utf8(
    path: &Path,
    mut r: impl Read,
    buf_size: usize,
    mut f: impl FnMut(&str) -> Result<()>,
) -> Result<u64> {
    let buf_size = buf_size.max(1);
    // Room for a carried partial character (at most 3 bytes) before each read.
    let mut buf = vec![0u8; buf_size + 3];
    let mut carry = 0usize;
    let mut offset = 0u64; // byte offset of buf[0] in the file
    let mut chars = 0u64;
    let bad = |at: u64| {
        data_err(
            path,
            format!(
                "is not valid UTF-8 at byte offset {at}; --vocab chars reads UTF-8 text, \
                 use --vocab bytes for any other file"
            ),
        )
    };
    loop {
        let n = read_some(path, &mut r, &mut buf[carry..carry + buf_size])?;
        if n == 0 {
            if carry > 0 {
                return Err(bad(offset));
            }
            return Ok(chars);
        }
        let len = carry + n;
        let (good, invalid) = match std::str::from_utf8(&buf[..len]) {
            Ok(_) => (len, false),
            Err(e) => (e.valid_up_to(), e.error_len().is_some()),
        };
        // The prefix up to `good` is valid UTF-8 (as `from_utf8` just said).
        let text = std::str::from_utf8(&buf[..good]).map_err(|_| bad(offset))?;
        chars += text.chars().count() as u64;
        f(text)?;
        if invalid {
            return Err(bad(offset + good as u64));
        }
        buf.copy_within(good..len, 0);
        carry = len - good;
        offset += good as u64;
    }
}

/// The characters of a chars-mode token file: token `i` is `chars()[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    chars: Vec<char>,
    /// (character, token) sorted by character, for lookups.
    sorted: Vec<(char, u32)>,
}

/// The JSON form of a vocabulary.
#[derive(Serialize, Deserialize)]
struct VocabFile {
    kind: String,
    chars: Vec<char>,
}

impl Vocab {
    /// The vocabulary of the distinct characters in `chars`, sorted by code point (as
    /// `recur data text --vocab chars` builds it).
    pub fn new(chars: impl IntoIterator<Item = char>) -> Self {
        let mut c: Vec<char> = chars.into_iter().collect();
        c.sort_unstable();
        c.dedup();
        Self::from_ordered(c)
    }

    fn from_ordered(chars: Vec<char>) -> Self {
        let mut sorted: Vec<(char, u32)> = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32))
            .collect();
        sorted.sort_unstable();
        Vocab { chars, sorted }
    }

    /// Reads a vocabulary file (`{"kind":"chars","chars":[…]}`). The characters keep
    /// the file's order (token `i` is the `i`-th); they must be distinct.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Data {
            path: path.to_path_buf(),
            msg: format!("cannot read the vocabulary: {e}"),
        })?;
        Self::from_json(&text).map_err(|m| data_err(path, m))
    }

    /// Parses a vocabulary from its JSON text (as `load` reads it from a file, and a
    /// weights file's metadata holds it under `vocabulary`); the error says what is
    /// wrong with the text, for the caller to prefix with where it came from.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let file: VocabFile = serde_json::from_str(text).map_err(|e| {
            format!("is not a vocabulary file ({{\"kind\":\"chars\",\"chars\":[…]}}): {e}")
        })?;
        if file.kind != "chars" {
            return Err(format!(
                "has vocabulary kind {:?}; recur knows \"chars\"",
                file.kind
            ));
        }
        if file.chars.len() > u32::MAX as usize {
            return Err("holds too many characters".into());
        }
        let v = Self::from_ordered(file.chars);
        if let Some(w) = v.sorted.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(format!(
                "lists character {:?} twice (tokens {} and {})",
                w[0].0,
                w[0].1.min(w[1].1),
                w[0].1.max(w[1].1)
            ));
        }
        Ok(v)
    }

    /// The vocabulary as JSON (`{"kind":"chars","chars":[…]}`), as `save` writes it.
    pub fn to_json(&self) -> String {
        let file = VocabFile {
            kind: "chars".into(),
            chars: self.chars.clone(),
        };
        // A struct of a string and characters always serializes.
        serde_json::to_string(&file).unwrap_or_default()
    }

    /// Writes the vocabulary as JSON (through a temporary file and a rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.to_json().as_bytes())
    }

    /// The token of `c`, if it is in the vocabulary.
    pub fn index(&self, c: char) -> Option<u32> {
        self.sorted
            .binary_search_by_key(&c, |&(ch, _)| ch)
            .ok()
            .map(|i| self.sorted[i].1)
    }

    /// The character of `token`.
    pub fn get(&self, token: u32) -> Option<char> {
        self.chars.get(token as usize).copied()
    }

    /// The tokens of `text`; a character outside the vocabulary is an error naming it
    /// and its position (in characters).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.chars()
            .enumerate()
            .map(|(i, c)| {
                self.index(c).ok_or_else(|| {
                    Error::spec(
                        "text",
                        format!(
                            "character {c:?} (U+{:04X}) at position {i} is not in the \
                             vocabulary of {} characters",
                            c as u32,
                            self.len()
                        ),
                    )
                })
            })
            .collect()
    }

    /// The text of `tokens`; a token outside the vocabulary becomes U+FFFD (�).
    pub fn decode(&self, tokens: &[u32]) -> String {
        tokens
            .iter()
            .map(|&t| self.get(t).unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect()
    }

    /// The characters, in token order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The number of characters (the vocabulary size a model needs).
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// True if there are no characters.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }
}

// ---------------------------------------------------------------------------------------
// CSV

/// Running mean and variance (Welford), in f64.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Welford {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Welford {
    /// Adds `x`.
    #[inline]
    pub(crate) fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Values seen.
    pub(crate) fn count(&self) -> u64 {
        self.n
    }

    /// Their mean (0 if none).
    pub(crate) fn mean(&self) -> f64 {
        self.mean
    }

    /// Their population standard deviation (ddof = 0; 0 if none).
    pub(crate) fn std(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            (self.m2 / self.n as f64).sqrt()
        }
    }
}

/// Per-column statistics of a series: values are standardized as (x − mean) / std.
/// Saved beside a series as `OUT.norm.json`:
/// `{"columns":["open","close"],"mean":[…],"std":[…]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Norm {
    /// The columns' names (header names, or their 0-based indices as strings).
    pub columns: Vec<String>,
    /// Per-column mean.
    pub mean: Vec<f64>,
    /// Per-column divisor: the population standard deviation, or 1 for a constant
    /// column.
    pub std: Vec<f64>,
    /// Remarks, e.g. which columns were constant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Norm {
    /// Reads and checks a statistics file: as many means and stds as columns, all
    /// finite, every std positive.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_text(path).map(|(n, _)| n)
    }

    /// `load`, and the file's text.
    fn load_text(path: &Path) -> Result<(Self, String)> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            data_err(
                path,
                format!("cannot read the normalization statistics: {e}"),
            )
        })?;
        let n = Self::from_json(&text).map_err(|m| data_err(path, m))?;
        Ok((n, text))
    }

    /// Parses and checks statistics from their JSON text (as `load` reads them from a
    /// file, and a weights file's metadata holds them under `norm`); the error says
    /// what is wrong with the text, for the caller to prefix with where it came from.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let n: Norm = serde_json::from_str(text).map_err(|e| {
            format!("is not a statistics file ({{\"columns\":[…],\"mean\":[…],\"std\":[…]}}): {e}")
        })?;
        n.check()?;
        Ok(n)
    }

    fn check(&self) -> Result<(), String> {
        let w = self.columns.len();
        if self.mean.len() != w || self.std.len() != w {
            return Err(format!(
                "has {w} columns but {} means and {} stds",
                self.mean.len(),
                self.std.len()
            ));
        }
        if w == 0 {
            return Err("has no columns".into());
        }
        for (i, name) in self.columns.iter().enumerate() {
            if !self.mean[i].is_finite() {
                return Err(format!("column `{name}` has a mean that is not finite"));
            }
            if !(self.std[i].is_finite() && self.std[i] > 0.0) {
                return Err(format!(
                    "column `{name}` has std {}; it must be positive and finite",
                    self.std[i]
                ));
            }
        }
        Ok(())
    }

    /// The statistics as JSON (`{"columns":[…],"mean":[…],"std":[…]}`), as `save`
    /// writes them.
    pub fn to_json(&self) -> String {
        // Strings and finite numbers always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Writes the statistics as JSON (through a temporary file and a rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.to_json().as_bytes())
    }

    /// The number of columns.
    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// Standardizes one row in place: x ← (x − mean) / std, computed in f64.
    ///
    /// # Panics
    /// If `row` does not hold `width()` values.
    pub fn apply(&self, row: &mut [f32]) {
        assert_eq!(row.len(), self.width(), "a row of the normalized width");
        for ((x, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
            *x = ((*x as f64 - m) / s) as f32;
        }
    }

    /// Undoes `apply` on one row: x ← x · std + mean, computed in f64.
    ///
    /// # Panics
    /// If `row` does not hold `width()` values.
    pub fn invert(&self, row: &mut [f32]) {
        assert_eq!(row.len(), self.width(), "a row of the normalized width");
        for ((x, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
            *x = (*x as f64 * s + m) as f32;
        }
    }
}

/// How a CSV conversion scales the values.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Scaling {
    /// As they are.
    #[default]
    Raw,
    /// Per column (x − mean) / std over the whole file; the statistics are saved as
    /// `OUT.norm.json`.
    Standardize,
    /// With the statistics of this file (e.g. the training file's), copied beside the
    /// output as `OUT.norm.json`.
    Norm(PathBuf),
}

/// Options of a CSV conversion.
#[derive(Clone, Debug, PartialEq)]
pub struct CsvOptions {
    /// The columns to keep, each a header name or a 0-based index (a header name wins
    /// over an index that reads the same). `None`: every column whose cell in the first
    /// data row is a number.
    pub columns: Option<Vec<String>>,
    /// Scaling of the values.
    pub scaling: Scaling,
    /// The field delimiter (one byte).
    pub delimiter: u8,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            columns: None,
            scaling: Scaling::Raw,
            delimiter: b',',
        }
    }
}

/// A column of a CSV file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Column {
    /// 0-based index.
    pub index: usize,
    /// Header name, or the index as a string when there is no header.
    pub name: String,
}

/// What a CSV conversion wrote.
#[derive(Clone, Debug, Serialize)]
pub struct CsvSummary {
    /// Rows written.
    pub rows: u64,
    /// True if the first record was a header.
    pub header: bool,
    /// The columns written, in output order.
    pub columns: Vec<Column>,
    /// Columns left out by the default selection (their first data cell is not a
    /// number, e.g. a date).
    pub skipped: Vec<Column>,
    /// The statistics file written beside the output (`--standardize`, `--norm`).
    pub norm_path: Option<PathBuf>,
    /// Things the user should know (constant columns, column names that differ from
    /// the statistics', a stale file beside the output).
    pub notes: Vec<String>,
}

/// Why a cell is not a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bad {
    Empty,
    NotNumber,
    NotFinite,
    TooLarge,
}

/// A cell as a float32: the trimmed text parsed as f64, then rounded to f32.
fn parse_cell(cell: &[u8]) -> Result<f32, Bad> {
    let t = cell.trim_ascii();
    if t.is_empty() {
        return Err(Bad::Empty);
    }
    let x: f64 = std::str::from_utf8(t)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Bad::NotNumber)?;
    if !x.is_finite() {
        return Err(Bad::NotFinite);
    }
    let y = x as f32;
    if !y.is_finite() {
        return Err(Bad::TooLarge);
    }
    Ok(y)
}

/// True if the text of `cell` is a number (finite or not).
fn is_number(cell: &[u8]) -> bool {
    matches!(
        parse_cell(cell),
        Ok(_) | Err(Bad::NotFinite | Bad::TooLarge)
    )
}

/// The first record is a header if one of its non-empty cells is not a number (an
/// empty cell decides nothing: it may be a header's unnamed index column or a missing
/// value).
fn is_header(rec: &csv::ByteRecord) -> bool {
    rec.iter()
        .any(|c| !c.trim_ascii().is_empty() && !is_number(c))
}

/// The selected column indices: `wanted` resolved against the header (names first, then
/// 0-based indices), or by default every column whose cell in `first` (the first data
/// row) is a number. Returns (selected, skipped by default).
fn select_columns(
    header: Option<&[String]>,
    first: &csv::ByteRecord,
    wanted: Option<&[String]>,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let width = first.len();
    let Some(wanted) = wanted else {
        let (sel, skip): (Vec<usize>, Vec<usize>) =
            (0..width).partition(|&i| first.get(i).is_some_and(is_number));
        return Ok((sel, skip));
    };
    if wanted.is_empty() {
        return Err(Error::spec("--columns", "names no column"));
    }
    let mut sel = Vec::with_capacity(wanted.len());
    for w in wanted {
        let w = w.trim();
        if w.is_empty() {
            return Err(Error::spec(
                "--columns",
                format!("has an empty entry in `{}`", wanted.join(",")),
            ));
        }
        if let Some(i) = header.and_then(|h| h.iter().position(|n| n == w)) {
            sel.push(i);
            continue;
        }
        if let Ok(i) = w.parse::<usize>() {
            if i >= width {
                return Err(Error::spec(
                    "--columns",
                    format!(
                        "column {i} is out of range: the file has {width} columns (0 to {})",
                        width.saturating_sub(1)
                    ),
                ));
            }
            sel.push(i);
            continue;
        }
        return Err(Error::spec(
            "--columns",
            match header {
                Some(h) => format!(
                    "no column `{w}`; the header has: {} (or give 0-based indices)",
                    h.iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => format!(
                    "no column `{w}`: the file has no header row, so name columns by their \
                     0-based index (0 to {})",
                    width.saturating_sub(1)
                ),
            },
        ));
    }
    Ok((sel, Vec::new()))
}

/// How errors name a column: "column `close` (3)", or "column 3" without a header.
fn col_label(header: Option<&[String]>, i: usize) -> String {
    match header.and_then(|h| h.get(i)) {
        Some(n) => format!("column `{n}` ({i})"),
        None => format!("column {i}"),
    }
}

fn cell_err(path: &Path, line: u64, col: &str, cell: &[u8], why: Bad) -> Error {
    let mut text = String::from_utf8_lossy(cell.trim_ascii()).into_owned();
    if text.chars().count() > 40 {
        text = text.chars().take(40).collect::<String>() + "…";
    }
    let msg = match why {
        Bad::Empty => format!("line {line}, {col} is empty; every selected cell needs a number"),
        Bad::NotNumber => format!("line {line}, {col}: {text:?} is not a number"),
        Bad::NotFinite => format!("line {line}, {col}: {text:?} is not a finite number"),
        Bad::TooLarge => format!("line {line}, {col}: {text:?} does not fit in a float32"),
    };
    data_err(path, msg)
}

/// True if the file's first line ends in CRLF (read from its first 64 KiB).
fn ends_in_crlf(path: &Path) -> bool {
    use std::io::Read;
    let mut head = Vec::new();
    let _ = std::fs::File::open(path).and_then(|f| f.take(64 << 10).read_to_end(&mut head));
    head.iter()
        .position(|&b| b == b'\n')
        .is_some_and(|i| i > 0 && head[i - 1] == b'\r')
}

/// The line (1-based, as an editor shows it) a record starts on. The csv reader counts
/// a CRLF file's lines one short after the first record (it starts the next record at
/// the `\n` of the terminator), so those get one back.
fn line_of(pos: Option<&csv::Position>, crlf: bool) -> u64 {
    pos.map_or(0, |p| p.line() + u64::from(crlf && p.byte() > 0))
}

fn csv_err(path: &Path, e: csv::Error, crlf: bool) -> Error {
    let msg = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => format!(
            "line {}: {len} fields, but the first row has {expected_len}",
            line_of(pos.as_ref(), crlf)
        ),
        csv::ErrorKind::Io(io) => format!("cannot read: {io}"),
        _ => format!("cannot parse as CSV: {e}"),
    };
    data_err(path, msg)
}

/// Opens `path` for the CSV reader, without the UTF-8 byte-order mark some programs
/// put first.
fn open_csv(path: &Path) -> Result<impl Read> {
    let mut f = open_input(path)?;
    let mut head = [0u8; 3];
    let mut n = 0;
    while n < 3 {
        let k = read_some(path, &mut f, &mut head[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    let skip = if head[..n] == [0xEF, 0xBB, 0xBF] {
        3
    } else {
        0
    };
    Ok(std::io::Cursor::new(head[skip..n].to_vec()).chain(f))
}

/// The csv crate's read buffer.
const CSV_BUF: usize = 64 << 10;

/// Converts the CSV file `input` into a 2-D float32 `.npy` [rows, columns] at `out`.
///
/// The first record is a header if one of its non-empty cells is not a number. Cells
/// are trimmed and parsed as f64, then rounded to f32; an empty, non-numeric or
/// non-finite cell in a selected column is an error naming its line (1-based) and
/// column. All records must have the same number of fields. With
/// [`Scaling::Standardize`] the values are written raw while per-column mean and std
/// are accumulated (Welford, f64), then rewritten in place as (x − mean) / std, and the
/// statistics are saved as [`norm_path`]`(out)`; with [`Scaling::Norm`] the given
/// statistics are applied as rows are written and the file is copied there.
///
/// Memory: one record (the longest line), the csv reader's 64 KiB buffer, the `.npy`
/// writer's 64 KiB, a 1 MiB chunk for the in-place pass of `Standardize`, and per
/// selected column a parsed value and 24 bytes of statistics — whatever the number of
/// rows.
pub fn csv_to_npy(input: &Path, out: &Path, opts: &CsvOptions) -> Result<CsvSummary> {
    csv_to_npy_with(input, out, opts, CHUNK)
}

fn csv_to_npy_with(
    input: &Path,
    out: &Path,
    opts: &CsvOptions,
    chunk: usize,
) -> Result<CsvSummary> {
    check_out(out)?;
    let mut given = match &opts.scaling {
        Scaling::Norm(p) => {
            let (n, text) = Norm::load_text(p)?;
            Some((p.clone(), n, text))
        }
        _ => None,
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(false)
        .delimiter(opts.delimiter)
        .buffer_capacity(CSV_BUF)
        .from_reader(open_csv(input)?);
    let crlf = ends_in_crlf(input);
    let err = |e| csv_err(input, e, crlf);
    let mut rec = csv::ByteRecord::new();
    if !rdr.read_byte_record(&mut rec).map_err(err)? {
        return Err(data_err(input, "is empty: no rows"));
    }
    let header: Option<Vec<String>> = is_header(&rec).then(|| {
        rec.iter()
            .map(|c| String::from_utf8_lossy(c.trim_ascii()).into_owned())
            .collect()
    });
    if header.is_some() && !rdr.read_byte_record(&mut rec).map_err(err)? {
        return Err(data_err(input, "has a header row but no data rows"));
    }
    let h = header.as_deref();
    let (sel, skip) = select_columns(h, &rec, opts.columns.as_deref())?;
    if sel.is_empty() {
        let line = line_of(rec.position(), crlf);
        // One field holding another common delimiter: the file is split on that one.
        let other = (rec.len() == 1)
            .then(|| [b';', b'\t', b'|', b','].into_iter())
            .into_iter()
            .flatten()
            .find(|&d| d != opts.delimiter && rec[0].contains(&d));
        let fix = match other {
            Some(b'\t') => "the cells are split by tabs: --delimiter tab".to_string(),
            Some(d) => format!(
                "the cells are split by '{}': --delimiter '{}'",
                d as char, d as char
            ),
            None => "choose columns with --columns".to_string(),
        };
        return Err(data_err(
            input,
            format!("no cell of the first data row (line {line}) is a number; {fix}"),
        ));
    }
    let column = |i: usize| Column {
        index: i,
        name: h
            .and_then(|h| h.get(i).cloned())
            .unwrap_or_else(|| i.to_string()),
    };
    let columns: Vec<Column> = sel.iter().map(|&i| column(i)).collect();
    let labels: Vec<String> = sel.iter().map(|&i| col_label(h, i)).collect();
    let mut notes = Vec::new();
    if let Some((p, n, text)) = &mut given {
        if n.width() != sel.len() {
            return Err(data_err(
                p,
                format!(
                    "holds statistics of {} columns ({}), but {} columns are selected ({})",
                    n.width(),
                    n.columns.join(", "),
                    sel.len(),
                    columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        let mut sorted_theirs: Vec<&str> = n.columns.iter().map(String::as_str).collect();
        let mut sorted_ours = names.clone();
        sorted_theirs.sort_unstable();
        sorted_ours.sort_unstable();
        if n.columns != names && h.is_some() && sorted_theirs == sorted_ours {
            // The same columns in another order: the statistics follow the names.
            let at = |c: &str| n.columns.iter().position(|x| x == c).unwrap_or(0);
            let order: Vec<usize> = names.iter().map(|c| at(c)).collect();
            let mut notes_kept = std::mem::take(&mut n.notes);
            *n = Norm {
                columns: order.iter().map(|&i| n.columns[i].clone()).collect(),
                mean: order.iter().map(|&i| n.mean[i]).collect(),
                std: order.iter().map(|&i| n.std[i]).collect(),
                notes: std::mem::take(&mut notes_kept),
            };
            *text = n.to_json();
            notes.push(format!(
                "the statistics in {} follow the columns by name (in the order {})",
                p.display(),
                names.join(", ")
            ));
        } else if n.columns != names && h.is_some() {
            return Err(data_err(
                p,
                format!(
                    "holds statistics of columns {}, but the selected columns are {}; select \
                     the same columns (--columns), or standardize anew",
                    n.columns.join(", "),
                    names.join(", ")
                ),
            ));
        } else if n.columns != names {
            notes.push(format!(
                "the statistics in {} are of columns {} and are applied to columns {}, in \
                 that order",
                p.display(),
                n.columns.join(", "),
                names.join(", ")
            ));
        }
    }
    let npath = norm_path(out);
    if opts.scaling == Scaling::Raw {
        notes.extend(stale_note(&npath, "these values are not standardized"));
    }
    let width = sel.len();
    let (mut w, stats) = with_writer(out, Dtype::F32, Some(width), |w| {
        let mut row = vec![0f32; width];
        let mut stats = vec![Welford::default(); width];
        loop {
            let line = line_of(rec.position(), crlf);
            for (k, &c) in sel.iter().enumerate() {
                let cell = rec.get(c).unwrap_or_default();
                row[k] =
                    parse_cell(cell).map_err(|b| cell_err(input, line, &labels[k], cell, b))?;
            }
            match &given {
                Some((p, n, _)) => {
                    n.apply(&mut row);
                    if let Some(k) = row.iter().position(|x| !x.is_finite()) {
                        return Err(data_err(
                            p,
                            format!(
                                "standardizes the value at line {line}, {} of {} beyond \
                                 float32's range",
                                labels[k],
                                input.display()
                            ),
                        ));
                    }
                }
                None => {
                    if opts.scaling == Scaling::Standardize {
                        for (s, &x) in stats.iter_mut().zip(&row) {
                            s.push(x as f64);
                        }
                    }
                }
            }
            w.write_f32(&row)?;
            if !rdr.read_byte_record(&mut rec).map_err(err)? {
                break;
            }
        }
        Ok(stats)
    })?;
    let rows = w.rows();
    let json = match (&opts.scaling, &given) {
        (Scaling::Raw, _) => Ok(None),
        (_, Some((_, _, text))) => Ok(Some(text.clone())),
        (_, None) => standardize(&mut w, &columns, &stats, chunk).map(|n| {
            notes.extend(n.notes.iter().cloned());
            Some(n.to_json())
        }),
    };
    let beside = match json.and_then(|j| j.map(|j| write_tmp(&npath, j.as_bytes())).transpose()) {
        Ok(t) => t.map(|t| (t, npath.clone())),
        Err(e) => {
            w.abandon();
            return Err(e);
        }
    };
    commit(w, beside.as_slice())?;
    Ok(CsvSummary {
        rows,
        header: header.is_some(),
        columns,
        skipped: skip.into_iter().map(column).collect(),
        norm_path: beside.map(|(_, p)| p),
        notes,
    })
}

/// The statistics of `stats` (a constant column gets std 1 and a note), applied in
/// place to the rows `w` has written.
fn standardize(
    w: &mut NpyWriter,
    columns: &[Column],
    stats: &[Welford],
    chunk: usize,
) -> Result<Norm> {
    let mut n = Norm {
        columns: columns.iter().map(|c| c.name.clone()).collect(),
        mean: stats.iter().map(Welford::mean).collect(),
        std: stats.iter().map(Welford::std).collect(),
        notes: Vec::new(),
    };
    for (k, s) in n.std.iter_mut().enumerate() {
        if *s == 0.0 {
            *s = 1.0;
            n.notes.push(format!(
                "column `{}` is constant (std 0): it is divided by 1",
                n.columns[k]
            ));
        }
    }
    w.flush()?;
    rewrite(w.tmp_path(), w.data_offset(), &n, w.rows(), chunk)?;
    Ok(n)
}

/// Standardizes the `rows` rows of f32 that start at byte `offset` of `path` in
/// place, `chunk` bytes (whole rows) at a time.
fn rewrite(path: &Path, offset: u64, norm: &Norm, rows: u64, chunk: usize) -> Result<()> {
    let io = |e| Error::io(path, e);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let row_bytes = norm.width() * 4;
    let per = (chunk / row_bytes).max(1);
    let mut buf = vec![0u8; per * row_bytes];
    let mut row = vec![0f32; norm.width()];
    let mut pos = offset;
    let mut left = rows;
    while left > 0 {
        let n = (left.min(per as u64)) as usize;
        let bytes = &mut buf[..n * row_bytes];
        f.seek(SeekFrom::Start(pos)).map_err(io)?;
        f.read_exact(bytes).map_err(io)?;
        for r in bytes.chunks_exact_mut(row_bytes) {
            for (x, b) in row.iter_mut().zip(r.chunks_exact(4)) {
                *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            norm.apply(&mut row);
            for (x, b) in row.iter().zip(r.chunks_exact_mut(4)) {
                b.copy_from_slice(&x.to_le_bytes());
            }
        }
        f.seek(SeekFrom::Start(pos)).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        pos += bytes.len() as u64;
        left -= n as u64;
    }
    f.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::npy::Npy;

    fn rec(cells: &[&str]) -> csv::ByteRecord {
        csv::ByteRecord::from(cells.to_vec())
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    /// Reads a whole `.npy` of f32 back as rows.
    fn read_rows(p: &Path) -> (Vec<usize>, Vec<f32>) {
        let a = Npy::open(p).unwrap();
        let v = a
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (a.shape().to_vec(), v)
    }

    #[test]
    fn utf8_split_across_reads_is_carried_over() {
        let text = "héllo wörld — ñ 😀 ok ✓";
        for size in 1..=9 {
            let mut got = String::new();
            let n = scan_utf8(Path::new("t"), text.as_bytes(), size, |s| {
                got.push_str(s);
                Ok(())
            })
            .unwrap();
            assert_eq!(got, text, "buffer of {size} bytes");
            assert_eq!(n, text.chars().count() as u64);
        }
    }

    #[test]
    fn invalid_utf8_names_its_offset_whatever_the_buffer() {
        // (bytes, offset of the first bad byte)
        let cases: [(&[u8], u64); 4] = [
            (b"ab\xffcd", 2),
            (b"a\xc3\x41bc", 1), // a lead byte followed by ASCII
            (b"xy\xe2\x80", 2),  // cut off by the end of the file
            ("h\u{e9}llo\u{2014}".as_bytes(), u64::MAX), // valid
        ];
        for (bytes, at) in cases {
            for size in 1..=6 {
                let r = scan_utf8(Path::new("t.txt"), bytes, size, |_| Ok(()));
                if at == u64::MAX {
                    assert!(r.is_ok(), "{bytes:?} / {size}");
                    continue;
                }
                let e = r.unwrap_err().to_string();
                assert!(
                    e.contains(&format!("byte offset {at};")) && e.contains("--vocab bytes"),
                    "{bytes:?} with {size}-byte reads: {e}"
                );
            }
        }
    }

    #[test]
    fn chars_conversion_with_tiny_reads_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let text = "héllo wörld — ñ\nzebra ÿ 😀\n";
        std::fs::write(d.path().join("in.txt"), text).unwrap();
        let out = d.path().join("c.npy");
        for size in [1, 2, 3, 5, 1 << 20] {
            let s = text_to_npy_with(&d.path().join("in.txt"), &out, TextVocab::Chars, size, None)
                .unwrap();
            let v = Vocab::load(&vocab_path(&out)).unwrap();
            let mut want: Vec<char> = text.chars().collect();
            want.sort();
            want.dedup();
            assert_eq!(v.chars(), &want[..]);
            assert_eq!(s.vocab, Some(want.len()));
            assert_eq!(s.tokens, text.chars().count() as u64);
            let a = Npy::open(&out).unwrap();
            assert_eq!(a.dtype(), Dtype::U8);
            let toks: Vec<u32> = (0..a.elems()).map(|i| a.get_i64(i) as u32).collect();
            assert_eq!(v.decode(&toks), text);
            assert_eq!(v.encode(text).unwrap(), toks);
        }
    }

    #[test]
    fn a_large_vocabulary_takes_a_wider_type() {
        let d = tempfile::tempdir().unwrap();
        let text: String = (0x4E00u32..0x4E00 + 300)
            .filter_map(char::from_u32)
            .collect();
        std::fs::write(d.path().join("in.txt"), &text).unwrap();
        let out = d.path().join("c.npy");
        let s = text_to_npy(&d.path().join("in.txt"), &out, TextVocab::Chars).unwrap();
        assert_eq!(s.dtype, Dtype::U16);
        let a = Npy::open(&out).unwrap();
        assert_eq!(a.dtype(), Dtype::U16);
        assert_eq!(a.get_i64(299), 299);
    }

    #[test]
    fn vocab_encodes_decodes_and_refuses_unknown_characters() {
        let v = Vocab::new("banana ñ".chars());
        assert_eq!(v.chars(), &[' ', 'a', 'b', 'n', 'ñ']);
        assert_eq!(v.encode("ban ñ").unwrap(), vec![2, 1, 3, 0, 4]);
        assert_eq!(v.decode(&[2, 1, 9]), "ba\u{FFFD}");
        let e = v.encode("baz").unwrap_err().to_string();
        assert!(e.contains("'z'") && e.contains("position 2"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("v.json");
        v.save(&p).unwrap();
        assert_eq!(Vocab::load(&p).unwrap(), v);
        let j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(j["kind"], "chars");
        assert_eq!(j["chars"][4], "ñ");
        // A file's own order is kept; a repeated character is refused.
        std::fs::write(&p, r#"{"kind":"chars","chars":["z","a"]}"#).unwrap();
        let u = Vocab::load(&p).unwrap();
        assert_eq!(u.encode("az").unwrap(), vec![1, 0]);
        std::fs::write(&p, r#"{"kind":"chars","chars":["a","b","a"]}"#).unwrap();
        let e = Vocab::load(&p).unwrap_err().to_string();
        assert!(e.contains("twice") && e.contains("tokens 0 and 2"), "{e}");
        std::fs::write(&p, r#"{"kind":"words","chars":[]}"#).unwrap();
        assert!(Vocab::load(&p).unwrap_err().to_string().contains("words"));
    }

    #[test]
    fn side_files_replace_the_npy_extension_only() {
        assert_eq!(
            vocab_path(Path::new("d/corpus.npy")),
            Path::new("d/corpus.vocab.json")
        );
        assert_eq!(norm_path(Path::new("x.npy")), Path::new("x.norm.json"));
        assert_eq!(norm_path(Path::new("x.v2")), Path::new("x.v2.norm.json"));
        assert_eq!(
            vocab_path(Path::new("tokens")),
            Path::new("tokens.vocab.json")
        );
    }

    #[test]
    fn cells_parse_as_finite_float32() {
        assert_eq!(parse_cell(b"1e-3"), Ok(1e-3));
        assert_eq!(parse_cell(b" -2 "), Ok(-2.0));
        assert_eq!(parse_cell(b"3.5"), Ok(3.5));
        assert_eq!(parse_cell(b"+.25"), Ok(0.25));
        assert_eq!(parse_cell(b""), Err(Bad::Empty));
        assert_eq!(parse_cell(b"  "), Err(Bad::Empty));
        assert_eq!(parse_cell(b"n/a"), Err(Bad::NotNumber));
        assert_eq!(parse_cell(b"1,5"), Err(Bad::NotNumber));
        assert_eq!(parse_cell(b"\xff"), Err(Bad::NotNumber));
        assert_eq!(parse_cell(b"nan"), Err(Bad::NotFinite));
        assert_eq!(parse_cell(b"-inf"), Err(Bad::NotFinite));
        assert_eq!(parse_cell(b"1e39"), Err(Bad::TooLarge));
    }

    #[test]
    fn header_is_a_first_row_with_a_non_number() {
        assert!(is_header(&rec(&["date", "open", "close"])));
        assert!(is_header(&rec(&["", "a", "b"]))); // an unnamed index column
        assert!(is_header(&rec(&["2024-01-02", "1.5"])));
        assert!(!is_header(&rec(&["1", "2.5", "-3e2"])));
        assert!(!is_header(&rec(&["1", "", "3"]))); // a missing value
        assert!(!is_header(&rec(&["nan", "inf"]))); // numbers, if not finite ones
    }

    #[test]
    fn columns_resolve_by_name_then_index() {
        let h = names(&["date", "open", "close", "2"]);
        let first = rec(&["2024-01-02", "1.5", "1.7", "9"]);
        let pick = |w: &[&str]| select_columns(Some(&h), &first, Some(&names(w)));
        assert_eq!(pick(&["close", "open"]).unwrap().0, vec![2, 1]);
        assert_eq!(pick(&["1", "close"]).unwrap().0, vec![1, 2]);
        // The header name "2" is column 3, not index 2.
        assert_eq!(pick(&["2"]).unwrap().0, vec![3]);
        let e = pick(&["volume"]).unwrap_err().to_string();
        assert!(e.starts_with("--columns:"), "{e}");
        assert!(
            e.contains("`volume`") && e.contains("`date`, `open`, `close`, `2`"),
            "{e}"
        );
        let e = pick(&["4"]).unwrap_err().to_string();
        assert!(e.contains("out of range") && e.contains("4 columns"), "{e}");
        let e = pick(&["open", " "]).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        // Default: the numeric cells of the first data row.
        let (sel, skip) = select_columns(Some(&h), &first, None).unwrap();
        assert_eq!((sel, skip), (vec![1, 2, 3], vec![0]));
        // Without a header, names cannot be resolved.
        let e = select_columns(None, &first, Some(&names(&["open"])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no header") && e.contains("0 to 3"), "{e}");
    }

    #[test]
    fn welford_matches_a_two_pass_computation() {
        // Values with a large common offset, where a one-pass sum of squares loses
        // everything.
        let mut x = 0x2545F491u64;
        let vals: Vec<f64> = (0..10_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                1e8 + (x % 10_000) as f64 / 100.0
            })
            .collect();
        let n = vals.len() as f64;
        let mean = vals.iter().sum::<f64>() / n;
        let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let mut w = Welford::default();
        vals.iter().for_each(|&v| w.push(v));
        assert_eq!(w.count(), vals.len() as u64);
        assert!(
            (w.mean() - mean).abs() <= 1e-12 * mean,
            "{} {mean}",
            w.mean()
        );
        assert!(
            (w.std() - var.sqrt()).abs() <= 1e-6 * var.sqrt(),
            "{} {}",
            w.std(),
            var.sqrt()
        );
        assert!(var.sqrt() > 20.0, "the test's values spread");
    }

    /// Statistics read back from their JSON are the same f64s, to the last bit (a
    /// model's metadata and the data's norm.json are compared for equality).
    #[test]
    fn norm_json_round_trips_exactly() {
        let text = r#"{"columns":["a","b"],"mean":[50.01120826466881,999.6270696614581],"std":[3.5407814523580403,56.48294119933505]}"#;
        let n = Norm::from_json(text).unwrap();
        assert_eq!(n.mean, [50.01120826466881, 999.6270696614581]);
        assert_eq!(Norm::from_json(&n.to_json()).unwrap(), n);
        assert_eq!(n.to_json(), text);
        let v = Vocab::new("zañ\n\"".chars());
        assert_eq!(Vocab::from_json(&v.to_json()).unwrap(), v);
    }

    #[test]
    fn norm_apply_and_invert_are_inverses() {
        let n = Norm {
            columns: names(&["a", "b"]),
            mean: vec![10.0, -2.0],
            std: vec![4.0, 0.5],
            notes: vec![],
        };
        let mut r = [14.0f32, -3.0];
        n.apply(&mut r);
        assert_eq!(r, [1.0, -2.0]);
        n.invert(&mut r);
        assert_eq!(r, [14.0, -3.0]);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("n.json");
        n.save(&p).unwrap();
        assert_eq!(Norm::load(&p).unwrap(), n);
        std::fs::write(&p, r#"{"columns":["a"],"mean":[1],"std":[0]}"#).unwrap();
        assert!(Norm::load(&p).unwrap_err().to_string().contains("std 0"));
        std::fs::write(&p, r#"{"columns":["a","b"],"mean":[1],"std":[1]}"#).unwrap();
        assert!(Norm::load(&p).unwrap_err().to_string().contains("1 means"));
    }

    #[test]
    fn standardize_rewrites_in_place_chunk_by_chunk() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let mut csv = String::from("t,a,b,c\n");
        let raw: Vec<[f32; 3]> = (0..37)
            .map(|i| [i as f32 * 0.5 - 3.0, ((i * 7) % 11) as f32, 42.0])
            .collect();
        for (i, r) in raw.iter().enumerate() {
            csv += &format!("2024-01-{:02},{},{},{}\n", i % 28 + 1, r[0], r[1], r[2]);
        }
        std::fs::write(p.join("in.csv"), csv).unwrap();
        let opts = CsvOptions {
            scaling: Scaling::Standardize,
            ..Default::default()
        };
        // 12-byte chunks are one row of three columns; 100 bytes cut none evenly.
        for chunk in [1, 12, 100, CHUNK] {
            let out = p.join("s.npy");
            let s = csv_to_npy_with(&p.join("in.csv"), &out, &opts, chunk).unwrap();
            assert_eq!(s.rows, 37);
            assert_eq!(
                s.skipped,
                vec![Column {
                    index: 0,
                    name: "t".into()
                }]
            );
            let n = Norm::load(&norm_path(&out)).unwrap();
            assert_eq!(n.columns, names(&["a", "b", "c"]));
            assert_eq!(n.std[2], 1.0, "a constant column is divided by 1");
            assert!(n.notes.iter().any(|m| m.contains("`c`")), "{:?}", n.notes);
            let (shape, v) = read_rows(&out);
            assert_eq!(shape, vec![37, 3]);
            for (r, got) in raw.iter().zip(v.chunks_exact(3)) {
                let mut want = *r;
                n.apply(&mut want);
                assert_eq!(got, &want[..]);
            }
            assert!(!p.join("s.npy.tmp").exists());
        }
    }

    #[test]
    fn a_failed_conversion_leaves_nothing_behind() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("in.csv"), "a,b\n1,2\n3,x\n").unwrap();
        let out = p.join("o.npy");
        let opts = CsvOptions {
            scaling: Scaling::Standardize,
            ..Default::default()
        };
        let e = csv_to_npy(&p.join("in.csv"), &out, &opts)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3, column `b` (1): \"x\" is not a number"),
            "{e}"
        );
        let left: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("in.csv")]);
        // An earlier output is not overwritten.
        std::fs::write(&out, b"old").unwrap();
        assert!(csv_to_npy(&p.join("in.csv"), &out, &opts).is_err());
        assert_eq!(std::fs::read(&out).unwrap(), b"old");
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_header() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("in.csv"), "\u{feff}x,y\n1,2\n").unwrap();
        let opts = CsvOptions {
            columns: Some(names(&["x"])),
            ..Default::default()
        };
        let s = csv_to_npy(&p.join("in.csv"), &p.join("o.npy"), &opts).unwrap();
        assert!(s.header);
        assert_eq!(read_rows(&p.join("o.npy")).1, vec![1.0]);
        std::fs::write(p.join("n.csv"), "\u{feff}1,2\n3,4\n").unwrap();
        let s = csv_to_npy(&p.join("n.csv"), &p.join("o.npy"), &Default::default()).unwrap();
        assert!(!s.header);
        assert_eq!(read_rows(&p.join("o.npy")).1, vec![1.0, 2.0, 3.0, 4.0]);
    }
}
