//! How long validation and planning take on large runbooks, and how much memory.
//!
//! `cargo bench --bench validate_plan` generates runbooks of 1,000 and 10,000
//! steps in memory (a chain of groups, each a fan-out with explicit `needs`
//! and a fan-in; templates reading params, vars and ancestor steps' outputs;
//! rollbacks, retries, timeouts, `when`, and every step kind), then times:
//!
//! - load + validate (`validate_text`: YAML -> tree -> spec -> runbook);
//! - plan + render (`resolve_params`, `Plan::build`, text rendering).
//!
//! Times are the min and median of several runs (30 at 1,000 steps, 10 at
//! 10,000). Memory is measured in one more run of each phase, by a counting
//! global allocator (off while timing): the most heap bytes live at once
//! during the phase beyond what was live before it, and the number of
//! allocations; and at the end the process's peak RSS (VmHWM).
//!
//! Set `BENCH_SIZES=1000,50000` or `BENCH_ITERS=5` to change the defaults.
//!
//! Measured on the 2-core development machine (medians): 1,000 steps 12 ms +
//! 7 ms; 10,000 steps 150 ms + 85 ms, 67 MiB + 23 MiB peak heap, 83 MB RSS;
//! linear from 2,000 to 20,000 steps. Before the fixes that came with this
//! benchmark, planning 10,000 steps took 4.6 s and 750 MiB.

#![allow(
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_sign_loss,
    clippy::cast_possible_truncation
)] // a benchmark harness: it may panic, and counts allocations

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use runbook::plan::{render, resolve_params, Format};
use runbook::validate::validate_text;

/// Counts heap bytes while `COUNTING` is on. Timed runs leave it off (the
/// atomics would cost ~15% of the time); one extra run per size measures memory.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
/// Bytes allocated minus bytes freed since counting was switched on (may go
/// below zero when older blocks are freed).
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() && COUNTING.load(Relaxed) {
            grow(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout);
        if COUNTING.load(Relaxed) {
            LIVE.fetch_sub(layout.size() as isize, Relaxed);
        }
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = System.realloc(p, layout, new_size);
        if !q.is_null() && COUNTING.load(Relaxed) {
            LIVE.fetch_sub(layout.size() as isize, Relaxed);
            grow(new_size as isize);
        }
        q
    }
}

fn grow(n: isize) {
    let live = LIVE.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(live, Relaxed);
    ALLOCS.fetch_add(1, Relaxed);
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` with the allocator counting: its result, the most heap bytes it
/// held at once (beyond what was live before), and its number of allocations.
fn measure_memory<R>(f: impl FnOnce() -> R) -> (R, usize, usize) {
    LIVE.store(0, Relaxed);
    PEAK.store(0, Relaxed);
    ALLOCS.store(0, Relaxed);
    COUNTING.store(true, Relaxed);
    let r = f();
    COUNTING.store(false, Relaxed);
    (r, PEAK.load(Relaxed).max(0) as usize, ALLOCS.load(Relaxed))
}

fn time<R>(f: impl FnOnce() -> R) -> (R, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

/// A runbook of `n` main steps (n >= 10), in groups of ten:
/// `g0` (hub, waits for the previous group's join), `g1`..`g7` (fan-out, each
/// `needs: [hub]`), `g8` (join, needs all seven), `g9` (chained to the join).
fn generate(n: usize) -> String {
    let mut y = String::with_capacity(n * 260);
    y.push_str(
        "version: 1
name: bench
description: generated for the validate/plan benchmark
params:
  environment: { type: string, enum: [staging, production], default: staging }
  image: { type: string, default: app:1.2.3 }
  percent: { type: integer, default: 10 }
  attempts: { type: integer, default: 3 }
vars:
  base_url: \"https://{{ params.environment }}.example.test\"
  health: \"{{ vars.base_url }}/healthz\"
secrets:
  token: { env: BENCH_TOKEN }
env:
  DEPLOY_ENV: \"{{ params.environment }}\"
defaults:
  timeout: 10m
  retry: { attempts: 1 }
concurrency: 8
lock: \"bench-{{ params.environment }}\"
providers:
  prom: { kind: prometheus, url: \"http://127.0.0.1:9090\" }
  flags: { kind: redis, url: \"redis://127.0.0.1:6379/0\", prefix: \"flags:\" }
steps:
",
    );
    let id = |i: usize| format!("s{i:05}");
    for i in 0..n {
        let g = i / 10 * 10;
        let _ = writeln!(y, "  - id: {}", id(i));
        if i % 100 == 0 {
            let _ = writeln!(y, "    stage: stage{}", i / 100);
        }
        match i % 10 {
            0 if i == 0 => y.push_str("    needs: []\n"),
            1..=7 => {
                let _ = writeln!(y, "    needs: [{}]", id(g));
            }
            8 => {
                let all: Vec<String> = (g + 1..g + 8).map(id).collect();
                let _ = writeln!(y, "    needs: [{}]", all.join(", "));
            }
            _ => {}
        }
        if i % 25 == 4 {
            y.push_str("    when: params.environment == \"production\"\n");
        }
        if i % 4 == 0 {
            y.push_str("    timeout: 30s\n");
        }
        // Approvals are never retried (E026).
        let approval = i % 10 != 3 && i % 50 != 5 && i % 100 != 6 && i % 500 == 7;
        if !approval && i % 3 == 0 {
            y.push_str(
                "    retry: { attempts: 3, delay: 1s, backoff: exponential, max_delay: 10s }\n",
            );
        } else if !approval && i % 7 == 0 {
            y.push_str("    retry: { attempts: \"{{ params.attempts }}\", delay: 2s }\n");
        }
        // The step's kind; most are shell.
        if i % 10 == 3 {
            let _ = writeln!(
                y,
                "    http:\n      url: \"{{{{ vars.health }}}}?from={{{{ steps.{}.outputs.version }}}}\"\n      method: POST\n      headers: {{ Authorization: \"Bearer {{{{ secrets.token }}}}\" }}\n      body: {{ image: \"{{{{ params.image }}}}\", percent: \"{{{{ params.percent }}}}\" }}\n      expect: {{ status: [200, 2xx], json: {{ /status: ok }}, max_latency: 500ms }}",
                id(g)
            );
        } else if i % 50 == 5 {
            y.push_str(
                "    metric:\n      provider: prom\n      query: \"sum(rate(errors{env=\\\"{{ params.environment }}\\\"}[5m]))\"\n      condition: value < 0.01\n      interval: 1m\n      samples: 5\n      failure_limit: 1\n",
            );
        } else if i % 100 == 6 {
            let _ = writeln!(
                y,
                "    flag: {{ provider: flags, name: \"feature_{i}\", value: {{ stage: canary, percent: \"{{{{ params.percent }}}}\" }} }}"
            );
        } else if i % 500 == 7 {
            y.push_str(
                "    approval: { message: \"promote {{ params.image }}?\", approvers: [alice, bob], required: 1, timeout: 1h }\n",
            );
        } else {
            // Reads params and outputs of ancestors: the hub, or the previous group's join.
            let src = match i % 10 {
                0 if i >= 10 => id(i - 2),
                0 => String::new(),
                8 => id(g + 1),
                9 => id(g + 8),
                _ => id(g),
            };
            if src.is_empty() {
                y.push_str("    shell: |\n      echo start {{ params.environment | quote }}\n      echo \"version=1.0.0\" >> \"$RUNBOOK_OUTPUT\"\n");
            } else {
                let _ = writeln!(
                    y,
                    "    shell: |\n      echo deploy {{{{ params.image | quote }}}} to {{{{ vars.base_url }}}} after {{{{ steps.{src}.outputs.version }}}}\n      echo \"version=1.0.{i}\" >> \"$RUNBOOK_OUTPUT\""
                );
            }
        }
        if i % 20 == 2 {
            y.push_str("    rollback:\n      - shell: echo step down {{ step.outputs.version }} to 50%\n      - shell: echo step down to 0%\n        timeout: 1m\n");
        } else if i % 5 == 0 {
            y.push_str("    rollback:\n      shell: echo undo {{ params.image | quote }}\n");
        }
    }
    y.push_str(
        "on_failure:
  - id: notify
    shell: echo failed {{ run.failed_step }}
finally:
  - id: cleanup
    shell: echo done {{ run.status }}
",
    );
    y
}

struct Row {
    steps: usize,
    bytes: usize,
    iters: usize,
    validate: Stats,
    plan: Stats,
    render_bytes: usize,
    validate_peak: usize,
    plan_peak: usize,
    validate_allocs: usize,
    plan_allocs: usize,
}

struct Stats {
    min: Duration,
    median: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    Stats {
        min: v[0],
        median: v[v.len() / 2],
    }
}

/// What `runbook plan` does after validation: params, pre-flight, plan, text.
fn plan_text(rb: &std::sync::Arc<runbook::runbook::Runbook>, text: &str) -> String {
    let params = resolve_params(rb, &[]).expect("defaults cover every param");
    let (problems, plan) =
        runbook::plan::check_and_build(rb, text, &params).expect("renders within its budgets");
    assert!(problems.is_empty());
    render(&plan, Format::Text)
}

fn run(n: usize, iters: usize) -> Row {
    let text = generate(n);
    let mut vt = Vec::new();
    let mut pt = Vec::new();
    for _ in 0..iters {
        let (validated, d) = time(|| validate_text(&text));
        vt.push(d);
        let rb = validated.runbook.unwrap_or_else(|| {
            for d in validated.diagnostics.iter().take(5) {
                eprintln!("{}", d.render("bench.yaml", &text, false));
            }
            panic!("the generated runbook does not validate");
        });
        assert_eq!(rb.steps.len(), n);
        let rb = std::sync::Arc::new(rb);
        let (_, d) = time(|| plan_text(&rb, &text));
        pt.push(d);
    }
    let (validated, validate_peak, validate_allocs) = measure_memory(|| validate_text(&text));
    let rb = std::sync::Arc::new(validated.runbook.expect("valid"));
    let (out, plan_peak, plan_allocs) = measure_memory(|| plan_text(&rb, &text));
    Row {
        steps: n,
        bytes: text.len(),
        iters,
        validate: stats(vt),
        plan: stats(pt),
        render_bytes: out.len(),
        validate_peak,
        plan_peak,
        validate_allocs,
        plan_allocs,
    }
}

fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l["VmHWM:".len()..].trim().to_string())
        })
        .unwrap_or_else(|| "n/a".into())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mib(b: usize) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000]);
    let iters_override: Option<usize> = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok());

    // Warm-up: the template environment is built once per process.
    let _ = validate_text(&generate(10));

    let rows: Vec<Row> = sizes
        .iter()
        .map(|&n| {
            run(
                n,
                iters_override.unwrap_or(if n <= 2_000 { 30 } else { 10 }),
            )
        })
        .collect();

    let header = [
        "steps",
        "YAML",
        "runs",
        "load+validate min / median",
        "plan+render min / median",
        "total (medians)",
        "peak heap: validate",
        "peak heap: plan",
        "allocations: validate / plan",
        "plan text",
    ];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.steps.to_string(),
                mib(r.bytes),
                r.iters.to_string(),
                format!("{} / {}", ms(r.validate.min), ms(r.validate.median)),
                format!("{} / {}", ms(r.plan.min), ms(r.plan.median)),
                ms(r.validate.median + r.plan.median),
                mib(r.validate_peak),
                mib(r.plan_peak),
                format!("{} / {}", r.validate_allocs, r.plan_allocs),
                mib(r.render_bytes),
            ]
        })
        .collect();
    println!();
    println!("validate_plan: generated runbooks, load+validate and plan+render (text)");
    println!();
    print_table(&header, &body);
    println!();
    println!("process peak RSS (VmHWM): {}", vm_hwm());
    println!(
        "peak heap: most heap bytes live at once during the phase, beyond what was live before it"
    );
}

/// A Markdown table with right-aligned, padded columns.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c:>w$}"))
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(header.iter().map(ToString::to_string).collect());
    println!(
        "|{}|",
        widths
            .iter()
            .map(|&w| format!("{}:", "-".repeat(w + 1)))
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in rows {
        line(r.clone());
    }
}
