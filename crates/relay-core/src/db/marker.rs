//! A relay's liveness marker: a key under which every session of one relay process
//! holds a shared advisory lock, and which the relay records on each row it claims
//! (`webhook_queue.claimed_by`).
//!
//! The database already knows when a relay is gone: its sessions end, and with them
//! its advisory locks. So a row that is `sending` under a marker no session holds
//! belongs to a dead relay, and any other relay may put it back at once instead of
//! waiting for its lease to run out. The lock is *shared* and taken by every session
//! of the relay (the LISTEN connection and each pooled one), so a relay that lost one
//! connection, or whose old backend lingers on the server while a new one took over,
//! still holds it: only a relay with no session left can record nothing, and only then
//! are its rows taken back. A stalled relay (SIGSTOP, a long GC-like pause) keeps its
//! sessions, so its rows wait for the lease as before.

use std::fmt;

/// The first key of every relay marker (`pg_locks.classid`): "n8ry".
pub const MARKER_CLASS: i32 = 0x6e38_7279;

/// Takes the marker in a session: `$1` the marker. Shared, so it never waits for or
/// blocks another session; held until the session ends.
pub const HOLD_MARKER: &str = "SELECT pg_try_advisory_lock_shared(1849193081, $1::int4)";

/// One relay process's marker: a random positive `int4`, new for every start, so a
/// restarted relay never mistakes a dead predecessor's rows for its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Marker(i32);

impl Marker {
    /// A fresh random marker, positive so it reads the same as `pg_locks.objid`
    /// (an oid). Not a secret: it only has to differ between relays.
    pub fn random() -> Marker {
        Marker(fastrand::i32(1..=i32::MAX))
    }

    /// As stored in `webhook_queue.claimed_by`.
    pub fn get(self) -> i32 {
        self.0
    }

    /// Takes the marker in this session; false if it could not (another program
    /// holds the same key exclusively), which only leaves the relay's rows to the lease.
    pub async fn hold(
        self,
        client: &tokio_postgres::Client,
    ) -> Result<bool, tokio_postgres::Error> {
        let row = client.query_one(HOLD_MARKER, &[&self.0]).await?;
        row.try_get(0)
    }
}

impl fmt::Display for Marker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_positive_and_differ_between_starts() {
        let a = Marker::random();
        let b = Marker::random();
        assert!(a.get() > 0 && b.get() > 0);
        assert_ne!(a, b, "two random 31-bit markers collided");
    }

    #[test]
    fn the_hold_statement_names_the_marker_class() {
        assert!(HOLD_MARKER.contains(&MARKER_CLASS.to_string()));
    }
}
