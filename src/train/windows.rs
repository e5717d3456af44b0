//! Chunked truncated BPTT over a stream: B batch rows walk B evenly spaced cursors, one
//! window of T steps at a time, so each row's carried state continues its own text.
//! When the rows reach the end of their stripes they all restart, and the carried state
//! is reset.

use super::data::TokenFile;
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
    /// Cursors for a stream of `tokens` tokens. Refuses a stream too short to give every
    /// row one full window (T inputs and their T targets).
    pub fn new(tokens: usize, batch: usize, window: usize, path: &std::path::Path) -> Result<Self> {
        let stripe = tokens.saturating_sub(1) / batch;
        if stripe < window {
            return Err(Error::Data {
                path: path.to_path_buf(),
                msg: format!(
                    "holds {tokens} tokens; batch {batch} × window {window} needs at least {}",
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

    /// Fills `input` and `target` ([T, B] time-major) with the next window. Returns true
    /// if this window starts a new pass, i.e. the carried state must be reset first.
    pub fn fill(&mut self, data: &TokenFile, input: &mut [u32], target: &mut [u32]) -> bool {
        let k = self.next % self.per_pass;
        self.next += 1;
        for b in 0..self.batch {
            let start = b * self.stripe + k * self.window;
            for t in 0..self.window {
                input[t * self.batch + b] = data.get(start + t);
                target[t * self.batch + b] = data.get(start + t + 1);
            }
        }
        k == 0
    }
}
