//! A TCP proxy between the relay and Postgres, to break the link without touching the
//! server: [`Proxy::cut`] severs every connection (the relay sees the close), and
//! [`Proxy::blackhole`] silently stops forwarding on the open ones (no FIN, no RST:
//! like a dropped NAT entry or an unplugged peer) while new connections still work,
//! and [`Proxy::silence`] does that to new connections too (a server that has stopped
//! answering).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

pub struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    silent: Arc<AtomicBool>,
    /// Bumped by every blackhole: connections open at that moment stop forwarding.
    blackholes: watch::Sender<u64>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    /// A proxy to `upstream` (`host:port`) on a free loopback port.
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let cut = Arc::new(AtomicBool::new(false));
        let silent = Arc::new(AtomicBool::new(false));
        let (blackholes, _) = watch::channel(0u64);
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = tokio::spawn({
            let cut = cut.clone();
            let silent = silent.clone();
            let conns = conns.clone();
            let blackholes = blackholes.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let mut hole = blackholes.subscribe();
                    hole.mark_unchanged();
                    let quiet = silent.load(Ordering::SeqCst);
                    let task = tokio::spawn(async move {
                        if quiet {
                            // Accepted (the task holds the socket), never answered.
                            std::future::pending::<()>().await;
                        }
                        let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = hole.changed() => {
                                // Keep both sockets open and never touch them again.
                                std::future::pending::<()>().await;
                            }
                        }
                    });
                    let mut conns = conns.lock().unwrap_or_else(PoisonError::into_inner);
                    conns.retain(|c| !c.is_finished());
                    conns.push(task.abort_handle());
                }
            }
        })
        .abort_handle();
        Proxy {
            addr,
            cut,
            silent,
            blackholes,
            conns,
            accept,
        }
    }

    /// Severs every open connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for conn in self
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            conn.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Every connection open now goes silent in both directions, sockets left open;
    /// connections made afterwards are forwarded as usual.
    pub fn blackhole(&self) {
        self.blackholes.send_modify(|n| *n += 1);
    }

    /// Every connection, open now or made afterwards, goes silent: accepted, never
    /// answered, never closed (until the proxy is dropped).
    pub fn silence(&self) {
        self.silent.store(true, Ordering::SeqCst);
        self.blackhole();
    }

    /// Connections forwarded or held open right now.
    pub fn open_connections(&self) -> usize {
        self.conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|c| !c.is_finished())
            .count()
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_via(&self, url: &str) -> String {
        let mut u = url::Url::parse(url).expect("database url");
        u.set_host(Some("127.0.0.1")).expect("host");
        u.set_port(Some(self.addr.port())).expect("port");
        u.to_string()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// `host:port` of a Postgres URL.
pub fn upstream_of(url: &str) -> String {
    let u = url::Url::parse(url).expect("database url");
    format!(
        "{}:{}",
        u.host_str().unwrap_or("127.0.0.1"),
        u.port().unwrap_or(5432)
    )
}
