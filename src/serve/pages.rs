//! The HTML pages: rendered here from the same JSON the API serves, every
//! value escaped ([`esc`]); one small script (served from this server, as
//! the Content-Security-Policy demands) reloads a live run's page when its
//! journal grows.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;

use super::Shared;

const SCRIPT: &str = include_str!("run.js");
const STYLE: &str = include_str!("style.css");

/// Text as HTML: every character that could end an attribute or start a
/// tag or entity.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A run id or step as one URL path segment (ids are `[A-Za-z0-9._-]`; the
/// rest is percent-encoded so nothing else can reach the path).
pub(crate) fn path_segment(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(t) => t.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `run`: a live run's id and how many journal records the page shows
/// (the script reloads only for records after those).
fn page(title: &str, body: &str, run: Option<(&str, usize)>) -> Html<String> {
    let script = run.map_or(String::new(), |(id, records)| {
        format!(
            "<script src=\"/assets/run.js\" data-run=\"{}\" data-records=\"{records}\"></script>",
            esc(id)
        )
    });
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{}</title><link rel=\"stylesheet\" href=\"/assets/style.css\"></head><body>{body}{script}</body></html>",
        esc(title)
    ))
}

pub(super) fn error_page(code: StatusCode, why: &str) -> Html<String> {
    page(
        "runbook",
        &format!(
            "<h1>{}</h1><p class=\"error\">{}</p><p><a href=\"/\">runs</a></p>",
            code.as_u16(),
            esc(why)
        ),
        None,
    )
}

pub(super) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

pub(super) async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

pub(super) async fn runs(State(st): State<Arc<Shared>>) -> Response {
    let runs = match crate::status::runs_json(st.store.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                error_page(StatusCode::INTERNAL_SERVER_ERROR, &e),
            )
                .into_response()
        }
    };
    let mut body = String::from("<h1>Runs</h1><table><thead><tr><th>run</th><th>runbook</th><th>status</th><th>started</th><th>by</th><th>waiting on</th></tr></thead><tbody>");
    for r in &runs {
        let id = s(&r["run_id"]);
        let waiting: Vec<String> = r["waiting"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| format!("{}: {}", s(&w["label"]), s(&w["waiting_on"])))
            .collect();
        let _ = write!(
            body,
            "<tr><td><a href=\"/runs/{}\">{}</a></td><td>{}</td><td class=\"status {}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            path_segment(&id),
            esc(&id),
            esc(&s(&r["runbook"])),
            esc(&s(&r["status"])),
            esc(&s(&r["status"])),
            esc(&s(&r["started_at"])),
            esc(&s(&r["started_by"])),
            esc(&waiting.join("; "))
        );
    }
    body.push_str("</tbody></table>");
    page("runbook: runs", &body, None).into_response()
}

/// Most output lines shown per step (the last ones); `runbook logs` has all.
const SHOWN_LINES: usize = 200;

/// Each step's output as the journal holds it (secrets already masked), by
/// step id, rollback bodies' under their step's.
fn step_output(
    rec: &crate::journal::Recorded,
) -> std::collections::HashMap<String, std::collections::VecDeque<String>> {
    let mut out: std::collections::HashMap<String, std::collections::VecDeque<String>> =
        std::collections::HashMap::new();
    for (_, event) in &rec.events {
        let crate::events::Event::Output {
            step: label, line, ..
        } = event
        else {
            continue;
        };
        let id = label
            .split(".rollback.")
            .next()
            .unwrap_or(label)
            .to_string();
        let lines = out.entry(id).or_default();
        if lines.len() == SHOWN_LINES {
            lines.pop_front();
        }
        lines.push_back(format!("[{label}] {line}"));
    }
    out
}

pub(super) async fn run(State(st): State<Arc<Shared>>, Path(run_id): Path<String>) -> Response {
    // One read of the journal serves the whole page.
    let rec = crate::journal::valid_run_id(&run_id)
        .then(|| st.store.read(&run_id).ok())
        .flatten();
    let Some(rec) = rec else {
        return (
            StatusCode::NOT_FOUND,
            error_page(StatusCode::NOT_FOUND, &format!("no run `{run_id}`")),
        )
            .into_response();
    };
    let rb = crate::commands::journaled_runbook(&rec);
    let r = crate::status::summary(st.store.as_ref(), &rec, rb.as_deref(), true);
    let mut b = String::new();
    let _ = write!(
        b,
        "<p><a href=\"/\">runs</a></p><h1>{} <span class=\"status {}\">{}</span></h1><dl><dt>run</dt><dd>{}</dd><dt>started</dt><dd>{} by {}</dd><dt>plan</dt><dd><code>{}</code></dd>",
        esc(&s(&r["runbook"])),
        esc(&s(&r["status"])),
        esc(&s(&r["status"])),
        esc(&run_id),
        esc(&s(&r["started_at"])),
        esc(&s(&r["started_by"])),
        esc(&s(&r["fingerprint"]))
    );
    if let Some(params) = r["params"].as_object().filter(|p| !p.is_empty()) {
        let shown: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", s(v)))
            .collect();
        let _ = write!(b, "<dt>params</dt><dd>{}</dd>", esc(&shown.join(" ")));
    }
    b.push_str("</dl>");
    for w in r["waiting"].as_array().into_iter().flatten() {
        let label = s(&w["label"]);
        let _ = write!(
            b,
            "<section class=\"waiting\"><h2>Waiting: {}</h2><p>{}</p>",
            esc(&label),
            esc(&s(&w["waiting_on"]))
        );
        if let Some(m) = w["message"].as_str() {
            let _ = write!(b, "<p class=\"message\">{}</p>", esc(m));
        }
        for line in w["evaluations"].as_array().into_iter().flatten() {
            let _ = write!(b, "<p class=\"evaluation\">{}</p>", esc(&s(line)));
        }
        let _ = write!(
            b,
            "<p>You approve plan <code>{}</code>.</p>",
            esc(&s(&r["fingerprint"]))
        );
        if w["signed"] == true {
            let _ = write!(
                b,
                "<p>This approval counts only signed decisions: <code>{}</code></p>",
                esc(&s(&w["approve_command"]))
            );
        } else if st.auth_header.is_some() {
            for (decision, label_text) in [("approve", "Approve"), ("reject", "Reject")] {
                let _ = write!(
                    b,
                    "<form method=\"post\" action=\"/runs/{}/steps/{}/{decision}\"><input name=\"comment\" placeholder=\"comment\" aria-label=\"comment\"><button class=\"{decision}\" type=\"submit\">{label_text}</button></form>",
                    path_segment(&run_id),
                    path_segment(&label)
                );
            }
        } else {
            b.push_str("<p>This page is read-only (the server has no --auth-header).</p>");
        }
        b.push_str("</section>");
    }
    // The graph of the runbook the run journaled.
    if let Some(rb) = &rb {
        let _ = write!(b, "<h2>Graph</h2>{}", super::graph::svg(rb, &r));
    }
    let output = step_output(&rec);
    b.push_str("<h2>Steps</h2><table><thead><tr><th>step</th><th>status</th><th>attempts</th><th>detail</th></tr></thead><tbody>");
    for step in r["steps"].as_array().into_iter().flatten() {
        let id = s(&step["id"]);
        let detail = step["waiting_on"]
            .as_str()
            .or(step["error"].as_str())
            .unwrap_or_default();
        let title = step["name"]
            .as_str()
            .map_or(String::new(), |n| format!(" ({n})"));
        let _ = write!(
            b,
            "<tr data-step=\"{}\"><td>{}{}</td><td class=\"status {}\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&id),
            esc(&id),
            esc(&title),
            esc(&s(&step["status"])),
            esc(&s(&step["status"])),
            esc(&s(&step["attempts"])),
            esc(detail)
        );
        let mut more = Vec::new();
        if let Some(lines) = output.get(&id) {
            more.extend(lines.iter().cloned());
        }
        if let Some(out) = step["outputs"].as_object().filter(|o| !o.is_empty()) {
            more.push(format!("outputs: {}", Value::Object(out.clone())));
        }
        for e in step["evaluations"].as_array().into_iter().flatten() {
            more.push(format!(
                "evaluated {}: {} -> {} [{}]",
                s(&e["time"]),
                s(&e["text"]),
                s(&e["verdict"]),
                s(&e["threshold"])
            ));
        }
        for d in step["approvals"].as_array().into_iter().flatten() {
            let verb = if d["approved"] == true {
                "approved"
            } else {
                "rejected"
            };
            more.push(format!(
                "{verb} by {} at {}{}",
                s(&d["by"]),
                s(&d["at"]),
                d["comment"]
                    .as_str()
                    .map_or(String::new(), |c| format!(": {c}"))
            ));
        }
        if !more.is_empty() {
            let _ = write!(
                b,
                "<tr class=\"more\"><td></td><td colspan=\"3\"><pre>{}</pre></td></tr>",
                esc(&more.join("\n"))
            );
        }
    }
    b.push_str("</tbody></table>");
    let live = r["status"] == "running";
    // The page shows these; the event stream's first ones are them again.
    let records = rec.events.len();
    page(
        &format!("runbook: {run_id}"),
        &b,
        live.then_some((run_id.as_str(), records)),
    )
    .into_response()
}
