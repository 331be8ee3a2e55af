//! TLS to Postgres, against private clusters that accept TLS connections only
//! (`hostssl` lines alone), with a CA, server and client certificates made in the
//! test: the whole delivery path over `verify-full`, a client-certificate login,
//! passwords from files, and every refusal a user can meet, each by its message.

use std::time::Duration;

use relay_tests::certs::{Pki, Validity};
use relay_tests::cluster::{CERT_USER, PASSWORD, PASSWORD_USER};
use relay_tests::{wait_until, PrivateCluster, RelayBuilder, Sink, TestDb};

const T: Duration = Duration::from_secs(30);

/// A TLS-only cluster presenting a certificate for localhost and 127.0.0.1.
fn tls_cluster(validity: Validity) -> (Pki, PrivateCluster) {
    let pki = Pki::new("pg");
    let server = pki.server("server", &["localhost", "127.0.0.1"], validity);
    let cluster = PrivateCluster::start_with_tls(&pki.ca(), &server).expect("TLS cluster");
    (pki, cluster)
}

fn verify_full(pki: &Pki) -> String {
    format!("sslmode=verify-full&sslrootcert={}", pki.ca().display())
}

/// `postgres://USER@127.0.0.1:PORT/DB?PARAMS`.
fn url(cluster: &PrivateCluster, user: &str, db: &str, params: &str) -> String {
    format!(
        "postgres://{user}@127.0.0.1:{}/{db}?{params}",
        cluster.port()
    )
}

/// Runs `n8n-relay ARGS` against `database_url` to completion: (exit code, stderr).
async fn relay_cli(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut builder = RelayBuilder::new(database_url, "http://127.0.0.1:9").args(args.to_vec());
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    // A refusal that went unrecognised would leave `run` waiting for the database.
    let out = tokio::time::timeout(T, builder.output())
        .await
        .unwrap_or_else(|_| panic!("n8n-relay {args:?} did not exit within {T:?}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn the_whole_delivery_path_runs_over_verify_full_to_a_tls_only_server() {
    let (pki, cluster) = tls_cluster(Validity::Current);
    let db = TestDb::migrated_on(&cluster.server_with(&verify_full(&pki))).await;
    let sink = Sink::start().await;
    let relay = RelayBuilder::new(&db.url, &sink.url()).spawn();
    let client = db.client().await;
    db.insert_lead().await;
    let got = sink.wait_for(1, T).await;
    assert_eq!(got[0].path, "/webhook/lead-scraped");
    db.wait_for_queue_status("sent", 1, T).await;

    // Every connection the relay holds is encrypted: the pool and the LISTEN one.
    let (encrypted, plain): (i64, i64) = wait_until("the relay's sessions", T, || async {
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
                   FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                  WHERE a.application_name LIKE 'n8n-relay%'",
                &[],
            )
            .await
            .expect("pg_stat_ssl");
        let counts: (i64, i64) = (row.get(0), row.get(1));
        (counts.0 >= 2).then_some(counts)
    })
    .await;
    assert!(
        encrypted >= 2 && plain == 0,
        "{encrypted} over TLS, {plain} not: {}",
        relay.log()
    );
    assert!(!relay.log().contains("without TLS"), "{}", relay.log());
    // verify-full asked for TLS: no word about what it costs.
    assert!(
        !relay.log().contains("on this host over TLS"),
        "{}",
        relay.log()
    );
}

#[tokio::test]
async fn prefer_meeting_tls_on_this_host_says_once_what_plaintext_would_save() {
    let (pki, cluster) = tls_cluster(Validity::Current);
    let db = TestDb::migrated_on(&cluster.server_with(&verify_full(&pki))).await;
    let prefer = url(&cluster, "postgres", &db.name, "sslmode=prefer");
    let line = said_once_at_info(&db, &prefer, "connected to Postgres on this host over TLS").await;
    assert!(line.contains("sslmode=disable or a Unix socket"), "{line}");
}

#[tokio::test]
async fn a_client_certificate_logs_in_where_the_server_demands_one() {
    let (pki, cluster) = tls_cluster(Validity::Current);
    let db = TestDb::migrated_on(&cluster.server_with(&verify_full(&pki))).await;
    let client = pki.client("client", CERT_USER);
    let with_cert = url(
        &cluster,
        CERT_USER,
        &db.name,
        &format!(
            "{}&sslcert={}&sslkey={}",
            verify_full(&pki),
            client.cert.display(),
            client.key.display()
        ),
    );
    let (code, stderr) = relay_cli(&with_cert, &["queue", "stats", "--json"], &[]).await;
    assert_eq!(code, 0, "{stderr}");

    // The same certificate through the database.* keys.
    let keys_only = url(&cluster, CERT_USER, &db.name, &verify_full(&pki));
    let cert = client.cert.display().to_string();
    let key = client.key.display().to_string();
    let (code, stderr) = relay_cli(
        &keys_only,
        &["queue", "stats"],
        &[
            ("RELAY_DATABASE__SSLCERT", &cert),
            ("RELAY_DATABASE__SSLKEY", &key),
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");

    // Without it the server refuses the login.
    let (code, stderr) = relay_cli(&keys_only, &["queue", "stats"], &[]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("certificate"), "{stderr}");
}

#[tokio::test]
async fn passwords_come_from_a_password_file_or_a_libpq_passfile() {
    let (pki, cluster) = tls_cluster(Validity::Current);
    let db = TestDb::migrated_on(&cluster.server_with(&verify_full(&pki))).await;
    let no_password = url(&cluster, PASSWORD_USER, &db.name, &verify_full(&pki));

    let password_file = pki.dir.join("pgpassword");
    relay_tests::certs::write_private(&password_file, &format!("{PASSWORD}\n"));
    let path = password_file.display().to_string();
    let (code, stderr) = relay_cli(
        &no_password,
        &["queue", "stats"],
        &[("RELAY_DATABASE__PASSWORD_FILE", &path)],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stderr.contains(PASSWORD),
        "the password was shown: {stderr}"
    );

    let passfile = pki.dir.join("pgpass");
    relay_tests::certs::write_private(
        &passfile,
        &format!(
            "other.example:*:*:*:wrong\n127.0.0.1:{}:*:{PASSWORD_USER}:{PASSWORD}\n",
            cluster.port()
        ),
    );
    let with_passfile = format!("{no_password}&passfile={}", passfile.display());
    let (code, stderr) = relay_cli(&with_passfile, &["queue", "stats"], &[]).await;
    assert_eq!(code, 0, "{stderr}");

    // No password at all: the server's refusal.
    let (code, stderr) = relay_cli(&no_password, &["queue", "stats"], &[]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("password"), "{stderr}");
}

/// `n8n-relay run` refuses to start: exit 2, and its message.
async fn refused_at_start(database_url: &str) -> String {
    let (code, stderr) = relay_cli(database_url, &["run"], &[]).await;
    assert_eq!(code, 2, "expected exit 2 for {database_url}: {stderr}");
    stderr
}

#[tokio::test]
async fn every_tls_refusal_says_which_check_failed_names_the_file_and_exits_2() {
    let (pki, cluster) = tls_cluster(Validity::Current);
    let db = TestDb::migrated_on(&cluster.server_with(&verify_full(&pki))).await;
    let ca = pki.ca().display().to_string();

    // The server requires TLS, the URL disables it.
    let e = refused_at_start(&url(&cluster, "postgres", &db.name, "sslmode=disable")).await;
    assert!(
        e.contains("refused an unencrypted connection") && e.contains("sslmode=require"),
        "{e}"
    );

    // verify-full against a certificate for other names.
    let e = refused_at_start(&format!(
        "postgres://postgres@wrong.example:{}/{}?hostaddr=127.0.0.1&{}",
        cluster.port(),
        db.name,
        verify_full(&pki)
    ))
    .await;
    assert!(
        e.contains("not valid for host \"wrong.example\"") && e.contains(&ca),
        "{e}"
    );

    // verify-ca with a CA that did not sign the server's certificate.
    let other = Pki::new("other");
    let e = refused_at_start(&url(
        &cluster,
        "postgres",
        &db.name,
        &format!("sslmode=verify-ca&sslrootcert={}", other.ca().display()),
    ))
    .await;
    assert!(
        e.contains("not signed by a CA in") && e.contains(&other.ca().display().to_string()),
        "{e}"
    );

    // A CA file that is not PEM.
    let garbage = pki.dir.join("not-a-ca.pem");
    std::fs::write(&garbage, "hello").expect("write");
    let e = refused_at_start(&url(
        &cluster,
        "postgres",
        &db.name,
        &format!("sslmode=verify-full&sslrootcert={}", garbage.display()),
    ))
    .await;
    assert!(
        e.contains("database.sslrootcert") && e.contains("not-a-ca.pem") && e.contains("PEM"),
        "{e}"
    );

    // verify-ca accepts the right CA whatever the host name.
    let (code, stderr) = relay_cli(
        &format!(
            "postgres://postgres@wrong.example:{}/{}?hostaddr=127.0.0.1&sslmode=verify-ca&sslrootcert={ca}",
            cluster.port(),
            db.name
        ),
        &["queue", "stats"],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
}

/// The pool read the TLS files and the passfile once, at start, where the LISTEN
/// connection reads them at every reconnect: after a password rotated in the role and
/// the passfile, and every session ended (a restart of Postgres), the listener came
/// back and the pool could not log in again, so nothing was delivered.
#[tokio::test]
async fn a_password_rotated_in_the_passfile_reaches_the_pool_once_its_sessions_end() {
    let (pki, cluster) = tls_cluster(Validity::Current);
    let db = TestDb::migrated_on(&cluster.server_with(&verify_full(&pki))).await;
    let passfile = pki.dir.join("pgpass-rotated");
    let line = |password: &str| {
        format!(
            "127.0.0.1:{}:*:{PASSWORD_USER}:{password}\n",
            cluster.port()
        )
    };
    relay_tests::certs::write_private(&passfile, &line(PASSWORD));
    let relay_url = format!(
        "{}&passfile={}",
        url(&cluster, PASSWORD_USER, &db.name, &verify_full(&pki)),
        passfile.display()
    );
    let sink = Sink::start().await;
    let relay = RelayBuilder::new(&relay_url, &sink.url()).spawn();
    db.insert_lead().await;
    sink.wait_for(1, T).await;

    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "ALTER ROLE {PASSWORD_USER} PASSWORD 'rotated-password-2'"
        ))
        .await
        .expect("rotate the password");
    relay_tests::certs::write_private(&passfile, &line("rotated-password-2"));
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&PASSWORD_USER],
        )
        .await
        .expect("end the relay's sessions");
    db.insert_lead().await;
    let got = sink.wait_for(2, T).await;
    assert_eq!(got.len(), 2, "{}", relay.log());
}

/// The older backend used libpq, which reads PGSSLMODE and its kin; the relay does
/// not, and said nothing, so `PGSSLMODE=verify-full` meant `prefer` unannounced.
#[tokio::test]
async fn libpq_variables_it_does_not_read_are_named_at_start() {
    let db = TestDb::migrated().await;
    let sink = Sink::start().await;
    let relay = RelayBuilder::new(&db.url, &sink.url())
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", "/etc/ssl/certs/db-ca.pem")
        .spawn();
    let line = wait_until("the warning", T, || async {
        relay
            .log()
            .lines()
            .find(|l| l.contains("PG* environment variables"))
            .map(str::to_string)
    })
    .await;
    assert!(
        line.contains("WARN") && line.contains("PGSSLMODE, PGSSLROOTCERT"),
        "{line}"
    );
}

/// A key=value URL with `hostaddr` and no `host` (libpq connects) had no name for the
/// TLS handshake: every attempt failed against a server that offers TLS, and `run`
/// waited for the database for ever.
#[tokio::test]
async fn a_url_with_hostaddr_and_no_host_reaches_a_tls_server() {
    let (pki, cluster) = tls_cluster(Validity::Current);
    let db = TestDb::migrated_on(&cluster.server_with(&verify_full(&pki))).await;
    let ca = pki.ca().display().to_string();
    for mode in [
        "sslmode=prefer".to_string(),
        "sslmode=require".to_string(),
        format!("sslmode=verify-ca sslrootcert={ca}"),
    ] {
        let keywords = format!(
            "hostaddr=127.0.0.1 port={} dbname={} user=postgres {mode}",
            cluster.port(),
            db.name
        );
        let (code, stderr) = relay_cli(&keywords, &["queue", "stats", "--json"], &[]).await;
        assert_eq!(code, 0, "{mode}: {stderr}");
    }
    // verify-full needs a name to check, as libpq says too.
    let e = refused_at_start(&format!(
        "hostaddr=127.0.0.1 port={} dbname={} user=postgres sslmode=verify-full sslrootcert={ca}",
        cluster.port(),
        db.name
    ))
    .await;
    assert!(e.contains("host=NAME"), "{e}");
}

/// Two server certificates libpq takes and rustls does not: one that names its host
/// only in the Common Name (the Postgres docs' recipe), and a self-signed CA
/// certificate serving as its own root (`openssl req -x509`). Each refusal says which
/// it is and how to reissue it (it said "not valid for host", or gave rustls's name
/// for the second).
#[tokio::test]
async fn certificates_libpq_takes_and_rustls_refuses_are_named_with_the_fix() {
    let pki = Pki::new("quirks");
    let cn_only = pki.server_named_in_cn_only("cn-only", "localhost");
    let cluster = PrivateCluster::start_with_tls(&pki.ca(), &cn_only).expect("TLS cluster");
    let e = refused_at_start(&format!(
        "postgres://postgres@localhost:{}/postgres?{}",
        cluster.port(),
        verify_full(&pki)
    ))
    .await;
    assert!(
        e.contains("not valid for host \"localhost\"")
            && e.contains("Common Name")
            && e.contains("subjectAltName=DNS:localhost"),
        "{e}"
    );
    drop(cluster);

    let own = pki.self_signed_ca_for("own-root", &["localhost", "127.0.0.1"]);
    let cluster = PrivateCluster::start_with_tls(&own.cert, &own).expect("TLS cluster");
    let e = refused_at_start(&format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        cluster.port(),
        own.cert.display()
    ))
    .await;
    assert!(
        e.contains("CA certificate") && e.contains("CA:FALSE"),
        "{e}"
    );
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused_at_start() {
    let (pki, cluster) = tls_cluster(Validity::Expired);
    let e = refused_at_start(&url(&cluster, "postgres", "postgres", &verify_full(&pki))).await;
    assert!(e.contains("has expired"), "{e}");
    assert!(
        e.contains(&pki.ca().display().to_string()),
        "names the CA file: {e}"
    );
    // require checks nothing (libpq), so the same server is reachable with it.
    let (code, stderr) = relay_cli(
        &url(&cluster, "postgres", "postgres", "sslmode=require"),
        &["migrate"],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test]
async fn prefer_reaches_a_server_without_tls_in_plaintext_and_says_so_require_refuses_it() {
    let cluster = PrivateCluster::start().expect("plain cluster");
    let db = TestDb::migrated_on(&cluster.server()).await;
    let e = refused_at_start(&url(&cluster, "postgres", &db.name, "sslmode=require")).await;
    assert!(e.contains("does not accept TLS"), "{e}");

    let prefer = url(&cluster, "postgres", &db.name, "sslmode=prefer");
    said_once_at_info(&db, &prefer, "connected to Postgres without TLS").await;
}

#[tokio::test]
async fn over_a_unix_socket_prefer_gives_no_advice_about_tls() {
    // Postgres never offers TLS on its socket: the plaintext notice's "set
    // sslmode=require" would stop the relay there.
    let cluster = PrivateCluster::start().expect("plain cluster");
    let db = TestDb::migrated_on(&cluster.server()).await;
    let socket = format!(
        "host={} port={} user=postgres dbname={} sslmode=prefer",
        cluster.socket_dir().display(),
        cluster.port(),
        db.name
    );
    let sink = Sink::start().await;
    let relay = RelayBuilder::new(&socket, &sink.url())
        .env("RUST_LOG", "info,relay_core=debug")
        .spawn();
    // The start-up check runs before the relay routes anything.
    db.insert_lead().await;
    sink.wait_for(1, T).await;
    let log = relay.log();
    assert!(!log.contains("without TLS"), "{log}");
    assert!(!log.contains("over TLS"), "{log}");
    assert!(
        log.contains("connected to Postgres over its Unix socket"),
        "{log}"
    );
}

/// Runs the relay on `database_url` until it has delivered a lead, and holds that its
/// log says `notice` exactly once, at info level, however many connections it opened
/// meanwhile; the line.
async fn said_once_at_info(db: &TestDb, database_url: &str, notice: &str) -> String {
    let sink = Sink::start().await;
    let relay = RelayBuilder::new(database_url, &sink.url()).spawn();
    wait_until(notice, T, || async {
        relay.log().contains(notice).then_some(())
    })
    .await;
    db.insert_lead().await;
    sink.wait_for(1, T).await;
    let log = relay.log();
    let notices: Vec<&str> = log.lines().filter(|l| l.contains(notice)).collect();
    assert_eq!(notices.len(), 1, "{log}");
    assert!(notices[0].contains("INFO"), "{log}");
    notices[0].to_string()
}
