//! `n8n-relay-bench`: the relay against the limits of its machine. It creates a fresh
//! database, a null HTTP sink and the real `n8n-relay run`, measures the limits first
//! (the sink's ceiling, Postgres's commit rate, a latency floor), then each scenario,
//! and prints every figure beside its baseline and target. It asserts nothing about
//! speed: it fails only when a scenario cannot run (for instance, events are lost).

mod bench;
mod db;
mod load;
mod machine;
mod profile;
mod relay;
mod report;
mod rows;
mod scenarios;
mod side_by_side;
mod sink;
mod stats;
mod wal;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use serde::Serialize;
use serde_json::json;

use crate::bench::{Bench, Limits, Sizes};
use crate::db::BenchDb;
use crate::relay::RelaySpec;
use crate::report::{Failure, Report};
use crate::side_by_side::Build;
use crate::sink::Sink;

#[derive(Debug, Parser)]
#[command(
    name = "n8n-relay-bench",
    version,
    about = "Benchmark n8n-relay against its machine's limits"
)]
struct Args {
    /// The Postgres server to create the benchmark database on (its maintenance
    /// database). The benchmark creates `bench_<pid>` there and drops it at the end.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// The `n8n-relay` binary (default: the one next to this binary).
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// Every scenario briefly, for CI: checks that it all runs, not how fast.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// What to print on stdout.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Extra environment for the relay, KEY=VALUE, repeatable (e.g.
    /// RELAY_QUEUE__MAX_PER_ENDPOINT=32), to compare settings. `{database_url}` in a
    /// value is replaced by the benchmark database's URL, `{database}` by its name (for
    /// a URL of your own, a Unix socket's, say). Recorded in the output.
    #[arg(long = "relay-env", value_parser = parse_key_value)]
    relay_env: Vec<(String, String)>,
    /// Sample what the relay's Postgres backends are doing during each scenario and
    /// print where the time went (on stderr; also in the JSON details). Keeps the
    /// relay's log.
    #[arg(long)]
    profile: bool,
    /// Run only these scenarios (comma-separated); the limits always run first.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Another `n8n-relay` binary (an earlier build, say) to measure beside this one in
    /// the same run: the scenarios run `--rounds` times with each binary, interleaved,
    /// each round in a fresh database migrated by its own binary, and every figure is
    /// printed as both builds' medians and their ratio.
    #[arg(long)]
    against: Option<PathBuf>,
    /// With --against: extra environment for the other build's relay only, KEY=VALUE,
    /// repeatable, on top of --relay-env. With this build's own binary given to
    /// --against, it compares a setting side by side (e.g.
    /// RELAY_DATABASE__SSLMODE=disable).
    #[arg(long = "against-env", value_parser = parse_key_value, requires = "against")]
    against_env: Vec<(String, String)>,
    /// With --against: rounds per build.
    #[arg(long, default_value_t = 2, requires = "against",
          value_parser = clap::value_parser!(u16).range(1..=50))]
    rounds: u16,
}

/// Settings as given on the command line, `KEY=VALUE`, for the output.
fn key_values<'a>(env: impl IntoIterator<Item = &'a (String, String)>) -> Vec<String> {
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Scenario {
    TriggerCost,
    KeepingUp,
    Latency,
    Footprint,
    Drain,
    DrainOrdered,
    DrainLimited,
    Console,
}

/// The order they run in: the drains stop and restart the relay, so they go last;
/// the console's fills the queue with a million rows, so it goes after them.
const ALL: [Scenario; 8] = [
    Scenario::TriggerCost,
    Scenario::KeepingUp,
    Scenario::Latency,
    Scenario::Footprint,
    Scenario::Drain,
    Scenario::DrainOrdered,
    Scenario::DrainLimited,
    Scenario::Console,
];

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Ok(false) when a scenario failed to run.
async fn run(args: Args) -> Result<bool> {
    let relay_bin = match &args.relay_bin {
        // Absolute: the relay runs in its own working directory.
        Some(p) => std::fs::canonicalize(p)
            .with_context(|| format!("--relay-bin {}: no such file", p.display()))?,
        None => relay::default_binary()?,
    };
    let Some(against) = &args.against else {
        let report = one_run(&args, &relay_bin, None, &[]).await?;
        emit(&report, &args, || {
            print_header(&report);
            print!("{}", report.to_table());
        })?;
        return Ok(report.failures.is_empty());
    };
    let against = std::fs::canonicalize(against)
        .with_context(|| format!("--against {}: no such file", against.display()))?;
    let mut order = side_by_side::order(usize::from(args.rounds));
    let (mut this, mut other) = (Vec::new(), Vec::new());
    // A round that cannot run (its binary's migrate fails, say) ends the run, but
    // the rounds before it are still printed: they may have taken many minutes.
    let mut stopped = None;
    for (i, build) in order.iter().enumerate() {
        let (bin, env) = match build {
            Build::This => (&relay_bin, &[][..]),
            Build::Against => (&against, &args.against_env[..]),
        };
        eprintln!(
            "bench: round {} of {}: {}",
            i + 1,
            order.len(),
            bin.display()
        );
        match one_run(&args, bin, Some(bin), env).await {
            Ok(report) if *build == Build::This => this.push(report),
            Ok(report) => other.push(report),
            Err(e) => {
                eprintln!("bench: round {} could not run: {e:#}", i + 1);
                stopped = Some(e.context(format!("round {} of {}", i + 1, order.len())));
                break;
            }
        }
    }
    order.truncate(this.len() + other.len());
    let stopped = match stopped {
        // Nothing ran: nothing to print but why.
        Some(e) if order.is_empty() => return Err(e),
        other => other,
    };
    let both = SideBySide {
        this_binary: relay_bin.display().to_string(),
        against_binary: against.display().to_string(),
        against_env: key_values(&args.against_env),
        order,
        figures: side_by_side::compare(&this, &other),
        this_rounds: this,
        against_rounds: other,
    };
    emit(&both, &args, || print_side_by_side(&both))?;
    if let Some(e) = stopped {
        return Err(e);
    }
    Ok(both
        .this_rounds
        .iter()
        .chain(&both.against_rounds)
        .all(|r| r.failures.is_empty()))
}

/// The scenarios once, with `relay_bin` (and `env` on top of `--relay-env`), in a
/// database of their own: a round never sees another's rows, dead tuples or schema.
async fn one_run(
    args: &Args,
    relay_bin: &Path,
    migrated_by: Option<&Path>,
    env: &[(String, String)],
) -> Result<Report> {
    let db = BenchDb::create(&args.database_url, migrated_by).await?;
    eprintln!("bench: database {} created", db.name);
    let result = tokio::select! {
        r = measure(&db, args, relay_bin.to_path_buf(), env) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    db.drop_database().await;
    result
}

/// `--against`: the figures compared, and every round whole (for reading a median's
/// spread, or a profile, afterwards).
#[derive(Serialize)]
struct SideBySide {
    this_binary: String,
    against_binary: String,
    /// `--against-env`, for the other build only.
    against_env: Vec<String>,
    order: Vec<Build>,
    figures: Vec<side_by_side::Row>,
    this_rounds: Vec<Report>,
    against_rounds: Vec<Report>,
}

async fn measure(
    db: &BenchDb,
    args: &Args,
    relay_bin: PathBuf,
    extra_env: &[(String, String)],
) -> Result<Report> {
    let sink = Sink::start().await?;
    let mut spec = RelaySpec::new(relay_bin.clone(), &db.url, &sink.url())?;
    spec.keep_log = args.profile;
    let env: Vec<&(String, String)> = args.relay_env.iter().chain(extra_env).collect();
    for (k, v) in &env {
        spec.env.insert(k.clone(), expand(v, &db.url, &db.name));
    }
    let mut bench = Bench {
        db,
        sink,
        spec,
        relay: None,
        sizes: Sizes::new(args.quick),
        limits: Limits::default(),
        profile: args.profile,
    };
    let mut report = Report {
        mode: if args.quick { "quick" } else { "full" },
        machine: machine(&bench, &relay_bin).await,
        relay_env: key_values(env.iter().copied()),
        ..Report::default()
    };
    // Stand in for autovacuum where the server has it off (a CI or test server).
    let autovacuum = db::setting(&bench.db.client().await?, "autovacuum").await?;
    let janitor = (autovacuum == "off").then(|| {
        let url = db.url.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(bench::JANITOR_EVERY).await;
                if let Ok(c) = db::connect(&url).await {
                    let _ = c.batch_execute(bench::VACUUM_RELAY_TABLES).await;
                }
            }
        })
    });
    report.machine["autovacuum"] = serde_json::json!(autovacuum);
    run_scenarios(&mut bench, &mut report, &args.only).await;
    if let Some(j) = janitor {
        j.abort();
    }
    bench.stop_relay().await;
    Ok(report)
}

async fn run_scenarios(bench: &mut Bench<'_>, report: &mut Report, only: &[Scenario]) {
    step(bench, report, scenarios::limits::NAME, None).await;
    for s in ALL {
        if !only.is_empty() && !only.contains(&s) {
            continue;
        }
        step(bench, report, name(s), Some(s)).await;
    }
}

fn name(s: Scenario) -> &'static str {
    match s {
        Scenario::TriggerCost => scenarios::trigger_cost::NAME,
        Scenario::KeepingUp => scenarios::keeping_up::NAME,
        Scenario::Latency => scenarios::latency::NAME,
        Scenario::Footprint => scenarios::footprint::NAME,
        Scenario::Drain => scenarios::drain::NAME,
        Scenario::DrainOrdered => scenarios::drain_ordered::NAME,
        Scenario::DrainLimited => scenarios::drain_limited::NAME,
        Scenario::Console => scenarios::console::NAME,
    }
}

/// Runs one scenario; a failure is recorded and the relay restarted for the next.
async fn step(
    bench: &mut Bench<'_>,
    report: &mut Report,
    label: &'static str,
    s: Option<Scenario>,
) {
    eprintln!("bench: {label} ...");
    if let Err(e) = bench.vacuum().await {
        eprintln!("bench: VACUUM before {label} failed: {e:#}");
    }
    let started = std::time::Instant::now();
    let result = match s {
        None => scenarios::limits::run(bench, report).await,
        Some(Scenario::TriggerCost) => scenarios::trigger_cost::run(bench, report).await,
        Some(Scenario::KeepingUp) => scenarios::keeping_up::run(bench, report).await,
        Some(Scenario::Latency) => scenarios::latency::run(bench, report).await,
        Some(Scenario::Footprint) => scenarios::footprint::run(bench, report).await,
        Some(Scenario::Drain) => scenarios::drain::run(bench, report).await,
        Some(Scenario::DrainOrdered) => scenarios::drain_ordered::run(bench, report).await,
        Some(Scenario::DrainLimited) => scenarios::drain_limited::run(bench, report).await,
        Some(Scenario::Console) => scenarios::console::run(bench, report).await,
    };
    match result {
        Ok(()) => eprintln!(
            "bench: {label} done in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
        Err(e) => {
            eprintln!("bench: {label} FAILED: {e:#}");
            report.failures.push(Failure {
                scenario: label,
                error: format!("{e:#}"),
            });
            bench.stop_relay().await;
            bench.sink.take();
        }
    }
}

/// What the figures were measured on.
async fn machine(bench: &Bench<'_>, relay_bin: &std::path::Path) -> serde_json::Value {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let pg = match bench.db.client().await {
        Ok(c) => db::server_version(&c).await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu_model,
        "postgres": pg,
        "load_average_at_start": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "relay_binary": relay_bin.display().to_string(),
        "bench_build": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

/// `--against`'s table: both builds' medians, then any scenario that failed.
fn print_side_by_side(both: &SideBySide) {
    if let Some(first) = both.this_rounds.first() {
        print_header(first);
    }
    println!(
        "side by side, interleaved, {} rounds of this build {} and {} of the other, {}{}",
        both.this_rounds.len(),
        both.this_binary,
        both.against_rounds.len(),
        both.against_binary,
        if both.against_env.is_empty() {
            String::new()
        } else {
            format!(" with {}", both.against_env.join(" "))
        }
    );
    print!("{}", side_by_side::to_table(&both.figures));
    println!(
        "(the {} rows involve no relay: their ratio is how much the host itself moved between rounds)",
        scenarios::limits::NAME
    );
    let rounds = both.this_rounds.iter().map(|r| ("this build", r));
    let others = both.against_rounds.iter().map(|r| ("against", r));
    for (build, report) in rounds.chain(others) {
        for f in &report.failures {
            println!("FAILED ({build}) {}: {}", f.scenario, f.error);
        }
    }
}

fn print_header(report: &Report) {
    let m = &report.machine;
    println!(
        "n8n-relay-bench, {} run: {} cores ({}), PostgreSQL {} (autovacuum {}), {} build, load average at start {}",
        report.mode,
        m["nproc"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["postgres"].as_str().unwrap_or("?"),
        m["autovacuum"].as_str().unwrap_or("?"),
        m["bench_build"].as_str().unwrap_or("?"),
        m["load_average_at_start"].as_str().unwrap_or("?"),
    );
    if !report.relay_env.is_empty() {
        println!("relay settings: {}", report.relay_env.join(" "));
    }
}

/// `--relay-env`'s placeholders: the benchmark database is named per run, so a
/// setting that carries it (a URL of one's own) can only name it this way.
fn expand(value: &str, url: &str, name: &str) -> String {
    value
        .replace("{database_url}", url)
        .replace("{database}", name)
}

/// Writes `--json` if asked, then prints the JSON or the table.
fn emit<T: Serialize>(results: &T, args: &Args, print_table: impl FnOnce()) -> Result<()> {
    let json = serde_json::to_string_pretty(results)?;
    if let Some(path) = &args.json {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    match args.format {
        Format::Json => println!("{json}"),
        Format::Table => print_table(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_env_placeholders_expand_to_the_benchmark_database() {
        assert_eq!(
            expand(
                "postgres://u@%2Frun/{database} {database_url}",
                "postgres://u@h/p?dbname=bench_1",
                "bench_1"
            ),
            "postgres://u@%2Frun/bench_1 postgres://u@h/p?dbname=bench_1"
        );
    }
}
