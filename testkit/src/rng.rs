//! The tests' one seeded generator, and the run's seed.
//!
//! A test draws its random choices from an [`Rng`] built from [`seed`]: the test's own
//! constant unless `DAXFS_TEST_SEED` says otherwise, printed either way so that a failure
//! names the value that replays it.
//!
//! Three algorithms, because the tests that grew them assert figures (crash states
//! explored, images reaching `load`) measured on their exact sequences: [`Rng::new`] is
//! xorshift64 (shifts 13, 7, 17; the output is the state), [`Rng::xorshift64_star`] the
//! multiplied variant (12, 25, 27), [`Rng::splitmix64`] splitmix64. Every method is
//! shared; only the step differs. A new test takes [`Rng::new`].

/// Which step the generator takes.
#[derive(Clone, Copy, Debug)]
enum Algo {
    XorShift64,
    XorShift64Star,
    SplitMix64,
}

/// A deterministic generator: the same seed gives the same sequence on every run.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
    algo: Algo,
}

/// A xorshift state must never be 0 (it would stay 0): seed 0 starts here instead.
const NONZERO: u64 = 0x9e37_79b9_7f4a_7c15;

impl Rng {
    /// xorshift64 (13, 7, 17) from `seed` (0 is replaced by a fixed non-zero state).
    pub fn new(seed: u64) -> Rng {
        Rng {
            state: if seed == 0 { NONZERO } else { seed },
            algo: Algo::XorShift64,
        }
    }

    /// xorshift64* (12, 25, 27, times 0x2545f4914f6cdd1d) from `seed` (0 as in [`Rng::new`]).
    pub fn xorshift64_star(seed: u64) -> Rng {
        Rng {
            algo: Algo::XorShift64Star,
            ..Rng::new(seed)
        }
    }

    /// splitmix64 from `seed` (any value).
    pub fn splitmix64(seed: u64) -> Rng {
        Rng {
            state: seed,
            algo: Algo::SplitMix64,
        }
    }

    /// The whole state: the same constructor given it continues the sequence from here,
    /// so a test can name the seed that replays one iteration.
    pub fn state(&self) -> u64 {
        self.state
    }

    pub fn next_u64(&mut self) -> u64 {
        match self.algo {
            Algo::XorShift64 => {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                self.state
            }
            Algo::XorShift64Star => {
                self.state ^= self.state >> 12;
                self.state ^= self.state << 25;
                self.state ^= self.state >> 27;
                self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
            }
            Algo::SplitMix64 => {
                self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = self.state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            }
        }
    }

    /// A value in `0..n`; 0 without a draw when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// A value in `r` (`r.start` without a draw when `r` is empty).
    pub fn range(&mut self, r: std::ops::Range<u64>) -> u64 {
        r.start + self.below(r.end.saturating_sub(r.start))
    }

    /// An element of `v` (None when it is empty).
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        if v.is_empty() {
            None
        } else {
            v.get(self.below(v.len() as u64) as usize)
        }
    }

    /// True `percent` times in 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Fills `buf`, one draw per byte (its low byte).
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }
}

impl crate::hostile::Entropy for Rng {
    fn next_u64(&mut self) -> u64 {
        Rng::next_u64(self)
    }
    fn below(&mut self, n: u64) -> u64 {
        Rng::below(self, n)
    }
}

/// The variable that overrides every test's seed.
pub const SEED_VAR: &str = "DAXFS_TEST_SEED";

/// The seed of this test: `DAXFS_TEST_SEED` (decimal or 0x-hex) if set, else `default`.
/// Printed (the harness shows it when the test fails) with how to replay it.
pub fn seed(default: u64) -> u64 {
    let s = match std::env::var(SEED_VAR) {
        Ok(v) => parse_seed(&v).unwrap_or_else(|| panic!("{SEED_VAR}={v:?} is not a number")),
        Err(_) => default,
    };
    eprintln!("seed {s:#x} ({SEED_VAR}={s:#x} replays it)");
    s
}

/// A seed as `seed` prints it (0x-hex) or in decimal.
pub fn parse_seed(v: &str) -> Option<u64> {
    let v = v.trim();
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16).ok(),
        None => v.replace('_', "").parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift64_is_the_sequence_the_tests_were_written_against() {
        // The first outputs of the copies this replaced, computed by hand-written steps.
        let mut x = 1u64;
        let mut r = Rng::new(1);
        for _ in 0..100 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            assert_eq!(r.next_u64(), x);
        }
    }

    #[test]
    fn splitmix64_is_the_published_sequence() {
        // splitmix64's first output from state 0 (Vigna's reference implementation).
        assert_eq!(Rng::splitmix64(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn the_state_continues_the_sequence() {
        for mut r in [Rng::new(5), Rng::xorshift64_star(5), Rng::splitmix64(5)] {
            r.next_u64();
            let mut again = match r.algo {
                Algo::XorShift64 => Rng::new(r.state()),
                Algo::XorShift64Star => Rng::xorshift64_star(r.state()),
                Algo::SplitMix64 => Rng::splitmix64(r.state()),
            };
            assert_eq!(again.next_u64(), r.next_u64());
        }
    }

    #[test]
    fn below_zero_draws_nothing() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.below(0), 0);
        assert_eq!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn a_printed_seed_parses_back() {
        assert_eq!(parse_seed("0x5eed_da7f"), Some(0x5eed_da7f));
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed("x"), None);
    }
}
