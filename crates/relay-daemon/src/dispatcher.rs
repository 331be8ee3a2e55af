//! The worker pool: at most `queue.workers` deliveries at once, at most
//! `queue.max_per_endpoint` of them to one URL, each on its own task.
//!
//! A slot is taken when a row is claimed and given back only when its outcome has
//! been stored (see [`crate::outcome`]). The pump asks [`Dispatcher::free_slots`] and
//! [`Dispatcher::load`] before every claim, so it never claims more than it can start.
//! On shutdown, [`Dispatcher::drain`] lets deliveries finish within the grace period
//! and reports the rows that did not, for release.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use relay_core::retry::RetrySchedule;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn, Instrument};

use crate::claim::{EndpointLoad, Job};
use crate::delivery::Deliverer;
use crate::outcome::{self, Finished, Recorder, Verdict};

type Counts = Arc<Mutex<HashMap<String, usize>>>;

/// A worker slot and the endpoint share that go with one claimed row.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    _endpoint: EndpointShare,
}

/// One in-flight delivery to a URL; counted until dropped.
struct EndpointShare {
    url: String,
    counts: Counts,
}

impl Drop for EndpointShare {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.url) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.url);
            }
        }
    }
}

pub(crate) struct Dispatcher {
    workers: Arc<Semaphore>,
    max_per_endpoint: usize,
    endpoints: Counts,
    /// Rows delivering right now: id -> claim token. A task removes its row just
    /// before handing the outcome over; what is left after an abort is released.
    in_flight: Arc<Mutex<HashMap<i64, i64>>>,
    tasks: JoinSet<()>,
    deliverer: Deliverer,
    recorder: Recorder,
    schedule: Arc<RetrySchedule>,
}

impl Dispatcher {
    pub(crate) fn new(
        config: &relay_core::Config,
        deliverer: Deliverer,
        recorder: Recorder,
    ) -> Dispatcher {
        Dispatcher {
            workers: Arc::new(Semaphore::new(config.queue.workers)),
            max_per_endpoint: config.queue.max_per_endpoint,
            endpoints: Arc::default(),
            in_flight: Arc::default(),
            tasks: JoinSet::new(),
            deliverer,
            recorder,
            schedule: Arc::new(RetrySchedule::new(
                config.queue.retry_delays.clone(),
                config.queue.max_retry_after_seconds,
            )),
        }
    }

    pub(crate) fn free_slots(&self) -> usize {
        self.workers.available_permits()
    }

    /// Deliveries in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }

    /// In-flight deliveries per URL, and the URLs at their cap.
    pub(crate) fn load(&self) -> EndpointLoad {
        let counts = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut load = EndpointLoad::default();
        for (url, n) in counts.iter() {
            load.urls.push(url.clone());
            load.in_flight.push(i32::try_from(*n).unwrap_or(i32::MAX));
            if *n >= self.max_per_endpoint {
                load.saturated.push(url.clone());
            }
        }
        load
    }

    /// Starts delivering a claimed row.
    pub(crate) async fn start(&mut self, job: Job) {
        while self.tasks.try_join_next().is_some() {}
        // Claims never exceed the free slots, so this does not wait in practice.
        let Ok(permit) = self.workers.clone().acquire_owned().await else {
            return;
        };
        let endpoint = {
            let mut counts = self
                .endpoints
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *counts.entry(job.url.clone()).or_insert(0) += 1;
            EndpointShare {
                url: job.url.clone(),
                counts: self.endpoints.clone(),
            }
        };
        let slot = Slot {
            _permit: permit,
            _endpoint: endpoint,
        };
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(job.id, job.lease_token);

        let span = tracing::info_span!(
            "delivery",
            webhook_id = %job.webhook_id,
            event = %job.event_type,
            attempt = job.attempt(),
        );
        let deliverer = self.deliverer.clone();
        let recorder = self.recorder.clone();
        let schedule = self.schedule.clone();
        let in_flight = self.in_flight.clone();
        self.tasks.spawn(
            async move {
                let attempt = deliverer.deliver(&job).await;
                let verdict = outcome::judge(&job, &attempt, &schedule);
                let ms = attempt.duration.as_millis();
                let error = attempt.error.as_deref().unwrap_or_default();
                match verdict {
                    Verdict::Sent => {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_secs_f64())
                            .unwrap_or_default();
                        let since_event_ms = (now - job.occurred_at_unix) * 1000.0;
                        debug!(status = attempt.status, ms, since_event_ms, "delivered");
                    }
                    Verdict::Retry { delay, .. } => warn!(
                        status = attempt.status, ms, error, retry_in = ?delay,
                        "delivery failed; will retry"
                    ),
                    Verdict::Failed => warn!(
                        status = attempt.status,
                        ms, error, "delivery failed; no retries left, the row is failed"
                    ),
                }
                // No await between these two: an abort finds the row either still
                // in flight (released) or handed to the recorder.
                in_flight
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&job.id);
                recorder.record(Finished {
                    job,
                    attempt,
                    verdict,
                    _slot: slot,
                });
            }
            .instrument(span),
        );
    }

    /// Waits up to `grace` for in-flight deliveries, aborts the rest and returns their
    /// rows (id, claim token) so they can be released.
    pub(crate) async fn drain(mut self, grace: Duration) -> Vec<(i64, i64)> {
        while self.tasks.try_join_next().is_some() {}
        if !self.tasks.is_empty() {
            info!(in_flight = self.tasks.len(), grace = ?grace, "waiting for deliveries in flight");
        }
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = self.tasks.join_next() => {
                    if next.is_none() {
                        break;
                    }
                }
                () = &mut deadline => {
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        let rows: Vec<(i64, i64)> = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        rows
    }
}
