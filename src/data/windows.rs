//! Chunked truncated BPTT over a stream: B batch rows walk B evenly spaced cursors, one
//! window of T steps at a time, so each row's carried state continues its own part of
//! the stream. Step t's input predicts step t + 1 (the next token, or the next row of a
//! series). When the rows reach the end of their stripes they all restart, and the
//! carried state is reset. Each row's pages are handed back to the kernel once its
//! window is read, so what stays resident of the file is bounded by the window, not the
//! file.

use super::stream::{SeriesFile, TokenFile};
use crate::{Error, Result};

/// The cursor state of a stream cut into windows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Windows {
    batch: usize,
    window: usize,
    stride: usize,
    stripe: usize,
    per_pass: usize,
    next: usize,
    /// The rows this process fills (all B, or a data-parallel rank's share).
    rows: std::ops::Range<usize>,
}

impl Windows {
    /// Cursors for a stream of `steps` steps (tokens or rows), windows side by side.
    /// Refuses a stream too short to give every row one full window (T inputs and
    /// their T targets).
    pub fn new(steps: usize, batch: usize, window: usize, path: &std::path::Path) -> Result<Self> {
        Self::with_stride(steps, batch, window, window, path)
    }

    /// Cursors whose windows start `stride` steps apart (TBPTT(k1, k2) with k1 =
    /// `stride`, k2 = `window`).
    pub fn with_stride(
        steps: usize,
        batch: usize,
        window: usize,
        stride: usize,
        path: &std::path::Path,
    ) -> Result<Self> {
        let stripe = steps.saturating_sub(1) / batch.max(1);
        if stripe < window || window == 0 {
            return Err(Error::Data {
                path: path.to_path_buf(),
                msg: format!(
                    "holds {steps} steps; batch {batch} × window {window} needs at least {} \
                     (lower --batch or --window)",
                    batch * window + 1
                ),
            });
        }
        let stride = stride.clamp(1, window);
        Ok(Windows {
            batch,
            window,
            stride,
            stripe,
            per_pass: (stripe - window) / stride + 1,
            next: 0,
            rows: 0..batch,
        })
    }

    /// Fills only rows `rows` of the B (a data-parallel rank's share, written as rows
    /// 0.. of its own batch); the cursors still walk all B, as a snapshot keeps them.
    pub fn set_rows(&mut self, rows: std::ops::Range<usize>) {
        debug_assert!(rows.end <= self.batch && !rows.is_empty());
        self.rows = rows;
    }

    /// Positions a window counts: its last k1 steps (all T without a stride) of every
    /// row.
    pub fn counted(&self) -> usize {
        self.stride * self.batch
    }

    /// The batch, B: the cursors.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Windows in one pass over the stream.
    pub fn per_pass(&self) -> usize {
        self.per_pass
    }

    /// True if the window last filled was the last of its pass.
    pub fn pass_ended(&self) -> bool {
        self.next > 0 && self.next.is_multiple_of(self.per_pass)
    }

    /// Index of the next window (counting from the start of the run).
    pub fn position(&self) -> usize {
        self.next
    }

    /// Continues at window `next` (counting from the start of the run, as `position`
    /// says): the cursors of a snapshot.
    pub fn seek(&mut self, next: usize) {
        self.next = next;
    }

    /// Advances to the next window: its index within the pass, and whether it starts a
    /// new pass (the carried state must then be reset first).
    fn advance(&mut self) -> (usize, bool) {
        let k = self.next % self.per_pass;
        self.next += 1;
        (k, k == 0)
    }

    /// First step of row `b`'s part of window `k`.
    fn start(&self, b: usize, k: usize) -> usize {
        b * self.stripe + k * self.stride
    }

    /// Fills `input` and `target` ([T, B] time-major) with the next window of tokens.
    /// Returns true if this window starts a new pass.
    pub fn fill(&mut self, data: &TokenFile, input: &mut [u32], target: &mut [u32]) -> bool {
        let (k, restart) = self.advance();
        let (bs, t, lo) = (self.rows.len(), self.window, self.rows.start);
        for b in self.rows.clone() {
            let start = self.start(b, k);
            let j = b - lo;
            data.each(start..start + t + 1, |i, tok| {
                if i < t {
                    input[i * bs + j] = tok;
                }
                if i > 0 {
                    target[(i - 1) * bs + j] = tok;
                }
            });
            data.release(start..start + self.stride);
        }
        restart
    }

    /// Fills `input` and `target` ([T, B, N] time-major) with the next window of a
    /// series: each target row is the next input row. Returns true if this window
    /// starts a new pass.
    pub fn fill_series(
        &mut self,
        data: &SeriesFile,
        input: &mut [f32],
        target: &mut [f32],
    ) -> bool {
        let (k, restart) = self.advance();
        let (bs, t, n, lo) = (self.rows.len(), self.window, data.width(), self.rows.start);
        for b in self.rows.clone() {
            let start = self.start(b, k);
            for i in 0..t {
                let at = (i * bs + b - lo) * n;
                data.read_row(start + i, &mut input[at..at + n]);
                data.read_row(start + i + 1, &mut target[at..at + n]);
            }
            data.release(start..start + self.stride);
        }
        restart
    }

    /// The loss mask of a window: every position, or with a stride k1 < T only the
    /// last k1 steps of each row (the earlier ones were counted by the window before).
    pub fn fill_mask(&self, mask: &mut [u8]) {
        let skip = (self.window - self.stride) * self.rows.len();
        mask[..skip].fill(0);
        mask[skip..].fill(1);
    }
}
