//! TLS material from files, shared by every TLS user (Postgres, n8n, the callback
//! listener): PEM certificates and private keys, read with errors that name the
//! setting and the file, and the one crypto provider (ring) they all use.

use std::path::Path;
use std::sync::Arc;

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
}
