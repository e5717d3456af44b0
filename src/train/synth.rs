//! Built-in data with a long-range dependency, for `recur demo` and the tests: episodes
//! of an opening bracket (one of four kinds), a run of 3–20 filler tokens from a small
//! Markov chain, and the matching closing bracket. Predicting the closing bracket needs
//! memory of a token up to 21 steps back; a unigram model cannot do it.

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

/// Vocabulary of the bracket stream: 4 openers, 4 closers, 8 fillers.
pub const BRACKET_VOCAB: usize = 16;

/// `len` tokens of the bracket stream, from `seed`.
pub fn brackets(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Pcg64::seed_from_u64(seed);
    let mut out = Vec::with_capacity(len + 32);
    while out.len() < len {
        let kind: u8 = rng.random_range(0..4);
        out.push(kind);
        let run = rng.random_range(3..=20);
        let mut f: u8 = rng.random_range(0..8);
        for _ in 0..run {
            out.push(8 + f);
            // Fillers step forward by 1 or 2 (mod 8): a bigram pattern to learn.
            f = (f + rng.random_range(1..=2)) % 8;
        }
        out.push(4 + kind);
    }
    out.truncate(len);
    out
}

/// Entropy (nats) of the empirical unigram distribution of `tokens`: the loss of the
/// best model that ignores context.
pub fn unigram_entropy(tokens: &[u8]) -> f64 {
    let mut counts = [0u64; 256];
    for &t in tokens {
        counts[t as usize] += 1;
    }
    let n = tokens.len() as f64;
    (counts.iter().filter(|&&c| c > 0))
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closers_match_openers() {
        let s = brackets(10_000, 3);
        let mut open = None;
        for &t in &s {
            match t {
                0..=3 => open = Some(t),
                4..=7 => {
                    if let Some(o) = open {
                        assert_eq!(t, o + 4);
                    }
                    open = None;
                }
                _ => assert!(open.is_some() || t >= 8),
            }
        }
        let h = unigram_entropy(&s);
        assert!(h > 2.0 && h < (BRACKET_VOCAB as f64).ln(), "{h}");
    }
}
