//! A server that accepts the connection and then says nothing (a stuck
//! proxy, a server out of memory) does not hold ciosync for ever:
//! `connect_timeout_secs` bounds the whole attempt, socket, TLS and login,
//! as libpq's `connect_timeout` does, and the error says which bound ran out.
//! On the replication connection the login and IDENTIFY_SYSTEM, the first
//! command, are bounded the same way.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use ciosync::error::error_chain;
use ciosync::pg::connection::ConnectionSettings;
use ciosync::pg::gated::{Gated, Relayed};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_fails_the_replication_login_within_connect_timeout() {
    let port = silent_server();
    let url = format!("postgres://syncer:pw@127.0.0.1:{port}/app?sslmode=disable");
    let settings =
        ConnectionSettings::parse(&Secret::new(&url), Duration::from_secs(1)).expect("a valid URL");
    let relayed = settings.replication_config(0, "slot", "pub", Duration::from_secs(1)).await;
    let mut session = Gated::connect(relayed.expect("the socket opens")).await.expect("spawned");
    let identified = tokio::time::timeout(Duration::from_secs(30), session.identify_system()).await;
    let error = identified.expect("still logging in after 30 s").expect_err("nothing answered");
    assert!(error.to_string().contains("connect_timeout_secs"), "{error}");
    assert!(!session.is_running(), "the session was left running after the timeout");
}

/// Logs every client in (AuthenticationOk, ReadyForQuery), then holds the
/// connection open and answers nothing more.
fn mute_after_login() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in listener.incoming().flatten() {
            let mut len = [0u8; 4];
            if stream.read_exact(&mut len).is_err() {
                continue;
            }
            let mut startup = vec![0u8; u32::from_be_bytes(len) as usize - 4];
            if stream.read_exact(&mut startup).is_ok() {
                let _ = stream.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0, b'Z', 0, 0, 0, 5, b'I']);
                held.push(stream);
            }
        }
    });
    port
}

/// A replication session's relay to a server that logs in and then says
/// nothing ([`mute_after_login`]), the password in the URL `pw`.
async fn relayed_to_mute_server() -> Relayed {
    let port = mute_after_login();
    let url = format!("postgres://syncer:pw@127.0.0.1:{port}/app?sslmode=disable");
    let settings =
        ConnectionSettings::parse(&Secret::new(&url), Duration::from_secs(5)).expect("a valid URL");
    let relayed = settings.replication_config(0, "slot", "pub", Duration::from_secs(1)).await;
    relayed.expect("the socket opens")
}

/// Once the relay has ended (here: the test says so, as when the worker's
/// side closed), a command still unanswered fails and the session stops,
/// instead of waiting for an answer that may never come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_unanswered_after_the_relay_ended_fails_and_stops_the_session() {
    let relayed = relayed_to_mute_server().await;
    let ended = relayed.ended.clone();
    let mut session = Gated::connect(relayed).await.expect("spawned");
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        ended.cancel();
    });
    let query = session.simple_query("CREATE_REPLICATION_SLOT s LOGICAL pgoutput");
    let answer = tokio::time::timeout(Duration::from_secs(60), query).await;
    // The relay's own end (it closes 5 s after the client side did) or the
    // wait for an answer, whichever comes first, fails the command.
    let error = answer.expect("still waiting 60 s on").expect_err("nothing answered");
    assert!(!error.to_string().contains("pw"), "{error}");
    for _ in 0..100 {
        if !session.is_running() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the session runs on after its command failed ({error})");
}

/// When the session's side of the relay closes (dropped, its worker logs
/// in, finds no command coming and ends) while the server keeps its side
/// open, the relay signals its end at once: a command the worker lost
/// would otherwise wait for a server that never closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_signals_its_end_when_the_session_closes_though_the_server_does_not() {
    let relayed = relayed_to_mute_server().await;
    let ended = relayed.ended.clone();
    drop(Gated::connect(relayed).await.expect("spawned"));
    // Well under the 5 s the relay then gives the server to close its side.
    let signalled = tokio::time::timeout(Duration::from_secs(3), ended.cancelled()).await;
    assert!(signalled.is_ok(), "the session closed and the relay did not say it ended");
}
