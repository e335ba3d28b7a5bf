//! Plain TCP for the few tests that are about what happens below HTTP or
//! RESP: a port nothing listens on, a server that accepts and never answers,
//! one that answers whatever comes with the same bytes at once, a listener
//! that must see no connection at all. A real HTTP server (`http_server`)
//! cannot play these parts: it answers only what parses as HTTP, after the
//! request has come whole, and it speaks one protocol. Everything binds
//! 127.0.0.1 only, and every loop is bounded in time.

use std::io::Write as _;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago: bound, read, released. For a
/// service started on it next (retry if the service finds it taken), or as
/// a port whose connections are refused.
pub(crate) fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    l.local_addr().expect("local address").port()
}

/// A listener on 127.0.0.1 that hands each connection it accepts to a
/// callback, until dropped (at most two minutes).
pub(crate) struct RawServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RawServer {
    /// Accepts connections (up to 16) and holds them open without ever
    /// sending a byte: a server that hangs. Any protocol's client must time
    /// out on it.
    pub(crate) fn silent() -> RawServer {
        let mut held = Vec::new();
        RawServer::start(move |conn| {
            if held.len() < 16 {
                held.push(conn);
            }
        })
    }

    /// Answers every connection with `reply` as soon as it is accepted,
    /// without reading what the client sent, then closes it. E.g. a
    /// plain-HTTP `400 Bad Request` to an `https://` client: `tiny_http`
    /// would wait for a request line that a TLS handshake never sends, and
    /// the client would time out instead of failing its handshake.
    pub(crate) fn canned(reply: &'static [u8]) -> RawServer {
        RawServer::start(move |mut conn| {
            let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
            let _ = conn.write_all(reply);
            let _ = conn.shutdown(Shutdown::Write);
        })
    }

    /// A proxy to the Redis on `upstream` that passes everything through but
    /// the reply to the first `SET … GET` (a flag write): Redis applies the
    /// write, and its answer is lost, as on a connection that drops.
    pub(crate) fn losing_first_flag_write_reply(upstream: u16) -> RawServer {
        let lost = Arc::new(AtomicBool::new(false));
        RawServer::start(move |client| {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            let drop_next = Arc::new(AtomicBool::new(false));
            let pipe = |mut from: TcpStream, mut to: TcpStream, sees_commands: bool| {
                let (lost, drop_next) = (lost.clone(), drop_next.clone());
                std::thread::spawn(move || {
                    use std::io::Read as _;
                    let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
                    let deadline = Instant::now() + Duration::from_secs(120);
                    let mut buf = [0u8; 64 * 1024];
                    while Instant::now() < deadline {
                        let n = match from.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => n,
                            Err(e)
                                if e.kind() == std::io::ErrorKind::WouldBlock
                                    || e.kind() == std::io::ErrorKind::TimedOut =>
                            {
                                continue
                            }
                            Err(_) => break,
                        };
                        let chunk = &buf[..n];
                        if sees_commands {
                            let set_get = contains(chunk, b"$3\r\nSET\r\n")
                                && chunk.ends_with(b"$3\r\nGET\r\n");
                            if set_get && !lost.swap(true, Ordering::SeqCst) {
                                drop_next.store(true, Ordering::SeqCst);
                            }
                        } else if drop_next.swap(false, Ordering::SeqCst) {
                            continue;
                        }
                        if to.write_all(chunk).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Both);
                });
            };
            let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                return;
            };
            pipe(client, server, true);
            pipe(s2, c2, false);
        })
    }

    fn start(mut on_connection: impl FnMut(TcpStream) + Send + 'static) -> RawServer {
        const LIFETIME: Duration = Duration::from_secs(120);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + LIFETIME;
            while !stopping.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((conn, _)) => on_connection(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        RawServer {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A listening port that fails the test if anything connected to it: for
/// proving that a command contacted nothing.
pub(crate) struct Untouched {
    listener: TcpListener,
    pub port: u16,
}

impl Untouched {
    pub(crate) fn bind() -> Untouched {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("local address").port();
        Untouched { listener, port }
    }

    /// Panics if a connection is waiting to be accepted.
    pub(crate) fn assert_no_connection(&self) {
        match self.listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("something connected to port {} from {peer}", self.port),
            Err(e) => panic!("accept on port {} failed: {e}", self.port),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
