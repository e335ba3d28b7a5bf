//! Real services on loopback for integration tests. For now: Prometheus over
//! deterministic data.
//!
//! ```ignore
//! // One server per test, killed when the handle drops:
//! let prom = Prometheus::start(&repo_root().join("tests/fixtures/metrics/rollout.om"));
//! // Or one per fixture for the whole test binary (read-only tests):
//! let prom = Prometheus::shared(&repo_root().join("tests/fixtures/metrics/rollout.om"));
//! let yaml = format!("providers:\n  prom: {{ kind: prometheus, url: \"{}\" }}", prom.url);
//! ```
//!
//! The data comes from an OpenMetrics file, backfilled into a fresh TSDB
//! with `promtool tsdb create-blocks-from openmetrics` before the server
//! starts. Such a file must end with `# EOF`, takes timestamps in SECONDS,
//! and allows no free comments (only `# TYPE`/`# HELP`/`# UNIT`). The data
//! lies in the past, so queries must pass an explicit evaluation time inside
//! its range (a `metric:` step's `at`), preferably off the sample grid, and
//! compare rates with a tolerance (they come out as 0.0999999).
//!
//! A missing `prometheus` or `promtool` FAILS the test with the command that
//! installs them; it never skips.
//!
//! Servers are started from one long-lived thread with `PR_SET_PDEATHSIG`,
//! so the kernel kills them when the test process dies (even by SIGKILL) but
//! not when the test thread that asked for one ends; a dropped handle kills
//! its server at once, and shared servers are stopped at process exit.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::raw_tcp::free_port;

/// How long a server may take to become ready before the test fails.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP basic authentication for a server (`--web.config.file`).
#[derive(Clone, Debug)]
pub(crate) struct BasicAuth {
    pub user: String,
    pub password: String,
    /// bcrypt of `password` (Prometheus stores only the hash), e.g. from
    /// `python3 -c "import crypt; print(crypt.crypt('pw', crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))"`.
    /// Use a low cost (`$2b$04$`): the server checks it on every request.
    pub bcrypt: String,
}

impl BasicAuth {
    /// The `Authorization` header value: `Basic base64(user:password)`.
    pub(crate) fn header(&self) -> String {
        format!(
            "Basic {}",
            base64(format!("{}:{}", self.user, self.password).as_bytes())
        )
    }
}

/// Options of [`Prometheus::start_with`].
#[derive(Clone, Debug, Default)]
pub(crate) struct PromOptions {
    pub basic_auth: Option<BasicAuth>,
}

/// A running Prometheus on `127.0.0.1:port`, with the data of one
/// OpenMetrics file. Killed when dropped.
pub(crate) struct Prometheus {
    /// `http://127.0.0.1:PORT`, for a provider's `url`.
    pub url: String,
    pub port: u16,
    /// promtool's backfill plus the server's start until `/-/ready`.
    pub started_in: Duration,
    /// The part of `started_in` spent in promtool.
    pub backfill_took: Duration,
    auth: Option<BasicAuth>,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
}

impl Prometheus {
    /// Backfills `openmetrics` into a new TSDB and starts a server over it.
    pub(crate) fn start(openmetrics: &Path) -> Prometheus {
        Prometheus::start_with(openmetrics, &PromOptions::default())
    }

    pub(crate) fn start_with(openmetrics: &Path, options: &PromOptions) -> Prometheus {
        let began = Instant::now();
        let (prometheus, promtool) = binaries();
        let dir = tempfile::Builder::new()
            .prefix("runbook-prometheus-")
            .tempdir()
            .expect("a directory for prometheus");
        let data = dir.path().join("data");
        let out = Command::new(&promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(openmetrics)
            .arg(&data)
            .stdin(Stdio::null())
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool could not backfill {} ({}):\n{}{}",
            openmetrics.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let backfill_took = began.elapsed();

        let config = dir.path().join("prometheus.yml");
        // No scrape jobs: the backfilled blocks are all the data there is.
        std::fs::write(&config, "global: {}\n").expect("write prometheus.yml");
        let web_config = options.basic_auth.as_ref().map(|auth| {
            let path = dir.path().join("web.yml");
            let yaml = format!("basic_auth_users:\n  {}: {:?}\n", auth.user, auth.bcrypt);
            std::fs::write(&path, yaml).expect("write web.yml");
            path
        });

        let mut last_log = String::new();
        // A port found free can be taken before the server binds it: retry.
        for _ in 0..5 {
            let port = free_port();
            let log_path = dir.path().join(format!("prometheus-{port}.log"));
            let log = std::fs::File::create(&log_path).expect("create the log file");
            let mut cmd = Command::new(&prometheus);
            cmd.arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                // Backfilled blocks are old: the default 15 d retention
                // would delete them.
                .arg("--storage.tsdb.retention.time=100y")
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log file"))
                .stderr(log);
            if let Some(w) = &web_config {
                cmd.arg(format!("--web.config.file={}", w.display()));
            }
            let mut server = Prometheus {
                url: format!("http://127.0.0.1:{port}"),
                port,
                started_in: Duration::ZERO,
                backfill_took,
                auth: options.basic_auth.clone(),
                child: Some(spawn_service(cmd)),
                dir: None,
            };
            match server.wait_ready(&log_path) {
                Ok(()) => {
                    server.started_in = began.elapsed();
                    server.dir = Some(dir);
                    eprintln!(
                        "prometheus ready at {} in {} ms (promtool {} ms)",
                        server.url,
                        server.started_in.as_millis(),
                        backfill_took.as_millis()
                    );
                    return server;
                }
                Err(log) if log.contains("address already in use") => last_log = log,
                Err(log) => panic!(
                    "prometheus did not become ready at 127.0.0.1:{port}; its log:\n{}",
                    tail(&log, 40)
                ),
            }
        }
        panic!(
            "prometheus found no free port after 5 tries; last log:\n{}",
            tail(&last_log, 40)
        )
    }

    /// One server per fixture file for the whole test binary, for tests that
    /// only read. Started on first use; stopped when the process exits.
    pub(crate) fn shared(openmetrics: &Path) -> Arc<Prometheus> {
        static SHARED: OnceLock<Mutex<HashMap<PathBuf, Arc<Prometheus>>>> = OnceLock::new();
        extern "C" fn stop_shared() {
            if let Some(m) = SHARED.get() {
                let servers = std::mem::take(
                    &mut *m.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
                );
                drop(servers);
            }
        }
        let map = SHARED.get_or_init(|| {
            // SAFETY: registers a plain function to run at exit(3).
            unsafe {
                libc::atexit(stop_shared);
            }
            Mutex::new(HashMap::new())
        });
        // Held while starting: two tests asking at once get one server.
        let mut servers = map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        servers
            .entry(openmetrics.to_path_buf())
            .or_insert_with(|| Arc::new(Prometheus::start(openmetrics)))
            .clone()
    }

    /// `Authorization` header value the server wants, if it wants one.
    pub(crate) fn auth_header(&self) -> Option<String> {
        self.auth.as_ref().map(BasicAuth::header)
    }

    /// Polls `/-/ready` (bounded). On failure returns the server's log.
    fn wait_ready(&mut self, log: &Path) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let auth = self.auth_header();
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        loop {
            if let Ok((200, _)) = http_get(&format!("{}/-/ready", self.url), &headers) {
                return Ok(());
            }
            let child = self.child.as_mut().expect("the server process");
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() >= deadline {
                let mut text = std::fs::read_to_string(log).unwrap_or_default();
                if !exited {
                    text.push_str(&format!("\n[not ready after {READY_TIMEOUT:?}]"));
                }
                return Err(text);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs an instant query at unix time `time`; returns the API's `data`
    /// (fails the test on an error). For checking a fixture directly.
    pub(crate) fn query(&self, promql: &str, time: f64) -> serde_json::Value {
        let url = format!(
            "{}/api/v1/query?query={}&time={time}",
            self.url,
            url_encode(promql)
        );
        let auth = self.auth_header();
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let (status, body) = http_get(&url, &headers).unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let json: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {url}: HTTP {status}, not JSON ({e}): {body}"));
        assert_eq!(status, 200, "GET {url}: {body}");
        json["data"].clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // `dir` (the TSDB) is removed after the server is gone.
        self.dir.take();
    }
}

/// `prometheus` and `promtool` on PATH, or a test failure saying how to get them.
fn binaries() -> (PathBuf, PathBuf) {
    let find = |name: &str| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
    };
    match (find("prometheus"), find("promtool")) {
        (Some(a), Some(b)) => (a, b),
        (a, b) => {
            let missing: Vec<&str> = [("prometheus", a.is_none()), ("promtool", b.is_none())]
                .iter()
                .filter(|(_, m)| *m)
                .map(|(n, _)| *n)
                .collect();
            panic!(
                "{} not on PATH; these tests need a real Prometheus (2.x, with promtool).\n\
                 install it with: apt-get update && apt-get install -y --no-install-recommends prometheus\n\
                 (scripts/test.sh does this when it is missing)",
                missing.join(" and ")
            )
        }
    }
}

/// Spawns `cmd` from a thread that lives as long as the process, with
/// `PR_SET_PDEATHSIG`: the signal fires when the spawning *thread* exits, so
/// spawning from a test's own thread would kill a shared server as soon as
/// that test ended.
pub(crate) fn spawn_service(mut cmd: Command) -> Child {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("service-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the service spawner thread");
        Mutex::new(tx)
    });
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let program = cmd.get_program().to_string_lossy().into_owned();
    let (tx, rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((cmd, tx))
        .expect("the service spawner thread is alive");
    rx.recv()
        .expect("the service spawner thread answers")
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

/// A bare HTTP/1.0 GET (no chunked bodies to decode): `(status, body)`.
pub(crate) fn http_get(url: &str, headers: &[(&str, &str)]) -> Result<(u16, String), String> {
    http_request("GET", url, headers, None).map(|(status, _, body)| (status, body))
}

/// One HTTP/1.1 request with `Connection: close` (the server closes after
/// answering; chromedriver refuses HTTP/1.0): status, head and body, a
/// chunked body decoded. Bounded: a read stalls for at most 30 s.
pub(crate) fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<(u16, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http:// url: {url}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = TcpStream::connect(host).map_err(|e| format!("connect {host}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        request.push_str(&format!("Content-Length: {}\r\n\r\n{b}", b.len()));
    } else {
        request.push_str("\r\n");
    }
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    // Until the server closes, or (a server that keeps the connection
    // open despite `Connection: close`, as chromedriver does) until the
    // body its Content-Length announces, or the last chunk, has come.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if complete(&raw) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {}", tail(head, 3)))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, head.to_string(), body))
}

/// Whether `raw` holds a whole response by its own framing.
fn complete(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let head = head.to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with("0\r\n\r\n");
    }
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .is_some_and(|n| body.len() >= n)
}

/// A chunked body's data (a torn last chunk kept as far as it came).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if n == 0 {
            break;
        }
        let take = after.get(..n).unwrap_or(after);
        out.push_str(take);
        rest = after.get(n..).unwrap_or("").trim_start_matches("\r\n");
    }
    out
}

/// Percent-encodes a query-string value.
pub(crate) fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Standard base64 with padding.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
