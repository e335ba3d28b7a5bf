//! `runbook status [RUN_ID]`: what the journals say, as a table or JSON.
//!
//! A run without a final record is `running` while its process holds the
//! run lock, and `stopped` (resumable) once nobody does.
//!
//! Everything shown comes from the run's one folded [`RunState`] (the shape
//! the report has); the text is drawn from that JSON, so the two never
//! disagree. Waiting approvals are listed only while the run is `running`:
//! the command that answers them works only then (a stopped run says to
//! resume it first).

use serde_json::{json, Value as Json};

use crate::error::{Done, Error, Result};
use crate::events::RunStatus;
use crate::journal::Recorded;
use crate::state::RunState;
use crate::store::Store;

/// The run's status, who holds it while it is live, and its place in a
/// lock queue while it waits there (read once: the three agree).
fn run_status(
    store: &dyn Store,
    rec: &Recorded,
    state: &RunState,
) -> (String, Option<crate::store::Holder>, Option<usize>) {
    if let Some(s) = state.status {
        return (s.as_str().to_string(), None, None);
    }
    // The journal was just read: a store that cannot say now is taken as
    // nobody (a stopped run), which `resume` then checks for itself.
    let id = &rec.header.run_id;
    match store.holder(id).ok().flatten() {
        Some(h) if rec.events.is_empty() => match store.queue_position(id) {
            Some(place) => ("queued".into(), Some(h), Some(place)),
            None => ("running".into(), Some(h), None),
        },
        Some(h) => ("running".into(), Some(h), None),
        None => ("stopped".into(), None, None),
    }
}

/// The run's state in the shape the report has, with what only the journal
/// and the run lock know: the file, who started it, whether it is live.
pub(crate) fn summary(
    store: &dyn Store,
    rec: &Recorded,
    rb: Option<&crate::runbook::Runbook>,
    with_steps: bool,
) -> Json {
    let state = rec.state(rb);
    // The commands name the state dir this reader reached the run through.
    let mut out = state.to_json_in(Some(&store.describe()));
    let (status, holder, place) = run_status(store, rec, &state);
    if status != "running" {
        out["waiting"] = json!([]);
    }
    if let Some(place) = place {
        out["queue_position"] = json!(place);
    }
    if let Some(h) = holder {
        out["holder"] = json!({ "host": h.host, "pid": h.pid, "epoch": h.epoch });
    }
    out["status"] = json!(status);
    if let (Some(rb), Some(RunStatus::RollbackFailed | RunStatus::UnwindIncomplete)) =
        (rb, state.status)
    {
        let unfinished = state.unfinished_rollbacks(rb);
        out["next"] = json!(crate::state::way_forward(
            &rec.header.run_id,
            &store.flag(),
            &unfinished,
        ));
    }
    out["file"] = json!(rec.header.file);
    out["started_by"] = json!(rec.header.identity);
    if !with_steps {
        if let Json::Object(m) = &mut out {
            m.remove("steps");
        }
    }
    out
}

fn summary_of(store: &dyn Store, rec: &Recorded, with_steps: bool) -> Json {
    summary(
        store,
        rec,
        crate::commands::journaled_runbook(rec).as_deref(),
        with_steps,
    )
}

/// Every run of the state dir, as `status --format json` lists them.
pub fn runs_json(store: &dyn Store) -> std::result::Result<Vec<Json>, String> {
    let ids = store
        .list()
        .map_err(|e| format!("cannot read {}: {e}", store.describe()))?;
    Ok(ids
        .iter()
        .map(|id| match store.read(id) {
            Ok(r) => summary_of(store, &r, false),
            Err(e) => json!({ "run_id": id, "runbook": "?", "status": "unreadable", "error": e.to_string() }),
        })
        .collect())
}

/// One run as `status RUN_ID --format json` shows it; `None`: no such run.
pub fn run_json(store: &dyn Store, run_id: &str) -> Option<Json> {
    if !crate::journal::valid_run_id(run_id) {
        return None;
    }
    let rec = store.read(run_id).ok()?;
    Some(summary_of(store, &rec, true))
}

pub fn show(store: &dyn Store, run_id: Option<&str>, as_json: bool) -> Result {
    match run_id {
        None => {
            let ids = match store.list() {
                Ok(ids) => ids,
                Err(e) => {
                    return Err(Error::cannot_start(format!(
                        "cannot read {}: {e}",
                        store.describe()
                    )))
                }
            };
            // A run whose journal cannot be read is listed, not hidden: it is
            // exactly the run someone needs to look at.
            let runs: Vec<Json> = ids
                .iter()
                .map(|id| match store.read(id) {
                    Ok(r) => summary_of(store, &r, false),
                    Err(e) => json!({ "run_id": id, "runbook": "?", "status": "unreadable", "error": e.to_string() }),
                })
                .collect();
            if as_json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&runs).unwrap_or_default()
                );
            } else if runs.is_empty() {
                println!("no runs in {}", store.describe());
            } else {
                println!(
                    "{:28} {:24} {:16} {:21} duration",
                    "run", "runbook", "status", "started"
                );
                let now = std::time::SystemTime::now();
                for r in &runs {
                    let d = r["total_duration_ms"]
                        .as_u64()
                        .or_else(|| r["duration_ms"].as_u64())
                        .map_or("-".to_string(), |ms| {
                            crate::view::short(std::time::Duration::from_millis(ms))
                        });
                    println!(
                        "{:28} {:24} {:16} {:21} {d}",
                        r["run_id"].as_str().unwrap_or(""),
                        r["runbook"].as_str().unwrap_or(""),
                        r["status"].as_str().unwrap_or(""),
                        r["started_at"].as_str().unwrap_or("")
                    );
                    for w in r["waiting"].as_array().into_iter().flatten() {
                        print_waiting(w, now);
                    }
                }
            }
            Ok(Done::Ok)
        }
        Some(id) => {
            let rec = crate::journal::read_run(store, id)?;
            let out = summary_of(store, &rec, true);
            if as_json {
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                return Ok(Done::Ok);
            }
            println!(
                "run {}  {}  {}",
                id,
                out["runbook"].as_str().unwrap_or(""),
                out["status"].as_str().unwrap_or("")
            );
            println!(
                "started {} by {}",
                out["started_at"].as_str().unwrap_or(""),
                out["started_by"].as_str().unwrap_or("")
            );
            if let Some(f) = out["fingerprint"].as_str().filter(|f| !f.is_empty()) {
                println!("plan {f}");
            }
            if let Some(h) = out["holder"].as_object().filter(|h| h["host"] != "") {
                println!(
                    "held by process {} on {} (epoch {})",
                    h["pid"],
                    h["host"].as_str().unwrap_or(""),
                    h["epoch"]
                );
            }
            if let Some(n) = out["queue_position"].as_u64() {
                println!("queued for its lock: place {n} in line");
            }
            print_record(&out);
            let now = std::time::SystemTime::now();
            for w in out["waiting"].as_array().into_iter().flatten() {
                println!();
                print_waiting(w, now);
            }
            println!(
                "\n{:24} {:12} {:>8} {:>9}  {:10} detail",
                "step", "status", "attempts", "time", "rollback"
            );
            for s in out["steps"].as_array().into_iter().flatten() {
                let t = s["duration_ms"].as_u64().map_or("-".to_string(), |ms| {
                    crate::view::short(std::time::Duration::from_millis(ms))
                });
                let attempts = s["attempt"]
                    .as_str()
                    .map_or_else(|| s["attempts"].to_string(), str::to_string);
                let gate = s["gate"]["next_sample_at"].as_str().map(|t| {
                    format!(
                        ", at {}",
                        crate::view::from_now(t, std::time::SystemTime::now())
                    )
                });
                let detail = s["waiting_on"]
                    .as_str()
                    .filter(|_| s["status"] == "running")
                    .map(|w| {
                        let at = gate.clone().filter(|_| w.contains("; next sample in"));
                        format!("waiting on {w}{}", at.unwrap_or_default())
                    })
                    .or_else(|| s["error"].as_str().map(str::to_string))
                    .unwrap_or_default();
                let title = match (s["name"].as_str(), s["stage"].as_str()) {
                    (Some(n), Some(st)) => format!("{n}, stage {st}"),
                    (Some(n), None) => n.to_string(),
                    (None, Some(st)) => format!("stage {st}"),
                    (None, None) => String::new(),
                };
                println!(
                    "{:24} {:12} {:>8} {:>9}  {:10} {detail}",
                    s["id"].as_str().unwrap_or(""),
                    s["status"].as_str().unwrap_or(""),
                    attempts,
                    t,
                    s["rollback"]["status"].as_str().unwrap_or("")
                );
                for earlier in s["rollback_history"].as_array().into_iter().flatten() {
                    println!(
                        "{:24} earlier rollback {}: {}",
                        "",
                        earlier["status"].as_str().unwrap_or(""),
                        earlier["error"].as_str().unwrap_or("")
                    );
                }
                if !title.is_empty() {
                    println!("{:24} {}", "", crate::view::printable(&title));
                }
                let log = s["attempt_log"].as_array().map_or(&[][..], Vec::as_slice);
                if log.len() > 1 || log.iter().any(|t| t["outcome"] != "succeeded") {
                    for t in log {
                        let err = t["error"]
                            .as_str()
                            .map_or(String::new(), |e| format!(": {e}"));
                        println!(
                            "{:24} attempt {} {} .. {} {}{err}",
                            "",
                            t["attempt"],
                            t["started_at"].as_str().unwrap_or(""),
                            t["finished_at"].as_str().unwrap_or("…"),
                            t["outcome"].as_str().unwrap_or("running"),
                        );
                    }
                }
                print_evaluations(s);
                if let Some(e) = s["rollback"]["error"].as_str() {
                    println!("{:24} rollback failed: {e}", "");
                }
                for d in s["approvals"].as_array().into_iter().flatten() {
                    let verb = if d["approved"] == true {
                        "approved"
                    } else {
                        "rejected"
                    };
                    let comment = d["comment"]
                        .as_str()
                        .map_or(String::new(), |c| format!(": {c}"));
                    let proof = match (d["key"].as_str(), d["os_user"].as_str()) {
                        (Some(key), _) => format!(" (signed, key {key})"),
                        (None, Some(user)) => format!(
                            " (claimed; OS user {user} on {})",
                            d["host"].as_str().unwrap_or("?")
                        ),
                        (None, None) => String::new(),
                    };
                    println!(
                        "{:24} {verb} by {} at {}{proof}{comment}",
                        "",
                        d["by"].as_str().unwrap_or(""),
                        d["at"].as_str().unwrap_or("")
                    );
                }
                for d in s["refused_approvals"].as_array().into_iter().flatten() {
                    let line = format!(
                        "refused a decision by {} at {}: {}",
                        d["by"].as_str().unwrap_or(""),
                        d["at"].as_str().unwrap_or(""),
                        d["why"].as_str().unwrap_or("")
                    );
                    println!("{:24} {}", "", crate::view::printable(&line));
                }
            }
            if let Some(next) = out["next"].as_str() {
                println!("\n{next}");
            }
            Ok(Done::Ok)
        }
    }
}

/// The run's record above its steps: params, the failed step, how long it
/// took over how many processes, tolerated failures.
fn print_record(out: &Json) {
    if let Some(params) = out["params"].as_object().filter(|p| !p.is_empty()) {
        let shown: Vec<String> = params
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some(s) => format!("{k}={s}"),
                None => format!("{k}={v}"),
            })
            .collect();
        println!("params {}", crate::view::printable(&shown.join(" ")));
    }
    if let Some(ms) = out["total_duration_ms"].as_u64() {
        let processes = out["processes"].as_u64().unwrap_or(1);
        let across = if processes > 1 {
            format!(" across {processes} processes")
        } else {
            String::new()
        };
        println!(
            "took {}{across} (until {})",
            crate::view::short(std::time::Duration::from_millis(ms)),
            out["finished_at"].as_str().unwrap_or("")
        );
    }
    if let Some(id) = out["failed_step"].as_str() {
        let err = out["error"]
            .as_str()
            .map_or(String::new(), |e| format!(": {e}"));
        println!("failed step {id}{err}");
    }
    let tolerated: Vec<&str> = out["tolerated_failures"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
        .collect();
    if !tolerated.is_empty() {
        println!(
            "tolerated failures (continue_on_failure): {}",
            tolerated.join(", ")
        );
    }
}

/// A waiting approval: what it waits for, who may answer, the commands.
fn print_waiting(w: &Json, now: std::time::SystemTime) {
    let title = match (w["name"].as_str(), w["stage"].as_str()) {
        (Some(n), Some(s)) => format!(" ({n}, stage {s})"),
        (Some(n), None) => format!(" ({n})"),
        (None, Some(s)) => format!(" (stage {s})"),
        (None, None) => String::new(),
    };
    println!(
        "  waiting: {}{} {}",
        w["label"].as_str().unwrap_or(""),
        crate::view::printable(&title),
        w["waiting_on"].as_str().unwrap_or("")
    );
    if let Some(m) = w["message"].as_str() {
        println!("    {}", crate::view::printable(m));
    }
    for line in w["evaluations"].as_array().into_iter().flatten() {
        println!(
            "    {}",
            crate::view::printable(line.as_str().unwrap_or(""))
        );
    }
    for line in crate::view::answer_lines(w, now) {
        println!("    {line}");
    }
}

/// How many of a gate's evaluations `status RUN_ID` lists (the JSON has all).
const SHOWN_EVALUATIONS: usize = 5;

/// A gate's last evaluations: when, what it read, the verdict and threshold.
fn print_evaluations(s: &Json) {
    let all = s["evaluations"].as_array().map_or(&[][..], Vec::as_slice);
    let skip = all.len().saturating_sub(SHOWN_EVALUATIONS);
    if skip > 0 {
        println!(
            "{:24} ({skip} earlier evaluations: `--format json` lists all)",
            ""
        );
    }
    for e in &all[skip..] {
        let dry = if e["dry_run"] == true {
            " (dry run)"
        } else {
            ""
        };
        let line = format!(
            "evaluated {}: {} -> {}{dry} [{}]",
            e["time"].as_str().unwrap_or(""),
            e["text"].as_str().unwrap_or(""),
            e["verdict"].as_str().unwrap_or(""),
            e["threshold"].as_str().unwrap_or("")
        );
        println!("{:24} {}", "", crate::view::printable(&line));
    }
}
