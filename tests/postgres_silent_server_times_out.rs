//! A server that accepts the connection and then says nothing (a stuck
//! proxy, a server out of memory) does not hold ciosync for ever:
//! `connect_timeout_secs` bounds the whole attempt, socket, TLS and login,
//! as libpq's `connect_timeout` does, and the error says which bound ran out.

use std::net::TcpListener;
use std::time::Duration;

use ciosync::error::error_chain;
use ciosync::pg::connection::ConnectionSettings;
use ciosync::secret::Secret;

/// Accepts connections and holds them open without a byte in answer.
fn silent_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_fails_the_connection_within_connect_timeout() {
    let port = silent_server();
    for query in ["sslmode=disable", "sslmode=prefer", "sslmode=require"] {
        let url = format!("postgres://syncer:pw@127.0.0.1:{port}/app?{query}");
        let settings = ConnectionSettings::parse(&Secret::new(&url), Duration::from_secs(1))
            .expect("a valid URL");
        // A generous bound: without the fix the attempt never ends.
        let attempt = tokio::time::timeout(Duration::from_secs(30), settings.connect_sql()).await;
        let error = attempt.unwrap_or_else(|_| panic!("{query}: still connecting after 30 s"));
        let error = error_chain(&error.expect_err("nothing answered, so no connection"));
        assert!(error.contains("connect_timeout_secs"), "{query}: {error}");
        assert!(!error.contains("pw@"), "{query}: the password is in the error: {error}");
    }
}
