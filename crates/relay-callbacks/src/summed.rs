//! Warnings that anyone who reaches the port can provoke (a refused request, a failed
//! TLS handshake): the first is said, then at most one a minute with how many came
//! since, the rest at debug, so a scanner or a flood cannot fill the log while a real
//! fault (n8n refusing the certificate, a wrong secret) is still said at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Summed {
    last: Mutex<Option<(Instant, u64)>>,
}

impl Summed {
    pub const EVERY: Duration = Duration::from_secs(60);

    /// `Some(how many came since the last warning)` when this one is to be warned of;
    /// `None` when it goes to debug.
    pub fn say(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some((at, ref mut since)) if at.elapsed() < Self::EVERY => {
                *since += 1;
                None
            }
            Some((_, since)) => {
                *last = Some((Instant::now(), 0));
                Some(since)
            }
            None => {
                *last = Some((Instant::now(), 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_said_then_they_are_summed_once_a_minute() {
        let s = Summed::default();
        assert_eq!(s.say(), Some(0), "the first");
        assert_eq!(s.say(), None);
        assert_eq!(s.say(), None);
        if let Some(a_minute_ago) =
            Instant::now().checked_sub(Summed::EVERY + Duration::from_secs(1))
        {
            let mut last = s.last.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, _)) = last.as_mut() {
                *at = a_minute_ago;
            }
        }
        assert_eq!(s.say(), Some(2), "a minute on: the two since");
        assert_eq!(s.say(), None);
    }
}
