//! TLS to Postgres with libpq's settings and meanings, on rustls.
//!
//! tokio-postgres knows `sslmode` only as disable/prefer/require and refuses libpq's
//! other TLS parameters, so they are taken out of the URL (or key=value string) here,
//! merged with the `database.*` keys, and turned into a rustls client config:
//!
//! | sslmode | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (libpq's default) | when the server offers it | only against `sslrootcert`, when one is given or `~/.postgresql/root.crt` exists |
//! | `require` | always | as for `prefer` |
//! | `verify-ca` | always | signed by a CA in `sslrootcert` (default `~/.postgresql/root.crt`, which must exist) |
//! | `verify-full` | always | as `verify-ca`, and issued for the host connected to |
//!
//! `sslrootcert=system` trusts the platform's roots and, as in libpq 16, means
//! `verify-full` (a weaker explicit mode is refused). `sslcert`/`sslkey` (default
//! `~/.postgresql/postgresql.crt`/`.key` when present) log in with a client
//! certificate. There is never a silent fallback: a certificate that fails a check
//! fails the connection with a message saying which check, naming the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::DbError;
use crate::config::DatabaseConfig;
use crate::tls;

/// libpq's `sslmode` values (`allow`, plaintext first, is not offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(key: &str, value: &str) -> Result<SslMode, DbError> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err(DbError::Setup(format!(
                "{key}: sslmode=allow (plaintext first) is not supported; use prefer or disable"
            ))),
            other => Err(DbError::Setup(format!(
                "{key}: unknown sslmode {other:?}; one of disable, prefer, require, verify-ca, verify-full"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: whether to ask for TLS and whether to insist.
    pub(crate) fn wire(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// The parameters this module (and the password file lookup) takes out of the URL.
const OWN_PARAMS: &[&str] = &["sslmode", "sslrootcert", "sslcert", "sslkey", "passfile"];

/// Whom the server's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// Nothing is checked (`prefer`/`require` without a root file).
    Unchecked,
    File(PathBuf),
    System,
}

/// The effective TLS settings of one database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub roots: Roots,
    /// Client certificate chain and key files.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl TlsSettings {
    /// `sslmode=verify-full, sslrootcert=/etc/ca.pem`: the context of every refusal.
    pub fn describe(&self) -> String {
        let mut out = format!("sslmode={}", self.mode.as_str());
        match &self.roots {
            Roots::Unchecked => {}
            Roots::File(path) => out.push_str(&format!(", sslrootcert={}", path.display())),
            Roots::System => out.push_str(", sslrootcert=system"),
        }
        if let Some((cert, _)) = &self.client {
            out.push_str(&format!(", sslcert={}", cert.display()));
        }
        out
    }
}

/// A URL with the parameters tokio-postgres does not know taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SplitUrl {
    /// What tokio-postgres parses.
    pub rest: String,
    /// `sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `passfile`, as given.
    pub params: Vec<(String, String)>,
}

impl SplitUrl {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a `postgres://` URL or a libpq key=value string. SQLAlchemy's form with a
/// driver (`postgresql+psycopg2://`, `postgresql+asyncpg://`), which the older Python
/// backend's `DATABASE_URL` carries, is the same URL without it.
pub(crate) fn split_url(url: &str) -> SplitUrl {
    let trimmed = url.trim();
    let without_driver = ["postgresql+", "postgres+"].iter().find_map(|scheme| {
        let rest = trimmed.strip_prefix(scheme)?;
        let (driver, after) = rest.split_once("://")?;
        driver
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            .then(|| format!("postgresql://{after}"))
    });
    match without_driver {
        Some(url) => split_uri(&url),
        None if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") => {
            split_uri(trimmed)
        }
        None => split_key_values(trimmed),
    }
}

/// The query string is split by hand: multi-host URLs (`h1:5432,h2:5432`) are not
/// URLs to the `url` crate.
fn split_uri(url: &str) -> SplitUrl {
    let Some((head, query)) = url.split_once('?') else {
        return SplitUrl {
            rest: url.to_string(),
            params: Vec::new(),
        };
    };
    let mut kept = Vec::new();
    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(k);
        if OWN_PARAMS.contains(&key.as_str()) {
            params.push((key, percent_decode(v)));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        head.to_string()
    } else {
        format!("{head}?{}", kept.join("&"))
    };
    SplitUrl { rest, params }
}

/// `%2F` -> `/`, and a `+` stays a `+` (libpq's URI rules; form encoding would make
/// it a space, breaking a path such as `certs/c++.pem`).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `host=db sslmode='verify-full' ...`: libpq's quoting (single quotes, backslash
/// escapes) is kept verbatim for the pairs passed on.
fn split_key_values(s: &str) -> SplitUrl {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut kept: Vec<&str> = Vec::new();
    let mut params = Vec::new();
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[start..i];
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
        }
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                let ch = s[i..].chars().next().unwrap_or('\u{FFFD}');
                value.push(ch);
                i += ch.len_utf8();
            }
            i += 1; // the closing quote
        } else {
            let v_start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            value.push_str(&s[v_start..i]);
        }
        let end = i.min(s.len());
        if OWN_PARAMS.contains(&key) {
            params.push((key.to_string(), value));
        } else {
            kept.push(&s[start..end]);
        }
    }
    SplitUrl {
        rest: kept.join(" "),
        params,
    }
}

/// The URL's value, or the key's; the two must agree when both are given.
fn param<'a>(
    split: &'a SplitUrl,
    db: &'a DatabaseConfig,
    name: &str,
) -> Result<Option<&'a str>, DbError> {
    let key_value = match name {
        "sslmode" => db.sslmode.as_str(),
        "sslrootcert" => db.sslrootcert.as_str(),
        "sslcert" => db.sslcert.as_str(),
        "sslkey" => db.sslkey.as_str(),
        "passfile" => db.passfile.as_str(),
        _ => "",
    };
    match (split.get(name), key_value) {
        (Some(url), key) if !key.is_empty() && url != key => Err(DbError::Setup(format!(
            "database.{name}: {key:?} differs from the {name}={url:?} in database.url; set it in one place"
        ))),
        (Some(url), _) if !url.is_empty() => Ok(Some(url)),
        (_, key) if !key.is_empty() => Ok(Some(key)),
        _ => Ok(None),
    }
}

/// `~/.postgresql/NAME`, libpq's default place for TLS files.
fn home_file(name: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(Path::new(&home).join(".postgresql").join(name))
}

/// The effective TLS settings of `db`, and the passfile if one is named.
pub(crate) fn settings(split: &SplitUrl, db: &DatabaseConfig) -> Result<TlsSettings, DbError> {
    let explicit_mode = param(split, db, "sslmode")?
        .map(|m| SslMode::parse("database.sslmode", m))
        .transpose()?;
    let rootcert = param(split, db, "sslrootcert")?;
    let system = rootcert == Some("system");
    let mode = match (explicit_mode, system) {
        (None, true) => SslMode::VerifyFull,
        (Some(mode), true) if mode != SslMode::VerifyFull => {
            return Err(DbError::Setup(format!(
            "database.sslmode: sslrootcert=system trusts any certificate the platform trusts, so \
                 it needs sslmode=verify-full (got {})",
            mode.as_str()
        )))
        }
        (Some(mode), _) => mode,
        (None, false) => SslMode::Prefer,
    };
    let roots = match (rootcert, mode) {
        (_, SslMode::Disable) => Roots::Unchecked,
        (Some("system"), _) => Roots::System,
        (Some(path), _) => Roots::File(PathBuf::from(path)),
        (None, SslMode::VerifyCa | SslMode::VerifyFull) => {
            let default = home_file("root.crt");
            match default {
                Some(path) if path.is_file() => Roots::File(path),
                other => {
                    return Err(DbError::Setup(format!(
                        "database.sslrootcert: sslmode={} checks the server's certificate, but no CA file \
                         is given and {} does not exist; set sslrootcert to a PEM file of the CA (or \
                         sslrootcert=system for the platform's roots)",
                        mode.as_str(),
                        other
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| "~/.postgresql/root.crt".into())
                    )))
                }
            }
        }
        (None, _) => match home_file("root.crt") {
            Some(path) if path.is_file() => Roots::File(path),
            _ => Roots::Unchecked,
        },
    };
    let cert = param(split, db, "sslcert")?.map(PathBuf::from);
    let key = param(split, db, "sslkey")?.map(PathBuf::from);
    let client = match (cert, key) {
        _ if mode == SslMode::Disable => None,
        (Some(cert), Some(key)) => Some((cert, key)),
        (Some(_), None) => {
            return Err(DbError::Setup(
                "database.sslkey: sslcert is set without its key; set sslkey too".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(DbError::Setup(
                "database.sslcert: sslkey is set without its certificate; set sslcert too".into(),
            ))
        }
        (None, None) => match (home_file("postgresql.crt"), home_file("postgresql.key")) {
            (Some(cert), Some(key)) if cert.is_file() && key.is_file() => Some((cert, key)),
            _ => None,
        },
    };
    Ok(TlsSettings {
        mode,
        roots,
        client,
    })
}

/// The rustls config for `settings`, every file read and checked now, so a bad one
/// is an error at start that names its key and file.
pub(crate) fn client_config(settings: &TlsSettings) -> Result<ClientConfig, DbError> {
    let provider = tls::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Setup(format!("TLS setup: {e}")))?;
    let builder = match &settings.roots {
        Roots::Unchecked => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider))),
        Roots::File(path) => {
            let store = tls::root_store("database.sslrootcert", path).map_err(DbError::from)?;
            verifier_for(builder, store, settings.mode)?
        }
        Roots::System => {
            let store = tls::system_roots().map_err(DbError::from)?;
            verifier_for(builder, store, settings.mode)?
        }
    };
    let config = match &settings.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = tls::load_certs("database.sslcert", cert)?;
            let key = tls::load_key("database.sslkey", key)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                DbError::Setup(format!(
                    "database.sslkey: {} does not match the certificate in {} ({e})",
                    key_path(settings).display(),
                    cert.display()
                ))
            })?
        }
    };
    Ok(config)
}

fn key_path(settings: &TlsSettings) -> &Path {
    settings
        .client
        .as_ref()
        .map(|(_, key)| key.as_path())
        .unwrap_or(Path::new(""))
}

type Builder = rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>;

fn verifier_for(
    builder: rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>,
    store: RootCertStore,
    mode: SslMode,
) -> Result<Builder, DbError> {
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), tls::provider())
        .build()
        .map_err(|e| DbError::Setup(format!("database.sslrootcert: {e}")))?;
    Ok(if mode == SslMode::VerifyFull {
        builder.with_webpki_verifier(webpki)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
    })
}

/// `verify-ca`, and `prefer`/`require` with a root file: the chain is checked, the
/// host name is not.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain first and the name last, so a name error means the
        // chain held.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer`/`require` without a root file: encrypted, certificate not checked
/// (libpq's meaning; the handshake's signatures are still verified).
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a connection attempt failed, when it is TLS's doing: a certificate that fails
/// a check, a server that will not talk TLS, or one that will talk nothing else.
/// `None` for everything else (a down server, a wrong password).
pub(crate) fn explain(
    e: &tokio_postgres::Error,
    settings: &TlsSettings,
    host: &str,
) -> Option<String> {
    let context = settings.describe();
    if let Some(rustls_error) = find_rustls_error(e) {
        let what = match rustls_error {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                    format!(
                        "the server's certificate is not valid for host {host:?}: no \
                         subjectAltName of it names that host (a name only in the \
                         certificate's Common Name, which libpq falls back to, does not \
                         count here: reissue it with -addext \"subjectAltName=DNS:{host}\"), \
                         or connect by a name it lists; sslmode=verify-ca checks the chain only"
                    )
                }
                CertificateError::UnknownIssuer => match &settings.roots {
                    Roots::File(path) => format!(
                        "the server's certificate is not signed by a CA in {}",
                        path.display()
                    ),
                    _ => "the server's certificate is not signed by a CA the platform trusts".into(),
                },
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "the server's certificate has expired".into()
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "the server's certificate is not valid yet".into()
                }
                other if format!("{other:?}").contains("CaUsedAsEndEntity") => {
                    "the server presents a CA certificate (basicConstraints CA:TRUE, what \
                     `openssl req -x509` makes unless told otherwise) as its own, which is \
                     refused here though libpq accepts it: sign a server certificate with \
                     that CA, or reissue this one with -addext \
                     \"basicConstraints=critical,CA:FALSE\""
                        .into()
                }
                other => format!("the server's certificate was refused ({other:?})"),
            },
            rustls::Error::AlertReceived(alert) => match &settings.client {
                Some((cert, _)) => format!(
                    "the server refused the TLS handshake ({alert:?}); check the client certificate {}",
                    cert.display()
                ),
                None => format!("the server refused the TLS handshake ({alert:?})"),
            },
            other => format!("the TLS handshake failed ({other})"),
        };
        return Some(format!("TLS to Postgres failed: {what} ({context})"));
    }
    // tokio-postgres says "error performing TLS handshake" and puts why in its source.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    if text.contains("server does not support TLS") {
        return Some(format!(
            "TLS to Postgres failed: the server does not accept TLS connections, and {context} \
             requires them (use sslmode=prefer or disable only on a network you trust)"
        ));
    }
    if let Some(db) = e.as_db_error() {
        if settings.mode == SslMode::Disable
            && *db.code() == tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            && db.message().contains("no encryption")
        {
            return Some(format!(
                "the server refused an unencrypted connection: {}; no pg_hba.conf line admits \
                 it: if the server admits this user only over TLS (hostssl lines), set \
                 sslmode=require (or verify-full with sslrootcert) in database.url or \
                 database.sslmode; otherwise check pg_hba.conf for this client address, user \
                 and database",
                db.message()
            ));
        }
    }
    None
}

/// rustls reports through an `io::Error`, whose `source()` skips the error it wraps.
fn find_rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(found) = inner.downcast_ref::<rustls::Error>() {
                    return Some(found);
                }
            }
        }
        current = err.source();
    }
    None
}

/// Whether every host a connection may go to is this machine over TCP (a loopback
/// name or address): there TLS hides nothing from anyone who could not read the
/// relay's memory anyway, and its records cost Postgres 5-13 % of its CPU per
/// delivered event in drains measured side by side (crates/n8n-relay-bench/README.md,
/// "Fourth round").
pub(crate) fn on_this_host(config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    let hosts = config.get_hosts();
    let addrs = config.get_hostaddrs();
    let loopback = |i: usize| match (addrs.get(i), hosts.get(i)) {
        // hostaddr, where given, is where the connection goes.
        (Some(addr), _) => addr.is_loopback(),
        (None, Some(Host::Tcp(name))) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    };
    let n = hosts.len().max(addrs.len());
    n > 0 && (0..n).all(loopback)
}

/// Whether every host is a Unix socket, where Postgres never offers TLS: there
/// plaintext is no finding to report under `prefer`.
pub(crate) fn sockets_only(config: &tokio_postgres::Config) -> bool {
    #[cfg(unix)]
    {
        use tokio_postgres::config::Host;
        let hosts = config.get_hosts();
        !hosts.is_empty()
            && config.get_hostaddrs().is_empty()
            && hosts.iter().all(|h| matches!(h, Host::Unix(_)))
    }
    #[cfg(not(unix))]
    {
        let _ = config;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(url: &str) -> DatabaseConfig {
        let mut config = crate::Config::default().database;
        config.url = crate::Secret::new(url);
        config
    }

    #[test]
    fn a_sqlalchemy_url_with_a_driver_is_the_same_url_without_it() {
        for url in [
            "postgresql+psycopg2://u:p@db:5432/leads?sslmode=require",
            "postgresql+asyncpg://u:p@db:5432/leads?sslmode=require",
            "postgres+pg8000://u:p@db:5432/leads?sslmode=require",
        ] {
            let split = split_url(url);
            assert_eq!(split.rest, "postgresql://u:p@db:5432/leads", "{url}");
            assert_eq!(split.get("sslmode"), Some("require"), "{url}");
        }
        // Not a driver: left for tokio-postgres to refuse.
        assert_eq!(
            split_url("postgresql+x y://u@db/leads").rest,
            "postgresql+x y://u@db/leads"
        );
    }

    #[test]
    fn libpq_parameters_are_taken_out_of_urls_and_key_value_strings() {
        let split = split_url(
            "postgres://u@h1:5432,h2:5433/app?sslmode=verify-full&target_session_attrs=read-write&sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(
            split.rest,
            "postgres://u@h1:5432,h2:5433/app?target_session_attrs=read-write"
        );
        assert_eq!(split.get("sslmode"), Some("verify-full"));
        assert_eq!(split.get("sslrootcert"), Some("/etc/ca.pem"));

        let split =
            split_url("host=db sslmode = 'verify-ca' sslrootcert='/a b/c\\'a.pem' dbname=x");
        assert_eq!(split.rest, "host=db dbname=x");
        assert_eq!(split.get("sslmode"), Some("verify-ca"));
        assert_eq!(split.get("sslrootcert"), Some("/a b/c'a.pem"));
        assert!(split.rest.parse::<tokio_postgres::Config>().is_ok());

        let plus = split_url("postgres://u@h/app?sslcert=certs/c++.pem&sslkey=a%2Bb%20c.key");
        assert_eq!(plus.get("sslcert"), Some("certs/c++.pem"), "a + stays a +");
        assert_eq!(plus.get("sslkey"), Some("a+b c.key"));

        let plain = split_url("postgres://u@h/app");
        assert_eq!(plain.rest, "postgres://u@h/app");
        assert!(plain.params.is_empty());
    }

    #[test]
    fn only_loopback_hosts_are_this_host() {
        let here = |url: &str| on_this_host(&url.parse().expect("a valid URL"));
        assert!(here("postgres://u@127.0.0.1:5432/db"));
        assert!(here("postgres://u@localhost/db"));
        assert!(here("postgres://u@[::1]:5432/db"));
        assert!(here("host=127.0.0.2,localhost dbname=db"));
        assert!(here("host=db.internal hostaddr=127.0.0.1 dbname=db"));
        assert!(!here("postgres://u@db.internal/db"));
        assert!(!here("postgres://u@127.0.0.1,10.0.0.5/db"));
        assert!(!here("host=localhost hostaddr=10.0.0.5 dbname=db"));
        assert!(here("hostaddr=127.0.0.1 dbname=db"));
        assert!(
            !here("host=/var/run/postgresql dbname=db"),
            "a socket never speaks TLS"
        );
    }

    #[test]
    fn a_socket_url_is_sockets_only() {
        let sockets = |url: &str| sockets_only(&url.parse().expect("a valid URL"));
        assert!(sockets("postgres://u@%2Fvar%2Frun%2Fpostgresql/db"));
        assert!(sockets("host=/var/run/postgresql dbname=db"));
        assert!(!sockets("host=/var/run/postgresql,127.0.0.1 dbname=db"));
        assert!(!sockets("postgres://u@127.0.0.1/db"));
    }

    #[test]
    fn modes_follow_libpq() {
        let mode = |url: &str| settings(&split_url(url), &db(url)).map(|s| s.mode);
        assert_eq!(mode("postgres://h/db").ok(), Some(SslMode::Prefer));
        assert_eq!(
            mode("postgres://h/db?sslmode=disable").ok(),
            Some(SslMode::Disable)
        );
        assert_eq!(
            mode("postgres://h/db?sslrootcert=system").ok(),
            Some(SslMode::VerifyFull)
        );
        let weak = mode("postgres://h/db?sslrootcert=system&sslmode=require")
            .expect_err("system needs verify-full")
            .to_string();
        assert!(weak.contains("verify-full"), "{weak}");
        let unknown = mode("postgres://h/db?sslmode=sometimes")
            .expect_err("unknown")
            .to_string();
        assert!(
            unknown.contains("sometimes") && unknown.contains("database.sslmode"),
            "{unknown}"
        );
        let allow = mode("postgres://h/db?sslmode=allow")
            .expect_err("allow")
            .to_string();
        assert!(allow.contains("allow"), "{allow}");
    }

    #[test]
    fn the_url_and_the_keys_must_agree() {
        let mut config = db("postgres://h/db?sslmode=require");
        config.sslmode = "verify-full".into();
        let e = settings(&split_url(config.url.expose()), &config)
            .expect_err("conflict")
            .to_string();
        assert!(
            e.contains("database.sslmode") && e.contains("require"),
            "{e}"
        );
        config.sslmode = "require".into();
        assert!(settings(&split_url(config.url.expose()), &config).is_ok());
        let mut keys_only = db("postgres://h/db");
        keys_only.sslmode = "disable".into();
        assert_eq!(
            settings(&split_url(keys_only.url.expose()), &keys_only)
                .expect("keys")
                .mode,
            SslMode::Disable
        );
    }

    #[test]
    fn a_client_certificate_needs_both_halves() {
        let url = "postgres://h/db?sslmode=require&sslcert=/c.pem";
        let e = settings(&split_url(url), &db(url))
            .expect_err("half")
            .to_string();
        assert!(e.contains("database.sslkey"), "{e}");
    }
}
