//! HTTPS on the callback listener, for an n8n that reaches the relay across a
//! network. The certificate is held behind a resolver that SIGHUP swaps: each new
//! handshake picks up the current one, connections already open keep theirs, so a
//! renewal by cert-manager or certbot needs a signal, not a restart. A reload that
//! fails (a half-written file, a key that does not match) is logged and the
//! certificate in use stays. The served certificate's expiry is a metric, and a
//! warning from two weeks before it (at start, at each reload, then daily): n8n
//! refuses an expired one, and every callback failed on n8n's side with nothing said
//! here.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The certificate files and the key pair currently served.
#[derive(Debug)]
pub(crate) struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificates {
    fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, relay_core::ConfigError> {
        Ok(relay_core::tls::certified_key(
            ("callbacks.tls_cert", cert),
            ("callbacks.tls_key", key),
        )?)
    }

    /// Reads both files again and serves them from the next handshake on.
    pub(crate) fn reload(&self) -> Result<(), relay_core::ConfigError> {
        let fresh = Arc::new(Self::load(&self.cert, &self.key)?);
        match self.current.write() {
            Ok(mut current) => *current = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Publishes the served certificate's expiry and warns when it is near or past.
    fn say_dates(&self) {
        let current = self.current();
        let Some(dates) = current.cert.first().and_then(relay_core::tls::Validity::of) else {
            // The expiry metric stays 0, which an alert reads as "no HTTPS".
            tracing::warn!(
                cert = %self.cert.display(),
                "callbacks.tls_cert: the certificate's dates cannot be read; its expiry is not watched"
            );
            return;
        };
        relay_core::metrics::global().set_callback_certificate_expiry(dates.not_after);
        let then = "then send the relay SIGHUP";
        match dates.problem("callbacks.tls_cert", &self.cert, SystemTime::now(), then) {
            Some(problem) => tracing::warn!("{problem}"),
            None => tracing::debug!(expires = dates.expires(), "callback listener certificate"),
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// How often the served certificate's dates are looked at again.
const DATES_EVERY: Duration = Duration::from_secs(86_400);

/// The acceptor for `callbacks.tls_cert`/`tls_key`, or `None` for plain HTTP.
pub(crate) fn acceptor(
    config: &relay_core::config::CallbacksConfig,
) -> Result<Option<(TlsAcceptor, Arc<Certificates>)>, relay_core::ConfigError> {
    if config.tls_cert.is_empty() {
        return Ok(None);
    }
    let cert = PathBuf::from(&config.tls_cert);
    let key = PathBuf::from(&config.tls_key);
    let current = RwLock::new(Arc::new(Certificates::load(&cert, &key)?));
    let certificates = Arc::new(Certificates { cert, key, current });
    let mut server = ServerConfig::builder_with_provider(relay_core::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| relay_core::ConfigError::Invalid(format!("callbacks.tls_cert: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(certificates.clone());
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some((TlsAcceptor::from(Arc::new(server)), certificates)))
}

/// Reloads the certificate on every SIGHUP until shutdown, and says its dates now, at
/// each reload and daily. The signal is watched from the moment this returns (before
/// the listener says it is ready), so a SIGHUP sent after that never falls on the
/// default action, which would end the process.
pub(crate) fn watch(
    certificates: Arc<Certificates>,
    tasks: &tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
) {
    certificates.say_dates();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => hangup,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGHUP; the callback certificate is reloaded only by a restart");
                return;
            }
        };
        tasks.spawn(async move {
            let mut daily = tokio::time::interval_at(
                tokio::time::Instant::now() + DATES_EVERY,
                DATES_EVERY,
            );
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = daily.tick() => {
                        certificates.say_dates();
                        continue;
                    }
                    got = hangup.recv() => {
                        if got.is_none() {
                            return;
                        }
                    }
                }
                match certificates.reload() {
                    Ok(()) => {
                        tracing::info!(
                            cert = %certificates.cert.display(),
                            "SIGHUP: callback listener certificate reloaded; new connections use it"
                        );
                        certificates.say_dates();
                    }
                    Err(e) => tracing::error!(
                        error = %e,
                        "SIGHUP: callback listener certificate not reloaded; the previous one stays in use"
                    ),
                }
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (certificates, tasks, shutdown);
    }
}
