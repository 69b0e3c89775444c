//! `zonecert serve` against clients that hold connections: one client's idle sockets
//! under a low descriptor limit (`prlimit`), and SIGTERM while a request stalls. Every
//! client is on loopback; "clients" are told apart by their source address in
//! 127.0.0.0/8.

#![allow(clippy::unwrap_used)] // test harness: a failed setup should panic loudly

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use zonecert_testkit::{ServeCommand, ServeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_zonecert");

/// Starts `prefix.. zonecert serve` on 127.0.0.1:0 (killed when the test ends, however it
/// ends) and returns it with its address.
fn serve(prefix: &[&str], env: &[(&str, &str)]) -> (ServeProcess, SocketAddr) {
    let mut command = ServeCommand::new(BIN).prefix(prefix);
    for (k, v) in env {
        command = command.env(k, v);
    }
    let server = command.spawn();
    let addr = server.addr();
    (server, addr)
}

/// A connection to `server` from the loopback address `from`.
async fn connect_from(from: [u8; 4], server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(server).await
}

/// One request on a fresh connection from `from`; the answer's status line.
async fn status_line(from: [u8; 4], server: SocketAddr) -> String {
    let mut tcp = connect_from(from, server).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn one_clients_idle_sockets_do_not_starve_another_under_a_low_descriptor_limit() {
    let (_server, addr) = serve(&["prlimit", "--nofile=256:256", "--"], &[]);
    // Client A opens more idle sockets than the server has descriptors, and keeps them.
    let mut held = Vec::new();
    for _ in 0..300 {
        match connect_from([127, 0, 0, 2], addr).await {
            Ok(tcp) => held.push(tcp),
            Err(e) => panic!("connecting client A: {e}"),
        }
    }
    // Client B is served all the same (the bound only stops a test that would hang).
    let answer = tokio::time::timeout(Duration::from_secs(30), status_line([127, 0, 0, 3], addr))
        .await
        .expect("client B was starved by client A's idle sockets");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A's sockets over its share were answered in the envelope and closed.
    let last = held.last_mut().unwrap();
    let mut refused = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), last.read_to_end(&mut refused))
        .await
        .expect("a socket over the client's share stays open")
        .unwrap();
    let refused = String::from_utf8_lossy(&refused);
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(refused.contains("\"code\":1011"), "{refused}");
}

#[tokio::test]
async fn sigterm_ends_the_server_in_bounded_time_whatever_a_client_does() {
    // The body-read timeout far out: the grace period alone must end the stalled
    // request.
    let (mut server, addr) = serve(
        &[],
        &[
            ("ZONECERT_SHUTDOWN_TIMEOUT", "1"),
            ("ZONECERT_BODY_READ_TIMEOUT", "600"),
        ],
    );
    // A request whose body never arrives whole, and a connection that sends nothing.
    let mut stalled = connect_from([127, 0, 0, 1], addr).await.unwrap();
    stalled
        .write_all(b"POST /client/v4/zones HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"na")
        .await
        .unwrap();
    let _idle = connect_from([127, 0, 0, 1], addr).await.unwrap();
    // Let the server take the request in before the signal.
    let answer = status_line([127, 0, 0, 1], addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The bound only stops a test that would hang: the server's grace period is 1 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child().try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not end after SIGTERM while a request stalled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
}
