//! libpq's password file (`passfile`, `~/.pgpass`'s format): lines of
//! `hostname:port:database:username:password`, `*` matching anything, `\:` and `\\`
//! escaping, `#` starting a comment. The first matching line wins.

use std::path::Path;

use super::DbError;

/// The password for this host, port, database and user, if a line matches.
pub(crate) fn lookup(
    key: &str,
    path: &Path,
    host: &str,
    port: u16,
    database: &str,
    user: &str,
) -> Result<Option<String>, DbError> {
    crate::secrets::check_private(key, path).map_err(|e| DbError::Setup(e.to_string()))?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| DbError::Setup(format!("{key}: cannot read {}: {e}", path.display())))?;
    let port = port.to_string();
    let wanted = [host, port.as_str(), database, user];
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = fields(line);
        if fields.len() < 5 {
            continue;
        }
        let matches = fields
            .iter()
            .zip(wanted)
            .all(|(field, want)| field == "*" || field == want);
        if matches {
            // A password may itself contain unescaped colons: everything after the
            // fourth separator.
            return Ok(Some(fields[4..].join(":")));
        }
    }
    Ok(None)
}

fn fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(last)) = (chars.next(), out.last_mut()) {
                    last.push(next);
                }
            }
            ':' => out.push(String::new()),
            other => {
                if let Some(last) = out.last_mut() {
                    last.push(other);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn first_matching_line_wins_with_wildcards_and_escapes() {
        let dir = std::env::temp_dir().join(format!("relay-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("pgpass");
        std::fs::write(
            &path,
            "# comment\nother:5432:*:*:nope\ndb.example:*:app:relay:p\\:w\\\\d:x\n*:*:*:*:fallback\n",
        )
        .expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let found = lookup(
            "database.passfile",
            &path,
            "db.example",
            5432,
            "app",
            "relay",
        )
        .expect("read");
        assert_eq!(found.as_deref(), Some("p:w\\d:x"));
        let fallback = lookup(
            "database.passfile",
            &path,
            "db.example",
            5432,
            "other",
            "relay",
        )
        .expect("read");
        assert_eq!(fallback.as_deref(), Some("fallback"));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = lookup("database.passfile", &path, "h", 1, "d", "u").expect_err("too open");
        assert!(e.to_string().contains("database.passfile"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
