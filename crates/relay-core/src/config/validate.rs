//! Validation: every value checked once, at load, each refusal naming its key.

use std::path::Path;

use super::*;

impl Config {
    /// The rustls config for https:// n8n URLs: the built-in (Mozilla) roots, plus
    /// `n8n.ca_file`, with `n8n.client_cert`/`client_key` for mutual TLS.
    pub fn n8n_tls(&self) -> Result<rustls::ClientConfig, ConfigError> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if !self.n8n.ca_file.is_empty() {
            crate::tls::add_certs(&mut roots, "n8n.ca_file", Path::new(&self.n8n.ca_file))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::invalid("n8n.ca_file", e))?
            .with_root_certificates(roots);
        if self.n8n.client_cert.is_empty() {
            return Ok(builder.with_no_client_auth());
        }
        let chain = crate::tls::load_certs("n8n.client_cert", Path::new(&self.n8n.client_cert))?;
        let key = crate::tls::load_key("n8n.client_key", Path::new(&self.n8n.client_key))?;
        builder.with_client_auth_cert(chain, key).map_err(|e| {
            ConfigError::invalid(
                "n8n.client_key",
                format!(
                    "{} does not match the certificate in {} (n8n.client_cert; {e})",
                    self.n8n.client_key, self.n8n.client_cert
                ),
            )
        })
    }

    fn n8n_tls_files(&self) -> Result<(), ConfigError> {
        if self.n8n.client_cert.is_empty() != self.n8n.client_key.is_empty() {
            return Err(ConfigError::invalid(
                "n8n.client_cert",
                "client_cert and client_key must be set together",
            ));
        }
        self.n8n_tls().map(|_| ())
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let url = self.database.url.expose();
        if url.trim().is_empty() {
            return Err(ConfigError::invalid("database.url", "must not be empty"));
        }
        // Every TLS and password file is read now, so a bad one stops every command
        // with a message that names it (the URL itself may carry a password: never
        // shown).
        crate::db::Connector::new(&self.database, "n8n-relay").map_err(|e| match e {
            crate::db::DbError::BadUrl(detail) => ConfigError::invalid(
                "database.url",
                format!("not a valid Postgres URL ({detail})"),
            ),
            other => ConfigError::Invalid(other.to_string()),
        })?;
        positive("database.pool_size", self.database.pool_size as u64)?;
        seconds(
            "database.connect_timeout_seconds",
            self.database.connect_timeout_seconds,
        )?;
        seconds(
            "database.statement_timeout_seconds",
            self.database.statement_timeout_seconds,
        )?;
        // Postgres holds statement_timeout in milliseconds in 32 bits.
        if self.database.statement_timeout_seconds > 2_147_483 {
            return Err(ConfigError::invalid(
                "database.statement_timeout_seconds",
                "at most 2147483 (Postgres's limit, about 24 days)",
            ));
        }
        check_http_url("n8n.base_url", &self.n8n.base_url)?;
        if !self.n8n.webhook_base_url.is_empty() {
            check_http_url("n8n.webhook_base_url", &self.n8n.webhook_base_url)?;
        }
        if self.n8n.auth_header_name.is_empty() != self.n8n.auth_header_value.is_empty() {
            return Err(ConfigError::invalid(
                "n8n.auth_header_name",
                "auth_header_name and auth_header_value must be set together",
            ));
        }
        if !self.n8n.auth_header_name.is_empty()
            && http_header_name_invalid(&self.n8n.auth_header_name)
        {
            return Err(ConfigError::invalid(
                "n8n.auth_header_name",
                format!(
                    "{:?} is not a valid HTTP header name",
                    self.n8n.auth_header_name
                ),
            ));
        }
        for (key, value) in [
            ("n8n.api_key", &self.n8n.api_key),
            ("n8n.auth_header_value", &self.n8n.auth_header_value),
        ] {
            // Sent as a header value; the value itself is never echoed.
            if value
                .expose()
                .bytes()
                .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
            {
                return Err(ConfigError::invalid(
                    key,
                    "contains a control character, which an HTTP header cannot carry (a stray newline?)",
                ));
            }
        }
        self.n8n_tls_files()?;
        if self.callbacks.tls_cert.is_empty() != self.callbacks.tls_key.is_empty() {
            return Err(ConfigError::invalid(
                "callbacks.tls_cert",
                "tls_cert and tls_key must be set together",
            ));
        }
        if !self.callbacks.tls_cert.is_empty() {
            // The pair, as the listener will serve it: each file valid on its own is
            // not enough (a key of another certificate left the listener unopened).
            crate::tls::certified_key(
                ("callbacks.tls_cert", Path::new(&self.callbacks.tls_cert)),
                ("callbacks.tls_key", Path::new(&self.callbacks.tls_key)),
            )?;
        }
        seconds("security.max_age_seconds", self.security.max_age_seconds)?;
        self.security.signing_keys()?;
        self.security.callback_keys()?;
        if self.security.scheme == Scheme::StandardWebhooks {
            if self.security.signing_secrets().is_empty() {
                return Err(ConfigError::invalid(
                    "security.webhook_secret",
                    "security.scheme = standard-webhooks needs a whsec_ secret to sign deliveries with",
                ));
            }
            if self.security.allow_legacy_signature {
                return Err(ConfigError::invalid(
                    "security.allow_legacy_signature",
                    "the body-only X-N8N-Signature belongs to the x-webhook-signature scheme; \
turn it off with security.scheme = standard-webhooks",
                ));
            }
        }
        positive("queue.workers", self.queue.workers as u64)?;
        positive("queue.batch_size", self.queue.batch_size as u64)?;
        if self.queue.batch_size > 10_000 {
            return Err(ConfigError::invalid("queue.batch_size", "at most 10000"));
        }
        seconds(
            "queue.processing_interval_seconds",
            self.queue.processing_interval_seconds,
        )?;
        if self.queue.retry_delays.is_empty() {
            return Err(ConfigError::invalid(
                "queue.retry_delays",
                "needs at least one delay (seconds), e.g. \"5,30,300\"",
            ));
        }
        seconds("queue.timeout_seconds", self.queue.timeout_seconds)?;
        seconds("queue.lease_seconds", self.queue.lease_seconds)?;
        at_most_a_year(
            "queue.shutdown_grace_seconds",
            self.queue.shutdown_grace_seconds,
        )?;
        at_most_a_year(
            "queue.max_retry_after_seconds",
            self.queue.max_retry_after_seconds,
        )?;
        delays("queue.retry_delays", &self.queue.retry_delays)?;
        // Postgres cannot subtract much more than this from now().
        if self.queue.retention_days > 36_500 {
            return Err(ConfigError::invalid(
                "queue.retention_days",
                "at most 36500 (a hundred years); 0 keeps rows forever",
            ));
        }
        if self.queue.lease_seconds <= self.queue.timeout_seconds {
            return Err(ConfigError::invalid(
                "queue.lease_seconds",
                format!(
                    "is {} s and must be longer than queue.timeout_seconds (WEBHOOK_TIMEOUT_SECONDS, {} s), \
                     or a slow delivery would be taken over while still in flight: lower the \
                     timeout, or raise the lease with it (RELAY_QUEUE__LEASE_SECONDS)",
                    self.queue.lease_seconds, self.queue.timeout_seconds
                ),
            ));
        }
        positive("queue.max_per_endpoint", self.queue.max_per_endpoint as u64)?;
        final_statuses("queue.final_statuses", &self.queue.final_statuses)?;
        rate_limit("n8n.max_per_second", self.n8n.max_per_second, true)?;
        positive(
            "callbacks.max_body_bytes",
            self.callbacks.max_body_bytes as u64,
        )?;
        seconds(
            "callbacks.header_read_timeout_seconds",
            self.callbacks.header_read_timeout_seconds,
        )?;
        seconds(
            "callbacks.request_timeout_seconds",
            self.callbacks.request_timeout_seconds,
        )?;
        positive(
            "callbacks.max_connections",
            self.callbacks.max_connections as u64,
        )?;
        if self.console.enabled {
            self.validate_console()?;
        }
        if self.log.level.trim().is_empty() {
            return Err(ConfigError::invalid("log.level", "must not be empty"));
        }
        for (name, route) in &self.routes {
            if EventType::parse(name).is_none() {
                return Err(ConfigError::invalid(
                    &format!("routes.{name}"),
                    format!(
                        "unknown event type; known: {}",
                        EventType::names().join(", ")
                    ),
                ));
            }
            let key = |k: &str| format!("routes.{name}.{k}");
            if route.retry_delays.as_ref().is_some_and(Vec::is_empty) {
                return Err(ConfigError::invalid(
                    &key("retry_delays"),
                    "needs at least one delay (seconds), e.g. \"5,30,300\"",
                ));
            }
            if let Some(d) = &route.retry_delays {
                delays(&key("retry_delays"), d)?;
            }
            if let Some(timeout) = route.timeout_seconds {
                seconds(&key("timeout_seconds"), timeout)?;
                if self.queue.lease_seconds <= timeout {
                    return Err(ConfigError::invalid(
                        &key("timeout_seconds"),
                        format!(
                            "must be shorter than queue.lease_seconds ({}), or a slow delivery would be taken over while still in flight",
                            self.queue.lease_seconds
                        ),
                    ));
                }
            }
            if let Some(statuses) = &route.final_statuses {
                final_statuses(&key("final_statuses"), statuses)?;
            }
            if let Some(rate) = route.max_per_second {
                rate_limit(&key("max_per_second"), rate, false)?;
            }
            if let Some(url) = &route.url {
                if url.starts_with("http://") || url.starts_with("https://") {
                    check_http_url(&format!("routes.{name}.url"), url)?;
                } else if url.contains("://") || url.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        &format!("routes.{name}.url"),
                        format!(
                            "{:?} is neither an http(s) URL nor a path",
                            shown_in_error(url)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The console's settings, checked whenever the console is served: by `run` when
    /// `console.enabled`, and always by `n8n-relay console`.
    pub fn validate_console(&self) -> Result<(), ConfigError> {
        let loopback = self.console.listen.ip().is_loopback();
        if !loopback && self.console.token.is_empty() {
            return Err(ConfigError::invalid(
                "console.token",
                format!(
                    "the console listens on {} (not loopback): set console.token (or \
                     console.token_file), or listen on 127.0.0.1, or console.enabled = false",
                    self.console.listen
                ),
            ));
        }
        if self.console.token.is_empty() && !self.console.read_only_token.is_empty() {
            return Err(ConfigError::invalid(
                "console.read_only_token",
                "needs console.token beside it (an operator must be able to log in too)",
            ));
        }
        if !self.console.token.is_empty()
            && self.console.token.expose() == self.console.read_only_token.expose()
        {
            return Err(ConfigError::invalid(
                "console.read_only_token",
                "must differ from console.token",
            ));
        }
        for (key, token) in [
            ("console.token", &self.console.token),
            ("console.read_only_token", &self.console.read_only_token),
        ] {
            if !token.is_empty() && token.expose().len() < 16 {
                return Err(ConfigError::invalid(
                    key,
                    "too short: use at least 16 characters (e.g. openssl rand -hex 32)",
                ));
            }
            // Sixteen spaces, or one character sixteen times, passed the length check.
            let mut chars = token.expose().chars();
            let first = chars.next();
            if !token.is_empty()
                && (token.expose().trim().is_empty() || chars.all(|c| Some(c) == first))
            {
                return Err(ConfigError::invalid(
                    key,
                    "guessable (blank, or one character repeated): use a random one \
                     (e.g. openssl rand -hex 32)",
                ));
            }
        }
        if self.console.listen == self.metrics.listen
            || self.console.listen == self.callbacks.listen
        {
            return Err(ConfigError::invalid(
                "console.listen",
                format!("{} is taken by another listener", self.console.listen),
            ));
        }
        Ok(())
    }
}

/// The longest duration any `*_seconds` key or retry delay may hold: far past any
/// sensible value, and far inside what a clock's arithmetic (an `Instant` plus it, a
/// Postgres interval) holds, so no setting can overflow one.
const A_YEAR: u64 = 365 * 24 * 3600;

fn at_most_a_year(key: &str, value: u64) -> Result<(), ConfigError> {
    if value > A_YEAR {
        Err(ConfigError::invalid(
            key,
            format!("{value} is more than a year; at most {A_YEAR} seconds"),
        ))
    } else {
        Ok(())
    }
}

/// A duration key: more than 0, at most a year.
fn seconds(key: &str, value: u64) -> Result<(), ConfigError> {
    positive(key, value)?;
    at_most_a_year(key, value)
}

/// A retry schedule: each delay at most a year (0, retry at once, is allowed).
fn delays(key: &str, delays: &[u64]) -> Result<(), ConfigError> {
    delays.iter().try_for_each(|d| at_most_a_year(key, *d))
}

fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::invalid(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}

/// Final statuses are failures: a 2xx (success) or a non-HTTP number is a mistake.
fn final_statuses(key: &str, statuses: &[u16]) -> Result<(), ConfigError> {
    match statuses.iter().find(|s| !(300..=599).contains(*s)) {
        Some(s) => Err(ConfigError::invalid(
            key,
            format!("{s} is not a failing HTTP status (300-599)"),
        )),
        None => Ok(()),
    }
}

fn rate_limit(key: &str, rate: f64, zero_allowed: bool) -> Result<(), ConfigError> {
    // Below one delivery in 1000 s is not a rate limit but a pause: `queue pause`.
    let too_small = rate > 0.0 && rate < 0.001;
    if !rate.is_finite() || rate < 0.0 || (rate == 0.0 && !zero_allowed) || too_small {
        let allowed = if zero_allowed { " (0 for none)" } else { "" };
        return Err(ConfigError::invalid(
            key,
            format!("must be a positive number of deliveries per second{allowed}"),
        ));
    }
    Ok(())
}

fn check_http_url(key: &str, value: &str) -> Result<(), ConfigError> {
    match url::Url::parse(value) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => Ok(()),
        Ok(_) => Err(ConfigError::invalid(
            key,
            format!(
                "{:?} must be an http:// or https:// URL with a host",
                shown_in_error(value)
            ),
        )),
        // Not echoed: where a URL does not parse, its credentials cannot be told apart
        // (a '/', '?' or '@' in a password), and the message goes to terminals and logs.
        Err(e) => Err(ConfigError::invalid(key, format!("is not a URL ({e})"))),
    }
}

/// A URL for an error message: parsed, without its credentials; unparsed, only its
/// scheme (whatever follows may hold a password).
fn shown_in_error(value: &str) -> String {
    match url::Url::parse(value) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            let _ = u.set_username("");
            u.to_string()
        }
        Err(_) => match value.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://..."),
            None => value.to_string(),
        },
    }
}

fn http_header_name_invalid(name: &str) -> bool {
    name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
