//! TLS material from files, shared by every TLS user (Postgres, n8n, the callback
//! listener): PEM certificates and private keys, read with errors that name the
//! setting and the file, the dates a certificate is good between, and the one crypto
//! provider (ring) they all use.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

/// A TLS file that cannot be used. The message names the key and the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsFileError(String);

impl From<TlsFileError> for crate::ConfigError {
    fn from(e: TlsFileError) -> Self {
        crate::ConfigError::Invalid(e.0)
    }
}

impl From<TlsFileError> for crate::db::DbError {
    fn from(e: TlsFileError) -> Self {
        crate::db::DbError::Setup(e.0)
    }
}

/// ring, whichever other provider a dependency may have compiled in.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file, at least one.
pub fn load_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = std::fs::read(path)
        .map_err(|e| TlsFileError(format!("{key}: cannot read {}: {e}", path.display())))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            TlsFileError(format!(
                "{key}: {} is not a PEM file of certificates ({})",
                path.display(),
                pem_problem(&e)
            ))
        })?;
    if certs.is_empty() {
        return Err(TlsFileError(format!(
            "{key}: {} is not a PEM file of certificates (no BEGIN CERTIFICATE block)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1). The file must be private
/// (see [`crate::secrets::check_private`]), as libpq requires of `sslkey`.
pub fn load_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    crate::secrets::check_private(key, path).map_err(|e| match e {
        crate::ConfigError::Invalid(message) => TlsFileError(message),
        other => TlsFileError(other.to_string()),
    })?;
    let bytes = std::fs::read(path)
        .map_err(|e| TlsFileError(format!("{key}: cannot read {}: {e}", path.display())))?;
    // `BEGIN ENCRYPTED PRIVATE KEY`, or an old-style `Proc-Type: 4,ENCRYPTED` header:
    // there is no passphrase to give (libpq's sslpassword), so say what to do.
    if bytes.windows(9).any(|w| w == b"ENCRYPTED") {
        return Err(TlsFileError(format!(
            "{key}: {} is an encrypted private key, which the relay cannot open (it takes \
             no passphrase); store it decrypted, readable by the relay's user only: \
             openssl pkey -in {} -out decrypted.key",
            path.display(),
            path.display()
        )));
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        TlsFileError(format!(
            "{key}: {} holds no PEM private key ({})",
            path.display(),
            pem_problem(&e)
        ))
    })
}

/// A certificate chain and the private key that goes with it, as a server serves them
/// ((setting, file) of each): a key of another certificate is refused here, naming
/// both files, not at the first handshake.
pub fn certified_key(
    (cert_key, cert): (&str, &Path),
    (key_key, key): (&str, &Path),
) -> Result<rustls::sign::CertifiedKey, TlsFileError> {
    let chain = load_certs(cert_key, cert)?;
    let private = load_key(key_key, key)?;
    rustls::sign::CertifiedKey::from_der(chain, private, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsFileError(format!(
            "{key_key}: {} does not go with the certificate in {} ({cert_key}; {e})",
            key.display(),
            cert.display()
        )),
        other => TlsFileError(format!(
            "{key_key}: {} cannot be used: a key of a kind the relay does not sign with \
             (RSA, ECDSA P-256 or P-384, Ed25519 are; {other})",
            key.display()
        )),
    })
}

/// How long before a certificate expires the relay starts saying so. Automated
/// renewals (certbot, cert-manager) renew a month or more ahead: two weeks left means
/// the renewal has stopped, with time left to mend it.
pub const EXPIRY_NOTICE: Duration = Duration::from_secs(14 * 86_400);

/// The dates between which a certificate is valid. rustls checks a peer's, never the
/// relay's own: an expired certificate of the callback listener was served without a
/// word while n8n refused every callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The two dates as the certificate states them (UTC, RFC 3339).
    shown: (String, String),
}

impl Validity {
    /// The dates of `cert`, or `None` if it is not an X.509 certificate rustls would
    /// have refused anyway.
    pub fn of(cert: &CertificateDer<'_>) -> Option<Validity> {
        use x509_cert::der::Decode as _;
        let parsed = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
        let dates = &parsed.tbs_certificate.validity;
        Some(Validity {
            not_before: dates.not_before.to_system_time(),
            not_after: dates.not_after.to_system_time(),
            shown: (
                dates.not_before.to_date_time().to_string(),
                dates.not_after.to_date_time().to_string(),
            ),
        })
    }

    /// When it expires, UTC.
    pub fn expires(&self) -> &str {
        &self.shown.1
    }

    /// When it became valid, UTC.
    pub fn starts(&self) -> &str {
        &self.shown.0
    }

    /// Where `now` falls in its life; what [`Validity::state`] and
    /// [`Validity::problem`] both say, so they cannot disagree.
    fn phase(&self, now: SystemTime) -> Phase {
        if now < self.not_before {
            return Phase::NotYet;
        }
        match self.not_after.duration_since(now) {
            Err(ago) => Phase::Expired(ago.duration()),
            Ok(left) if left <= EXPIRY_NOTICE => Phase::Soon(left),
            Ok(left) => Phase::Valid(left),
        }
    }

    /// Its state at `now` in a few words: "valid until 2027-03-01T00:00:00Z (84 days
    /// left)", "expires on ... (3 days left)", "expired on ... (2 days ago)", "not
    /// valid before ...".
    pub fn state(&self, now: SystemTime) -> String {
        let until = &self.shown.1;
        match self.phase(now) {
            Phase::NotYet => format!("not valid before {}", self.shown.0),
            Phase::Expired(ago) => format!("expired on {until} ({})", days(ago, "ago")),
            Phase::Soon(left) => format!("expires on {until} ({})", days(left, "left")),
            Phase::Valid(left) => format!("valid until {until} ({})", days(left, "left")),
        }
    }

    /// What is wrong at `now`, or about to be ([`EXPIRY_NOTICE`]), with the certificate
    /// that `setting` names in `path`, ending with `then` (what the operator does after
    /// renewing the file: a signal, a restart). `None` while it is good for longer.
    pub fn problem(
        &self,
        setting: &str,
        path: &Path,
        now: SystemTime,
        then: &str,
    ) -> Option<String> {
        let state = self.state(now);
        let file = path.display();
        match self.phase(now) {
            Phase::NotYet => Some(format!(
                "{setting}: the certificate in {file} is {state}: peers refuse it until then \
                 (is this host's clock right?)"
            )),
            Phase::Expired(_) => Some(format!(
                "{setting}: the certificate in {file} {state}: peers refuse it; renew it, {then}"
            )),
            Phase::Soon(_) => Some(format!(
                "{setting}: the certificate in {file} {state}; renew it, {then}"
            )),
            Phase::Valid(_) => None,
        }
    }
}

/// Where a moment falls in a certificate's life.
enum Phase {
    NotYet,
    Expired(Duration),
    /// Within [`EXPIRY_NOTICE`] of its end.
    Soon(Duration),
    Valid(Duration),
}

/// "3 days left", "less than a day ago".
fn days(d: Duration, which: &str) -> String {
    match d.as_secs() / 86_400 {
        0 => format!("less than a day {which}"),
        1 => format!("1 day {which}"),
        n => format!("{n} days {which}"),
    }
}

/// The dates of the first certificate in `path` (the one a server or client presents),
/// for reports; `None` when the file cannot be read or holds none (the error that
/// matters is the one its loading gives).
pub fn validity_of_file(key: &str, path: &Path) -> Option<Validity> {
    let chain = load_certs(key, path).ok()?;
    Validity::of(chain.first()?)
}

/// What is wrong with a PEM file, in words: the parser names a missing end marker as
/// its bytes ("[67, 69, 82, ...]"), which is how a file still being written looks.
fn pem_problem(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "incomplete: no END {} line; a file still being written?",
            String::from_utf8_lossy(end_marker)
        ),
        Error::IllegalSectionStart { line } => format!(
            "a BEGIN line that is not PEM: {}",
            String::from_utf8_lossy(line)
        ),
        other => other.to_string(),
    }
}

/// A root store of the CA certificates in `path`.
pub fn root_store(key: &str, path: &Path) -> Result<RootCertStore, TlsFileError> {
    let mut store = RootCertStore::empty();
    add_certs(&mut store, key, path)?;
    Ok(store)
}

/// Adds the CA certificates in `path` to `store`.
pub fn add_certs(store: &mut RootCertStore, key: &str, path: &Path) -> Result<(), TlsFileError> {
    for cert in load_certs(key, path)? {
        store.add(cert).map_err(|e| {
            TlsFileError(format!(
                "{key}: {} holds a certificate that cannot be a trust anchor ({e})",
                path.display()
            ))
        })?;
    }
    Ok(())
}

/// The platform's trusted roots (`/etc/ssl/certs` and the like), for libpq's
/// `sslrootcert=system`.
pub fn system_roots() -> Result<RootCertStore, TlsFileError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(TlsFileError(format!(
            "database.sslrootcert: sslrootcert=system, but no trusted roots were found on this \
             machine{why}; install ca-certificates or name a CA file"
        )));
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encrypted_key_is_named_as_such_with_what_to_do() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("n8n-relay-tls-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for (file, pem) in [
            (
                "pkcs8.key",
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
            ),
            (
                "legacy.key",
                "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            ),
        ] {
            let path = dir.join(file);
            std::fs::write(&path, pem).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("chmod");
            let e = load_key("database.sslkey", &path).expect_err("encrypted");
            assert!(
                e.0.contains("database.sslkey") && e.0.contains("encrypted private key"),
                "{file}: {}",
                e.0
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A self-signed certificate valid from `from` to `until` (Unix seconds).
    fn dated(from: i64, until: i64) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(vec!["relay.test".to_string()]).expect("params");
        params.not_before = time::OffsetDateTime::from_unix_timestamp(from).expect("from");
        params.not_after = time::OffsetDateTime::from_unix_timestamp(until).expect("until");
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().clone()
    }

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;

    fn at(unix: i64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).expect("after 1970"))
    }

    #[test]
    fn a_certificate_is_said_from_two_weeks_before_it_expires_and_after() {
        let path = Path::new("/etc/relay/cert.pem");
        let then = "then send SIGHUP";
        let says = |from: i64, until: i64| {
            let dates = Validity::of(&dated(from, until)).expect("dates");
            (
                dates.state(at(NOW)),
                dates.problem("callbacks.tls_cert", path, at(NOW), then),
            )
        };

        let (state, problem) = says(NOW - 60 * DAY, NOW + 30 * DAY);
        assert!(state.starts_with("valid until 2027-"), "{state}");
        assert!(state.ends_with("(30 days left)"), "{state}");
        assert_eq!(problem, None);

        let (state, problem) = says(NOW - 60 * DAY, NOW + 3 * DAY + 60);
        assert!(
            state.starts_with("expires on ") && state.ends_with("(3 days left)"),
            "{state}"
        );
        let problem = problem.expect("near expiry is said");
        assert!(
            problem.starts_with(
                "callbacks.tls_cert: the certificate in /etc/relay/cert.pem expires on "
            ),
            "{problem}"
        );
        assert!(problem.ends_with("renew it, then send SIGHUP"), "{problem}");

        let (state, problem) = says(NOW - 60 * DAY, NOW - 2 * DAY - 60);
        assert!(
            state.starts_with("expired on ") && state.ends_with("(2 days ago)"),
            "{state}"
        );
        assert!(problem
            .expect("expired")
            .contains("peers refuse it; renew it"));

        let (state, problem) = says(NOW + DAY, NOW + 90 * DAY);
        assert!(state.starts_with("not valid before "), "{state}");
        assert!(problem.expect("not yet valid").contains("clock"));
    }

    #[test]
    fn what_is_not_a_certificate_has_no_dates() {
        assert_eq!(
            Validity::of(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])),
            None
        );
    }
}
