//! The worker pool: at most `queue.workers` requests at once, at most
//! `queue.max_per_endpoint` of them to one URL.
//!
//! Claimed rows wait in a small *ready* buffer, and each worker is a loop: it takes
//! the first ready row whose endpoint has room, delivers it, hands the outcome to the
//! recorder and takes the next one at once. So the next request never waits for a
//! claim or for this one's outcome write: claims (by the pump) and outcome writes (by
//! the recorder) overlap the requests instead of sitting between them. A worker that
//! finds nothing it may start ends, and wakes the pump to claim more.
//!
//! What bounds what:
//! - requests in flight: `queue.workers`, and `queue.max_per_endpoint` per URL;
//! - rows held per URL (ready plus in flight): [`AHEAD`] × `max_per_endpoint`, so a
//!   slow endpoint holds a bounded number of rows it cannot start yet; up to [`DEEP`] ×
//!   for an endpoint that answers fast enough that all of them start within a quarter
//!   of the lease (`crate::pace`);
//! - rows this relay holds in `sending` (ready, in flight, or waiting for their
//!   outcome write): [`AHEAD`] × `queue.workers` while no endpoint is held deeper, at
//!   most [`DEEP`] × `queue.workers` (see [`Dispatcher::free_slots`]). A row's [`Slot`]
//!   is given back only once its outcome is stored (see [`crate::outcome`]), so when
//!   the database cannot take outcomes, claims stop instead of results piling up in
//!   memory; and a relay that dies sends no more than these again.
//!
//! Claiming ahead is what lets a backlog drain at the rate the database can route
//! and record, not at the rate of one claim per delivery window: measured on 2 cores,
//! a 100,000-event drain went from 4,500 to 6,300 events/s when [`AHEAD`] went from 2
//! to 4, and ran 1.55 × as fast again holding 16 rows per request slot instead of 8.
//!
//! The pump asks [`Dispatcher::free_slots`] and [`Dispatcher::load`] before every
//! claim, so it never claims more than the buffer takes. A row that waited so long in
//! the buffer that its lease would run out mid-request is not sent: its lease expires
//! and it returns to the queue untouched. On shutdown, [`Dispatcher::drain`] lets
//! requests finish within the grace period and reports every row not delivered (ready
//! or cut off), for release.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn, Instrument};

use crate::delivery::Deliverer;
use crate::health::{self, Tracker};
use crate::outcome::{self, Finished, Policies, Recorder, Verdict};
use crate::pace::{Pace, DEEP};
use crate::shared::{EndpointLoad, Job, Slot, Wake, AHEAD};

/// A claimed row waiting for a worker.
struct Ready {
    job: Job,
    slot: Slot,
    /// When its lease runs out (measured from before the claim was sent, so early).
    lease_until: Instant,
    /// [`crate::shared::Confirmed::lapses`] when it was claimed.
    lapses: u64,
}

/// What the workers share.
struct State {
    ready: VecDeque<Ready>,
    /// Requests in flight per URL.
    sending: HashMap<String, usize>,
    /// Ready rows per URL.
    waiting: HashMap<String, usize>,
    /// Worker loops running.
    workers: usize,
    /// Rows delivering right now: id -> (claim token, URL). A worker removes its row
    /// just before handing the outcome over; what is left after an abort is released.
    in_flight: HashMap<i64, (i64, String)>,
    /// Rows a worker found with too little lease left to start (id, claim token,
    /// URL): released by the pump at its next pass, or by [`Dispatcher::drain`].
    late: Vec<(i64, i64, String)>,
    /// Shutting down: start nothing new.
    closed: bool,
    /// URLs that answered 429 or 503 with a `Retry-After`: nothing more is claimed
    /// for them until then (the whole URL slows down, not only that row).
    cooldown: HashMap<String, Instant>,
    /// Consecutive failures per URL; an unhealthy one gets a delivery at a time.
    health: Tracker,
    /// How fast each URL answers: how many rows it may hold (crate::pace).
    pace: Pace,
}

impl State {
    /// The ready rows `keep` refuses, taken with their slots freed: (id, claim token,
    /// URL).
    fn take_ready(&mut self, keep: impl Fn(&Job) -> bool) -> Vec<(i64, i64, String)> {
        let (kept, taken): (VecDeque<Ready>, VecDeque<Ready>) =
            self.ready.drain(..).partition(|r| keep(&r.job));
        self.ready = kept;
        taken
            .into_iter()
            .map(|r| {
                decrement(&mut self.waiting, &r.job.url);
                (r.job.id, r.job.lease_token, r.job.url)
            })
            .collect()
    }

    /// Rows (id, claim token, URL) to give back, in groups by when each is due: now,
    /// or when its URL's 429/503 cool-down ends (other relays wait for it too).
    fn due_groups(
        &self,
        rows: Vec<(i64, i64, String)>,
        now: Instant,
    ) -> Vec<crate::pump::Withdrawn> {
        let mut due_now = Vec::new();
        let mut cooling: HashMap<String, (Vec<(i64, i64)>, Instant)> = HashMap::new();
        for (id, token, url) in rows {
            match self.cooldown.get(&url).copied() {
                Some(until) if until > now => cooling
                    .entry(url)
                    .or_insert_with(|| (Vec::new(), until))
                    .0
                    .push((id, token)),
                _ => due_now.push((id, token)),
            }
        }
        let mut groups = vec![(due_now, now)];
        groups.extend(cooling.into_values());
        groups.retain(|(rows, _)| !rows.is_empty());
        groups
    }

    fn new(health: Tracker, pace: Pace) -> State {
        State {
            ready: VecDeque::new(),
            sending: HashMap::new(),
            waiting: HashMap::new(),
            workers: 0,
            in_flight: HashMap::new(),
            late: Vec::new(),
            closed: false,
            cooldown: HashMap::new(),
            health,
            pace,
        }
    }

    /// A delivery is over for this worker (done, given up, or unwound): its row no
    /// longer counts at its URL, nor as in flight.
    fn give_back(&mut self, id: i64, url: &str) {
        decrement(&mut self.sending, url);
        self.in_flight.remove(&id);
    }

    /// The first ready row whose endpoint may take it now, counted as sending: the
    /// endpoint has room (one at a time while unhealthy) and is not cooling down after
    /// a 429/503. Rows claimed ahead for a URL that just began to cool wait here until
    /// the pump gives them back to the queue.
    fn take(&mut self, max_per_endpoint: usize) -> Option<Ready> {
        let now = Instant::now();
        let at = self.ready.iter().position(|r| {
            let url = r.job.url.as_str();
            let limit = if self.health.is_unhealthy(url) {
                1
            } else {
                max_per_endpoint
            };
            self.sending.get(url).copied().unwrap_or(0) < limit
                && self.cooldown.get(url).is_none_or(|until| *until <= now)
        })?;
        let ready = self.ready.remove(at)?;
        decrement(&mut self.waiting, &ready.job.url);
        *self.sending.entry(ready.job.url.clone()).or_insert(0) += 1;
        Some(ready)
    }
}

fn decrement(counts: &mut HashMap<String, usize>, url: &str) {
    if let Some(n) = counts.get_mut(url) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(url);
        }
    }
}

/// What a URL holding `held` rows counts as in the claims, which give every URL one
/// cap (`base`, as int4 `cap`) and compute its room as `cap - counted` in int4: a URL
/// allowed `its_cap` counts as holding `its_cap - base` fewer, below zero when it
/// holds less than that, but never so far below that the room passes the int4 range
/// (only a `max_per_endpoint` over about 134 million gets there).
fn counted(held: usize, its_cap: usize, base: usize, cap: i32) -> i32 {
    let floor = i64::from(cap) - i64::from(i32::MAX);
    let beyond_base = i64::try_from(its_cap.saturating_sub(base)).unwrap_or(i64::MAX);
    let n = i64::try_from(held)
        .unwrap_or(i64::MAX)
        .saturating_sub(beyond_base)
        .clamp(floor, i64::from(i32::MAX));
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Everything a worker loop needs.
struct Shared {
    state: Mutex<State>,
    max_per_endpoint: usize,
    deliverer: Deliverer,
    recorder: Recorder,
    /// Each route's retry schedule, final statuses and attempt timeout.
    policies: Policies,
    /// Where endpoint health changes go (crate::health).
    health: mpsc::UnboundedSender<health::Change>,
    /// The longest cool-down a `Retry-After` may impose.
    max_retry_after: Duration,
    /// Whether this relay's sessions (and so its marker) were seen lately.
    confirmed: crate::shared::Confirmed,
    /// Told when a worker runs out of rows it may start.
    wake: mpsc::Sender<Wake>,
    /// `queue.lease_seconds`: how long a claim holds its row.
    lease: Duration,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) struct Dispatcher {
    shared: Arc<Shared>,
    /// Rows held in `sending`: ready, in flight, or waiting for their outcome write.
    slots: Arc<Semaphore>,
    workers: usize,
    tasks: JoinSet<()>,
}

impl Dispatcher {
    pub(crate) fn new(
        config: &relay_core::Config,
        deliverer: Deliverer,
        recorder: Recorder,
        health: mpsc::UnboundedSender<health::Change>,
        confirmed: crate::shared::Confirmed,
        wake: mpsc::Sender<Wake>,
    ) -> Dispatcher {
        let workers = config.queue.workers;
        let capacity = workers.saturating_mul(DEEP);
        Dispatcher {
            shared: Arc::new(Shared {
                state: Mutex::new(State::new(
                    Tracker::new(config.queue.unhealthy_after),
                    Pace::new(Duration::from_secs(config.queue.lease_seconds)),
                )),
                max_per_endpoint: config.queue.max_per_endpoint,
                lease: Duration::from_secs(config.queue.lease_seconds),
                deliverer,
                recorder,
                policies: Policies::new(config),
                health,
                max_retry_after: Duration::from_secs(config.queue.max_retry_after_seconds),
                confirmed,
                wake,
            }),
            slots: Arc::new(Semaphore::new(capacity)),
            workers,
            tasks: JoinSet::new(),
        }
    }

    /// Rows that may be claimed now. [`AHEAD`] per worker; and each URL held deeper
    /// for its pace (crate::pace: its rows start within a quarter of the lease) brings
    /// twice its depth: room for its rows ready and in flight, and as many again
    /// answered and waiting for their outcome write, which is what lets outcomes be
    /// written in big batches. At most [`DEEP`] per worker in all. While no URL answers
    /// fast (all stalled or slow), that is [`AHEAD`] per worker, as before depths
    /// followed the pace; while one does, the slow ones may also use the room it is
    /// given and does not take, each still within its own cap.
    pub(crate) fn free_slots(&self) -> usize {
        let capacity = self.workers.saturating_mul(DEEP);
        let allowed = {
            let state = self.shared.state();
            let deeper: usize = state
                .pace
                .deeper()
                .map(|(_, depth)| {
                    self.shared
                        .max_per_endpoint
                        .saturating_mul(depth)
                        .saturating_mul(2)
                })
                .sum();
            self.workers
                .saturating_mul(AHEAD)
                .saturating_add(deeper)
                .min(capacity)
        };
        let used = capacity.saturating_sub(self.slots.available_permits());
        allowed.saturating_sub(used)
    }

    /// Whether requests are in flight or claimed rows wait to start: their outcomes
    /// will wake the pump. Rows only waiting for their outcome write do not count: the
    /// pump may arm the wake-up meanwhile, so the next event is not left for a poll.
    pub(crate) fn busy(&self) -> bool {
        let state = self.shared.state();
        !state.sending.is_empty() || !state.ready.is_empty()
    }

    /// Rows held per URL (ready or in flight), and the URLs that may not be claimed
    /// for now. The claims use one cap for every URL, [`AHEAD`] × `max_per_endpoint`;
    /// a URL that may hold more (crate::pace) counts as holding that much less, below
    /// zero when it holds less than the difference.
    pub(crate) fn load(&self) -> EndpointLoad {
        let state = self.shared.state();
        let mut held: HashMap<&str, usize> = HashMap::new();
        for (url, n) in state.sending.iter().chain(state.waiting.iter()) {
            *held.entry(url.as_str()).or_insert(0) += n;
        }
        for (url, _) in state.pace.deeper() {
            held.entry(url).or_insert(0);
        }
        let base = self.shared.max_per_endpoint.saturating_mul(AHEAD);
        let cap = i32::try_from(base).unwrap_or(i32::MAX);
        let mut load = EndpointLoad::default();
        for (url, n) in &held {
            let its_cap = self
                .shared
                .max_per_endpoint
                .saturating_mul(state.pace.depth(url));
            if *n == 0 && its_cap == base {
                continue;
            }
            load.urls.push(url.to_string());
            load.in_flight.push(counted(*n, its_cap, base, cap));
            if *n >= its_cap {
                load.saturated.push(url.to_string());
            }
        }
        let now = Instant::now();
        for (url, until) in &state.cooldown {
            if *until > now {
                load.limit(url, 0, cap);
            }
        }
        for url in state.health.unhealthy() {
            let room = usize::from(held.get(url.as_str()).copied().unwrap_or(0) == 0);
            load.limit(url, room, cap);
        }
        load
    }

    /// Starts workers for ready rows nobody is working on (after this relay's hold
    /// on its rows was unconfirmed for a while, the workers stopped).
    pub(crate) fn kick(&mut self) {
        while self.tasks.try_join_next().is_some() {}
        let spawn = {
            let mut state = self.shared.state();
            if state.closed || !self.shared.confirmed.get() {
                return;
            }
            more_workers(self.workers, &mut state)
        };
        for _ in 0..spawn {
            self.tasks.spawn(work(self.shared.clone()));
        }
    }

    /// Takes back the claimed rows not yet started that `keep` refuses (their route
    /// was paused, their URL asked to slow down): `(id, claim token)`, to release.
    /// Their slots are freed.
    pub(crate) fn withdraw(&self, keep: impl Fn(&Job) -> bool) -> Vec<(i64, i64)> {
        self.shared
            .state()
            .take_ready(keep)
            .into_iter()
            .map(|(id, token, _)| (id, token))
            .collect()
    }

    /// Takes back the claimed rows not yet started for a URL that asked to slow down:
    /// groups due when each URL asked, to release.
    pub(crate) fn withdraw_cooling(&self) -> Vec<crate::pump::Withdrawn> {
        let mut state = self.shared.state();
        let now = Instant::now();
        let cooling: HashMap<String, Instant> = state
            .cooldown
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(url, until)| (url.clone(), *until))
            .collect();
        if cooling.is_empty() {
            return Vec::new();
        }
        let taken = state.take_ready(|job| !cooling.contains_key(&job.url));
        state.due_groups(taken, now)
    }

    /// The rows workers found too late to start, taken, to release: due now, or when
    /// their URL's cool-down ends.
    pub(crate) fn take_late(&self) -> Vec<crate::pump::Withdrawn> {
        let mut state = self.shared.state();
        let late = std::mem::take(&mut state.late);
        state.due_groups(late, Instant::now())
    }

    /// When the soonest 429/503 cool-down ends, if one is running.
    pub(crate) fn cooldown_ends_in(&self) -> Option<Duration> {
        let mut state = self.shared.state();
        let now = Instant::now();
        state.cooldown.retain(|_, until| *until > now);
        state.cooldown.values().map(|until| *until - now).min()
    }

    /// Queues rows claimed by a statement sent at `sent` and starts workers for them.
    pub(crate) fn start(&mut self, jobs: Vec<Job>, sent: Instant, lease_until: Instant) {
        while self.tasks.try_join_next().is_some() {}
        if jobs.is_empty() {
            return;
        }
        // The claim that found these rows is a session's answer, proof of the marker
        // as of when it was sent: counted before the rows take the lapse count, so
        // rows claimed right after a reconnect (before the liveness look confirms it)
        // are not taken for rows of before the gap.
        self.shared.confirmed.set_at(sent.into_std());
        let lapses = self.shared.confirmed.lapses();
        let spawn = {
            let mut state = self.shared.state();
            for job in jobs {
                // Claims never exceed the free slots, so this always succeeds.
                let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                    warn!(
                        queue_id = job.id,
                        "claimed more rows than there are slots; the row returns to the queue when its lease expires"
                    );
                    continue;
                };
                *state.waiting.entry(job.url.clone()).or_insert(0) += 1;
                state.ready.push_back(Ready {
                    job,
                    slot: Slot::new(permit),
                    lease_until,
                    lapses,
                });
            }
            more_workers(self.workers, &mut state)
        };
        for _ in 0..spawn {
            self.tasks.spawn(work(self.shared.clone()));
        }
    }

    /// Waits up to `grace` for requests in flight, aborts the rest and returns the rows
    /// not delivered (id, claim token), ready or cut off, so they can be released: due
    /// now, except rows for a URL that asked to slow down (a 429/503 with
    /// `Retry-After`, perhaps answered during the grace), due when it asked.
    pub(crate) async fn drain(mut self, grace: Duration) -> Vec<crate::pump::Withdrawn> {
        let ready: Vec<(i64, i64, String)> = {
            let mut state = self.shared.state();
            state.closed = true;
            state.waiting.clear();
            state
                .ready
                .drain(..)
                .map(|r| (r.job.id, r.job.lease_token, r.job.url))
                .collect()
        };
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
        let mut state = self.shared.state();
        let mut rows = std::mem::take(&mut state.late);
        rows.extend(ready);
        rows.extend(
            state
                .in_flight
                .drain()
                .map(|(id, (token, url))| (id, token, url)),
        );
        state.due_groups(rows, Instant::now())
    }
}

/// How many workers to add so every ready row has one, up to `limit` in all; counted
/// as running from here on.
fn more_workers(limit: usize, state: &mut State) -> usize {
    let spawn = limit.saturating_sub(state.workers).min(state.ready.len());
    state.workers += spawn;
    spawn
}

/// What a worker holds while it runs: its place among the workers and, while it
/// delivers, its row's place at its URL. Given back if the worker unwinds (a bug), so a
/// panic costs one delivery (the row returns to the queue when its lease runs out), not
/// a worker and a place at that URL for the rest of the process's life. On a normal
/// exit the worker gives them back itself, in the same lock as its last decision.
struct Held<'a> {
    state: &'a Mutex<State>,
    /// The row being delivered, until its place at its URL is given back.
    row: Option<(i64, String)>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.workers = state.workers.saturating_sub(1);
        if let Some((id, url)) = self.row.take() {
            state.give_back(id, &url);
        }
    }
}

/// One worker: deliver ready rows until there is none it may start.
async fn work(shared: Arc<Shared>) {
    let mut held = Held {
        state: &shared.state,
        row: None,
    };
    loop {
        let next = {
            let mut state = shared.state();
            // Not while this relay's hold on its rows is unconfirmed (no database
            // session seen for a while, crate::liveness): another relay may be
            // taking them back. The pump starts workers again once it is confirmed.
            let next = if state.closed || !shared.confirmed.get() {
                None
            } else {
                state.take(shared.max_per_endpoint)
            };
            match &next {
                Some(ready) => {
                    state
                        .in_flight
                        .insert(ready.job.id, (ready.job.lease_token, ready.job.url.clone()));
                }
                None => state.workers = state.workers.saturating_sub(1),
            }
            next
        };
        let Some(ready) = next else {
            let _ = shared.wake.try_send(Wake::Freed);
            return;
        };
        held.row = Some((ready.job.id, ready.job.url.clone()));
        // The queue row's id and URL too, so that a log line leads to `n8n-relay queue
        // show ID` (the URL without its `user:password@`).
        let span = tracing::info_span!(
            "delivery",
            webhook_id = %ready.job.webhook_id,
            queue_id = ready.job.id,
            url = %relay_core::config::url_without_userinfo(&ready.job.url),
            event = %ready.job.event_type,
            attempt = ready.job.attempt(),
        );
        deliver(&shared, ready, &mut held.row)
            .instrument(span)
            .await;
    }
}

/// At most this long, after a request's timeout, for its outcome to be written.
const OUTCOME_MARGIN: Duration = Duration::from_secs(5);

/// The lease a row needs left to be started: its request's timeout, plus time to write
/// the outcome before another relay's sweeper may give the row back (an outcome
/// written after that is dropped, and a delivery n8n took is sent again). The margin is
/// at most half of what the lease has beyond the timeout, so a lease set just above
/// the timeout still lets rows start.
fn start_allowance(timeout: Duration, lease: Duration) -> Duration {
    timeout + OUTCOME_MARGIN.min(lease.saturating_sub(timeout) / 2)
}

/// One attempt of one ready row, handed to the recorder. `held` is cleared where the
/// row's place at its URL is given back.
async fn deliver(shared: &Shared, ready: Ready, held: &mut Option<(i64, String)>) {
    let Ready {
        job,
        slot,
        lease_until,
        lapses,
    } = ready;
    let policy = shared.policies.of(&job.event_type);
    // A request's whole allowance and the time to write its outcome: a ready row is
    // started only with this much lease left, and only if this relay's hold on it was
    // confirmed throughout since it was claimed.
    let too_late = lease_until.saturating_duration_since(Instant::now())
        < start_allowance(policy.timeout, shared.lease);
    let lapsed = lapses != shared.confirmed.lapses();
    if too_late || lapsed {
        // Another relay may take it once the lease runs out, or took it back while
        // this relay's sessions were gone (a partition): sending it now could race
        // that, or send it again. It goes back to the queue at the pump's next pass
        // (or at shutdown), not at its lease's end: left `sending`, a clean stop left
        // it so until the next relay started. Its claim token keeps the release from
        // touching a row another relay holds or delivered.
        if lapsed {
            debug!(
                queue_id = job.id,
                "claimed before this relay lost its database sessions for a while; \
                 given back to the queue"
            );
        } else {
            warn!(
                queue_id = job.id,
                "a claimed row waited too long for its endpoint; given back to the queue"
            );
        }
        let mut state = shared.state();
        state.give_back(job.id, &job.url);
        state.late.push((job.id, job.lease_token, job.url));
        drop(state);
        *held = None;
        return;
    }
    let attempt = shared.deliverer.deliver(&job, policy.timeout).await;
    let verdict = outcome::judge(&job, &attempt, policy);
    // Numbers in the JSON log, not strings: u128 (as_millis) and a Debug Duration were
    // written as "3" and "1.93s", which a log store cannot compare.
    let ms = u64::try_from(attempt.duration.as_millis()).unwrap_or(u64::MAX);
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
        // Once the URL is unhealthy (said once, with its last error, by
        // crate::health), each of its rows' retries is one of many: at debug.
        Verdict::Retry { delay, .. } if shared.state().health.is_unhealthy(&job.url) => debug!(
            status = attempt.status,
            ms,
            error,
            retry_in_seconds = delay.as_secs_f64(),
            "delivery failed; will retry"
        ),
        Verdict::Retry { delay, .. } => warn!(
            status = attempt.status,
            ms,
            error,
            retry_in_seconds = delay.as_secs_f64(),
            "delivery failed; will retry"
        ),
        // Retries spent, or refused for good: a delivery that will not happen without
        // someone, where a retry is routine. Error, so on-call can filter for it.
        Verdict::Failed => error!(
            status = attempt.status,
            ms, error, "delivery failed; no retries left, the row is failed"
        ),
        Verdict::Refused => error!(
            status = attempt.status,
            ms,
            error,
            "delivery refused for good (a final status or X-Webhook-Abort); the row is failed"
        ),
    }
    // No await between these: an abort finds the row either still in flight
    // (released) or handed to the recorder.
    let change = {
        let mut state = shared.state();
        state.give_back(job.id, &job.url);
        *held = None;
        state
            .pace
            .observe(&job.url, attempt.duration, verdict == Verdict::Sent);
        if let (Some(429 | 503), Some(after)) = (attempt.status, attempt.retry_after) {
            let after = after.min(shared.max_retry_after);
            let until = Instant::now() + after;
            info!(url = %relay_core::config::url_without_userinfo(&job.url), retry_after_seconds = after.as_secs_f64(),
                "n8n asked to slow down: nothing more is sent to this URL until then");
            state.cooldown.insert(job.url.clone(), until);
        }
        state.health.observe(&job.url, attempt.error.as_deref())
    };
    if let Some(change) = change {
        let _ = shared.health.send(change);
    }
    shared.recorder.record(Finished {
        job,
        attempt,
        verdict,
        _slot: slot,
    });
}

#[cfg(test)]
mod tests {
    use super::{counted, start_allowance, Held, State};
    use std::sync::Mutex;
    use std::time::Duration;

    /// Rows given back (ready, cut off, or found too late to start) for a URL that
    /// asked to slow down wait for it; the rest are due now; no empty group.
    #[test]
    fn rows_given_back_are_due_when_their_url_asked() {
        let mut state = State::new(
            crate::health::Tracker::new(0),
            crate::pace::Pace::new(Duration::from_secs(60)),
        );
        let now = tokio::time::Instant::now();
        let until = now + Duration::from_secs(600);
        state.cooldown.insert("http://slow/".into(), until);
        state.cooldown.insert(
            "http://was-slow/".into(),
            now.checked_sub(Duration::from_millis(1)).unwrap_or(now),
        );
        let groups = state.due_groups(
            vec![
                (1, 10, "http://slow/".into()),
                (2, 20, "http://fine/".into()),
                (3, 30, "http://slow/".into()),
                (4, 40, "http://was-slow/".into()),
            ],
            now,
        );
        assert_eq!(
            groups,
            vec![
                (vec![(2, 20), (4, 40)], now),
                (vec![(1, 10), (3, 30)], until)
            ]
        );
        assert!(state.due_groups(Vec::new(), now).is_empty());
    }

    /// A row started with exactly its timeout of lease left had no time to record an
    /// answer that took the whole timeout: the sweeper could give it back first, and
    /// the delivery n8n took was sent again.
    #[test]
    fn a_row_starts_only_with_time_left_to_record_its_outcome() {
        let s = Duration::from_secs;
        assert_eq!(start_allowance(s(30), s(120)), s(35), "the defaults");
        assert_eq!(
            start_allowance(s(30), s(31)),
            Duration::from_millis(30_500),
            "a lease just above the timeout still lets rows start"
        );
        assert_eq!(start_allowance(s(10), s(10)), s(10));
    }

    #[test]
    fn a_worker_that_panics_gives_back_its_place_and_its_rows_place_at_the_url() {
        let mut state = State::new(
            crate::health::Tracker::new(0),
            crate::pace::Pace::new(Duration::from_secs(60)),
        );
        let url = "http://n8n.test/webhook/a".to_string();
        state.workers = 2;
        state.sending.insert(url.clone(), 1);
        state.in_flight.insert(7, (1, url.clone()));
        let state = Mutex::new(state);
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _held = Held {
                state: &state,
                row: Some((7, url.clone())),
            };
            panic!("a bug in a delivery");
        }));
        assert!(unwound.is_err());
        let state = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert_eq!(state.workers, 1, "the other worker is still counted");
        assert!(state.sending.is_empty(), "{:?}", state.sending);
        assert!(state.in_flight.is_empty());
    }

    #[test]
    fn a_worker_that_ends_normally_changes_nothing_on_drop() {
        let mut state = State::new(
            crate::health::Tracker::new(0),
            crate::pace::Pace::new(Duration::from_secs(60)),
        );
        state.workers = 1;
        let state = Mutex::new(state);
        drop(Held {
            state: &state,
            row: Some((7, "http://n8n.test/".into())),
        });
        assert_eq!(state.lock().map(|s| s.workers).unwrap_or_default(), 1);
    }

    /// The room the claim statements compute for a URL, as they compute it.
    fn room(cap: i32, counted: i32) -> Option<i32> {
        cap.checked_sub(counted)
    }

    #[test]
    fn a_deep_url_gets_its_own_cap_as_room() {
        // max_per_endpoint 16: base cap 64, a URL 16 deep may hold 256.
        let c = counted(10, 256, 64, 64);
        assert_eq!(c, -182);
        assert_eq!(room(64, c), Some(246));
        // A URL at the base depth counts as what it holds.
        assert_eq!(counted(10, 64, 64, 64), 10);
        assert_eq!(room(64, counted(70, 64, 64, 64)), Some(-6));
    }

    #[test]
    fn the_room_stays_in_int4_whatever_max_per_endpoint_is() {
        for max_per_endpoint in [200_000_000usize, 536_870_911, 1_000_000_000, usize::MAX] {
            let base = max_per_endpoint.saturating_mul(4);
            let cap = i32::try_from(base).unwrap_or(i32::MAX);
            let its_cap = max_per_endpoint.saturating_mul(16);
            for held in [0, 1, base, its_cap, usize::MAX] {
                let c = counted(held, its_cap, base, cap);
                assert!(
                    room(cap, c).is_some(),
                    "max_per_endpoint {max_per_endpoint}, held {held}: {cap} - {c} overflows int4"
                );
            }
        }
        // Clamped, a deep URL still has all the room int4 can say.
        let cap = 800_000_000;
        assert_eq!(
            room(cap, counted(0, 3_200_000_000, 800_000_000, cap)),
            Some(i32::MAX)
        );
    }
}
