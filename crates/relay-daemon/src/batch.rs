//! How many events a route statement and rows a due claim take at a time: the
//! configured `queue.batch_size`, halved each time one of those statements runs out of
//! time, and doubled back after a run of passes that did not.
//!
//! The statements carry the events' payloads: a backlog of very large events (tens of
//! megabytes each) made a batch's route or claim outlast the statement timeout, and
//! the same batch was tried again after every backoff, for good: nothing behind it was
//! routed or retried. Halving gets through such a backlog a few at a time, one at a
//! time at worst, and the batch grows back once the large ones are gone.

/// Passes in a row without a timeout before the batch doubles back.
const GROW_AFTER: u32 = 32;

#[derive(Debug)]
pub(crate) struct BatchSize {
    configured: i64,
    halvings: u32,
    fine: u32,
}

impl BatchSize {
    pub(crate) fn new(configured: i64) -> BatchSize {
        BatchSize {
            configured: configured.max(1),
            halvings: 0,
            fine: 0,
        }
    }

    /// The batch to take now.
    pub(crate) fn get(&self) -> i64 {
        (self.configured >> self.halvings.min(62)).max(1)
    }

    /// A route or claim ran out of time: the batch to take next, when it changed.
    pub(crate) fn timed_out(&mut self) -> Option<i64> {
        self.fine = 0;
        if self.get() == 1 {
            return None;
        }
        self.halvings += 1;
        Some(self.get())
    }

    /// A pass went through: the batch back towards the configured one, when it
    /// changed.
    pub(crate) fn went_through(&mut self) -> Option<i64> {
        if self.halvings == 0 {
            return None;
        }
        self.fine += 1;
        if self.fine < GROW_AFTER {
            return None;
        }
        self.fine = 0;
        self.halvings -= 1;
        Some(self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_each_timeout_down_to_one_and_grows_back_after_a_run_of_passes() {
        let mut b = BatchSize::new(100);
        assert_eq!(b.get(), 100);
        assert_eq!(b.went_through(), None, "at the configured size already");
        let halved: Vec<Option<i64>> = (0..8).map(|_| b.timed_out()).collect();
        assert_eq!(
            halved,
            [
                Some(50),
                Some(25),
                Some(12),
                Some(6),
                Some(3),
                Some(1),
                None,
                None
            ]
        );
        for _ in 0..GROW_AFTER - 1 {
            assert_eq!(b.went_through(), None);
        }
        assert_eq!(b.went_through(), Some(3));
        // A timeout in the middle of a run starts the count again.
        for _ in 0..GROW_AFTER - 1 {
            b.went_through();
        }
        assert_eq!(b.timed_out(), Some(1));
        for _ in 0..GROW_AFTER - 1 {
            assert_eq!(b.went_through(), None);
        }
        assert_eq!(b.went_through(), Some(3));
    }
}
