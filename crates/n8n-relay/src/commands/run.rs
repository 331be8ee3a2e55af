//! `n8n-relay run`: the relay daemon, plus the callback listener (when
//! `callbacks.enabled`) and /metrics. SIGTERM or SIGINT cancels one token that every part watches;
//! the process exits 0 once each has finished its graceful stop.

use std::sync::Arc;

use anyhow::Context;
use relay_core::Config;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::error::{CmdResult, Failure};
use crate::observe;

pub async fn run(config: Config) -> CmdResult {
    // Signals first: a SIGHUP (systemctl reload) during start-up must not meet its
    // default action, which ends the process.
    let shutdown = CancellationToken::new();
    tokio::spawn(super::cancel_on_signal(shutdown.clone()));
    // Refuse a relay that could not sign, and a listener that could not verify
    // anything, before starting any part.
    relay_daemon::check(&config).map_err(Failure::usage)?;
    let callbacks_listener = if config.callbacks.enabled {
        relay_callbacks::check(&config).map_err(Failure::usage)?;
        Some(super::bind_callbacks(&config).await?)
    } else {
        None
    };
    let console_listener = if config.console.enabled {
        Some(super::bind_console(&config).await?)
    } else {
        None
    };
    super::check_database(&config, &shutdown).await?;
    for warning in config.warnings() {
        warn!("{warning}");
    }
    say_client_certificates(&config);
    let config = Arc::new(config);
    let marker = relay_core::db::Marker::random();
    let pool = relay_core::db::relay_pool(&config.database, "n8n-relay", marker)
        .context("database.url: could not set up the connection pool")?;
    // Before anything is spawned: an error here must not leave a daemon running.
    let console_pool = match console_listener {
        Some(_) => Some(super::console_pool(&config)?),
        None => None,
    };
    let observe = if config.metrics.enabled {
        let server = observe::bind(
            &config,
            observe::Readiness {
                require_listener: true,
            },
        )
        .await?;
        Some(tokio::spawn(server.serve(shutdown.clone())))
    } else {
        None
    };

    info!(
        routes = config.routes().len(),
        delivery_enabled = config.delivery_enabled(),
        workers = config.queue.workers,
        callbacks_listen = %config.callbacks.listen,
        metrics_listen = %config.metrics.listen,
        console_listen = %config.console.listen,
        %marker,
        "relay started"
    );

    // A relay runs for months: the client certificates' dates are looked at daily too.
    tokio::spawn({
        let (config, shutdown) = (config.clone(), shutdown.clone());
        async move {
            let day = std::time::Duration::from_secs(86_400);
            let mut daily = tokio::time::interval_at(tokio::time::Instant::now() + day, day);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = daily.tick() => say_client_certificates(&config),
                }
            }
        }
    });

    let daemon = tokio::spawn(relay_daemon::run(
        config.clone(),
        pool.clone(),
        marker,
        shutdown.clone(),
    ));
    let console = console_listener.zip(console_pool).map(|(listener, pool)| {
        tokio::spawn(relay_console::serve(
            config.clone(),
            pool,
            listener,
            shutdown.clone(),
        ))
    });
    let callbacks = callbacks_listener.map(|listener| {
        tokio::spawn(relay_callbacks::serve(
            config.clone(),
            pool.clone(),
            listener,
            shutdown.clone(),
        ))
    });

    // A callback listener that stops on its own (it never stops but on shutdown, or
    // on an error) stops the relay at once, with its error: n8n's callbacks would go
    // unanswered while the relay looked alive and ready.
    let mut daemon = daemon;
    let mut callbacks = callbacks;
    let (result, callbacks_failed) = match callbacks.as_mut() {
        Some(listener) => tokio::select! {
            result = &mut daemon => (Some(result), None),
            ended = listener => {
                callbacks = None;
                let error = match ended {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("callback listener failed: {e}")),
                    Err(e) => Some(format!("callback listener task failed: {e}")),
                };
                // At a shutdown it stops first, as it should; an error is still said.
                if shutdown.is_cancelled() {
                    if let Some(why) = &error {
                        error!(error = %why, "callback listener failed");
                    }
                    (None, None)
                } else {
                    let why = error.unwrap_or_else(|| "the callback listener stopped".into());
                    error!(error = %why, "stopping the relay: its callback listener is gone");
                    (None, Some(why))
                }
            }
        },
        None => (Some((&mut daemon).await), None),
    };
    // Whatever ended first ends the rest too.
    shutdown.cancel();
    let result = match result {
        Some(result) => result,
        None => daemon.await,
    };
    if let Some(observe) = observe {
        let _ = observe.await;
    }
    if let Some(console) = console {
        let _ = console.await;
    }
    if let Some(callbacks) = callbacks {
        match callbacks.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(error = %e, "callback listener failed"),
            Err(e) => error!(error = %e, "callback listener task failed"),
        }
    }
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(anyhow::Error::new(e).into()),
        Err(e) => {
            error!(error = %e, "relay task failed");
            return Err(anyhow::anyhow!("relay task failed: {e}").into());
        }
    }
    match callbacks_failed {
        Some(why) => Err(anyhow::anyhow!(why).into()),
        None => Ok(()),
    }
}

/// Warns of the client certificates (`n8n.client_cert`, `database.sslcert`) near or
/// past their expiry; the callback listener says its own certificate's dates.
fn say_client_certificates(config: &Config) {
    let now = std::time::SystemTime::now();
    for cert in config.client_certificates() {
        if let Some(problem) = cert.problem(now) {
            warn!("{problem}");
        }
    }
}
