//! Chunked truncated BPTT over a stream: B batch rows walk B evenly spaced cursors, one
//! window of T steps at a time, so each row's carried state continues its own part of
//! the stream. Step t's input predicts step t + 1 (the next token, or the next row of a
//! series). When the rows reach the end of their stripes they all restart, and the
//! carried state is reset.

use super::data::{SeriesFile, TokenFile};
use crate::{Error, Result};

/// The cursor state of a stream cut into windows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Windows {
    batch: usize,
    window: usize,
    stripe: usize,
    per_pass: usize,
    next: usize,
}

impl Windows {
    /// Cursors for a stream of `steps` steps (tokens or rows). Refuses a stream too
    /// short to give every row one full window (T inputs and their T targets).
    pub fn new(steps: usize, batch: usize, window: usize, path: &std::path::Path) -> Result<Self> {
        let stripe = steps.saturating_sub(1) / batch;
        if stripe < window {
            return Err(Error::Data {
                path: path.to_path_buf(),
                msg: format!(
                    "holds {steps} steps; batch {batch} × window {window} needs at least {}",
                    batch * window + 1
                ),
            });
        }
        Ok(Windows {
            batch,
            window,
            stripe,
            per_pass: stripe / window,
            next: 0,
        })
    }

    /// Windows in one pass over the stream.
    pub fn per_pass(&self) -> usize {
        self.per_pass
    }

    /// Index of the next window (counting from the start of the run).
    pub fn position(&self) -> usize {
        self.next
    }

    /// Advances to the next window: its index within the pass, and whether it starts a
    /// new pass (the carried state must then be reset first).
    fn advance(&mut self) -> (usize, bool) {
        let k = self.next % self.per_pass;
        self.next += 1;
        (k, k == 0)
    }

    /// Fills `input` and `target` ([T, B] time-major) with the next window of tokens.
    /// Returns true if this window starts a new pass.
    pub fn fill(&mut self, data: &TokenFile, input: &mut [u32], target: &mut [u32]) -> bool {
        let (k, restart) = self.advance();
        for b in 0..self.batch {
            let start = b * self.stripe + k * self.window;
            for t in 0..self.window {
                input[t * self.batch + b] = data.get(start + t);
                target[t * self.batch + b] = data.get(start + t + 1);
            }
        }
        restart
    }

    /// Fills `input` and `target` ([T, B, N] time-major) with the next window of a
    /// series: each target row is the next input row. Each row's stripe is read at once
    /// into `stage` (`(T + 1) · N · 4` bytes). Returns true if this window starts a new
    /// pass; refuses a non-finite value.
    pub fn fill_series(
        &mut self,
        data: &SeriesFile,
        stage: &mut [u8],
        input: &mut [f32],
        target: &mut [f32],
    ) -> Result<bool> {
        let (k, restart) = self.advance();
        let n = data.width();
        for b in 0..self.batch {
            let start = b * self.stripe + k * self.window;
            data.read_rows(start, self.window + 1, stage)?;
            for t in 0..self.window {
                let at = (t * self.batch + b) * n;
                let row = |r: usize| &stage[r * n * 4..(r + 1) * n * 4];
                data.decode_row(start + t, row(t), &mut input[at..at + n])?;
                data.decode_row(start + t + 1, row(t + 1), &mut target[at..at + n])?;
            }
        }
        Ok(restart)
    }
}
