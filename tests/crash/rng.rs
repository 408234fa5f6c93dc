//! The harness's only source of randomness: a seeded xorshift64* generator, so that a failing
//! run's decisions (kill instants, batch sizes, commit cadence, fsync mode) can be replayed by
//! setting `BUSLINK_CRASH_SEED`.

use std::time::{SystemTime, UNIX_EPOCH};

/// The seed of this run: `BUSLINK_CRASH_SEED` (decimal, or hex with `0x`), else from the clock.
pub fn seed_from_env_or_clock() -> u64 {
    match std::env::var("BUSLINK_CRASH_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|e| {
                panic!("BUSLINK_CRASH_SEED={text:?} is not a u64 (decimal or 0x hex): {e}")
            })
        }
        Err(_) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            // Two tests started in the same nanosecond by another process still differ.
            nanos ^ u64::from(std::process::id()).rotate_left(32)
        }
    }
}

/// xorshift64* (Vigna), seeded through splitmix64 so that small or similar seeds give unrelated
/// streams and the state is never zero.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator for `seed`, on the stream named `stream` (each bus gets its own stream, so
    /// adding a decision for one bus does not change the other's).
    pub fn new(seed: u64, stream: &str) -> Rng {
        let salt = stream
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            });
        let mut z = (seed ^ salt).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng {
            state: if z == 0 { 0x2545_f491_4f6c_dd1d } else { z },
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `low..=high` (`low` when the range is empty).
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.next_u64() % (high - low + 1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    /// One of `choices` (which must not be empty).
    pub fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        assert!(!choices.is_empty(), "pick from an empty list");
        choices[(self.next_u64() % choices.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn the_same_seed_gives_the_same_stream_and_streams_differ() {
        let mut a = Rng::new(42, "sqlite");
        let mut b = Rng::new(42, "sqlite");
        let mut c = Rng::new(42, "hmb");
        let a: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let b: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let c: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn ranges_are_inclusive_and_bounded() {
        let mut rng = Rng::new(0, "");
        let draws: Vec<u64> = (0..1000).map(|_| rng.range(3, 5)).collect();
        assert!(draws.iter().all(|d| (3..=5).contains(d)));
        for value in 3..=5 {
            assert!(draws.contains(&value), "{value} drawn");
        }
        assert_eq!(rng.range(7, 7), 7);
        assert_eq!(rng.range(9, 2), 9);
    }
}
