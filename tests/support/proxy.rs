//! A TCP proxy in front of the emulator that can refuse connections, the
//! way a network does when Customer.io's address is unreachable: while
//! refusing, nothing listens on its port (a connect gets RST, "connection
//! refused") and every open connection is cut.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::{JoinHandle, JoinSet};

pub struct RefusingProxy {
    addr: SocketAddr,
    target: SocketAddr,
    /// The accept loop while accepting; aborting it drops the listener and
    /// (with its JoinSet) every forwarding task.
    serving: Mutex<Option<JoinHandle<()>>>,
}

impl RefusingProxy {
    /// Listens on a free local port below the ephemeral range and forwards
    /// to `target`. Below the range, because while it refuses, its port is
    /// free: an outgoing connection could otherwise get it as its source
    /// port (and keep it), or a connect to it could connect to itself.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = bind_below_ephemeral().await;
        let addr = listener.local_addr().expect("proxy address");
        let serving = Mutex::new(Some(tokio::spawn(serve(listener, target))));
        Self { addr, target, serving }
    }

    /// `http://ADDR`, to give the daemon as `track_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops listening and cuts every open connection.
    pub async fn refuse(&self) {
        if let Some(task) = self.serving.lock().await.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port (a no-op while listening).
    pub async fn accept(&self) {
        let mut serving = self.serving.lock().await;
        if serving.is_some() {
            return;
        }
        // The port was ours a moment ago, and no ephemeral port: rebinding
        // fails only if another program bound it on purpose meanwhile.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("the proxy cannot listen on {} again: {e}", self.addr),
            }
        };
        *serving = Some(tokio::spawn(serve(listener, self.target)));
    }
}

impl Drop for RefusingProxy {
    fn drop(&mut self) {
        if let Some(task) = self.serving.get_mut().take() {
            task.abort();
        }
    }
}

/// A listener on a free local port below the kernel's ephemeral range: a
/// port that stays free while its owner is down (no outgoing connection
/// takes it as its source port), e.g. for a daemon restarted many times.
pub async fn bind_below_ephemeral() -> TcpListener {
    let below = ephemeral_low().saturating_sub(1).max(2000);
    for _ in 0..200 {
        let port = rand::random_range(1024..below);
        if let Ok(bound) = TcpListener::bind(("127.0.0.1", port)).await {
            return bound;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// The first port of the kernel's ephemeral range (32768 when unreadable).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

async fn serve(listener: TcpListener, target: SocketAddr) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((mut inbound, _)) = accepted else { continue };
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
