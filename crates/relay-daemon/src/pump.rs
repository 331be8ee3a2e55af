//! The relay's main loop: route and claim while there is work, deliver through the
//! dispatcher, and when a pass finds nothing, arm the wake-up ([`crate::wakeup`]) and
//! sleep until something happens.
//!
//! While busy the pump polls the outbox and the queue pass after pass, and the wake-up
//! stays disarmed, so writers do not notify. Once a pass finds both empty, the pump
//! waits for its deliveries' outcomes instead of looking again at once; the passes
//! that follow (an outcome written, a short poll) first ask in one statement whether
//! anything is there ([`wakeup::work_now`]), rather than run the route and the due
//! claim again to find out, and with no delivery out they settle at once (arm the
//! wake-up, or find it still armed, and look: [`wakeup::settle`]) unless the last
//! such settle found work waiting. A pass that routes a writer's notified events
//! skips the due claim when the last look found no pending row due. At a steady 200
//! events/s that is one route and two looks per event (the settle as its delivery
//! ends, which arms the wake-up, and a look as its outcome is written), where it was a
//! route, a due claim and three or four looks. A database error never ends the loop:
//! it is logged, the pump backs off, and tries again.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::batch::BatchSize;
use crate::claim::{self, ClaimLimits};
use crate::db::{unless_stopped, Db};
use crate::dispatcher::Dispatcher;
use crate::error::DaemonError;
use crate::router::RouteTable;
use crate::shared::{EndpointLoad, Wake};
use crate::steering::Steering;
use crate::streak::{Say, Streak};
use crate::wakeup::{self, Settled};

/// Re-checks for writers (wakeup.rs): every WRITERS_FIRST for WRITERS_FAST_FOR, then
/// doubling up to WRITERS_MAX.
const WRITERS_FIRST: Duration = Duration::from_millis(1);
const WRITERS_FAST_FOR: Duration = Duration::from_millis(20);
const WRITERS_MAX: Duration = Duration::from_millis(50);
/// The first and the longest pause while work is reported but cannot be taken.
const STALL_FIRST: Duration = Duration::from_millis(5);
const STALL_MAX: Duration = Duration::from_millis(500);
/// With deliveries in flight and nothing to take, the pump looks again this often
/// (or at once when an outcome wakes it), without arming the wake-up.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(25);
/// While routing full batches, how often due rows are claimed too.
const DUE_CLAIM_EVERY: Duration = Duration::from_millis(50);
/// How long routing waits for an endpoint to have room again after leaving events
/// in the outbox for it. Past that, routing goes on: the events of an endpoint that
/// stays full are queued `pending`, so that the events of others behind them in the
/// outbox are reached.
const ROOM_WAIT: Duration = Duration::from_millis(25);
/// How long a settle that found no pending row at all vouches for that (see
/// `Pump::none_due_until`); the wake-ups that can change it clear it sooner.
const NONE_DUE_FOR: Duration = Duration::from_secs(1);

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Routed or claimed something: look again at once.
    Worked,
    /// Routed or claimed something, saw all there was, and deliveries are out: wait
    /// for their outcomes (or a short poll) rather than look again at once. The pass
    /// right after would only ask whether anything came in the moment since.
    WorkedAll,
    /// Every worker is busy: wait for one to finish.
    Full,
    /// Nothing to take now, but deliveries are in flight.
    InFlight,
    /// Nothing to do.
    Nothing,
    /// The last pass saw all there was and no delivery is out: settle (arm the
    /// wake-up, or find it still armed, and look: [`wakeup::settle`]) without first
    /// asking whether anything came in ([`wakeup::work_now`]), which the settle's look
    /// answers anyway.
    Unasked,
}

/// Rows taken back from the dispatcher (id, claim token), and when they are due.
pub(crate) type Withdrawn = (Vec<(i64, i64)>, tokio::time::Instant);

pub(crate) struct Pump {
    pub(crate) db: Db,
    pub(crate) routes: RouteTable,
    pub(crate) limits: ClaimLimits,
    /// Events a route, rows a due claim, take at a time (`crate::batch`).
    pub(crate) batch: BatchSize,
    pub(crate) dispatcher: Dispatcher,
    /// When the due claim last ran.
    pub(crate) last_due_claim: tokio::time::Instant,
    /// Events the last route left in the outbox for want of room: their URLs, and when.
    pub(crate) left: Option<(Vec<String>, tokio::time::Instant)>,
    /// Rows were put back in the queue ([`Wake::Released`]): the next pass claims due
    /// rows before it routes, so a dead relay's rows do not wait behind a backlog.
    pub(crate) due_first: bool,
    /// Pauses and rate limits: what the claims may take.
    pub(crate) steering: Steering,
    /// Rows taken back from the dispatcher whose release failed: `(rows, due at)`,
    /// released again on the next pass (the release checks each claim token), so a
    /// failed write does not leave them `sending` for the rest of their lease.
    pub(crate) unreleased: Vec<Withdrawn>,
    /// The last pass found the outbox and the queue empty (its route took fewer events
    /// than it asked for, its due claim fewer rows than it had room for), and nothing
    /// that brings work has woken the pump since: the next pass first asks whether
    /// there is anything to take ([`wakeup::work_now`]). A steady trickle of events
    /// used to pass two or three times per event, each empty pass a route and a
    /// due-claim transaction whose plans Postgres sets up at every run.
    pub(crate) exhausted: bool,
    /// The last route found fewer events than it asked for: the next one asks for no
    /// more than the lean route statement can take (`claim::lean_fit`). At 200 events/s
    /// every route took one event, through the full statement, because it asked for as
    /// many as there were free slots and the endpoint had room for fewer.
    pub(crate) trickle: bool,
    /// Until when no pending row can be due, as the last look for work found (no
    /// wake-up since but writers' notifications): a pass that routes the events waiting
    /// skips the due claim until then. Anything else of this relay's that can make a
    /// row claimable (an outcome, a freed worker, rows put back, pauses, a timer, the
    /// safety sweep) clears it. Another relay's outcomes do not wake this one: a row
    /// they make claimable waits for this relay's next look, and that relay claims it
    /// too. At 200 events/s every event's pass ran a due claim that found
    /// nothing: a transaction of six statements per event.
    pub(crate) none_due_until: Option<tokio::time::Instant>,
    /// The last settle without the question ([`Pass::Unasked`]) found work: events
    /// come faster than deliveries end, so ask first again. Arming with work waiting
    /// leaves the wake-up armed while the relay is busy, and the next business write
    /// would pay a NOTIFY; asking first keeps the arming to an idle relay, at the
    /// price of one more statement per event at a trickle, where nothing waits.
    pub(crate) ask_first: bool,
    /// The last settle ended idle, having armed the wake-up, and no notification (nor
    /// a reconnected listener, nor a database error) has come since: the next settle
    /// looks for work first and arms again only if it finds the flag disarmed
    /// (`wakeup::settle` says why that is enough).
    pub(crate) armed: bool,
}

/// What the pump does after a pass.
enum Next {
    /// Pass again at once.
    Pass,
    /// Wait for a wake-up, at most this long (`None`: no limit), then pass.
    Wait(Option<Duration>),
    /// Writers hold the outbox lock: wait this long (or for a wake-up), then settle
    /// again without a pass.
    Recheck(Duration),
    /// The database failed.
    Backoff(DaemonError),
}

/// The pump's pacing between passes.
struct Pacing {
    /// When the current run of "writers in flight" began.
    writers_since: Option<tokio::time::Instant>,
    writers_pause: Duration,
    /// Grows while passes find nothing although the database reports work: rows
    /// locked by another transaction (SKIP LOCKED passes over them). Without it the
    /// pump would spin until the lock goes.
    stall: Duration,
}

impl Pacing {
    fn new() -> Pacing {
        Pacing {
            writers_since: None,
            writers_pause: WRITERS_FIRST,
            stall: Duration::ZERO,
        }
    }

    fn reset(&mut self) {
        *self = Pacing::new();
    }

    /// Every millisecond for a while (a writer usually commits within a disk sync),
    /// then less and less often.
    fn writers_pause(&mut self) -> Duration {
        let since = *self
            .writers_since
            .get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() < WRITERS_FAST_FOR {
            self.writers_pause = WRITERS_FIRST;
        } else {
            self.writers_pause = (self.writers_pause * 2).min(WRITERS_MAX);
        }
        self.writers_pause
    }

    fn stall_pause(&mut self) -> Duration {
        self.writers_since = None;
        let pause = self.stall;
        self.stall = (self.stall * 2).clamp(STALL_FIRST, STALL_MAX);
        pause
    }
}

impl Pump {
    /// A route or due claim that ran out of time halves the batch; a run of passes
    /// that did not lets it grow back (`crate::batch`).
    fn size_batch(&mut self, passed: &Result<Pass, DaemonError>) {
        match passed {
            Err(DaemonError::BatchTooSlow(..)) => {
                if let Some(size) = self.batch.timed_out() {
                    warn!(
                        batch = size,
                        "a route or claim ran out of time (very large events?): taking \
                         fewer at a time"
                    );
                }
            }
            Err(_) => {}
            Ok(_) => {
                if let Some(size) = self.batch.went_through() {
                    info!(batch = size, "routes and claims take more at a time again");
                }
            }
        }
    }

    /// Claims due rows for the free slots and starts them: how many, of how many
    /// wanted.
    async fn claim_due(&mut self) -> Result<(usize, usize), DaemonError> {
        let now = tokio::time::Instant::now();
        self.last_due_claim = now;
        let free = self.dispatcher.free_slots();
        if free == 0 {
            return Ok((0, 0));
        }
        let (load, total) = self.load();
        let want = free
            .min(total)
            .min(usize::try_from(self.batch.get()).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok((0, 0));
        }
        let jobs = claim::claim_due(&self.db, &self.routes, &load, self.limits, want).await?;
        let claimed = jobs.len();
        self.steering.spend(&jobs);
        self.dispatcher.start(jobs, now, now + self.limits.lease);
        Ok((claimed, want))
    }

    /// What this relay holds per endpoint, narrowed by pauses and rate limits, and
    /// how many rows may be claimed in all (`usize::MAX` without an n8n-wide limit).
    fn load(&self) -> (EndpointLoad, usize) {
        let mut load = self.dispatcher.load();
        let total = self.steering.limit(&mut load, self.limits.per_endpoint);
        (load, total.unwrap_or(usize::MAX))
    }

    /// A wake-up's meaning for the pump.
    fn woken(&mut self, wake: Wake) {
        if wake != Wake::Notified {
            self.none_due_until = None;
        }
        if matches!(wake, Wake::Notified | Wake::Reconnected) {
            self.armed = false;
        }
        match wake {
            Wake::Released => self.due_first = true,
            // A new LISTEN connection may have missed a control notification.
            Wake::Control | Wake::Reconnected => self.steering.control(),
            Wake::Notified | Wake::Sweep => {}
            // Outcomes and free workers bring no events; whether they make a row
            // claimable (a retry, an entity's next row, an endpoint with room again) is
            // what `wakeup::work_now` answers.
            Wake::Recorded | Wake::Freed => return,
        }
        self.exhausted = false;
    }

    /// Runs until `shutdown`; returns the dispatcher so in-flight work can be drained,
    /// and the rows taken back from it whose release has not been written (a pass cut
    /// at shutdown, or a release that failed), each group with the time it is due (a
    /// URL's cool-down), to be given back with the rest.
    pub(crate) async fn run(
        mut self,
        mut wake: mpsc::Receiver<Wake>,
        shutdown: &CancellationToken,
    ) -> (Dispatcher, Vec<Withdrawn>) {
        let mut backoff = crate::db_backoff();
        let mut failing = false;
        let mut streak = Streak::default();
        let mut pacing = Pacing::new();
        let mut recheck = false;
        while !shutdown.is_cancelled() {
            while let Ok(w) = wake.try_recv() {
                self.woken(w);
                recheck = false;
            }
            // At SIGTERM a statement in flight may finish (STOP_PATIENCE), not wait
            // out its timeout against a database that stopped answering.
            let next = if recheck {
                let settled = self.settle(&mut pacing, false);
                match unless_stopped(shutdown, crate::STOP_PATIENCE, settled).await {
                    Some(next) => next,
                    None => break,
                }
            } else {
                let passed = match unless_stopped(shutdown, crate::STOP_PATIENCE, self.pass()).await
                {
                    Some(passed) => passed,
                    None => break,
                };
                self.size_batch(&passed);
                match passed {
                    Ok(Pass::Worked) => {
                        pacing.reset();
                        Next::Pass
                    }
                    Ok(Pass::WorkedAll) => {
                        pacing.reset();
                        Next::Wait(Some(IN_FLIGHT_POLL))
                    }
                    Ok(Pass::Full) => Next::Wait(None),
                    // Deliveries are out and their outcomes will wake the pump: arming
                    // the wake-up and checking for idle now would cost round trips and
                    // a NOTIFY per delivery window. Poll briefly instead, so new events
                    // for other endpoints never wait on a slow one.
                    Ok(Pass::InFlight) => Next::Wait(Some(IN_FLIGHT_POLL)),
                    Ok(nothing @ (Pass::Nothing | Pass::Unasked)) => {
                        let unasked = matches!(nothing, Pass::Unasked);
                        let settled = self.settle(&mut pacing, unasked);
                        match unless_stopped(shutdown, crate::STOP_PATIENCE, settled).await {
                            Some(next) => next,
                            None => break,
                        }
                    }
                    Err(e) => Next::Backoff(e),
                }
            };
            recheck = matches!(next, Next::Recheck(_));
            let limit = match next {
                Next::Pass => continue,
                Next::Wait(limit) => limit,
                Next::Recheck(pause) => Some(pause),
                Next::Backoff(e) => {
                    failing = true;
                    self.none_due_until = None;
                    self.armed = false;
                    let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                    let what = if e.is_missing_schema() {
                        "the relay's tables or functions are missing: run `n8n-relay migrate`"
                    } else {
                        "database error; backing off"
                    };
                    match streak.failed(what) {
                        Say::Warn => {
                            warn!(error = %e, retry_in_seconds = delay.as_secs_f64(), "{what}")
                        }
                        Say::Quietly => {
                            debug!(error = %e, retry_in_seconds = delay.as_secs_f64(), "{what}")
                        }
                    }
                    // The listener's reconnect ends the wait: Postgres is back, and
                    // deliveries resume within a round trip, not at the next try.
                    let pause = tokio::time::sleep(delay);
                    tokio::pin!(pause);
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = &mut pause => break,
                            w = wake.recv() => match w {
                                Some(w) => {
                                    let back = w == Wake::Reconnected;
                                    self.woken(w);
                                    if back {
                                        break;
                                    }
                                }
                                None => {
                                    (&mut pause).await;
                                    break;
                                }
                            },
                        }
                    }
                    continue;
                }
            };
            if failing {
                let (failed_tries, down_for) =
                    streak.ended().map_or((0, None), |(n, d)| (n, Some(d)));
                // Said of an outage and of a statement that kept failing alike (a
                // missing grant put right): what came back is the relay's work.
                info!(
                    failed_tries,
                    failing_for_seconds = down_for.map_or(0.0, |d| d.as_secs_f64()),
                    "the relay's statements succeed again; routing and delivery resumed"
                );
                failing = false;
                backoff = crate::db_backoff();
            }
            let until = async {
                match limit {
                    Some(d) if d.is_zero() => {}
                    // A little late rather than early: next_attempt_at <= now().
                    Some(d) => tokio::time::sleep(d + Duration::from_micros(200)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => {}
                // Something happened: a full pass, not just a re-check.
                w = wake.recv() => {
                    if let Some(w) = w {
                        self.woken(w);
                    }
                    recheck = false;
                }
                // A retry may be due, or a rate limit refilled.
                () = until => self.none_due_until = None,
            }
        }
        (self.dispatcher, self.unreleased)
    }

    /// A pass found nothing (or, `unasked`, was not asked to look: [`Pass::Unasked`]):
    /// arm the wake-up and decide how long to sleep.
    async fn settle(&mut self, pacing: &mut Pacing, unasked: bool) -> Next {
        let (load, total) = self.load();
        // A rate-starved URL's rows count as not claimable (and every row when the
        // n8n-wide limit is out of tokens); look again at the refill.
        let refill = self.held_back_for();
        let starved;
        let routes = if total == 0 && self.routes.delivering {
            let mut r = self.routes.clone();
            r.delivering = false;
            starved = r;
            &starved
        } else {
            &self.routes
        };
        let sooner = |next_due: Option<Duration>| match (next_due, refill) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let settled = wakeup::settle(&self.db, routes, &load, self.armed).await;
        self.armed = matches!(settled, Ok(Settled::Idle { .. }));
        if let Ok(settled) = settled {
            self.looked(settled.next_due(), total);
        }
        match settled {
            Ok(Settled::Idle { next_due }) if next_due.is_none_or(|d| !d.is_zero()) => {
                pacing.reset();
                self.ask_first = false;
                Next::Wait(sooner(next_due))
            }
            Ok(Settled::Writers { next_due }) if next_due.is_none_or(|d| !d.is_zero()) => {
                let pause = pacing.writers_pause();
                Next::Recheck(next_due.map_or(pause, |d| d.min(pause)))
            }
            // Events came in, or a retry fell due, while no pass looked: take them.
            Ok(_) if unasked => {
                self.exhausted = false;
                self.ask_first = true;
                Next::Pass
            }
            // Events wait, or a retry is due now, and the pass did not take them.
            Ok(_) => Next::Wait(Some(pacing.stall_pause())),
            Err(e) => Next::Backoff(e),
        }
    }

    /// How long until a rate limit's refill or an endpoint's cool-down lets rows go
    /// that it holds back now (`None`: nothing is held back so).
    fn held_back_for(&self) -> Option<Duration> {
        match (
            self.steering.next_refill(),
            self.dispatcher.cooldown_ends_in(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A look for work found the earliest claimable pending row due in `next_due`
    /// (`None`: there is none): until then, and until a wake-up that can change that,
    /// passes need no due claim (`none_due_until`). Not while a rate limit holds rows
    /// back, which the look does not count.
    fn looked(&mut self, next_due: Option<Duration>, total: usize) {
        let limited = total == 0 || self.held_back_for().is_some();
        self.none_due_until =
            (!limited).then(|| tokio::time::Instant::now() + next_due.unwrap_or(NONE_DUE_FOR));
    }

    /// How many events the endpoints the last route left events for can take now,
    /// while that is recent (ROOM_WAIT); `None` when routing need not wait on them.
    fn head_room(&mut self, load: &EndpointLoad) -> Option<usize> {
        let (urls, since) = self.left.as_ref()?;
        if since.elapsed() >= ROOM_WAIT {
            self.left = None;
            return None;
        }
        Some(load.room(urls, self.limits.per_endpoint))
    }

    /// Releases the rows taken back from the dispatcher, in one statement; after a
    /// failed write they stay for the next pass.
    async fn release_withdrawn(&mut self) -> Result<(), DaemonError> {
        claim::release(&self.db, &self.unreleased).await?;
        self.unreleased.clear();
        Ok(())
    }

    /// Route fresh events (claiming the first of them), then claim due rows; due rows
    /// first after rows were put back.
    async fn pass(&mut self) -> Result<Pass, DaemonError> {
        if let Some(routes) = self.steering.refresh(&self.db).await? {
            self.routes = routes;
            self.none_due_until = None;
            // Claimed rows a new pause holds go back now, not out.
            let held = self.steering.holds(&self.routes);
            let rows = self.dispatcher.withdraw(|job| !held(job));
            if !rows.is_empty() {
                info!(
                    rows = rows.len(),
                    "paused: claimed rows not yet sent go back to the queue"
                );
                self.unreleased.push((rows, tokio::time::Instant::now()));
            }
        }
        // Claimed rows for a URL that asked to slow down wait for it in the queue,
        // due when it asked (other relays respect that too).
        self.unreleased.extend(self.dispatcher.withdraw_cooling());
        self.unreleased.extend(self.dispatcher.take_late());
        self.release_withdrawn().await?;
        self.dispatcher.kick();
        self.steering.top_up(&self.db).await?;
        if std::mem::take(&mut self.exhausted) && !self.due_first {
            if !self.dispatcher.busy() && !self.ask_first {
                // Until a wake-up that brings work, the passes after this settle
                // go on settling: an outcome written, a worker freed.
                self.exhausted = true;
                return Ok(Pass::Unasked);
            }
            let (load, total) = self.load();
            let (work, next_due) = wakeup::work_now(&self.db, &self.routes, &load).await?;
            self.looked(next_due, total);
            if !work {
                // Exhausted still: the next pass asks again.
                self.exhausted = true;
                return Ok(if self.dispatcher.busy() {
                    Pass::InFlight
                } else {
                    Pass::Nothing
                });
            }
        }
        let mut due = 0;
        if self.due_first && self.routes.delivering && self.dispatcher.free_slots() > 0 {
            let (claimed, wanted) = self.claim_due().await?;
            // Until a claim finds fewer due rows than it had room for, they come first.
            self.due_first = claimed >= wanted;
            due = claimed;
        }
        let delivering = self.routes.delivering;
        let (load, total) = self.load();
        let free = if delivering {
            self.dispatcher.free_slots().min(total)
        } else {
            0
        };
        let sent = tokio::time::Instant::now();
        let lease_until = sent + self.limits.lease;
        // While delivering, route only as many events as there are free slots: they
        // are inserted already claimed and go out at once. The route statement leaves
        // in the outbox the events an endpoint with room could not take in this batch,
        // rather than insert them pending and claim them later with a second write per
        // row (see `claim::ROUTE_AND_CLAIM`). Such events are the head of the outbox,
        // so for the next ROOM_WAIT routing takes only as many as their endpoints have
        // room for (every event picked and left again is locked again: 45 % of the
        // events picked while keeping up with writers were), and none while those are
        // full (an outcome wakes the pump). Past ROOM_WAIT of a full endpoint, routing
        // goes on and its events are queued pending, so the outbox moves on to the
        // others' events behind them. Paused, route everything.
        let head_room = if delivering {
            self.head_room(&load)
        } else {
            None
        };
        let waiting_for_room = head_room == Some(0);
        // Out of n8n-wide tokens, route as if paused: the events wait as pending rows.
        let route = if delivering && total > 0 {
            i64::try_from(free.min(head_room.unwrap_or(usize::MAX)))
                .unwrap_or(i64::MAX)
                .min(self.batch.get())
        } else {
            self.batch.get()
        };
        let route = if self.trickle && delivering && route > 0 {
            match claim::lean_fit(&self.routes, &load, self.limits.per_endpoint, free) {
                0 => route,
                fit => route.min(i64::try_from(fit).unwrap_or(i64::MAX)),
            }
        } else {
            route
        };
        let mut routed = if route > 0 {
            claim::route_and_claim(&self.db, &self.routes, &load, self.limits, route, free).await?
        } else {
            claim::Routed::default()
        };
        // The route saw every event there was and left none behind.
        let route_drained = route > 0 && routed.picked < route && routed.left_for.is_empty();
        if route > 0 {
            self.trickle = route_drained;
            if !routed.left_for.is_empty() {
                self.left = Some((
                    std::mem::take(&mut routed.left_for),
                    tokio::time::Instant::now(),
                ));
            } else if head_room.is_none() {
                self.left = None;
            }
        }
        let fresh = routed.jobs.len();
        // Paused, there is nothing to claim.
        let mut due_exhausted = !delivering;
        self.steering.spend(&routed.jobs);
        self.dispatcher.start(routed.jobs, sent, lease_until);
        if delivering {
            let free = self.dispatcher.free_slots();
            if free == 0 {
                return Ok(if routed.events > 0 || due > 0 {
                    Pass::Worked
                } else {
                    Pass::Full
                });
            }
            // A full route means more events wait in the outbox: take those first, and
            // look for due rows (retries, rows past an endpoint's cap) only every
            // DUE_CLAIM_EVERY meanwhile, instead of a second statement per pass.
            let now = tokio::time::Instant::now();
            let made_pending = usize::try_from(routed.enqueued).unwrap_or(0) > fresh;
            if now < self.last_due_claim + DUE_CLAIM_EVERY {
                // Unless this route queued rows pending (their entity's previous row
                // is still out, their endpoint was full, or their route is disabled):
                // then due rows are claimed at every such pass, so those rows go out
                // as soon as they may. Claimed up to DUE_CLAIM_EVERY later, a row held
                // behind its entity's previous one was often still pending when the
                // entity's next event was routed, which then waited behind it too: in
                // a drain under per-entity ordering, 80 % of the rows were queued
                // pending and claimed with a second write.
                if route > 0 && routed.picked >= route && !made_pending {
                    return Ok(Pass::Worked);
                }
                if waiting_for_room && due == 0 {
                    return Ok(Pass::InFlight);
                }
            }
            // The route took every notified event and queued none pending, and the
            // last settle found no pending row due before now: nothing to claim.
            if route_drained
                && !made_pending
                && self.none_due_until.is_some_and(|until| now < until)
            {
                due_exhausted = true;
            } else {
                let (claimed, wanted) = self.claim_due().await?;
                due += claimed;
                due_exhausted = claimed < wanted;
            }
        }
        self.exhausted = route_drained && due_exhausted;
        Ok(if routed.events > 0 || fresh > 0 || due > 0 {
            if self.exhausted && self.dispatcher.busy() {
                Pass::WorkedAll
            } else {
                Pass::Worked
            }
        } else if self.dispatcher.busy() {
            Pass::InFlight
        } else {
            Pass::Nothing
        })
    }
}
