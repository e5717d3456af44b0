//! `recur data`: the flags of the converters and of `info`, and what they print. The
//! work is done by `data::convert` and `data::info`.

use crate::data::convert::{self, CsvOptions, Scaling, TextVocab};
use crate::data::info::{self, Info};
use crate::io::safetensors as st;
use crate::{Error, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

/// `recur data`.
#[derive(Args, Debug)]
#[command(arg_required_else_help = false)]
pub struct DataCmd {
    /// The conversion.
    #[command(subcommand)]
    pub command: DataSub,
}

/// The subcommands of `recur data`.
#[derive(Subcommand, Debug)]
pub enum DataSub {
    /// A text file into a token .npy: one uint8 per byte, or (--vocab chars) one token
    /// per UTF-8 character with the vocabulary saved as OUT.vocab.json.
    Text(TextCmd),
    /// A CSV file into a float32 series .npy [rows, columns]; a header row is detected.
    Csv(CsvCmd),
    /// What a .npy holds: type, shape, token range, or per-column statistics.
    Info(InfoCmd),
}

/// `recur data text`.
#[derive(Args, Debug)]
pub struct TextCmd {
    /// The text file.
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// The token file to write (.npy).
    #[arg(value_name = "OUT")]
    pub out: PathBuf,
    /// Tokens: bytes (uint8: each byte's value; train with --vocab 256 to accept every
    /// byte later, else the vocabulary is the largest byte seen + 1) or chars (the
    /// file's distinct characters, sorted; saved as OUT.vocab.json).
    #[arg(long, value_enum, default_value_t = TextVocab::Bytes)]
    pub vocab: TextVocab,
    /// Encode with an existing character vocabulary (a model's vocab.json, the
    /// training file's X.vocab.json, or a model.safetensors whose metadata holds it),
    /// so held-out text gets the same tokens; implies chars.
    #[arg(long, value_name = "FILE", conflicts_with = "vocab")]
    pub vocab_from: Option<PathBuf>,
}

/// `recur data csv`.
#[derive(Args, Debug)]
pub struct CsvCmd {
    /// The CSV file.
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// The series to write (.npy, float32 [rows, columns]).
    #[arg(value_name = "OUT")]
    pub out: PathBuf,
    /// Columns to keep, in this order: header names or 0-based indices, comma-separated
    /// [every column whose first data cell is a number].
    #[arg(long, value_delimiter = ',', value_name = "COLS")]
    pub columns: Option<Vec<String>>,
    /// Standardize every column to mean 0 and std 1 over the file; the statistics are
    /// saved as OUT.norm.json.
    #[arg(long)]
    pub standardize: bool,
    /// Standardize with these statistics (e.g. the training file's OUT.norm.json); they
    /// are copied beside the output.
    #[arg(long, value_name = "FILE.json", conflicts_with = "standardize")]
    pub norm: Option<PathBuf>,
    /// Field delimiter: one ASCII character, or `tab`.
    #[arg(long, value_name = "C", default_value = ",")]
    pub delimiter: String,
}

/// `recur data info`.
#[derive(Args, Debug)]
pub struct InfoCmd {
    /// The .npy file.
    #[arg(value_name = "FILE.npy")]
    pub file: PathBuf,
    /// Print one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// Runs `recur data …`.
pub fn run(c: DataCmd) -> Result<()> {
    match c.command {
        DataSub::Text(c) => text(c),
        DataSub::Csv(c) => csv(c),
        DataSub::Info(c) => info_cmd(c),
    }
}

fn note(msg: &str) {
    eprintln!("note: {msg}");
}

fn text(c: TextCmd) -> Result<()> {
    let s = match &c.vocab_from {
        Some(v) => convert::text_to_npy_with_vocab(&c.input, &c.out, &vocab_from(v)?)?,
        None => convert::text_to_npy(&c.input, &c.out, c.vocab)?,
    };
    say!(
        "wrote {}: {} tokens ({})",
        c.out.display(),
        s.tokens,
        s.dtype
    );
    if let (Some(n), Some(p)) = (s.vocab, &s.vocab_path) {
        say!("wrote {}: {n} characters", p.display());
    }
    s.notes.iter().for_each(|n| note(n));
    Ok(())
}

/// The vocabulary `--vocab-from` names: a vocabulary file, or weights (`.safetensors`)
/// whose metadata holds one.
fn vocab_from(path: &Path) -> Result<convert::Vocab> {
    if path.extension().is_none_or(|e| e != "safetensors") {
        return convert::Vocab::load(path);
    }
    let bytes = st::read(path)?;
    let err = |msg: &str| Error::Weights {
        path: path.to_path_buf(),
        msg: msg.into(),
    };
    match st::read_meta(path, &bytes)? {
        Some(st::WeightsMeta {
            vocabulary: Some(v),
            ..
        }) => convert::Vocab::from_json(&v)
            .map_err(|e| err(&format!("metadata: key `vocabulary` {e}"))),
        Some(_) => Err(err(
            "hold no character vocabulary in their metadata: the model reads bytes or ids",
        )),
        None => Err(err(
            "have no metadata from recur; give the vocab.json kept beside them",
        )),
    }
}

fn parse_delimiter(s: &str) -> Result<u8> {
    match s {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        _ if s.len() == 1 && s.is_ascii() && s != "\"" && s != "\n" && s != "\r" => {
            Ok(s.as_bytes()[0])
        }
        _ => Err(Error::spec(
            "--delimiter",
            format!(
                "{s:?} is not a field delimiter; give one ASCII character (not a quote or \
                 line break), or `tab`"
            ),
        )),
    }
}

fn csv(c: CsvCmd) -> Result<()> {
    let opts = CsvOptions {
        columns: c.columns,
        scaling: match (c.standardize, c.norm) {
            (_, Some(p)) => Scaling::Norm(p),
            (true, None) => Scaling::Standardize,
            (false, None) => Scaling::Raw,
        },
        delimiter: parse_delimiter(&c.delimiter)?,
    };
    let s = convert::csv_to_npy(&c.input, &c.out, &opts)?;
    if !s.skipped.is_empty() {
        let names: Vec<String> = s
            .skipped
            .iter()
            .map(|col| match s.header {
                true => format!("`{}` ({})", col.name, col.index),
                false => col.index.to_string(),
            })
            .collect();
        note(&format!(
            "skipped {} column{} whose first data cell is not a number: {} (choose \
             columns with --columns)",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        ));
    }
    let names: Vec<&str> = s.columns.iter().map(|c| c.name.as_str()).collect();
    say!(
        "wrote {}: float32 [{}, {}] (columns {})",
        c.out.display(),
        s.rows,
        s.columns.len(),
        names.join(", ")
    );
    if let Some(p) = &s.norm_path {
        say!("wrote {}: per-column mean and std", p.display());
    }
    s.notes.iter().for_each(|n| note(n));
    Ok(())
}

fn info_cmd(c: InfoCmd) -> Result<()> {
    let i = info::info(&c.file)?;
    if c.json {
        let line = serde_json::to_string(&i).map_err(|e| {
            Error::io(
                &c.file,
                std::io::Error::other(format!("cannot be described as JSON: {e}")),
            )
        })?;
        say!("{line}");
    } else {
        say_raw!("{}", table(&i));
    }
    Ok(())
}

/// A number as the table shows it: six decimals, or scientific notation far from 1.
fn num(x: Option<f64>) -> String {
    match x {
        None => "-".into(),
        Some(x) if x == 0.0 || (1e-3..1e9).contains(&x.abs()) => format!("{x:.6}"),
        Some(x) => format!("{x:.6e}"),
    }
}

/// The human-readable description of `i`.
fn table(i: &Info) -> String {
    let shape: Vec<String> = i.shape.iter().map(|d| d.to_string()).collect();
    let mut rows: Vec<(&str, String)> = vec![
        ("file", i.path.clone()),
        ("dtype", i.dtype.to_string()),
        ("shape", format!("[{}]", shape.join(", "))),
    ];
    if let Some(t) = &i.tokens {
        rows.push(("count", t.count.to_string()));
        let opt = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
        rows.push(("min", opt(t.min)));
        rows.push(("max", opt(t.max)));
        if let Some(v) = t.vocab_at_least {
            rows.push(("vocab", format!("≥ {v}")));
        }
    }
    if let Some((r, w)) = i.rows_columns() {
        rows.push(("rows", r.to_string()));
        rows.push(("columns", w.to_string()));
        rows.push((
            "non-finite",
            match &i.non_finite {
                None => "none".into(),
                Some(n) => format!(
                    "{} values, the first at row {}, column {}",
                    n.count, n.row, n.column
                ),
            },
        ));
    }
    let key = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut s = String::new();
    for (k, v) in &rows {
        s += &format!("{k:<key$}  {v}\n");
    }
    if let Some(cols) = &i.columns {
        let head = ["column", "mean", "std", "min", "max"];
        let mut cells: Vec<[String; 5]> = vec![head.map(String::from)];
        for (c, st) in cols.iter().enumerate() {
            cells.push([
                c.to_string(),
                num(st.mean),
                num(st.std),
                num(st.min),
                num(st.max),
            ]);
        }
        let mut widths = [0usize; 5];
        for r in &cells {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        s.push('\n');
        for r in &cells {
            let line: Vec<String> = r
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:>w$}"))
                .collect();
            s += line.join("  ").trim_end();
            s.push('\n');
        }
    }
    s
}
