//! The relay's main loop: route and claim while there is work, deliver through the
//! dispatcher, and when a pass finds nothing, arm the wake-up ([`crate::wakeup`]) and
//! sleep until something happens.
//!
//! While busy the pump polls the outbox and the queue pass after pass, and the wake-up
//! stays disarmed, so writers do not notify. A database error never ends the loop: it
//! is logged, the pump backs off, and tries again.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::claim::{self, ClaimLimits};
use crate::db::Db;
use crate::dispatcher::Dispatcher;
use crate::error::DaemonError;
use crate::router::RouteTable;
use crate::wakeup::{self, Settled};

/// Why the pump should look again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// A writer's NOTIFY.
    Notified,
    /// The listener (re)connected: notifications may have been missed.
    Reconnected,
    /// Outcomes were stored: worker slots are free, retries may be scheduled.
    Recorded,
    /// The periodic safety sweep.
    Sweep,
}

/// Re-checks for writers (wakeup.rs): every WRITERS_FIRST for WRITERS_FAST_FOR, then
/// doubling up to WRITERS_MAX.
const WRITERS_FIRST: Duration = Duration::from_millis(1);
const WRITERS_FAST_FOR: Duration = Duration::from_millis(20);
const WRITERS_MAX: Duration = Duration::from_millis(50);
/// The first and the longest pause while work is reported but cannot be taken.
const STALL_FIRST: Duration = Duration::from_millis(5);
const STALL_MAX: Duration = Duration::from_millis(500);

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Routed or claimed something: look again at once.
    Worked,
    /// Every worker is busy: wait for one to finish.
    Full,
    /// Nothing to do.
    Nothing,
}

pub(crate) struct Pump {
    pub(crate) db: Db,
    pub(crate) routes: RouteTable,
    pub(crate) limits: ClaimLimits,
    pub(crate) dispatcher: Dispatcher,
}

impl Pump {
    /// Runs until `shutdown`; returns the dispatcher so in-flight work can be drained.
    pub(crate) async fn run(
        mut self,
        mut wake: mpsc::Receiver<Wake>,
        shutdown: &CancellationToken,
    ) -> Dispatcher {
        let mut backoff = crate::db_backoff();
        let mut failing = false;
        // While writers hold the outbox lock (wakeup.rs), the pump re-checks without a
        // pass: every millisecond for a while (a writer usually commits within a disk
        // sync), then less and less often.
        let mut writers_since: Option<tokio::time::Instant> = None;
        let mut writers_pause = WRITERS_FIRST;
        let mut recheck_only = false;
        // Grows while passes find nothing although the database reports work: rows
        // locked by another transaction (SKIP LOCKED passes over them). Without it the
        // pump would spin until the lock goes.
        let mut stall = Duration::ZERO;
        while !shutdown.is_cancelled() {
            let mut woken = false;
            while wake.try_recv().is_ok() {
                woken = true;
            }
            let pass = if recheck_only && !woken {
                Ok(Pass::Nothing)
            } else {
                self.pass().await
            };
            recheck_only = false;
            let step = match pass {
                Ok(Pass::Worked) => {
                    stall = Duration::ZERO;
                    writers_since = None;
                    Ok(None)
                }
                Ok(Pass::Full) => Ok(Some(None)),
                Ok(Pass::Nothing) => {
                    let load = self.dispatcher.load();
                    match wakeup::settle(&self.db, &self.routes, &load).await {
                        Ok(Settled::Idle { next_due }) if next_due.is_none_or(|d| !d.is_zero()) => {
                            stall = Duration::ZERO;
                            writers_since = None;
                            Ok(Some(next_due))
                        }
                        Ok(Settled::Writers { next_due })
                            if next_due.is_none_or(|d| !d.is_zero()) =>
                        {
                            let since =
                                *writers_since.get_or_insert_with(tokio::time::Instant::now);
                            let pause = if since.elapsed() < WRITERS_FAST_FOR {
                                writers_pause = WRITERS_FIRST;
                                WRITERS_FIRST
                            } else {
                                writers_pause = (writers_pause * 2).min(WRITERS_MAX);
                                writers_pause
                            };
                            recheck_only = true;
                            Ok(Some(Some(next_due.map_or(pause, |d| d.min(pause)))))
                        }
                        // Work waits (or is due now) that the pass could not take.
                        Ok(_) => {
                            writers_since = None;
                            let pause = stall;
                            stall = (stall * 2).clamp(STALL_FIRST, STALL_MAX);
                            Ok(Some(Some(pause)))
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            match step {
                // More work: straight into the next pass.
                Ok(None) => {}
                // Sleep until woken, or until the next retry is due.
                Ok(Some(next_due)) => {
                    if failing {
                        info!("database reachable again; relay resumed");
                        failing = false;
                        backoff = crate::db_backoff();
                    }
                    let due = async {
                        match next_due {
                            Some(d) if d.is_zero() => {}
                            // A little late rather than early: next_attempt_at <= now().
                            Some(d) => tokio::time::sleep(d + Duration::from_micros(200)).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        _ = wake.recv() => {}
                        () = due => {}
                    }
                }
                Err(e) => {
                    failing = true;
                    let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                    if e.is_missing_schema() {
                        warn!(error = %e, retry_in = ?delay,
                            "the relay's tables or functions are missing: run `n8n-relay migrate`");
                    } else {
                        warn!(error = %e, retry_in = ?delay, "database error; backing off");
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.dispatcher
    }

    /// Route fresh events (claiming the first of them), then claim due rows.
    async fn pass(&mut self) -> Result<Pass, DaemonError> {
        let delivering = self.routes.delivering;
        let free = if delivering {
            self.dispatcher.free_slots()
        } else {
            0
        };
        let load = self.dispatcher.load();
        let routed =
            claim::route_and_claim(&self.db, &self.routes, &load, self.limits, free).await?;
        let fresh = routed.jobs.len();
        for job in routed.jobs {
            self.dispatcher.start(job).await;
        }
        let mut due = 0;
        if delivering {
            let free = self.dispatcher.free_slots();
            if free == 0 {
                return Ok(if routed.events > 0 {
                    Pass::Worked
                } else {
                    Pass::Full
                });
            }
            let want = free.min(usize::try_from(self.limits.batch_size).unwrap_or(usize::MAX));
            let load = self.dispatcher.load();
            let jobs = claim::claim_due(&self.db, &self.routes, &load, self.limits, want).await?;
            due = jobs.len();
            for job in jobs {
                self.dispatcher.start(job).await;
            }
        }
        Ok(if routed.events > 0 || fresh > 0 || due > 0 {
            Pass::Worked
        } else {
            Pass::Nothing
        })
    }
}
