//! A loopback TCP proxy in front of the test server, which a test can cut
//! off and bring back, and which counts round trips on the wire.
//!
//! Cutting drops every open connection and closes the listening port, so
//! new connections are refused, as when a database host goes away;
//! restoring listens on the same port again. The server itself is never
//! touched.
//!
//! A round trip is counted each time a client starts sending after the
//! server last sent (or first sends on a connection): one request and its
//! answer, whatever the driver does (statements, pings, transaction
//! commands, connection set-up).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// A running proxy.
pub struct Proxy {
    addr: SocketAddr,
    upstream: String,
    round_trips: Arc<AtomicU64>,
    accepting: Mutex<Option<JoinHandle<()>>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to the server of `url`.
    pub async fn start(url: &str) -> Proxy {
        let parsed = url::Url::parse(url).unwrap();
        let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
        let port = parsed.port().unwrap_or(5432);
        let listener = listen("127.0.0.1:0".parse().unwrap()).await;
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            upstream: format!("{host}:{port}"),
            round_trips: Arc::default(),
            accepting: Mutex::new(None),
            connections: Arc::default(),
        };
        proxy.accept(listener);
        proxy
    }

    /// `url` pointed at this proxy instead of the server.
    pub fn url(&self, url: &str) -> String {
        let mut parsed = url::Url::parse(url).unwrap();
        parsed.set_host(Some("127.0.0.1")).unwrap();
        parsed.set_port(Some(self.addr.port())).unwrap();
        parsed.to_string()
    }

    /// Round trips made through the proxy so far.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        if let Some(accepting) = self.accepting.lock().unwrap().take() {
            accepting.abort();
        }
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// Accepts connections again, on the same port.
    pub async fn restore(&self) {
        let listener = listen(self.addr).await;
        self.accept(listener);
    }

    fn accept(&self, listener: TcpListener) {
        let upstream = self.upstream.clone();
        let round_trips = Arc::clone(&self.round_trips);
        let connections = Arc::clone(&self.connections);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let pipe = tokio::spawn(pipe(client, server, Arc::clone(&round_trips)));
                let mut open = connections.lock().unwrap();
                open.retain(|task| !task.is_finished());
                open.push(pipe);
            }
        });
        *self.accepting.lock().unwrap() = Some(task);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

async fn listen(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    // The port of a cut proxy is taken again at once on restore.
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(64).unwrap()
}

/// Copies both ways until either side closes, counting the client's turns.
async fn pipe(client: TcpStream, server: TcpStream, round_trips: Arc<AtomicU64>) {
    let (mut client_in, mut client_out) = client.into_split();
    let (mut server_in, mut server_out) = server.into_split();
    // Whether the server spoke last: the client's next bytes start a round trip.
    let server_spoke = Arc::new(AtomicBool::new(true));
    let answered = Arc::clone(&server_spoke);
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = client_in.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            if server_spoke.swap(false, Ordering::AcqRel) {
                round_trips.fetch_add(1, Ordering::Relaxed);
            }
            if server_out.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_out.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = server_in.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answered.store(true, Ordering::Release);
            if client_out.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_out.shutdown().await;
    };
    tokio::join!(up, down);
}
