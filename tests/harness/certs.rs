//! A private PKI made in the test: a CA, and server and client certificates it signs
//! (or a second, unrelated CA), written as PEM files a test can hand to Postgres, to
//! an HTTPS test server and to the relay.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A CA and the directory its files go into. Removed when dropped.
pub struct Pki {
    pub dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its private key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How long a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Current,
    /// Both dates in the past.
    Expired,
    /// Valid since a month ago, until this long from now.
    ExpiresIn(std::time::Duration),
}

impl Pki {
    /// A new CA named `name`; its certificate is [`Pki::ca`].
    pub fn new(name: &str) -> Pki {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "n8n-relay-pki-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pki dir");
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        std::fs::write(dir.join("ca.pem"), cert.pem()).expect("write ca.pem");
        Pki {
            dir,
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, file: &str, names: &[&str], validity: Validity) -> CertFiles {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).expect("server certificate params");
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().expect("DNS name")),
            })
            .collect();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(file, params, validity)
    }

    /// A server certificate that names `name` in its Common Name only, no
    /// subjectAltName: what the Postgres docs' `openssl req -subj "/CN=..."` makes.
    pub fn server_named_in_cn_only(&self, file: &str, name: &str) -> CertFiles {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).expect("server certificate params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(file, params, Validity::Current)
    }

    /// A self-signed CA certificate for `names`, to serve as a server's own and as its
    /// root (what `openssl req -x509` makes by default: basicConstraints CA:TRUE).
    pub fn self_signed_ca_for(&self, file: &str, names: &[&str]) -> CertFiles {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_string()).collect::<Vec<_>>())
                .expect("self-signed params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed certificate");
        self.write(file, &cert, &key)
    }

    /// A client certificate whose common name is `user` (what Postgres's `cert`
    /// authentication compares with the user name).
    pub fn client(&self, file: &str, user: &str) -> CertFiles {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).expect("client certificate params");
        params.distinguished_name.push(DnType::CommonName, user);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(file, params, Validity::Current)
    }

    fn issue(&self, file: &str, mut params: CertificateParams, validity: Validity) -> CertFiles {
        match validity {
            Validity::Current => {}
            Validity::Expired => {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
            Validity::ExpiresIn(left) => {
                let now = time::OffsetDateTime::now_utc();
                params.not_before = now - time::Duration::days(30);
                params.not_after = now + left;
            }
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        self.write(file, &cert, &key)
    }

    /// `file.crt` and `file.key` (private) in this PKI's directory.
    fn write(&self, file: &str, cert: &rcgen::Certificate, key: &KeyPair) -> CertFiles {
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write certificate");
        write_private(&files.key, &key.serialize_pem());
        files
    }
}

/// Writes a file only its owner can read, as private keys must be.
pub fn write_private(path: &Path, content: &str) {
    std::fs::write(path, content).expect("write private file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
