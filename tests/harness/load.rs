//! Business writers in the background, for scenarios that break things while events
//! stream in: each writer inserts leads one transaction at a time, as an application
//! would, and (when told to) rides out a database that goes away by reconnecting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_postgres::NoTls;

/// Running writers. The database is the truth for what was committed: a statement that
/// failed with the connection may still have committed, so tests compare deliveries
/// with `SELECT id FROM leads`, not with these counters.
pub struct Writers {
    tasks: JoinSet<()>,
    /// INSERTs that returned success.
    pub committed: Arc<AtomicU64>,
    /// INSERTs that returned an error (only while riding out an outage).
    pub failed: Arc<AtomicU64>,
}

/// How the writers behave.
#[derive(Debug, Clone, Copy)]
pub struct WriterPlan {
    pub writers: usize,
    /// Leads per writer.
    pub each: usize,
    /// Pause between one writer's inserts (spreads the load over time).
    pub pace: Duration,
    /// Reconnect and carry on after an error instead of panicking.
    pub ride_out_outages: bool,
}

impl Writers {
    pub fn spawn(url: &str, plan: WriterPlan) -> Writers {
        let committed = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for w in 0..plan.writers {
            let url = url.to_string();
            let committed = committed.clone();
            let failed = failed.clone();
            tasks.spawn(async move {
                let mut client = None;
                let mut i = 0;
                while i < plan.each {
                    if client.is_none() {
                        match tokio_postgres::connect(&url, NoTls).await {
                            Ok((c, conn)) => {
                                tokio::spawn(async move {
                                    let _ = conn.await;
                                });
                                client = Some(c);
                            }
                            Err(e) if plan.ride_out_outages => {
                                let _ = e;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                            Err(e) => panic!("writer {w}: connect: {e}"),
                        }
                    }
                    let Some(c) = client.as_ref() else { continue };
                    let name = format!("writer {w} lead {i}");
                    match c
                        .execute("INSERT INTO leads (business_name) VALUES ($1)", &[&name])
                        .await
                    {
                        Ok(_) => {
                            committed.fetch_add(1, Ordering::SeqCst);
                            i += 1;
                            if !plan.pace.is_zero() {
                                tokio::time::sleep(plan.pace).await;
                            }
                        }
                        Err(e) if plan.ride_out_outages => {
                            let _ = e;
                            failed.fetch_add(1, Ordering::SeqCst);
                            // A failed statement may or may not have committed; the
                            // database decides. Move on to the next lead either way.
                            i += 1;
                            client = None;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("writer {w}: insert lead {i}: {e}"),
                    }
                }
            });
        }
        Writers {
            tasks,
            committed,
            failed,
        }
    }

    /// Waits for every writer to finish, or panics after `timeout`.
    pub async fn finish(mut self, timeout: Duration) {
        let all = async {
            while let Some(done) = self.tasks.join_next().await {
                done.unwrap_or_else(|e| panic!("writer task: {e}"));
            }
        };
        tokio::time::timeout(timeout, all)
            .await
            .unwrap_or_else(|_| panic!("writers did not finish within {timeout:?}"));
    }

    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }
}
