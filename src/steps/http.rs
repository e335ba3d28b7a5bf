//! `http:` steps: one request, checked against `expect`.
//!
//! Why it is shaped so:
//!
//! - **One attempt, no retries here.** Waiting for a service to become
//!   healthy is the engine's `retry` (attempts, delay, backoff); this executor
//!   sends exactly one request per attempt, so retries, their events and the
//!   journal stay in one place.
//! - **Stops at once.** The request races [`Attempt::stopped`]: a step timeout or a
//!   cancellation drops the in-flight request (closing its connection) and
//!   returns immediately, instead of waiting for a slow server.
//! - **One shared client.** A single `reqwest::Client` (rustls, a connect
//!   timeout, at most 5 redirects) is built on first use and shared, so
//!   retries reuse its connection pool and TLS configuration. A request has no
//!   deadline of its own when the step has a `timeout` (the step's timeout is
//!   the deadline); a step without one gets a generous fallback so a hung
//!   server cannot hold a run forever.
//! - **Bounded.** The body is read up to 1 MiB; the rest is not downloaded.
//!   `outputs.body` is that prefix and `outputs.json` its parse (null when the
//!   body is not JSON or was cut).
//! - **Errors a person can act on.** Connection refused, DNS, TLS, timeouts,
//!   an unexpected status (with the start of the body), a body or JSON
//!   mismatch (which pointer, what it found) and a slow response each have
//!   their own message. Header values never appear in messages (they often
//!   carry tokens); the event bus masks secrets in everything else.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Method, Url};
use serde_json::Value as Json;

use super::{render, template_error, Attempt, Executor, Outputs, StepError, Stop};
use crate::engine::resolve_dur;
use crate::events::{Event, Stream};
use crate::providers::BoxFuture;
use crate::runbook::{json_eq, Action, Http, StatusMatch};

pub(super) struct HttpExec;

/// The most of a response body that is read and kept.
const MAX_BODY: usize = 1 << 20;
/// How long establishing a connection (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The deadline of a request whose step has no `timeout` at all.
const FALLBACK_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_REDIRECTS: usize = 5;
/// How much of a body an error message quotes.
const SNIPPET: usize = 200;

impl Executor for HttpExec {
    type Body = Http;

    fn run<'a>(
        &'a self,
        h: &'a Http,
        action: &'a Action,
        cx: &'a Attempt<'a>,
    ) -> BoxFuture<'a, Result<Outputs, StepError>> {
        Box::pin(run(h, action, cx))
    }
}

/// The shared client; one that cannot be built is a permanent error (the
/// process's TLS setup will not change between attempts).
fn client() -> Result<&'static reqwest::Client, StepError> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .use_rustls_tls()
                .connect_timeout(CONNECT_TIMEOUT)
                .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
                .user_agent(concat!("runbook/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("cannot set up the HTTP client: {}", chain(&e)))
        })
        .as_ref()
        .map_err(StepError::permanent)
}

/// What to send as the body.
enum Body {
    None,
    Text(String),
    Json(Vec<u8>),
}

/// Everything rendered before the request goes out, so a template error
/// never half-sends anything. Whatever fails here fails every attempt alike:
/// all of it is a permanent error.
struct Prepared {
    method: Method,
    url: Url,
    /// The URL as messages show it (no password).
    shown: String,
    headers: HeaderMap,
    body: Body,
    body_contains: Option<String>,
    json: Vec<(String, Json)>,
    max_latency: Option<Duration>,
}

fn prepare(h: &Http, cx: &Attempt<'_>) -> Result<Prepared, StepError> {
    let bad = StepError::permanent;
    let url_text = render(cx, &h.url)?;
    let url = Url::parse(url_text.trim())
        .map_err(|e| bad(format!("`{url_text}` is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "`{url_text}` is not an http:// or https:// URL"
        )));
    }
    let shown = shown_url(&url);

    let method_text = render(cx, &h.method)?.trim().to_ascii_uppercase();
    let method = Method::from_bytes(method_text.as_bytes())
        .map_err(|_| bad(format!("`{method_text}` is not an HTTP method")))?;

    let mut headers = HeaderMap::new();
    for (name, value) in &h.headers {
        let header = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| bad(format!("`{name}` is not a valid HTTP header name")))?;
        let value = render(cx, value)?;
        // The value is deliberately not quoted: headers carry tokens.
        let mut value = HeaderValue::from_str(value.trim()).map_err(|_| {
            bad(format!("header `{name}` renders to a value that is not a valid HTTP header value (control characters or newlines?)"))
        })?;
        value.set_sensitive(true);
        headers.append(header, value);
    }

    let body = match &h.body {
        None => Body::None,
        Some(source) => {
            let rendered = crate::template::render_json(source, cx.template)
                .map_err(|e| template_error(&e))?;
            match (source, rendered) {
                // A string is sent as is; a string that is one `{{ ... }}`
                // rendering to a map or list is sent as JSON (it has the
                // expression's type, like every sole expression).
                (Json::String(_), Json::String(s)) => Body::Text(s),
                (Json::String(_), v @ (Json::Object(_) | Json::Array(_))) => Body::Json(
                    serde_json::to_vec(&v)
                        .map_err(|e| bad(format!("cannot encode the body: {e}")))?,
                ),
                (Json::String(_), Json::Null) => Body::Text(String::new()),
                (Json::String(_), v) => Body::Text(v.to_string()),
                (_, v) => Body::Json(
                    serde_json::to_vec(&v)
                        .map_err(|e| bad(format!("cannot encode the body: {e}")))?,
                ),
            }
        }
    };
    if matches!(body, Body::Json(_)) && !headers.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }

    let body_contains = h
        .expect
        .body_contains
        .as_deref()
        .map(|b| render(cx, b))
        .transpose()?;
    let json = h
        .expect
        .json
        .iter()
        .map(|(ptr, v)| {
            crate::template::render_json(v, cx.template)
                .map(|v| (ptr.clone(), v))
                .map_err(|e| template_error(&e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let max_latency = h
        .expect
        .max_latency
        .as_ref()
        .map(|d| resolve_dur(d, cx.template))
        .transpose()?;

    Ok(Prepared {
        method,
        url,
        shown,
        headers,
        body,
        body_contains,
        json,
        max_latency,
    })
}

/// A response as far as it was read.
struct Response {
    status: reqwest::StatusCode,
    body: Vec<u8>,
    truncated: bool,
}

async fn exchange(req: reqwest::RequestBuilder) -> Result<Response, reqwest::Error> {
    let mut resp = req.send().await?;
    let status = resp.status();
    let mut body = Vec::new();
    let mut truncated = false;
    while let Some(chunk) = resp.chunk().await? {
        let room = MAX_BODY - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response {
        status,
        body,
        truncated,
    })
}

async fn run(h: &Http, action: &Action, cx: &Attempt<'_>) -> Result<Outputs, StepError> {
    let p = prepare(h, cx)?;
    let client = client()?;

    let mut req = client
        .request(p.method.clone(), p.url.clone())
        .headers(p.headers);
    if action.timeout.is_none() {
        req = req.timeout(FALLBACK_TIMEOUT);
    }
    req = match p.body {
        Body::None => req,
        Body::Text(s) => req.body(s),
        Body::Json(bytes) => req.body(bytes),
    };

    let started = Instant::now();
    let resp = tokio::select! {
        r = exchange(req) => r.map_err(|e| StepError::transient(describe(&e, &p.method, &p.url, &p.shown)))?,
        stop = cx.stopped() => {
            return Err(StepError::stopped(stop, match stop {
                Stop::Timeout => format!(
                    "timed out after {} ms waiting for {} {}",
                    started.elapsed().as_millis(),
                    p.method,
                    p.shown
                ),
                Stop::Cancel => format!("cancelled while waiting for {} {}", p.method, p.shown),
            }));
        }
    };
    let latency = started.elapsed();
    let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    let status = resp.status.as_u16();
    let text = String::from_utf8_lossy(&resp.body).into_owned();
    let parsed = if resp.truncated || text.trim().is_empty() {
        None
    } else {
        serde_json::from_str::<Json>(&text).ok()
    };

    cx.bus.note(Event::Output {
        step: cx.label.to_string(),
        stream: Stream::Stdout,
        line: format!(
            "{} {} -> {} in {latency_ms} ms{}",
            p.method,
            p.shown,
            status_text(resp.status),
            if resp.truncated {
                " (body cut at 1 MiB)"
            } else {
                ""
            }
        ),
    });

    // The response is the step's outputs whether or not it meets the
    // expectations: a later step, or this step's rollback, may need it.
    // Missed expectations are transient: waiting for a service to become
    // healthy is what `retry` is for.
    let mut values = Outputs::new();
    values.insert("status".into(), Json::from(status));
    values.insert("body".into(), Json::String(text.clone()));
    values.insert("json".into(), parsed.clone().unwrap_or(Json::Null));
    values.insert("latency_ms".into(), Json::from(latency_ms));
    let mut out = Outputs::new();
    out.insert("outputs".into(), Json::Object(values));

    if !h.expect.status.iter().any(|m| m.matches(status)) {
        cx.keep(out);
        return Err(StepError::transient(format!(
            "unexpected status {} from {} {} (expected {}); body: {}",
            status_text(resp.status),
            p.method,
            p.shown,
            expected_status(&h.expect.status),
            snippet(&text)
        )));
    }

    let mut problems = Vec::new();
    // Whether the message should quote the body (once, at the end).
    let mut quote_body = false;
    if let Some(needle) = &p.body_contains {
        if !text.contains(needle.as_str()) {
            quote_body = true;
            problems.push(format!(
                "body mismatch: the response body does not contain {needle:?}{}",
                if resp.truncated {
                    " (only its first 1 MiB was read)"
                } else {
                    ""
                }
            ));
        }
    }
    if !p.json.is_empty() {
        match &parsed {
            None => {
                quote_body = true;
                problems.push(format!(
                    "JSON mismatch: expected a JSON body to check {}, but the response {}",
                    p.json
                        .iter()
                        .map(|(ptr, _)| format!("`{ptr}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if resp.truncated {
                        "is larger than 1 MiB"
                    } else {
                        "is not JSON"
                    }
                ));
            }
            Some(doc) => {
                for (ptr, want) in &p.json {
                    match doc.pointer(ptr) {
                        None => problems.push(format!(
                            "JSON mismatch at `{ptr}`: expected {}, found nothing there",
                            clip(&want.to_string())
                        )),
                        Some(found) if !deep_eq(found, want) => problems.push(format!(
                            "JSON mismatch at `{ptr}`: expected {}, found {}",
                            clip(&want.to_string()),
                            clip(&found.to_string())
                        )),
                        Some(_) => {}
                    }
                }
            }
        }
    }
    if let Some(max) = p.max_latency {
        if latency > max {
            problems.push(format!(
                "too slow: the response took {latency_ms} ms, more than max_latency {}",
                crate::duration::format(max)
            ));
        }
    }
    if !problems.is_empty() {
        let mut msg = format!(
            "{} {} -> {}: {}",
            p.method,
            p.shown,
            status_text(resp.status),
            problems.join("; ")
        );
        if quote_body {
            let _ = write!(msg, "; body: {}", snippet(&text));
        }
        cx.keep(out);
        return Err(StepError::transient(msg));
    }

    Ok(out)
}

/// `503 Service Unavailable`.
fn status_text(s: reqwest::StatusCode) -> String {
    match s.canonical_reason() {
        Some(r) => format!("{} {r}", s.as_u16()),
        None => s.as_u16().to_string(),
    }
}

fn expected_status(list: &[StatusMatch]) -> String {
    let items: Vec<String> = list.iter().map(ToString::to_string).collect();
    match items.len() {
        0 => "nothing".into(),
        _ => items.join(" or "),
    }
}

/// [`json_eq`] all the way down: `1` equals `1.0` inside lists and maps too.
fn deep_eq(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| deep_eq(a, b))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| deep_eq(v, w)))
        }
        _ => json_eq(a, b),
    }
}

/// The first [`SNIPPET`] characters, on one line.
fn snippet(text: &str) -> String {
    if text.trim().is_empty() {
        return "(empty)".into();
    }
    clip(text)
}

fn clip(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(SNIPPET) {
        Some((i, _)) => format!("{}...", &one_line[..i]),
        None => one_line,
    }
}

/// The URL as messages show it: without a password.
fn shown_url(url: &Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    u.to_string()
}

/// `host:port` of a URL, for connection errors.
fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// The causes of an error, outermost first, without reqwest's own wrapper
/// (which repeats the URL).
fn causes(e: &reqwest::Error) -> Vec<&(dyn StdError + 'static)> {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push(c);
        cur = c.source();
    }
    out
}

fn chain(e: &reqwest::Error) -> String {
    let mut msg = String::new();
    let mut last = String::new();
    for c in causes(e) {
        let text = c.to_string();
        // hyper-util's wrapper ("client error (Connect)") says nothing the
        // classification does not; some causes repeat theirs: skip both.
        if text.is_empty() || text.starts_with("client error (") || last.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        let _ = write!(msg, "{text}");
        last = text;
    }
    if msg.is_empty() {
        e.to_string()
    } else {
        msg
    }
}

fn io_kind(e: &reqwest::Error) -> Option<std::io::ErrorKind> {
    causes(e)
        .into_iter()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind)
        .find(|k| *k != std::io::ErrorKind::Other)
}

fn looks_like_tls(e: &reqwest::Error) -> bool {
    let text = chain(e).to_ascii_lowercase();
    [
        "certificate",
        "tls",
        "handshake",
        "corrupt message",
        "invalidcontenttype",
        "peer is incompatible",
        "alert",
        "unknownissuer",
        "notvalidforname",
    ]
    .iter()
    .any(|w| text.contains(w))
}

/// A message for a request that got no (complete) response.
fn describe(e: &reqwest::Error, method: &Method, url: &Url, shown: &str) -> String {
    use std::io::ErrorKind as K;
    let target = authority(url);
    let text = chain(e);
    if e.is_timeout() {
        return if e.is_connect() {
            format!(
                "timed out connecting to {target} (no answer within {} s) for {method} {shown}",
                CONNECT_TIMEOUT.as_secs()
            )
        } else {
            format!(
                "timed out waiting for {method} {shown} (the step has no `timeout`; requests then give up after {} s)",
                FALLBACK_TIMEOUT.as_secs()
            )
        };
    }
    if e.is_redirect() {
        return format!(
            "too many redirects (more than {MAX_REDIRECTS}) following {method} {shown}"
        );
    }
    if e.is_connect() {
        let lower = text.to_ascii_lowercase();
        if lower.contains("dns error") || lower.contains("failed to lookup address") {
            return format!(
                "DNS failure: cannot resolve host `{}` for {method} {shown} ({text})",
                url.host_str().unwrap_or("?")
            );
        }
        match io_kind(e) {
            Some(K::ConnectionRefused) => {
                return format!(
                    "connection refused by {target}: nothing is listening there (is the service up?) for {method} {shown}"
                )
            }
            Some(K::TimedOut) => {
                return format!("timed out connecting to {target} for {method} {shown}")
            }
            _ => {}
        }
        if url.scheme() == "https" && looks_like_tls(e) {
            return format!("TLS failure talking to {target} for {method} {shown}: {text}");
        }
        return match io_kind(e) {
            Some(K::ConnectionReset | K::ConnectionAborted) => {
                format!("connection to {target} was reset for {method} {shown}: {text}")
            }
            Some(K::NetworkUnreachable | K::HostUnreachable) => {
                format!("{target} is unreachable for {method} {shown}: {text}")
            }
            _ => format!("cannot connect to {target} for {method} {shown}: {text}"),
        };
    }
    if url.scheme() == "https" && looks_like_tls(e) {
        return format!("TLS failure talking to {target} for {method} {shown}: {text}");
    }
    if e.is_body() || e.is_decode() {
        return format!("the response body of {method} {shown} could not be read: {text}");
    }
    format!("{method} {shown} failed: {text}")
}
