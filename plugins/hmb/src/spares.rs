//! Buffers handed back by the consumer once it has moved a chunk's events into batches, for
//! the fetcher to read the next answers into.
//!
//! Why: an answer's buffers are megabytes (up to `recv_limit` KiB, at most about 2 MiB, plus a
//! read). Allocated fresh for every answer and freed by the other thread, each came back from
//! the kernel as new pages: one page fault (and a zeroed page) per 4 KiB written. Measured on
//! 100 000 BSON messages of ~300 bytes, that was ~6 400 page faults and twice the system time
//! of the same run with reused buffers (BENCHMARKS.md, "HMB CPU per message").
//!
//! Bounded: at most [`KEPT`] buffers of each kind are kept, none larger than [`LARGEST`]
//! bytes (or elements); the rest are freed as before.

use std::sync::Mutex;

/// Buffers kept of each kind: the chunks in flight (the channel's and the one each side holds).
pub const KEPT: usize = 4;
/// A buffer larger than this (in elements: bytes for text) is freed, not kept (after a huge
/// message, the usual answers do not need its room).
pub const LARGEST: usize = 8 << 20;

/// Spare vectors of one element type.
#[derive(Debug)]
pub struct Pool<T> {
    kept: Mutex<Vec<Vec<T>>>,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            kept: Mutex::new(Vec::new()),
        }
    }
}

impl<T> Pool<T> {
    /// An empty vector with room for at least `capacity` elements: a kept one when there is
    /// one (its memory already mapped), else a new one.
    pub fn take(&self, capacity: usize) -> Vec<T> {
        let spare = self.kept.lock().ok().and_then(|mut kept| kept.pop());
        match spare {
            Some(mut spare) => {
                spare.clear();
                spare.reserve(capacity);
                spare
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// Keeps `spare` for a later [`take`](Self::take) (emptied), unless the pool is full, the
    /// vector never allocated or is larger than [`LARGEST`].
    pub fn give(&self, mut spare: Vec<T>) {
        if spare.capacity() == 0 || spare.capacity() > LARGEST {
            return;
        }
        spare.clear();
        if let Ok(mut kept) = self.kept.lock() {
            if kept.len() < KEPT {
                kept.push(spare);
            }
        }
    }

    /// How many vectors are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.lock().map_or(0, |kept| kept.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_comes_back_empty_with_its_memory() {
        let pool = Pool::<u8>::default();
        let mut buffer = pool.take(1000);
        buffer.extend_from_slice(&[7; 1000]);
        let address = buffer.as_ptr();
        pool.give(buffer);
        assert_eq!(pool.len(), 1);
        let again = pool.take(500);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), address, "the same allocation is reused");
        assert!(again.capacity() >= 1000);
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn the_pool_is_bounded_in_count_and_size() {
        let pool = Pool::<u8>::default();
        for _ in 0..KEPT + 3 {
            pool.give(Vec::with_capacity(16));
        }
        assert_eq!(pool.len(), KEPT);
        let pool = Pool::<u8>::default();
        pool.give(Vec::with_capacity(LARGEST + 1));
        pool.give(Vec::new());
        assert_eq!(
            pool.len(),
            0,
            "a huge or never-allocated buffer is not kept"
        );
    }
}
