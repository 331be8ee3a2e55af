//! Steering while the relay runs: the pauses an operator sets (`n8n-relay queue
//! pause`, persisted in `webhook_pauses`) and the rate limits of the configuration
//! (`routes.EVENT.max_per_second`, `n8n.max_per_second`). Both only narrow what the
//! claims may take: a paused or rate-starved URL has no room, so its events wait in
//! the queue, pending and in order; nothing is dropped.
//!
//! Rate limits hold for the database as a whole, whatever the number of relays: each
//! limited URL (and `n8n` for all of them together) has a token bucket in
//! `webhook_rate_budget`, refilled at the limit and holding at most a twentieth of a
//! second's worth. A relay takes a few tokens at a time ([`GRANT`], one statement,
//! the bucket's row lock ordering relays) and claims at most as many rows as it
//! holds tokens; the rows go out as soon as they are claimed.

use std::collections::HashMap;
use std::time::Duration;

use relay_core::pause::Scope;
use relay_core::Config;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::db::Db;
use crate::error::DaemonError;
use crate::router::RouteTable;
use crate::shared::{EndpointLoad, Job};

/// Pauses are read again at least this often (at once on a `control` notification).
pub const PAUSES_EVERY: Duration = Duration::from_secs(1);

/// Takes up to `$4` tokens from bucket `$1` (rate `$2` per second, holding at most
/// `$3`), creating it full; returns how many were granted. Commits asynchronously: a
/// grant lost to a server crash only loses tokens.
pub const GRANT: &str = "INSERT INTO webhook_rate_budget AS b (key, tokens, last_grant, updated_at)
    SELECT $1, $3 - least($4, floor($3)), least($4, floor($3)), now()
    FROM (SELECT set_config('synchronous_commit', 'off', true)) s
    ON CONFLICT (key) DO UPDATE SET
        last_grant = greatest(0, least($4, floor(least($3, b.tokens
            + $2 * greatest(0, extract(epoch FROM now() - b.updated_at)::float8))))),
        tokens = least($3, b.tokens
                + $2 * greatest(0, extract(epoch FROM now() - b.updated_at)::float8))
            - greatest(0, least($4, floor(least($3, b.tokens
                + $2 * greatest(0, extract(epoch FROM now() - b.updated_at)::float8))))),
        updated_at = greatest(b.updated_at, now())
    RETURNING last_grant";

/// The bucket key of the n8n-wide limit.
const N8N_KEY: &str = "n8n";

/// One rate limit's local share: tokens granted to this relay, not yet spent.
#[derive(Debug)]
struct Bucket {
    key: String,
    rate: f64,
    /// What the shared bucket holds at most: a twentieth of a second's worth, the
    /// burst after a quiet spell.
    capacity: f64,
    /// Tokens asked for at a time: a hundredth of a second's worth, so that at most
    /// about a hundred grants a second are written, and a relay never sits on more
    /// than a sliver of the limit.
    chunk: f64,
    tokens: f64,
    /// Not before this may the shared bucket be asked again (it was empty).
    next_ask: Instant,
    /// The last claim took every token it had: more work waits for the next grant.
    starved: bool,
}

impl Bucket {
    fn new(key: String, rate: f64) -> Bucket {
        Bucket {
            key,
            rate,
            capacity: (rate / 20.0).max(1.0),
            chunk: (rate / 100.0).max(1.0),
            tokens: 0.0,
            next_ask: Instant::now(),
            starved: false,
        }
    }

    fn room(&self) -> usize {
        // Whole tokens; a fraction is never spent.
        self.tokens.max(0.0).floor() as usize
    }
}

/// What narrows the claims: pauses and rate limits.
pub(crate) struct Steering {
    /// The configuration's routes; pauses are applied to a copy.
    base: RouteTable,
    pauses: Vec<Scope>,
    /// Paused URLs: no room, whatever event a row carries.
    paused_urls: Vec<String>,
    read_at: Option<Instant>,
    /// A `control` notification arrived: read the pauses at the next pass.
    stale: bool,
    /// Per limited URL, its bucket.
    by_url: HashMap<String, Bucket>,
    /// The n8n-wide bucket.
    n8n: Option<Bucket>,
}

impl Steering {
    pub(crate) fn new(config: &Config) -> Steering {
        let mut by_url: HashMap<String, Bucket> = HashMap::new();
        for route in config.routes() {
            if let Some(rate) = route.max_per_second {
                // Two routes to one URL with different limits: the lower one holds.
                let bucket = by_url
                    .entry(route.url.clone())
                    .or_insert_with(|| Bucket::new(format!("url {}", route.url), rate));
                if rate < bucket.rate {
                    *bucket = Bucket::new(bucket.key.clone(), rate);
                }
            }
        }
        let n8n = (config.n8n.max_per_second > 0.0)
            .then(|| Bucket::new(N8N_KEY.to_string(), config.n8n.max_per_second));
        Steering {
            base: RouteTable::new(config),
            pauses: Vec::new(),
            paused_urls: Vec::new(),
            read_at: None,
            stale: true,
            by_url,
            n8n,
        }
    }

    /// The route table before any pause is read.
    pub(crate) fn routes(&self) -> RouteTable {
        self.base.clone()
    }

    /// A `control` notification: pauses changed.
    pub(crate) fn control(&mut self) {
        self.stale = true;
    }

    /// Reads the pauses when told to or a second old; a new route table when they
    /// changed.
    pub(crate) async fn refresh(&mut self, db: &Db) -> Result<Option<RouteTable>, DaemonError> {
        let due = self.read_at.is_none_or(|t| t.elapsed() >= PAUSES_EVERY);
        if !(self.stale || due) {
            return Ok(None);
        }
        let mut pauses = db
            .bounded("reading the pauses", async {
                let client = db.client().await?;
                Ok(relay_core::pause::load(&client).await?)
            })
            .await?;
        pauses.sort();
        self.read_at = Some(Instant::now());
        self.stale = false;
        if pauses == self.pauses {
            return Ok(None);
        }
        for p in pauses.iter().filter(|p| !self.pauses.contains(p)) {
            warn!(paused = %p, "paused: its events wait in the queue until resumed");
        }
        for p in self.pauses.iter().filter(|p| !pauses.contains(p)) {
            info!(resumed = %p, "resumed");
        }
        let (table, urls) = self.base.paused(&pauses);
        self.pauses = pauses;
        self.paused_urls = urls;
        Ok(Some(table))
    }

    /// Whether a claimed row is held by the pauses `routes` reflects (its event type
    /// is held, its URL paused, or delivery paused altogether).
    pub(crate) fn holds<'a>(&'a self, routes: &'a RouteTable) -> impl Fn(&Job) -> bool + 'a {
        move |job| {
            !routes.delivering
                || routes.held.contains(&job.event_type)
                || self.paused_urls.contains(&job.url)
        }
    }

    /// Takes tokens for every limited URL running low (and the n8n-wide bucket).
    pub(crate) async fn top_up(&mut self, db: &Db) -> Result<(), DaemonError> {
        let now = Instant::now();
        let low: Vec<&mut Bucket> = self
            .by_url
            .values_mut()
            .chain(self.n8n.as_mut())
            .filter(|b| b.tokens < b.chunk / 2.0 && now >= b.next_ask)
            .collect();
        if low.is_empty() {
            return Ok(());
        }
        db.bounded("taking rate-limit tokens", async {
            let client = db.client().await?;
            let statement = client.prepare_cached(GRANT).await?;
            for bucket in low {
                let want = (bucket.chunk - bucket.tokens).ceil().max(1.0);
                let row = client
                    .query_one(
                        &statement,
                        &[&bucket.key, &bucket.rate, &bucket.capacity, &want],
                    )
                    .await?;
                let granted: f64 = row.try_get(0)?;
                bucket.tokens += granted;
                // Short of what was asked: the shared bucket is empty until it refills,
                // and rows may be waiting for it (another relay holds the tokens).
                bucket.next_ask = if granted < want {
                    if bucket.tokens < 1.0 {
                        bucket.starved = true;
                    }
                    let wait = ((want - granted) / bucket.rate).min(1.0);
                    Instant::now()
                        + Duration::try_from_secs_f64(wait).unwrap_or(Duration::from_secs(1))
                } else {
                    Instant::now()
                };
            }
            Ok(())
        })
        .await
    }

    /// Narrows `load` to what may be claimed now: paused URLs and URLs out of tokens
    /// get no room (they count as holding `cap` rows), the others at most their
    /// tokens. Returns how many rows may be claimed in all (the n8n-wide tokens), if
    /// that is limited.
    pub(crate) fn limit(&self, load: &mut EndpointLoad, cap: i32) -> Option<usize> {
        for url in &self.paused_urls {
            load.limit(url, 0, cap);
        }
        for (url, bucket) in &self.by_url {
            load.limit(url, bucket.room(), cap);
        }
        self.n8n.as_ref().map(Bucket::room)
    }

    /// Spends tokens for claimed rows. `offered` is what [`Steering::limit`] allowed:
    /// a URL that took all of it probably has more waiting.
    pub(crate) fn spend(&mut self, jobs: &[Job]) {
        if self.by_url.is_empty() && self.n8n.is_none() {
            return;
        }
        let mut per_url: HashMap<&str, usize> = HashMap::new();
        for job in jobs {
            *per_url.entry(job.url.as_str()).or_insert(0) += 1;
        }
        for (url, bucket) in &mut self.by_url {
            let taken = per_url.get(url.as_str()).copied().unwrap_or(0);
            let offered = bucket.room();
            bucket.tokens -= taken as f64;
            bucket.starved = offered > 0 && taken >= offered || offered == 0 && bucket.starved;
        }
        if let Some(bucket) = &mut self.n8n {
            let offered = bucket.room();
            bucket.tokens -= jobs.len() as f64;
            bucket.starved = offered > 0 && jobs.len() >= offered || offered == 0 && bucket.starved;
        }
    }

    /// When a starved limit gets its next tokens: the pump looks again then.
    pub(crate) fn next_refill(&self) -> Option<Duration> {
        let now = Instant::now();
        self.by_url
            .values()
            .chain(self.n8n.as_ref())
            .filter(|b| b.starved && b.tokens < 1.0)
            .map(|b| {
                b.next_ask
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1))
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_a_twentieth_of_a_second_and_ask_for_a_hundredth() {
        let b = Bucket::new("k".into(), 400.0);
        assert_eq!((b.capacity, b.chunk), (20.0, 4.0));
        let slow = Bucket::new("k".into(), 2.0);
        assert_eq!(
            (slow.capacity, slow.chunk),
            (1.0, 1.0),
            "never less than one"
        );
    }

    #[test]
    fn a_url_out_of_tokens_gets_no_room_and_a_paused_one_none_either() {
        let mut config = Config::default();
        config.routes.insert(
            "lead_scraped".into(),
            relay_core::config::RouteConfig {
                max_per_second: Some(10.0),
                ..Default::default()
            },
        );
        let url = config.routes()[0].url.clone();
        let mut steering = Steering::new(&config);
        steering.paused_urls = vec!["http://paused/".into()];
        let mut load = EndpointLoad::default();
        assert_eq!(steering.limit(&mut load, 64), None, "no n8n-wide limit");
        assert!(
            load.saturated.contains(&url) && load.saturated.contains(&"http://paused/".to_string())
        );

        if let Some(b) = steering.by_url.get_mut(&url) {
            b.tokens = 3.5;
        }
        let mut load = EndpointLoad::default();
        steering.limit(&mut load, 64);
        assert_eq!(load.room(std::slice::from_ref(&url), 64), 3);
    }
}
