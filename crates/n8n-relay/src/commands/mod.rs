//! One module per subcommand; what several of them share (connecting, the start-up
//! database check, binding the callback listener, signals) lives here.

pub mod callbacks;
pub mod check_config;
pub mod console;
pub mod emit;
pub mod migrate;
pub mod queue;
pub mod run;
pub mod sign;

use anyhow::Context as _;
use relay_core::db::{DbError, PgConnection};
use relay_core::Config;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::error::Failure;

/// A short-lived single connection for CLI commands. Settings that cannot work (TLS
/// refused, a certificate that fails its check) are a usage error, exit 2.
pub async fn connect(config: &Config) -> Result<tokio_postgres::Client, Failure> {
    let (client, connection) = open(config).await?;
    relay_core::db::drivers::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("database connection closed: {e}");
        }
    });
    Ok(client)
}

/// [`connect`], keeping the server's notices (`RAISE NOTICE`) for the command to show.
pub async fn connect_noting(
    config: &Config,
) -> Result<
    (
        tokio_postgres::Client,
        tokio::sync::mpsc::UnboundedReceiver<String>,
    ),
    Failure,
> {
    let (client, mut connection) = open(config).await?;
    let (notes, noted) = tokio::sync::mpsc::unbounded_channel();
    relay_core::db::drivers::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notice(notice)) => {
                    let _ = notes.send(notice.message().to_string());
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("database connection closed: {e}");
                    break;
                }
            }
        }
    });
    Ok((client, noted))
}

async fn open(config: &Config) -> Result<(tokio_postgres::Client, PgConnection), Failure> {
    let pg = relay_core::db::Connector::new(&config.database, "n8n-relay-cli")
        .map_err(Failure::usage)?;
    pg.connect().await.map_err(|e| match e {
        DbError::Setup(_) => Failure::usage(e),
        other => Failure::from(
            anyhow::Error::new(other).context("could not connect to the database (database.url)"),
        ),
    })
}

/// The start-up check of `run`, `callbacks` and `console`: settings that cannot work stop the
/// process with exit 2 before anything starts; a database that is only down is
/// logged, and the relay waits for it as it always does.
pub async fn check_database(config: &Config, shutdown: &CancellationToken) -> Result<(), Failure> {
    let ignored = relay_core::db::libpq_variables_set();
    if !ignored.is_empty() {
        tracing::warn!(
            variables = %ignored.join(", "),
            "libpq's PG* environment variables are not read by n8n-relay: put what they \
             say in DATABASE_URL (host=, sslmode=, sslrootcert=, ...) or the database.* keys"
        );
    }
    let pg =
        relay_core::db::Connector::new(&config.database, "n8n-relay").map_err(Failure::usage)?;
    // A SIGTERM while the check waits stops the start-up here, as it would later.
    let checked = tokio::select! {
        checked = pg.check() => checked,
        () = shutdown.cancelled() => return Ok(()),
    };
    match checked {
        Ok(()) => Ok(()),
        Err(e @ DbError::Setup(_)) => Err(Failure::usage(e)),
        Err(e) => {
            tracing::warn!(error = %e, "database not reachable at start; retrying in the background");
            Ok(())
        }
    }
}

/// Binds `console.listen`, for `run` and `console`.
pub async fn bind_console(config: &Config) -> Result<tokio::net::TcpListener, Failure> {
    let addr = config.console.listen;
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("could not listen on console.listen = {addr}"))
        .map_err(Failure::from)
}

/// The console's own small pool (it reads pages and takes a sample every few
/// seconds).
pub fn console_pool(config: &Config) -> Result<deadpool_postgres::Pool, Failure> {
    relay_core::db::pool_sized(&config.database, "n8n-relay-console", 2)
        .context("database.url: could not set up the console's pool")
        .map_err(Failure::from)
}

/// Binds `callbacks.listen`, for `run` and `callbacks`.
pub async fn bind_callbacks(config: &Config) -> Result<tokio::net::TcpListener, Failure> {
    let addr = config.callbacks.listen;
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("could not listen on callbacks.listen = {addr}"))
        .map_err(Failure::from)
}

/// SIGTERM (systemd, containers) or SIGINT (Ctrl-C) starts the graceful stop.
///
/// The signals are watched from the moment this is called, not from the first poll
/// of the future it returns, so a signal sent once start-up is logged never meets
/// its default action (which, for SIGHUP, ends the process). SIGHUP (systemd's
/// ExecReload) reloads the callback listener's certificate where there is one, and
/// is otherwise only logged.
pub fn cancel_on_signal(shutdown: CancellationToken) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (term, mut hangup) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        match term {
            Ok(mut term) => loop {
                let hup = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = term.recv() => { info!("SIGTERM received"); break; }
                    _ = tokio::signal::ctrl_c() => { info!("SIGINT received"); break; }
                    Some(()) = hup => {
                        info!("SIGHUP received: it reloads callbacks.tls_cert and tls_key when they are set, nothing else");
                    }
                }
            },
            Err(e) => {
                error!(error = %e, "cannot watch SIGTERM; only SIGINT stops the relay");
                let _ = tokio::signal::ctrl_c().await;
                info!("SIGINT received");
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            info!("interrupt received");
        }
        shutdown.cancel();
    }
}

/// Writes a command's output. A reader that went away (`| head -1`) is not an error
/// (exit 0, like the rest of the output it did not want); `println!` panicked there
/// (exit 101).
/// Writes `text` to stdout, control characters other than newline and tab shown
/// escaped (`\u001b`): what the commands print comes partly from outside (n8n's
/// answers in `last_error`, payloads, pause reasons), and an escape sequence in it
/// would otherwise drive the operator's terminal (retitle it, recolour it, hide
/// text). The escape is JSON's own, so `--json` output stays valid and means the same
/// (serde escapes C0 characters itself, but leaves DEL and the C1 range raw).
pub fn write_stdout(text: &str) -> crate::error::CmdResult {
    use std::io::Write;
    let shown = printable(text);
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(shown.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::anyhow!("could not write to stdout: {e}").into())
        }
        _ => Ok(()),
    }
}

/// `text` with every control character but `\n` and `\t` escaped.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            // Every control character is below U+00A0: four hex digits.
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod printable_tests {
    #[test]
    fn escape_sequences_from_outside_reach_the_terminal_as_text() {
        let said = "HTTP 404: \u{1b}]0;PWNED\u{7}\u{1b}[31mRED\u{1b}[0m boom\n\tnext\r";
        assert_eq!(
            super::printable(said),
            "HTTP 404: \\u001b]0;PWNED\\u0007\\u001b[31mRED\\u001b[0m boom\n\tnext\\u000d"
        );
        // In JSON output (serde leaves DEL and C1 raw) the escape is JSON's own.
        let json =
            serde_json::to_string(&serde_json::json!({"e": "a\u{7f}b\u{85}c"})).expect("json");
        let shown = super::printable(&json);
        let back: serde_json::Value = serde_json::from_str(&shown).expect("still valid JSON");
        assert_eq!(back["e"], "a\u{7f}b\u{85}c");
        assert!(matches!(
            super::printable("plain\n"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
