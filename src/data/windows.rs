//! Chunked truncated BPTT over a stream: B batch rows walk B evenly spaced cursors, one
//! window of T steps at a time, so each row's carried state continues its own part of
//! the stream. Step t's input predicts step t + 1 (the next token, or the next row of a
//! series). A stripe's last steps that do not fill a window make one more, shorter
//! window (its later positions count for nothing, and only the segments holding data
//! run), so every step of a stripe is trained and evaluated. When the rows reach the
//! end of their stripes they all restart, and the carried state is reset. Each row's
//! pages are handed back to the kernel once its window is read, so what stays resident
//! of the file is bounded by the window, not the file.

use super::stream::{SeriesFile, TokenFile};
use crate::{Error, Result};

/// The cursor state of a stream cut into windows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Windows {
    batch: usize,
    window: usize,
    stride: usize,
    stripe: usize,
    /// Steps of each stripe after its last full window (fewer than `stride`): the
    /// pass's last window, a shorter one, counts them.
    tail: usize,
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
        let (full, tail) = ((stripe - window) / stride + 1, (stripe - window) % stride);
        Ok(Windows {
            batch,
            window,
            stride,
            stripe,
            tail,
            per_pass: full + usize::from(tail > 0),
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

    /// Steps holding data in window `index` (counting from the start of the run, as
    /// `position` says): T, or fewer in a pass's last window when the stripes end
    /// between windows.
    pub fn steps_of(&self, index: usize) -> usize {
        let last = index % self.per_pass == self.per_pass - 1;
        match last && self.tail > 0 {
            true => self.window - self.stride + self.tail,
            false => self.window,
        }
    }

    /// Positions window `index` counts, all B rows: its last k1 steps (all T without a
    /// stride) of every row, or the stripes' last steps in a shorter window.
    pub fn counted_of(&self, index: usize) -> usize {
        (self.steps_of(index) - (self.window - self.stride)) * self.batch
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

    /// The steps of the window at `start` that the next window does not read again
    /// (all of them in a pass's shorter last window): handed back once read.
    fn read_once(&self, start: usize, steps: usize) -> std::ops::Range<usize> {
        match steps < self.window {
            true => start..start + steps,
            false => start..start + self.stride,
        }
    }

    /// Fills `input` and `target` ([T, B] time-major) with the next window of tokens
    /// (zeros after its `steps_of` steps). Returns true if this window starts a new
    /// pass.
    pub fn fill(&mut self, data: &TokenFile, input: &mut [u32], target: &mut [u32]) -> bool {
        let steps = self.steps_of(self.next);
        let (k, restart) = self.advance();
        let (bs, lo) = (self.rows.len(), self.rows.start);
        input[steps * bs..].fill(0);
        target[steps * bs..].fill(0);
        for b in self.rows.clone() {
            let start = self.start(b, k);
            let j = b - lo;
            data.each(start..start + steps + 1, |i, tok| {
                if i < steps {
                    input[i * bs + j] = tok;
                }
                if i > 0 {
                    target[(i - 1) * bs + j] = tok;
                }
            });
            data.release(self.read_once(start, steps));
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
        let steps = self.steps_of(self.next);
        let (k, restart) = self.advance();
        let (bs, n, lo) = (self.rows.len(), data.width(), self.rows.start);
        input[steps * bs * n..].fill(0.0);
        target[steps * bs * n..].fill(0.0);
        for b in self.rows.clone() {
            let start = self.start(b, k);
            for i in 0..steps {
                let at = (i * bs + b - lo) * n;
                data.read_row(start + i, &mut input[at..at + n]);
                data.read_row(start + i + 1, &mut target[at..at + n]);
            }
            data.release(self.read_once(start, steps));
        }
        restart
    }

    /// The loss mask of the next window: every position, or with a stride k1 < T only
    /// the last k1 steps of each row (the earlier ones were counted by the window
    /// before); in a shorter window, none after its `steps_of` steps.
    pub fn fill_mask(&self, mask: &mut [u8]) {
        let rows = self.rows.len();
        let skip = (self.window - self.stride) * rows;
        let end = self.steps_of(self.next) * rows;
        mask[..skip].fill(0);
        mask[skip..end].fill(1);
        mask[end..].fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over a pass, the positions the windows count (their masks, at their starts) are
    /// every step of every stripe after the first window's unmasked T − k1, each once:
    /// a stripe's tail shorter than a window is counted by a shorter last window.
    #[test]
    fn a_pass_counts_every_step_of_every_stripe_once() {
        let path = std::path::Path::new("stream");
        for (steps, batch, window, stride) in [
            (2000, 32, 32, 32),
            (2000, 32, 31, 31),
            (1025, 4, 16, 16),
            (1000, 3, 20, 7),
            (1000, 3, 20, 1),
            (97, 2, 48, 48),
            (101, 1, 10, 3),
        ] {
            let mut w = Windows::with_stride(steps, batch, window, stride, path).unwrap();
            let stripe = (steps - 1) / batch;
            let mut seen = vec![0u32; batch * stripe];
            let mut mask = vec![0u8; window * batch];
            for index in 0..w.per_pass() {
                w.fill_mask(&mut mask);
                let counted = mask.iter().filter(|&&m| m == 1).count();
                assert_eq!(counted, w.counted_of(index));
                let n = w.steps_of(index);
                assert!(
                    mask[n * batch..].iter().all(|&m| m == 0),
                    "nothing after the data"
                );
                let (k, restart) = w.advance();
                assert_eq!(restart, index == 0);
                for b in 0..batch {
                    for i in 0..window {
                        if mask[i * batch + b] == 1 {
                            seen[w.start(b, k) + i] += 1;
                        }
                    }
                }
            }
            assert!(w.pass_ended());
            for b in 0..batch {
                let row = &seen[b * stripe..(b + 1) * stripe];
                let warm = window - stride.clamp(1, window);
                assert!(row[..warm].iter().all(|&c| c == 0));
                assert!(
                    row[warm..].iter().all(|&c| c == 1),
                    "{steps} {batch} {window} {stride}: stripe {b} {row:?}"
                );
            }
        }
    }
}
