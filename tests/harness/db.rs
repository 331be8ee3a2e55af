//! A fresh database per test, dropped when the test ends.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio_postgres::Client;

use crate::cluster;

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

/// A connection through the relay's own connector, so test URLs that ask for TLS
/// (`sslmode`, `sslrootcert`, `sslcert`) mean what they mean to the relay.
pub async fn connect_url(url: &str) -> Client {
    let mut database = relay_core::Config::default().database;
    database.url = relay_core::Secret::new(url);
    let connector = relay_core::db::Connector::new(&database, "relay-tests")
        .unwrap_or_else(|e| panic!("test Postgres URL {url}: {e}"));
    let (client, conn) = connector
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to test Postgres at {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

impl TestDb {
    /// An empty database.
    pub async fn empty() -> TestDb {
        TestDb::empty_on(cluster::server()).await
    }

    /// An empty database on `server` (e.g. a [`cluster::PrivateCluster`]).
    pub async fn empty_on(server: &cluster::Server) -> TestDb {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "relay_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            nanos % 100_000
        );
        let admin = connect_url(&server.admin_url).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        TestDb {
            url: server.url_for(&name),
            name,
            admin_url: server.admin_url.clone(),
        }
    }

    /// A database with the relay's schema and the example business tables, applied
    /// through the same code as `n8n-relay migrate --example-tables`.
    pub async fn migrated() -> TestDb {
        TestDb::migrated_on(cluster::server()).await
    }

    /// [`TestDb::migrated`] on `server`.
    pub async fn migrated_on(server: &cluster::Server) -> TestDb {
        let db = TestDb::empty_on(server).await;
        let mut client = db.client().await;
        relay_core::schema::migrate(&mut client, true)
            .await
            .expect("migrate the test database");
        db
    }

    pub async fn client(&self) -> Client {
        connect_url(&self.url).await
    }

    /// One lead inserted (one `lead_scraped` event): the smallest business write.
    pub async fn insert_lead(&self) {
        self.client()
            .await
            .execute(
                "INSERT INTO leads (business_name, category, location, score) \
                 VALUES ('Acme', 'x', 'y', 0.5)",
                &[],
            )
            .await
            .expect("insert a lead");
    }

    /// `writers` concurrent connections each inserting `each` leads, one transaction
    /// per row, as busy application writers would.
    pub async fn insert_leads_concurrently(&self, writers: usize, each: usize) {
        let mut tasks = Vec::new();
        for w in 0..writers {
            let client = self.client().await;
            tasks.push(tokio::spawn(async move {
                for i in 0..each {
                    client
                        .execute(
                            "INSERT INTO leads (business_name) VALUES ($1)",
                            &[&format!("writer {w} lead {i}")],
                        )
                        .await
                        .unwrap_or_else(|e| panic!("writer {w}: insert lead {i}: {e}"));
                }
            }));
        }
        for task in tasks {
            task.await.unwrap_or_else(|e| panic!("writer task: {e}"));
        }
    }

    /// The pid of the relay's newest LISTEN backend on this database. (A backend whose
    /// link went silent lingers on the server until its TCP keepalives give up.)
    pub async fn listener_pid(&self) -> Option<i32> {
        self.client()
            .await
            .query_opt(
                "SELECT pid FROM pg_stat_activity
                 WHERE datname = $1 AND application_name = 'n8n-relay-listener'
                   AND query = 'LISTEN n8n_relay'
                 ORDER BY backend_start DESC LIMIT 1",
                &[&self.name],
            )
            .await
            .expect("pg_stat_activity")
            .map(|r| r.get(0))
    }

    /// Waits until exactly `n` queue rows have `status`, or panics after `timeout`.
    pub async fn wait_for_queue_status(&self, status: &str, n: i64, timeout: Duration) {
        let sql = format!("SELECT count(*) FROM webhook_queue WHERE status = '{status}'");
        crate::wait_until(&format!("{n} queue rows {status}"), timeout, || async {
            (self.count(&sql).await == n).then_some(())
        })
        .await;
    }

    /// Whether the wake-up is armed (`webhook_relay_wakeup` at 1): the relay is idle,
    /// and the next writer notifies.
    pub async fn wake_up_armed(&self) -> bool {
        self.count("SELECT last_value::int8 FROM webhook_relay_wakeup")
            .await
            == 1
    }

    /// Waits until the relay is idle and has armed its wake-up.
    pub async fn wait_armed(&self, timeout: Duration) {
        crate::wait_until("the relay is idle and armed", timeout, || async {
            self.wake_up_armed().await.then_some(())
        })
        .await;
    }

    /// Convenience: one scalar i64 from a query.
    pub async fn count(&self, sql: &str) -> i64 {
        let client = self.client().await;
        let row = client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.get::<_, i64>(0)
    }
}

/// Runs `sql` on `url` from any context, sync or async, ignoring errors: for cleanup
/// in `Drop`, where no runtime can be assumed, so it uses one of its own on a thread.
pub fn cleanup_sql(url: &str, sql: String) {
    let url = url.to_string();
    let handle = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let mut database = relay_core::Config::default().database;
            database.url = relay_core::Secret::new(&url);
            let Ok(connector) = relay_core::db::Connector::new(&database, "relay-tests") else {
                return;
            };
            if let Ok((client, conn)) = connector.connect().await {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                let _ = client.batch_execute(&sql).await;
            }
        });
    });
    let _ = handle.join();
}

impl Drop for TestDb {
    fn drop(&mut self) {
        cleanup_sql(
            &self.admin_url,
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}
