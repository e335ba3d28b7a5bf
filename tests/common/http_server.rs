//! One scriptable HTTP server for every test that needs a service to talk
//! to, built on `tiny_http` (see docs/decisions.md).
//!
//! ```ignore
//! let srv = HttpServer::builder()
//!     .reply("GET /health", Reply::status(200).json(r#"{"status":"ok"}"#))
//!     // In order; the last one repeats.
//!     .replies("/flaky", vec![Reply::status(503).text("warming up"), Reply::status(200)])
//!     .handle("POST /echo", |req| Reply::status(200).body(req.body.clone()))
//!     .reply("/slow/*", Reply::status(200).delay(Duration::from_secs(2)))
//!     .start();
//! let url = srv.url("/health");
//! // ... run the binary ...
//! assert_eq!(srv.requests_to("/echo")[0].method, "POST");
//! ```
//!
//! A route is `"METHOD /path"` or `"/path"` (any method); a path ending in
//! `*` matches every path with that prefix. Routes are tried in the order
//! they were added, against the path without its query string; a request no
//! route matches gets the fallback (404 `no such route` unless set).
//!
//! It binds 127.0.0.1:0 only. Every request is recorded before it is
//! answered, and answered on a thread of its own, so a delayed reply holds up
//! nothing else. The accept loop and every delay are bounded in time and end
//! when the server is dropped.

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest a server lives, whatever the test does.
const SERVER_LIFETIME: Duration = Duration::from_secs(180);
/// The longest a reply may be delayed.
const MAX_DELAY: Duration = Duration::from_secs(20);
/// The most of a request body that is recorded.
const MAX_BODY: u64 = 1 << 20;

/// A request the server received.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub method: String,
    /// The request target as sent, query string included.
    pub path: String,
    /// Names lowercased, in the order they came.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    /// The first value of header `name` (lowercase).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (fails the test if it is not).
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: the body is not JSON ({e}): {:?}",
                self.method, self.path, self.body
            )
        })
    }

    /// The path without its query string.
    fn route_path(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }
}

/// An answer: status, headers, body, and how long to wait before sending it.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    delay: Duration,
}

impl Reply {
    /// An empty reply with this status code.
    pub(crate) fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    /// Adds a header (a later `Content-Type` replaces an earlier one).
    pub(crate) fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The body, as given (no `Content-Type` is added).
    pub(crate) fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }

    /// A `text/plain` body.
    pub(crate) fn text(self, body: impl Into<Vec<u8>>) -> Reply {
        self.header("Content-Type", "text/plain").body(body)
    }

    /// An `application/json` body.
    pub(crate) fn json(self, body: impl Into<Vec<u8>>) -> Reply {
        self.header("Content-Type", "application/json").body(body)
    }

    /// Waits `delay` (at most 20 s, less if the server stops) before answering.
    pub(crate) fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay.min(MAX_DELAY);
        self
    }
}

type HandlerFn = dyn Fn(&Request) -> Reply + Send + Sync;

struct Route {
    method: Option<String>,
    path: String,
    prefix: bool,
    handler: Arc<HandlerFn>,
}

impl Route {
    fn matches(&self, req: &Request) -> bool {
        let path = req.route_path();
        let path_ok = if self.prefix {
            path.starts_with(&self.path)
        } else {
            path == self.path
        };
        path_ok
            && self
                .method
                .as_ref()
                .is_none_or(|m| m.eq_ignore_ascii_case(&req.method))
    }
}

/// Routes to serve; [`HttpServer::builder`] makes one.
pub(crate) struct Builder {
    routes: Vec<Route>,
    fallback: Reply,
}

impl Builder {
    /// Answers `route` with `handler`'s reply to each request.
    pub(crate) fn handle(
        mut self,
        route: &str,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Builder {
        let (method, path) = match route.split_once(' ') {
            Some((m, p)) => (Some(m.to_string()), p),
            None => (None, route),
        };
        assert!(
            path.starts_with('/'),
            "a route's path starts with /: {route:?}"
        );
        let (path, prefix) = match path.strip_suffix('*') {
            Some(p) => (p.to_string(), true),
            None => (path.to_string(), false),
        };
        self.routes.push(Route {
            method,
            path,
            prefix,
            handler: Arc::new(handler),
        });
        self
    }

    /// Answers `route` with `reply`, every time.
    pub(crate) fn reply(self, route: &str, reply: Reply) -> Builder {
        self.handle(route, move |_| reply.clone())
    }

    /// Answers the requests to `route` with `replies` in order; the last one
    /// answers every request after that.
    pub(crate) fn replies(self, route: &str, replies: Vec<Reply>) -> Builder {
        assert!(!replies.is_empty(), "replies for {route:?}: none given");
        let seen = AtomicUsize::new(0);
        self.handle(route, move |_| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            replies[n.min(replies.len() - 1)].clone()
        })
    }

    /// The answer to a request no route matches (404 `no such route` if unset).
    pub(crate) fn fallback(mut self, reply: Reply) -> Builder {
        self.fallback = reply;
        self
    }

    /// Binds 127.0.0.1 on a free port and starts serving.
    pub(crate) fn start(self) -> HttpServer {
        let server = tiny_http::Server::http("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("start an HTTP server on 127.0.0.1:0: {e}"));
        let addr = server
            .server_addr()
            .to_ip()
            .expect("the HTTP server listens on an IP address");
        let shared = Arc::new(Shared {
            routes: self.routes,
            fallback: self.fallback,
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let state = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("http-server-{}", addr.port()))
            .spawn(move || serve(&server, &state))
            .expect("start the HTTP server's thread");
        HttpServer {
            addr,
            shared,
            accept: Some(accept),
        }
    }
}

struct Shared {
    routes: Vec<Route>,
    fallback: Reply,
    requests: Mutex<Vec<Request>>,
    stop: AtomicBool,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// A running server; stops when dropped.
pub(crate) struct HttpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub(crate) fn builder() -> Builder {
        Builder {
            routes: Vec::new(),
            fallback: Reply::status(404).text("no such route"),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Every request received so far, in the order they came.
    pub(crate) fn requests(&self) -> Vec<Request> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The requests whose target was exactly `path`.
    pub(crate) fn requests_to(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            // Ends within one `recv_timeout`; the listener closes with it.
            let _ = accept.join();
        }
    }
}

/// The accept loop: bounded by `SERVER_LIFETIME` and the stop flag.
fn serve(server: &tiny_http::Server, shared: &Arc<Shared>) {
    let deadline = Instant::now() + SERVER_LIFETIME;
    while !shared.stopped() && Instant::now() < deadline {
        match server.recv_timeout(Duration::from_millis(20)) {
            Ok(Some(request)) => {
                let shared = shared.clone();
                std::thread::spawn(move || answer(request, &shared));
            }
            Ok(None) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn answer(mut raw: tiny_http::Request, shared: &Shared) {
    let mut body = Vec::new();
    let _ = raw.as_reader().take(MAX_BODY).read_to_end(&mut body);
    let req = Request {
        method: raw.method().as_str().to_string(),
        path: raw.url().to_string(),
        headers: raw
            .headers()
            .iter()
            .map(|h| {
                (
                    h.field.as_str().as_str().to_ascii_lowercase(),
                    h.value.as_str().to_string(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    shared
        .requests
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(req.clone());
    let reply = match shared.routes.iter().find(|r| r.matches(&req)) {
        Some(route) => (route.handler)(&req),
        None => shared.fallback.clone(),
    };
    let until = Instant::now() + reply.delay;
    while Instant::now() < until && !shared.stopped() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut response = tiny_http::Response::from_data(reply.body)
        .with_status_code(reply.status)
        // Always a Content-Length, never chunked: what the tests' old
        // servers sent, and what a body-size limit is tested against.
        .with_chunked_threshold(usize::MAX);
    for (name, value) in &reply.headers {
        let header = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
            .unwrap_or_else(|()| panic!("not a valid header: {name}: {value}"));
        response.add_header(header);
    }
    // The client may have given up (a timeout test): nothing to do then.
    let _ = raw.respond(response);
}
