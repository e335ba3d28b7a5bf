#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! `flag:` steps on a `redis` provider, against a real `redis-server` each
//! test starts on a free loopback port (tests/common/redis.rs). Without
//! redis-server on PATH these tests fail, saying how to install it.
//!
//! The provider URL is a template (`{{ params.port }}`), so every test also
//! covers rendering it.

mod common;

use std::time::Duration;

use common::raw_tcp::{free_port, RawServer};
use common::redis::{Redis, Value};
use common::{report, step, Test};
use serde_json::{json, Value as Json};

const RB: &str = "rb.yaml";

/// The runbook header every test shares: a `redis` provider on the test's
/// server (the port is a param) with the `t:` prefix.
fn header(extra_provider: &str) -> String {
    format!(
        r#"version: 1
name: redis-flags
params:
  port: {{ type: integer, required: true }}
providers:
  flags: {{ kind: redis, url: "redis://127.0.0.1:{{{{ params.port }}}}/0", prefix: "t:"{extra_provider} }}
"#
    )
}

fn run(redis: &Redis, steps: &str) -> Test {
    run_on(redis.port, &format!("{}{steps}", header("")))
}

fn run_on(port: u16, yaml: &str) -> Test {
    Test::new().file(RB, yaml).args(&[
        "run",
        RB,
        "--state-dir",
        "st",
        "--report",
        "report.json",
        "--param",
        &format!("port={port}"),
    ])
}

#[test]
fn flags_are_set_as_json_under_the_prefix() {
    let redis = Redis::start();
    redis.set("t:existing", r#""old""#);
    let out = run(
        &redis,
        r#"steps:
  - id: on
    flag: { name: checkout_v2, value: true }
  - id: canary
    flag: { name: rollout, value: { stage: canary, percent: 10 } }
  - id: text
    flag: { name: existing, value: new }
  - id: number
    flag: { name: ratio, value: 0.25 }
"#,
    )
    .run()
    .success();
    assert_eq!(redis.get_json("t:checkout_v2"), Some(json!(true)));
    assert_eq!(
        redis.get_json("t:rollout"),
        Some(json!({ "stage": "canary", "percent": 10 }))
    );
    assert_eq!(redis.get("t:existing").as_deref(), Some(r#""new""#));
    assert_eq!(redis.get_json("t:ratio"), Some(json!(0.25)));
    assert!(!redis.exists("checkout_v2"), "keys carry the prefix");

    let r = report(&out);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(step(&r, "on")["outputs"]["previous"], Json::Null);
    assert_eq!(step(&r, "on")["outputs"]["value"], json!(true));
    assert_eq!(step(&r, "text")["outputs"]["previous"], json!("old"));
    assert_eq!(step(&r, "text")["outputs"]["existed"], json!(true));
    // The journal holds each previous value (FlagPrevious), before the write.
    let journal = std::fs::read_dir(out.path().join("st/runs"))
        .expect("runs")
        .flatten()
        .map(|e| std::fs::read_to_string(e.path().join("journal.jsonl")).expect("journal"))
        .next()
        .expect("one run");
    assert!(
        journal.contains(
            r#""event":"flag_previous","step":"text","flag":"existing","previous":"old""#
        ),
        "{journal}"
    );
}

#[test]
fn a_failure_restores_every_flag_to_its_starting_value() {
    let redis = Redis::start();
    redis.set("t:existing", r#"{"percent":5}"#);
    redis.set("t:plain", "on"); // written by another tool: not JSON
    let out = run(
        &redis,
        r#"steps:
  - id: new_flag
    flag: { name: fresh, value: true }
  - id: changed
    flag: { name: existing, value: { percent: 50 } }
  - id: raw
    flag: { name: plain, value: off }
  - id: twice
    flag: { name: fresh, value: "second" }
  - id: check
    shell: exit 3
"#,
    )
    .run()
    .code(1);
    // A flag that did not exist is deleted; the others get their exact bytes back.
    assert!(!redis.exists("t:fresh"), "{}", out.stdout);
    assert_eq!(redis.get("t:existing").as_deref(), Some(r#"{"percent":5}"#));
    assert_eq!(redis.get("t:plain").as_deref(), Some("on"));
    let r = report(&out);
    assert_eq!(r["status"], "rolled_back");
    assert_eq!(step(&r, "raw")["outputs"]["previous"], json!("on"));
    for id in ["new_flag", "changed", "raw", "twice"] {
        assert_eq!(
            step(&r, id)["rollback"]["status"],
            "succeeded",
            "{id}: {r:#}"
        );
    }
}

#[test]
fn an_explicit_rollback_replaces_the_automatic_restore() {
    let redis = Redis::start();
    redis.set("t:mode", r#""blue""#);
    let out = run(
        &redis,
        r#"steps:
  - id: switch
    flag: { name: mode, value: green }
    rollback:
      flag: { name: mode, value: "{{ step.outputs.previous }}-restored" }
  - id: fail
    shell: exit 1
"#,
    )
    .run()
    .code(1);
    assert_eq!(
        redis.get_json("t:mode"),
        Some(json!("blue-restored")),
        "{}",
        out.stdout
    );
}

#[test]
fn rollback_false_leaves_the_flag() {
    let redis = Redis::start();
    let out = run(
        &redis,
        r#"steps:
  - id: keep
    flag: { name: kept, value: 7 }
    rollback: false
  - id: undo
    flag: { name: undone, value: 8 }
  - id: fail
    shell: exit 1
"#,
    )
    .run()
    .code(1);
    assert_eq!(redis.get_json("t:kept"), Some(json!(7)), "{}", out.stdout);
    assert!(!redis.exists("t:undone"));
    let r = report(&out);
    assert!(step(&r, "keep").get("rollback").is_none(), "{r:#}");
}

#[test]
fn redis_gone_mid_run_fails_with_a_clear_error_and_a_failed_rollback() {
    let mut redis = Redis::start();
    let yaml = format!(
        "{}{}",
        header(""),
        r#"steps:
  - id: first
    flag: { name: first, value: true }
  - id: kill_redis
    shell: |
      kill -9 "$(cat redis.pid)"
      # wait (bounded) until nothing listens on the port any more
      for _ in $(seq 1 500); do
        (exec 3<>/dev/tcp/127.0.0.1/{{ params.port }}) 2>/dev/null || exit 0
        sleep 0.02
      done
      echo "redis still listening" >&2
      exit 1
  - id: second
    flag: { name: second, value: true }
"#
    );
    let test = run_on(redis.port, &yaml);
    redis.write_pid(&test.path().join("redis.pid"));
    let out = test.run();
    assert!(redis.exited(), "the step killed redis");
    let refused = format!(
        "cannot connect to redis at 127.0.0.1:{}/0: connection refused",
        redis.port
    );
    // The failed write and the impossible restore both say why.
    let out = out.code(3).stdout_contains(&refused);
    let r = report(&out);
    assert_eq!(r["status"], "rollback_failed");
    let second = step(&r, "second");
    assert_eq!(second["status"], "failed");
    assert!(
        second["error"]
            .as_str()
            .is_some_and(|e| e.contains(&refused)),
        "{r:#}"
    );
    let first = step(&r, "first");
    assert_eq!(first["rollback"]["status"], "failed", "{r:#}");
    assert!(
        first["rollback"]["error"]
            .as_str()
            .is_some_and(|e| e.contains(&refused)),
        "{r:#}"
    );
    // The step that never wrote anything has nothing to undo.
    assert_ne!(second["rollback"]["status"], "failed", "{r:#}");
}

#[test]
fn a_key_of_another_type_is_a_clear_error() {
    let redis = Redis::start();
    assert_eq!(redis.command(&["RPUSH", "t:listy", "x"]), Value::Int(1));
    run(
        &redis,
        r#"steps:
  - id: set
    flag: { name: listy, value: true }
"#,
    )
    .run()
    .code(1)
    .stdout_contains("redis key t:listy at 127.0.0.1:")
    .stdout_contains("holds a value that is not a string");
    assert_eq!(
        redis.command(&["TYPE", "t:listy"]),
        Value::SimpleString("list".into()),
        "the key is untouched"
    );
}

#[test]
fn authentication_errors_say_what_to_do_and_a_password_from_a_secret_works() {
    let redis = Redis::start_with(&["--requirepass", "s3cret-pw"]);
    let steps = r#"steps:
  - id: set
    flag: { name: guarded, value: 1 }
"#;
    run(&redis, steps)
        .run()
        .code(1)
        .stdout_contains("requires a password and none was given")
        .stdout_contains("redis://USER:PASSWORD@HOST:PORT/DB");

    let yaml = format!(
        r#"version: 1
name: redis-auth
params:
  port: {{ type: integer, required: true }}
secrets:
  pw: {{ env: REDIS_PW }}
providers:
  flags: {{ kind: redis, url: "redis://:{{{{ secrets.pw }}}}@127.0.0.1:{{{{ params.port }}}}/0", prefix: "t:" }}
{steps}"#
    );
    let out = run_on(redis.port, &yaml)
        .env("REDIS_PW", "s3cret-pw")
        .run()
        .success();
    assert!(!out.stdout.contains("s3cret-pw") && !out.stderr.contains("s3cret-pw"));
    let wrong = yaml.replace("{{ secrets.pw }}", "not-it");
    run_on(redis.port, &wrong)
        .env("REDIS_PW", "unused")
        .run()
        .code(1)
        .stdout_contains("rejected the credentials");

    let redis = redis.with_password("s3cret-pw");
    assert_eq!(redis.get_json("t:guarded"), Some(json!(1)));
}

#[test]
fn a_server_that_does_not_answer_times_out() {
    // Accepts connections and never replies.
    let silent = RawServer::silent();
    let port = silent.port;
    let started = std::time::Instant::now();
    run_on(
        port,
        &format!(
            "{}{}",
            header(", timeout: 300ms"),
            r#"steps:
  - id: set
    flag: { name: slow, value: true }
"#
        ),
    )
    .run()
    .code(1)
    .stdout_contains(&format!("127.0.0.1:{port}/0"))
    .stdout_contains("did not answer within 300ms");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the provider timeout bounds the step"
    );
    drop(silent);
}

#[test]
fn a_refused_connection_fails_the_step_before_anything_changes() {
    // Nothing listens on this port (bound, read, closed).
    let port = free_port();
    run_on(
        port,
        &format!(
            "{}{}",
            header(""),
            r#"steps:
  - id: set
    flag: { name: x, value: true }
"#
        ),
    )
    .run()
    .code(1)
    .stdout_contains("connection refused (is redis-server running there?)");
}

#[test]
fn a_crash_after_the_write_still_restores_the_value_from_before_the_run() {
    let redis = Redis::start();
    redis.set("t:mode", r#""old""#);
    // Dying as the previous value reaches the journal (the 3rd event) leaves
    // the flag untouched: the previous value is recorded BEFORE the write.
    let early = run(
        &redis,
        r#"steps:
  - id: switch
    flag: { name: mode, value: new }
"#,
    )
    .env("RUNBOOK_CRASH_AT", "before:3")
    .run();
    assert!(early.killed(), "{}\n{}", early.stdout, early.stderr);
    assert_eq!(redis.get_json("t:mode"), Some(json!("old")));

    // Events of the first process: run_started, step_started, flag_previous
    // (journaled before the write), then step_finished: dying just before the
    // 4th leaves the flag written but the step unfinished.
    let out = run(
        &redis,
        r#"steps:
  - id: switch
    flag: { name: mode, value: new }
  - id: fail
    shell: exit 1
"#,
    )
    .env("RUNBOOK_CRASH_AT", "before:4")
    .run();
    assert!(out.killed(), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        redis.get_json("t:mode"),
        Some(json!("new")),
        "{}",
        out.stdout
    );

    // The resumed run writes again (its own SET .. GET now returns "new"),
    // but the journaled previous value wins: the unwind puts back "old".
    let run_id = std::fs::read_dir(out.path().join("st/runs"))
        .expect("runs")
        .flatten()
        .next()
        .expect("one run")
        .file_name()
        .to_string_lossy()
        .into_owned();
    let out = out
        .again()
        .args(&[
            "resume",
            &run_id,
            "--state-dir",
            "st",
            "--report",
            "report.json",
        ])
        .run()
        .code(1);
    assert_eq!(
        redis.get_json("t:mode"),
        Some(json!("old")),
        "{}",
        out.stdout
    );
    assert_eq!(
        step(&report(&out), "switch")["outputs"]["previous"],
        json!("old")
    );
}

#[test]
fn a_write_without_an_answer_says_it_may_have_been_applied() {
    let redis = Redis::start();
    redis.set("t:paused", "1");
    // Reads go on, writes wait: the GET answers, the SET .. GET does not.
    // (2 s is a bound for the connect and the GET on a loaded machine.)
    assert_eq!(
        redis.command(&["CLIENT", "PAUSE", "60000", "WRITE"]),
        Value::Okay
    );
    let out = run_on(
        redis.port,
        &format!(
            "{}{}",
            header(", timeout: 2s"),
            r#"steps:
  - id: set
    flag: { name: paused, value: 2 }
"#
        ),
    )
    .arg("--run-id")
    .arg("paused")
    .run();
    redis.command(&["CLIENT", "UNPAUSE"]);
    // The write's outcome is unknown, so its restore still runs (it used to
    // be skipped, and the unwind said "rolled back" over a flag left at the
    // new value); here the restore cannot be written either: a person must act.
    let out = out
        .code(3)
        .stdout_contains("did not answer within 2s (set t:paused)")
        .stdout_contains("the write may or may not have been applied: check t:paused (it was 1)")
        .stderr_contains("rollback of `set` failed: flag paused was not restored")
        .stderr_contains("`runbook rollback paused --state-dir ");
    // Redis answers again: the rollback finishes the restore.
    out.again()
        .args(&["rollback", "paused", "--yes", "--state-dir", "st"])
        .run()
        .code(0);
    assert_eq!(redis.get("t:paused").as_deref(), Some("1"));
}

#[test]
fn a_kill_switch_flipped_mid_run_was_overwritten_by_the_restore() {
    let redis = Redis::start();
    redis.set("t:checkout", r#"{"enabled":false}"#);
    // A second client (the on-call engineer's emergency disable) writes the
    // flag while the run goes on; then the run fails and unwinds.
    let out = run(
        &redis,
        &format!(
            r#"steps:
  - id: enable
    flag: {{ name: checkout, value: {{ enabled: true }} }}
  - id: kill_switch
    shell: redis-cli -p {} SET t:checkout '"killed"' >/dev/null
  - id: boom
    shell: exit 1
"#,
            redis.port
        ),
    )
    .arg("--run-id")
    .arg("ks")
    .run()
    .code(3)
    .stderr_contains(
        r#"flag checkout was changed outside this run: it is "killed", this run last wrote {"enabled":true}; not overwriting it with {"enabled":false}"#,
    )
    .stderr_contains("`runbook rollback ks --state-dir ");
    assert_eq!(redis.get("t:checkout").as_deref(), Some(r#""killed""#));
    assert_eq!(report(&out)["status"], "rollback_failed");
    // The operator puts back the value by hand, as the message says: the
    // rollback now finishes (it used to refuse again, forever).
    redis.set("t:checkout", r#"{"enabled":false}"#);
    out.again()
        .args(&["rollback", "ks", "--yes", "--state-dir", "st"])
        .run()
        .code(0);
    assert_eq!(
        redis.get("t:checkout").as_deref(),
        Some(r#"{"enabled":false}"#)
    );
}

#[test]
fn redis_stopped_during_the_unwind_was_a_successful_rollback() {
    let redis = Redis::start();
    let out = run(
        &redis,
        r#"steps:
  - id: enable
    flag: { name: beta, value: 1 }
  - id: boom
    shell: touch failing; sleep 0.5; exit 1
"#,
    )
    .spawn();
    let mut out = out;
    out.wait_for_file("failing", Duration::from_secs(30));
    drop(redis);
    out.wait()
        .code(3)
        .stderr_contains("rollback of `enable` failed: cannot read flag beta before restoring it");
}

/// Values another tool wrote, which JSON would change.
const SHAPES: [&[u8]; 5] = [
    b"on",
    b"12345678901234567890123",
    b"1.50",
    b"caf\xe9",
    b"{\"a\": 1}",
];

#[test]
fn restores_were_not_exact() {
    let redis = Redis::start();
    for (i, raw) in SHAPES.iter().enumerate() {
        redis.set_bytes(&format!("t:f{i}"), raw);
    }
    let steps: String = (0..SHAPES.len())
        .map(|i| format!("  - id: set{i}\n    flag: {{ name: f{i}, value: 7 }}\n"))
        .collect();
    // Without a crash.
    run(
        &redis,
        &format!("steps:\n{steps}  - id: boom\n    shell: exit 1\n"),
    )
    .run()
    .code(1);
    for (i, raw) in SHAPES.iter().enumerate() {
        assert_eq!(
            redis.get_bytes(&format!("t:f{i}")).as_deref(),
            Some(*raw),
            "f{i}"
        );
    }
    // After kill -9 and resume: the journal carries the bytes.
    let mut running = run(
        &redis,
        &format!(
            "steps:\n{steps}  - id: boom\n    shell: test -e resumed && exit 1; touch at-boom; sleep 30\n"
        ),
    )
    .arg("--run-id")
    .arg("k9")
    .spawn();
    running.wait_for_file("at-boom", Duration::from_secs(30));
    running.signal(libc::SIGKILL);
    let crashed = running.wait();
    assert!(crashed.killed());
    for i in 0..SHAPES.len() {
        assert_eq!(redis.get(&format!("t:f{i}")).as_deref(), Some("7"));
    }
    std::fs::write(crashed.path().join("resumed"), "").unwrap();
    crashed
        .again()
        .args(&["resume", "k9", "--state-dir", "st"])
        .run()
        .code(1);
    for (i, raw) in SHAPES.iter().enumerate() {
        assert_eq!(
            redis.get_bytes(&format!("t:f{i}")).as_deref(),
            Some(*raw),
            "f{i} after a crash"
        );
    }
}

#[test]
fn a_write_applied_but_not_answered_left_the_flag_at_its_new_value() {
    let redis = Redis::start();
    redis.set("t:rollout", "0");
    let proxy = RawServer::losing_first_flag_write_reply(redis.port);
    // Redis applies the write; its answer never comes: the step fails with
    // an unknown outcome, and the unwind must still put back 0.
    run_on(
        proxy.port,
        &format!(
            "{}steps:\n  - id: half\n    flag: {{ name: rollout, value: 50 }}\n",
            header(", timeout: 1s")
        ),
    )
    .run()
    .code(1)
    .stdout_contains("the write may or may not have been applied");
    assert_eq!(redis.get("t:rollout").as_deref(), Some("0"));
}

#[test]
fn a_retry_took_its_own_earlier_write_for_the_previous_value() {
    let redis = Redis::start();
    redis.set("t:rollout", "0");
    let proxy = RawServer::losing_first_flag_write_reply(redis.port);
    // Attempt 1's write lands unanswered; attempt 2 finds 50 there. The
    // restore must put back 0 (from before the run), not 50.
    let out = run_on(
        proxy.port,
        &format!(
            "{}steps:\n  - id: half\n    retry: {{ attempts: 2, delay: 10ms }}\n    flag: {{ name: rollout, value: 50 }}\n  - id: boom\n    shell: exit 1\n",
            header(", timeout: 1s")
        ),
    )
    .run()
    .code(1);
    let r = report(&out);
    assert_eq!(step(&r, "half")["attempts"], 2);
    assert_eq!(step(&r, "half")["outputs"]["previous"], json!(0));
    assert_eq!(redis.get("t:rollout").as_deref(), Some("0"));
}
