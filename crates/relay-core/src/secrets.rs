//! Secrets from files: the `_FILE` convention of container images, systemd's
//! `LoadCredential=` and Kubernetes secret volumes, where a secret arrives as a file
//! rather than as an environment value (which any process of the same user can read
//! in `/proc/PID/environ`, and which ends up in `docker inspect`).
//!
//! A secret file must be private, by libpq's rule for `sslkey` and `passfile`:
//! owned by the relay's user and readable by nobody else (`chmod 600`), or owned by
//! root and readable by its group at most (`0640`, the shape of a Kubernetes secret
//! volume with `defaultMode: 0440` and an `fsGroup`). One trailing newline (`\n` or
//! `\r\n`) is stripped, since `echo` and editors add one.

use std::path::Path;

use crate::config::{Config, ConfigError};
use crate::Secret;

/// Each secret that may be read from a file, and the key naming that file.
pub const FILE_KEYS: &[(&str, &str)] = &[
    ("security.webhook_secret", "security.webhook_secret_file"),
    (
        "security.n8n_webhook_secret",
        "security.n8n_webhook_secret_file",
    ),
    ("n8n.api_key", "n8n.api_key_file"),
    ("n8n.auth_header_value", "n8n.auth_header_value_file"),
    ("database.password", "database.password_file"),
    ("console.token", "console.token_file"),
    ("console.read_only_token", "console.read_only_token_file"),
];

/// The file key of `secret_key`, if that secret may come from a file.
pub fn file_key_of(secret_key: &str) -> Option<&'static str> {
    FILE_KEYS
        .iter()
        .find(|(secret, _)| *secret == secret_key)
        .map(|(_, file)| *file)
}

/// Reads every secret whose `_file` key is set into its place. Setting both the
/// secret and its file is refused: which one wins would be a guess.
pub(crate) fn load(config: &mut Config) -> Result<(), ConfigError> {
    let c = config;
    // In the order of FILE_KEYS, which names each pair once (check-config reads it).
    let slots: [(&String, &mut Secret); 7] = [
        (
            &c.security.webhook_secret_file,
            &mut c.security.webhook_secret,
        ),
        (
            &c.security.n8n_webhook_secret_file,
            &mut c.security.n8n_webhook_secret,
        ),
        (&c.n8n.api_key_file, &mut c.n8n.api_key),
        (&c.n8n.auth_header_value_file, &mut c.n8n.auth_header_value),
        (&c.database.password_file, &mut c.database.password),
        (&c.console.token_file, &mut c.console.token),
        (
            &c.console.read_only_token_file,
            &mut c.console.read_only_token,
        ),
    ];
    for (&(key, file_key), (path, secret)) in FILE_KEYS.iter().zip(slots) {
        if path.is_empty() {
            continue;
        }
        if !secret.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "{file_key}: {key} is set too; set the secret or its file, not both"
            )));
        }
        *secret = read(file_key, Path::new(path))?;
        if secret.is_empty() {
            return Err(ConfigError::Invalid(format!("{file_key}: {path} is empty")));
        }
    }
    Ok(())
}

/// The secret in the file at `path`, one trailing newline stripped. `key` names the
/// setting in every error; the content never appears in one.
pub fn read(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    check_private(key, path)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Invalid(format!("{key}: cannot read {}: {e}", path.display())))?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    Ok(Secret::new(text))
}

/// libpq's rule for private files: refused when readable by group or others, unless
/// owned by root and readable by its group only.
pub fn check_private(key: &str, path: &Path) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| ConfigError::Invalid(format!("{key}: cannot read {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(ConfigError::Invalid(format!(
            "{key}: {} is not a file",
            path.display()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let mode = meta.mode() & 0o777;
        let mine = meta.uid() == rustix::process::geteuid().as_raw();
        let too_open = if mine || meta.uid() != 0 {
            mode & 0o077 != 0
        } else {
            mode & 0o037 != 0
        };
        if too_open {
            return Err(ConfigError::Invalid(format!(
                "{key}: {} is readable by others (mode {mode:04o}); make it private with \
                 `chmod 600` (or owned by root with mode 0640 or stricter)",
                path.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn file(dir: &Path, name: &str, content: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("relay-secrets-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    #[test]
    fn one_trailing_newline_is_stripped_and_nothing_else() {
        let dir = temp_dir("newline");
        let lf = file(&dir, "lf", "s3cret\n", 0o600);
        let crlf = file(&dir, "crlf", "s3cret\r\n", 0o600);
        let two = file(&dir, "two", " s3cret \n\n", 0o600);
        assert_eq!(read("k", &lf).expect("lf").expose(), "s3cret");
        assert_eq!(read("k", &crlf).expect("crlf").expose(), "s3cret");
        assert_eq!(read("k", &two).expect("two").expose(), " s3cret \n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_others_can_read_is_refused_naming_the_key_never_the_content() {
        let dir = temp_dir("modes");
        for mode in [0o644, 0o640, 0o604, 0o660] {
            let path = file(&dir, &format!("m{mode:o}"), "topsecret", mode);
            let e = read("security.webhook_secret_file", &path)
                .expect_err("too open")
                .to_string();
            assert!(e.contains("security.webhook_secret_file: "), "{e}");
            assert!(e.contains(&format!("{mode:04o}")), "{e}");
            assert!(!e.contains("topsecret"), "{e}");
        }
        let ok = file(&dir, "ok", "topsecret", 0o400);
        assert!(read("k", &ok).is_ok());
        let missing = read("n8n.api_key_file", &dir.join("nope")).expect_err("missing");
        assert!(
            missing
                .to_string()
                .contains("n8n.api_key_file: cannot read"),
            "{missing}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
