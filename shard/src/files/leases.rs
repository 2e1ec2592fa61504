//! Read leases: a download holds the version it reads, so a concurrent
//! overwrite or delete cannot collect its chunks until the reader is done.
//!
//! Leases live in memory on the shard of the file key: the gateway renews
//! them while it streams, and a reader that vanishes lets its lease run out.
//! After a restart nothing is known about earlier leases, so no garbage is
//! handed out until the longest lease could have run out ([`ReadLeases::held`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Live read leases of one shard, by upload id.
pub struct ReadLeases {
    leases: Mutex<HashMap<Vec<u8>, HashMap<u64, Instant>>>,
    next_id: AtomicU64,
    started: Instant,
    max_lease: Duration,
}

impl ReadLeases {
    /// An empty table; leases are capped at `max_lease`.
    pub fn new(max_lease: Duration) -> ReadLeases {
        ReadLeases {
            leases: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            started: Instant::now(),
            max_lease,
        }
    }

    /// Takes a lease on `upload_id` for `length` (capped); returns its id.
    pub fn take(&self, upload_id: &[u8], length: Duration) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let until = Instant::now() + length.min(self.max_lease);
        let mut leases = self.lock();
        leases.entry(upload_id.to_vec()).or_default().insert(id, until);
        id
    }

    /// Extends a lease to `length` from now (capped), or ends it when `length` is zero.
    pub fn renew(&self, upload_id: &[u8], lease_id: u64, length: Duration) {
        let mut leases = self.lock();
        let Some(held) = leases.get_mut(upload_id) else { return };
        if length.is_zero() {
            held.remove(&lease_id);
        } else if let Some(until) = held.get_mut(&lease_id) {
            *until = Instant::now() + length.min(self.max_lease);
        }
        if held.is_empty() {
            leases.remove(upload_id);
        }
    }

    /// Whether some reader may still be reading `upload_id`.
    pub fn held(&self, upload_id: &[u8]) -> bool {
        let now = Instant::now();
        if now < self.started + self.max_lease {
            return true;
        }
        let mut leases = self.lock();
        let Some(held) = leases.get_mut(upload_id) else { return false };
        held.retain(|_, until| *until > now);
        if held.is_empty() {
            leases.remove(upload_id);
            return false;
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, HashMap<u64, Instant>>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_lease_holds_until_ended_or_expired() {
        let leases = ReadLeases::new(Duration::ZERO);
        assert!(!leases.held(b"v1"));
        leases.take(b"v1", Duration::from_secs(60));
        // Capped at max_lease (zero here): already expired.
        assert!(!leases.held(b"v1"));

        let leases = ReadLeases {
            max_lease: Duration::from_secs(60),
            started: Instant::now() - Duration::from_secs(61),
            ..ReadLeases::new(Duration::ZERO)
        };
        let id2 = leases.take(b"v1", Duration::from_secs(60));
        assert!(leases.held(b"v1"));
        assert!(!leases.held(b"v2"));
        leases.renew(b"v1", id2 + 100, Duration::ZERO); // unknown id: no effect
        assert!(leases.held(b"v1"));
        leases.renew(b"v1", id2, Duration::ZERO);
        assert!(!leases.held(b"v1"));
    }

    #[test]
    fn test_nothing_is_released_right_after_start() {
        let leases = ReadLeases::new(Duration::from_secs(60));
        assert!(leases.held(b"never-leased"));
    }
}
