//! The JSON API and the answer to a waiting step: the spec's table, with
//! its status codes (200 counted, 403 no or wrong identity, 404 unknown run
//! or step, 409 not waiting).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde_json::{json, Value};

use super::Shared;

/// How often a live run's journal is read for new records.
const POLL: Duration = Duration::from_millis(200);

pub(super) async fn runs(State(s): State<Arc<Shared>>) -> Response {
    match crate::status::runs_json(s.store.as_ref()) {
        Ok(runs) => {
            let list: Vec<Value> = runs
                .iter()
                .map(|r| {
                    json!({
                        "run_id": r["run_id"],
                        "name": r["runbook"],
                        "status": r["status"],
                        "started_at": r["started_at"],
                        "started_by": r["started_by"],
                        "waiting": r["waiting"],
                    })
                })
                .collect();
            Json(list).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": e })),
        )
            .into_response(),
    }
}

pub(super) async fn run(State(s): State<Arc<Shared>>, Path(run_id): Path<String>) -> Response {
    match crate::status::run_json(s.store.as_ref(), &run_id) {
        Some(r) => Json(r).into_response(),
        None => not_found(&format!("no run `{run_id}`")),
    }
}

fn not_found(why: &str) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": why }))).into_response()
}

/// Every record of the run's journal from its start, then new ones as they
/// are written, until the run finishes (or no engine holds it).
pub(super) async fn events(State(s): State<Arc<Shared>>, Path(run_id): Path<String>) -> Response {
    if !crate::journal::valid_run_id(&run_id) {
        return not_found(&format!("no run `{run_id}`"));
    }
    // The store's calls block (a file read, a database query): off the
    // server's thread.
    let store = s.store.clone();
    let id = run_id.clone();
    let tail = tokio::task::spawn_blocking(move || store.tail(&id)).await;
    let Ok(Ok(tail)) = tail else {
        return not_found(&format!("no run `{run_id}`"));
    };
    struct Reader {
        store: Arc<dyn crate::store::Store>,
        run_id: String,
        tail: Option<Box<dyn crate::journal::Tail>>,
        pending: std::collections::VecDeque<String>,
        done: bool,
    }
    let reader = Reader {
        store: s.store.clone(),
        run_id,
        tail: Some(tail),
        pending: std::collections::VecDeque::new(),
        done: false,
    };
    let stream = futures_util::stream::unfold(reader, |mut r| async move {
        loop {
            if let Some(line) = r.pending.pop_front() {
                if line.contains("\"event\":\"run_finished\"") {
                    r.done = true;
                    r.pending.clear();
                }
                let ev = SseEvent::default().data(line);
                return Some((Ok::<_, Infallible>(ev), r));
            }
            if r.done {
                return None;
            }
            // What was recorded since the last read, not the whole journal
            // again: a days-long run's journal is polled every 200 ms.
            let (store, id, mut tail) = (r.store.clone(), r.run_id.clone(), r.tail.take()?);
            let polled = tokio::task::spawn_blocking(move || {
                let live = store.is_live(&id).unwrap_or(true);
                let events = tail.next_events();
                (tail, live, events)
            })
            .await;
            let Ok((tail, live, events)) = polled else {
                return None;
            };
            r.tail = Some(tail);
            for (at, event) in events.unwrap_or_default() {
                let line = crate::journal::Timed { event: &event, at };
                if let Ok(line) = serde_json::to_string(&line) {
                    r.pending.push_back(line);
                }
            }
            if r.pending.is_empty() {
                if !live {
                    // Nobody runs it: nothing more will come until a resume.
                    r.done = true;
                    let ev = SseEvent::default()
                        .event("end")
                        .data(json!({ "status": "stopped" }).to_string());
                    return Some((Ok(ev), r));
                }
                tokio::time::sleep(POLL).await;
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(serde::Deserialize, Default)]
pub(super) struct AnswerBody {
    #[serde(default)]
    comment: Option<String>,
}

/// Whether a POST comes from this server's own page (or from a client that
/// is no browser, which sends neither header): a link or a form elsewhere
/// cannot answer for the person whose browser follows it.
fn same_origin(headers: &HeaderMap) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // A browser that says where a request comes from is believed: it is the
    // page's browser, and a forger cannot make it lie.
    if let Some(site) = get("sec-fetch-site") {
        return matches!(site, "same-origin" | "none");
    }
    match (get("origin"), get("host")) {
        (None, _) => true,
        (Some(origin), Some(host)) => {
            origin == format!("http://{host}") || origin == format!("https://{host}")
        }
        (Some(_), None) => false,
    }
}

/// An answer, checked as the spec's table says; Ok: what happened.
fn check_and_answer(
    s: &Shared,
    headers: &HeaderMap,
    run_id: &str,
    step: &str,
    decision: &str,
    comment: Option<&str>,
) -> Result<String, (StatusCode, String)> {
    let forbidden = |why: String| Err((StatusCode::FORBIDDEN, why));
    let reject = match decision {
        "approve" => false,
        "reject" => true,
        _ => return Err((StatusCode::NOT_FOUND, format!("no action `{decision}`"))),
    };
    if !same_origin(headers) {
        return forbidden("a cross-site request cannot answer an approval".into());
    }
    let Some(header) = &s.auth_header else {
        return forbidden("this server is read-only: it was started without --auth-header".into());
    };
    let Some(who) = headers
        .get(header)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|w| !w.is_empty())
    else {
        return forbidden(format!("no identity: the request has no `{header}` header"));
    };
    let Some(run) = crate::status::run_json(s.store.as_ref(), run_id) else {
        return Err((StatusCode::NOT_FOUND, format!("no run `{run_id}`")));
    };
    let id = step.split(".rollback.").next().unwrap_or(step);
    let known = run["steps"]
        .as_array()
        .is_some_and(|l| l.iter().any(|st| st["id"] == id));
    if !known {
        return Err((
            StatusCode::NOT_FOUND,
            format!("run `{run_id}` has no step `{step}`"),
        ));
    }
    let waiting = run["waiting"]
        .as_array()
        .and_then(|l| l.iter().find(|w| w["label"] == step).cloned());
    let Some(waiting) = waiting else {
        return Err((
            StatusCode::CONFLICT,
            format!("step `{step}` of run `{run_id}` is not waiting for an answer"),
        ));
    };
    if waiting["signed"] == true {
        return forbidden(format!(
            "step `{step}` counts only signed decisions; the page holds no key: use `runbook approve {run_id} {step} --as NAME --key PATH`"
        ));
    }
    let answer = crate::approvals::Answer {
        run_id,
        step,
        identity: Some(who),
        reject,
        comment,
        key: None,
    };
    crate::approvals::decide(s.store.as_ref(), &answer).map_err(|e| match e {
        crate::error::Error::Invalid(why) => (StatusCode::FORBIDDEN, why),
        other => (StatusCode::INTERNAL_SERVER_ERROR, format!("{other:?}")),
    })
}

pub(super) async fn answer(
    State(s): State<Arc<Shared>>,
    Path((run_id, step, decision)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Option<Json<AnswerBody>>,
) -> Response {
    let comment = body.and_then(|Json(b)| b.comment);
    match check_and_answer(&s, &headers, &run_id, &step, &decision, comment.as_deref()) {
        Ok(msg) => Json(json!({ "ok": true, "message": msg })).into_response(),
        Err((code, why)) => (code, Json(json!({ "error": why }))).into_response(),
    }
}

/// The page's own form: the same checks, then back to the run's page.
pub(super) async fn answer_form(
    State(s): State<Arc<Shared>>,
    Path((run_id, step, decision)): Path<(String, String, String)>,
    headers: HeaderMap,
    Form(body): Form<AnswerBody>,
) -> Response {
    let comment = body.comment.filter(|c| !c.trim().is_empty());
    match check_and_answer(&s, &headers, &run_id, &step, &decision, comment.as_deref()) {
        Ok(_) => {
            Redirect::to(&format!("/runs/{}", super::pages::path_segment(&run_id))).into_response()
        }
        Err((code, why)) => (code, super::pages::error_page(code, &why)).into_response(),
    }
}
