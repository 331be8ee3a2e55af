//! The command line. `--help` is the reference; keep it true.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "n8n-relay",
    version,
    about = "Postgres changes to signed n8n webhooks, and n8n's signed callbacks back into Postgres",
    long_about = "Postgres changes to signed n8n webhooks, and n8n's signed callbacks back into Postgres.\n\n\
Configuration layers, later wins: built-in defaults < TOML file (--config, else config/relay.toml \
if present) < .env in the working directory < environment (RELAY_SECTION__KEY, or the older \
names DATABASE_URL, N8N_*, WEBHOOK_*).\n\n\
Exit codes: 0 ok, 1 runtime failure, 2 bad usage or invalid configuration."
)]
pub struct Cli {
    /// TOML config file (default: config/relay.toml when it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay, the callback listener, the console and /metrics, /healthz, /readyz.
    Run,
    /// Run the callback listener alone.
    Callbacks,
    /// Run the operator console alone (console.listen, default 127.0.0.1:9188).
    Console,
    /// Install or upgrade the schema (idempotent).
    Migrate(MigrateArgs),
    /// Print the effective configuration with secrets redacted; exit 2 if invalid.
    CheckConfig(CheckConfigArgs),
    /// Inspect and steer the delivery queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Record an event by hand, through webhook_emit, delivered like any other.
    Emit(EmitArgs),
    /// Print signature headers for a request body read from stdin.
    Sign(SignArgs),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Also create the reference leads, demo_sites and videos tables.
    #[arg(long)]
    pub example_tables: bool,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Counts by status, oldest pending age, rows due now.
    Stats {
        /// Break the counts down by event type.
        #[arg(long)]
        by_event: bool,
        /// Print JSON (stable keys, for scripts) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List queue rows, newest first.
    List {
        /// pending, sending, sent, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Event type, e.g. lead_scraped.
        #[arg(long)]
        event: Option<String>,
        /// At most this many rows (1 to 10000).
        #[arg(long, default_value_t = 50, allow_negative_numbers = true,
              value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
        /// Print JSON (stable keys, for scripts) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one row with its attempts and last error.
    Show {
        /// The queue row's id, or the webhook id its deliveries carry (X-Webhook-Id,
        /// in n8n's execution data and the relay's log).
        id: relay_core::queue_admin::RowRef,
        /// Print JSON (stable keys, for scripts) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put failed rows back to pending now (retry_count reset, noted in the history); a
    /// pending row waiting out a delay, a Retry-After or a pause-free park is made due
    /// now, its retry_count kept.
    #[command(group(ArgGroup::new("which").required(true).args(["id", "all_failed"])))]
    Retry {
        /// The row to retry.
        id: Option<i64>,
        /// Every failed row (narrow with --event and --since).
        #[arg(long)]
        all_failed: bool,
        /// Only rows of this event type (with --all-failed).
        #[arg(long, requires = "all_failed", conflicts_with = "id")]
        event: Option<String>,
        /// Only rows created at or after this time: 2025-11-04T12:00:00Z (without a
        /// zone, UTC; or an offset like +02:00), 2025-11-04, or an age like 30m, 6h, 2d.
        #[arg(
            long,
            requires = "all_failed",
            conflicts_with = "id",
            allow_hyphen_values = true
        )]
        since: Option<String>,
        /// Print JSON (stable keys, for scripts) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a pending or failed row (a row being sent is refused).
    Cancel {
        /// The queue row's id.
        id: i64,
        /// Print JSON (stable keys, for scripts) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Hold deliveries of one event type, one URL, or all, until resumed. Persisted in
    /// the database: every relay on it obeys within a second, a restart keeps it.
    /// Held events wait in the queue, in order; nothing is dropped.
    Pause {
        #[command(flatten)]
        what: PauseScope,
        /// Why, for `queue paused` and the console.
        #[arg(long)]
        reason: Option<String>,
        /// Print JSON (stable keys, for scripts) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Lift a pause made with `queue pause` (the same flag and value); other pauses stay.
    Resume {
        #[command(flatten)]
        what: PauseScope,
        /// Print JSON (stable keys, for scripts) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// What is paused, since when, by whom, why, and how many pending rows each holds.
    Paused {
        /// Print JSON (stable keys, for scripts) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete what is finished and older than N days, in batches: sent and cancelled
    /// rows with their logs and retry history, incoming callback logs, routed outbox
    /// events nothing waits on, and workflow runs n8n has not reported on since.
    Cleanup {
        /// Rows queued and finished more than this many days ago go (1 to 36500).
        #[arg(long, allow_negative_numbers = true,
              value_parser = clap::value_parser!(u32).range(1..=36_500))]
        days: u32,
        /// Count what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete failed rows too, except one under ordering = "block", which holds its
        /// entity's later events until retried or cancelled.
        #[arg(long)]
        include_failed: bool,
        /// Print JSON (stable keys, for scripts) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct EmitArgs {
    /// Event type, e.g. lead_scraped.
    pub event: String,
    /// What the event is about (the body's entity_type), e.g. lead.
    #[arg(long)]
    pub entity_type: String,
    /// Its id (the body's entity_id; per-entity ordering keys on it). Leave it out for
    /// an entity without an integer id: entity_id is then null and the event unordered.
    #[arg(long)]
    pub entity_id: Option<i64>,
    /// The event's data, a JSON object.
    #[arg(long, default_value = "{}")]
    pub data: String,
}

#[derive(Args)]
pub struct SignArgs {
    /// Secret to sign with (default: security.n8n_webhook_secret, as n8n would sign a callback).
    #[arg(long)]
    pub secret: Option<String>,
    /// Unix seconds (default: now).
    #[arg(long, allow_negative_numbers = true)]
    pub timestamp: Option<u64>,
    /// x-webhook-signature or standard-webhooks (default: security.scheme when the
    /// secret comes from the configuration, else x-webhook-signature).
    #[arg(long)]
    pub scheme: Option<String>,
    /// The webhook-id to sign under standard-webhooks (default: a fresh msg_ id); the
    /// default scheme signs no id, so it refuses this flag.
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub id: Option<String>,
}

/// By hand: `--secret` never shows in a debug print.
impl std::fmt::Debug for SignArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignArgs")
            .field(
                "secret",
                &self.secret.as_ref().map(|_| relay_core::config::REDACTED),
            )
            .field("timestamp", &self.timestamp)
            .field("scheme", &self.scheme)
            .field("id", &self.id)
            .finish()
    }
}

/// What `queue pause` holds and `queue resume` lifts: exactly one of the three.
#[derive(Debug, Args)]
#[group(id = "what", required = true, multiple = false)]
pub struct PauseScope {
    /// One event type's route, e.g. lead_scraped.
    #[arg(long)]
    pub event: Option<String>,
    /// Every route to this URL.
    #[arg(long)]
    pub url: Option<String>,
    /// Every delivery (`queue resume --all` lifts only this pause).
    #[arg(long)]
    pub all: bool,
}
