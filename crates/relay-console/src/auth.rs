//! Who may use the console: an operator token (views and actions) and an optional
//! read-only token (views). A login trades a token for a session cookie (`HttpOnly`,
//! `SameSite=Lax`, `Secure` behind TLS); every action also carries the session's
//! CSRF token. Lax, not Strict: a link from an alert (Slack, an email) to a row opens
//! it in the session already there, where Strict sent it to the login page and the new
//! login replaced the cookie every open tab's forms were made for. A cross-site request
//! that carries the cookie is a top-level GET, and GETs only show; every action is a
//! POST, refused without the session's CSRF token, which no other site can read. Tokens are compared in constant time (their SHA-256, so lengths do not
//! leak either); a failed login is slowed down, more so for an address that keeps
//! failing, and logged without the token.
//!
//! On a loopback address without `console.token`, there is nothing to log in with:
//! everyone who can reach the port is an operator (the configuration refuses that on
//! any other address).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "n8n_relay_console";
/// How long a session lasts without being used.
const SESSION_IDLE: Duration = Duration::from_secs(8 * 3600);
/// How long a session lasts at most: an overview left open refreshes itself every
/// 5 s, which would otherwise keep its session for good.
const SESSION_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Sessions kept at most; the least recently used goes first.
const MAX_SESSIONS: usize = 1000;
/// A failed login waits this long, doubled per recent failure from its address, up
/// to [`MAX_PENALTY`].
const PENALTY: Duration = Duration::from_millis(500);
const MAX_PENALTY: Duration = Duration::from_secs(8);
/// Failures are forgotten after this.
const FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);
/// Addresses with failures remembered at most.
const MAX_FAILING_ADDRESSES: usize = 10_000;

/// The wait of the `count`th recent failure from one address.
fn penalty(count: u32) -> Duration {
    PENALTY
        .saturating_mul(1u32 << count.saturating_sub(1).min(5))
        .min(MAX_PENALTY)
}

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Operator,
    ReadOnly,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::ReadOnly => "read-only",
        }
    }
}

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub role: Role,
    /// Sent back with every action.
    pub csrf: String,
    started: Instant,
    last_used: Instant,
    /// Requests that named it (the one that started it included): a session asked for
    /// once never came back with its cookie (a script, a probe).
    uses: u32,
}

impl Session {
    fn live(&self) -> bool {
        self.last_used.elapsed() < SESSION_IDLE && self.started.elapsed() < SESSION_LIFETIME
    }
}

pub struct Auth {
    operator: Option<[u8; 32]>,
    read_only: Option<[u8; 32]>,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    random: SystemRandom,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Auth {
    pub fn new(operator: &str, read_only: &str) -> Auth {
        Auth {
            operator: (!operator.is_empty()).then(|| digest(operator)),
            read_only: (!read_only.is_empty()).then(|| digest(read_only)),
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            random: SystemRandom::new(),
        }
    }

    /// No token configured (loopback only): no login, everyone is an operator.
    pub fn open(&self) -> bool {
        self.operator.is_none()
    }

    /// The role `token` logs in as, checked in constant time against both tokens.
    pub fn check(&self, token: &str) -> Option<Role> {
        let given = digest(token);
        let mut role = None;
        // Both comparisons always run.
        if let Some(read_only) = &self.read_only {
            if bool::from(given.ct_eq(read_only)) {
                role = Some(Role::ReadOnly);
            }
        }
        if let Some(operator) = &self.operator {
            if bool::from(given.ct_eq(operator)) {
                role = Some(Role::Operator);
            }
        }
        role
    }

    /// A new session for `role`: its id (the cookie's value).
    pub fn start(&self, role: Role) -> Option<String> {
        let id = self.random_hex()?;
        let csrf = self.random_hex()?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| s.live());
        if sessions.len() >= MAX_SESSIONS {
            // One that never came back goes first: without a token every cookie-less
            // request starts a session, and a monitoring loop's thousand of them
            // evicted the operator's, whose open forms then failed as forged.
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| (s.uses > 1, s.last_used))
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                role,
                csrf,
                started: Instant::now(),
                last_used: Instant::now(),
                uses: 0,
            },
        );
        Some(id)
    }

    /// The session a cookie value names, if it is live.
    pub fn session(&self, id: &str) -> Option<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let live = sessions.get(id).is_some_and(Session::live);
        if !live {
            sessions.remove(id);
            return None;
        }
        let session = sessions.get_mut(id)?;
        session.last_used = Instant::now();
        session.uses = session.uses.saturating_add(1);
        Some(session.clone())
    }

    pub fn end(&self, id: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.remove(id);
    }

    /// How long a failed login from `ip` waits before it is answered; counts it.
    pub fn failed(&self, ip: IpAddr) -> Duration {
        self.failed_at(ip, Instant::now())
    }

    fn failed_at(&self, ip: IpAddr, now: Instant) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_FAILING_ADDRESSES {
            failures.retain(|_, (_, at)| now.saturating_duration_since(*at) < FAILURE_MEMORY);
            if failures.len() >= MAX_FAILING_ADDRESSES {
                // Full of fresh failures (a spread attack): everyone waits the longest.
                return MAX_PENALTY;
            }
        }
        let entry = failures.entry(ip).or_insert((0, now));
        if now.saturating_duration_since(entry.1) >= FAILURE_MEMORY {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        penalty(entry.0)
    }

    pub fn succeeded(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&ip);
    }

    fn random_hex(&self) -> Option<String> {
        let mut bytes = [0u8; 32];
        self.random.fill(&mut bytes).ok()?;
        Some(hex::encode(bytes))
    }
}

/// `a == b` in constant time, for CSRF tokens.
pub fn same(a: &str, b: &str) -> bool {
    bool::from(digest(a).ct_eq(&digest(b)))
}

/// The session cookie, `Secure` when the browser reached us over TLS (a reverse
/// proxy's `X-Forwarded-Proto: https`).
pub fn cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax{secure}")
}

/// The cookie that ends a session in the browser.
pub fn expired_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
}

/// The session id in a `Cookie` header.
pub fn session_id(cookie_header: &str) -> Option<&str> {
    cookie_header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_log_in_as_their_role_and_nothing_else_does() {
        let auth = Auth::new("operator-token-0123456789", "reader-token-0123456789");
        assert_eq!(
            auth.check("operator-token-0123456789"),
            Some(Role::Operator)
        );
        assert_eq!(auth.check("reader-token-0123456789"), Some(Role::ReadOnly));
        assert_eq!(auth.check("operator-token-012345678"), None);
        assert_eq!(auth.check(""), None);
        assert!(!auth.open());
        assert!(Auth::new("", "").open());
        assert_eq!(
            Auth::new("", "").check(""),
            None,
            "no token, nothing matches"
        );
    }

    #[test]
    fn sessions_carry_their_role_and_a_csrf_token_and_end() {
        let auth = Auth::new("operator-token-0123456789", "");
        let id = auth.start(Role::Operator).expect("session");
        let s = auth.session(&id).expect("live");
        assert_eq!(s.role, Role::Operator);
        assert_eq!(s.csrf.len(), 64);
        assert!(same(&s.csrf, &s.csrf) && !same(&s.csrf, "x"));
        auth.end(&id);
        assert!(auth.session(&id).is_none());
        assert!(auth.session("forged").is_none());
    }

    #[test]
    fn sessions_that_never_came_back_are_evicted_before_one_in_use() {
        let auth = Auth::new("", "");
        let operator = auth.start(Role::Operator).expect("session");
        auth.session(&operator)
            .expect("the request that started it");
        auth.session(&operator).expect("the operator comes back");
        for _ in 0..MAX_SESSIONS * 2 {
            let probe = auth.start(Role::Operator).expect("session");
            auth.session(&probe).expect("the request that started it");
        }
        assert!(
            auth.session(&operator).is_some(),
            "the operator's session stays"
        );
    }

    #[test]
    fn a_session_in_use_still_ends_a_day_after_its_login() {
        let auth = Auth::new("operator-token-0123456789", "");
        let id = auth.start(Role::Operator).expect("session");
        let Some(long_ago) = Instant::now().checked_sub(SESSION_LIFETIME) else {
            return; // a clock this young cannot say; nothing to check
        };
        if let Some(s) = auth
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&id)
        {
            s.started = long_ago;
        }
        assert!(
            auth.session(&id).is_none(),
            "used a moment ago, but too old"
        );
    }

    #[test]
    fn repeated_failures_wait_longer_up_to_a_cap() {
        let auth = Auth::new("operator-token-0123456789", "");
        let ip: IpAddr = [10, 0, 0, 1].into();
        let waits: Vec<Duration> = (0..8).map(|_| auth.failed(ip)).collect();
        assert_eq!(waits[0], PENALTY);
        assert!(waits.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(waits[7], MAX_PENALTY);
        auth.succeeded(ip);
        assert_eq!(auth.failed(ip), PENALTY);
    }

    #[test]
    fn failures_older_than_the_memory_are_forgotten() {
        let auth = Auth::new("operator-token-0123456789", "");
        let ip: IpAddr = "203.0.113.9".parse().expect("ip");
        for _ in 0..5 {
            auth.failed(ip);
        }
        assert_eq!(auth.failed(ip), MAX_PENALTY);
        let later = Instant::now() + FAILURE_MEMORY + Duration::from_secs(1);
        assert_eq!(
            auth.failed_at(ip, later),
            PENALTY,
            "the old failures no longer count"
        );
    }

    #[test]
    fn the_cookie_is_http_only_and_strict_and_found_among_others() {
        let c = cookie("abc", true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Secure"));
        assert!(!cookie("abc", false).contains("Secure"));
        assert_eq!(session_id("a=1; n8n_relay_console=abc; b=2"), Some("abc"));
        assert_eq!(session_id("n8n_relay_console="), None);
        assert_eq!(session_id("other=abc"), None);
    }
}
