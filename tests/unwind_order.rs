#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! The one unwind order, through the real binary: `plan --format json`
//! shows it (`unwind_order`, and per step `on_failure_unwinds`), and `run`
//! follows it. Random DAGs (a seeded PRNG, so every run of the test sees the
//! same ones) of shell steps that append their id to `log`, some with a
//! rollback appending `undo-<id>`, one of them (or none) failing.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use common::{plan_json, report, Test};
use serde_json::Value as Json;

const RB: &str = "rb.yaml";

/// A small LCG (Knuth's MMIX constants): deterministic, no crate.
struct Rng(u64);

impl Rng {
    fn below(&mut self, m: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        usize::try_from(self.0 >> 33).expect("31 bits fit") % m
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

struct Dag {
    yaml: String,
    params: Vec<String>,
    /// Needs of each step (indices of earlier steps).
    needs: Vec<Vec<usize>>,
    rollback: Vec<bool>,
    /// The step whose script exits 1, if any.
    failing: Option<usize>,
}

fn id(i: usize) -> String {
    format!("s{i}")
}

fn random_dag(seed: u64) -> Dag {
    let mut r = Rng(seed);
    let n = 3 + r.below(7);
    let concurrency = 1 + r.below(4);
    let flags = 3;
    let values: Vec<bool> = (0..flags).map(|_| r.chance(50)).collect();
    let failing = r.chance(80).then(|| r.below(n));
    let mut y = format!("version: 1\nname: dag-{seed}\nconcurrency: {concurrency}\nparams:\n");
    for f in 0..flags {
        let _ = writeln!(y, "  b{f}: {{ type: boolean, default: false }}");
    }
    y.push_str("steps:\n");
    let mut needs = Vec::new();
    let mut rollback = Vec::new();
    for i in 0..n {
        // Parallel branches: often no needs, or one or two earlier steps.
        let mut ns: BTreeSet<usize> = BTreeSet::new();
        if i > 0 {
            for _ in 0..r.below(3) {
                ns.insert(r.below(i));
            }
        }
        let ns: Vec<usize> = ns.into_iter().collect();
        let list: Vec<String> = ns.iter().map(|&j| id(j)).collect();
        let _ = writeln!(y, "  - id: {}\n    needs: [{}]", id(i), list.join(", "));
        if r.chance(25) {
            let f = r.below(flags);
            let neg = if r.chance(50) { "not " } else { "" };
            let _ = writeln!(y, "    when: \"{neg}params.b{f}\"");
        }
        let sleep = r.below(12) * 10;
        let fail = if failing == Some(i) { "; exit 1" } else { "" };
        let _ = writeln!(
            y,
            "    shell: echo {} >> log; sleep 0.{sleep:03}{fail}",
            id(i)
        );
        let rb = r.chance(60);
        if rb {
            let _ = writeln!(
                y,
                "    rollback: {{ shell: \"echo undo-{} >> log\" }}",
                id(i)
            );
        }
        needs.push(ns);
        rollback.push(rb);
    }
    Dag {
        yaml: y,
        params: values
            .iter()
            .enumerate()
            .map(|(f, v)| format!("b{f}={v}"))
            .collect(),
        needs,
        rollback,
        failing,
    }
}

/// Whether `a` is an ancestor of `b` (through `needs`).
fn is_ancestor(needs: &[Vec<usize>], a: usize, b: usize) -> bool {
    let mut stack = needs[b].clone();
    let mut seen = BTreeSet::new();
    while let Some(x) = stack.pop() {
        if x == a {
            return true;
        }
        if seen.insert(x) {
            stack.extend(needs[x].iter().copied());
        }
    }
    false
}

fn strings(v: &Json) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

fn is_subsequence(small: &[String], big: &[String]) -> bool {
    let mut it = big.iter();
    small.iter().all(|s| it.any(|b| b == s))
}

/// What the plan says about the graph: `unwind_order` is every step with a
/// rollback, dependents before their ancestors; each step's
/// `on_failure_unwinds` is itself (if it has a rollback) then its ancestors
/// with rollbacks, in unwind order; waves respect needs.
fn check_plan(dag: &Dag, plan: &Json, ctx: &str) {
    let n = dag.needs.len();
    let unwind = strings(&plan["unwind_order"]);
    let with_rollback: BTreeSet<String> = (0..n).filter(|&i| dag.rollback[i]).map(id).collect();
    assert_eq!(
        unwind.iter().cloned().collect::<BTreeSet<_>>(),
        with_rollback,
        "{ctx}: unwind_order is not the steps with rollbacks"
    );
    assert_eq!(unwind.len(), with_rollback.len(), "{ctx}: duplicates");
    let pos: HashMap<&str, usize> = unwind
        .iter()
        .enumerate()
        .map(|(p, s)| (s.as_str(), p))
        .collect();
    for a in 0..n {
        for b in 0..n {
            if dag.rollback[a] && dag.rollback[b] && is_ancestor(&dag.needs, a, b) {
                assert!(
                    pos[id(b).as_str()] < pos[id(a).as_str()],
                    "{ctx}: {} needs {} but is undone after it: {unwind:?}",
                    id(b),
                    id(a)
                );
            }
        }
    }
    let steps = plan["steps"].as_array().expect("steps");
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s["id"], id(i).as_str());
        let want: Vec<String> = unwind
            .iter()
            .filter(|u| {
                let j: usize = u[1..].parse().expect("sN");
                j == i || is_ancestor(&dag.needs, j, i)
            })
            .cloned()
            .collect();
        // Itself first: no ancestor comes before it in unwind order. Steps
        // the params skip may be left out (see
        // `on_failure_unwinds_listed_steps_the_params_skip`); no other.
        let listed = strings(&s["on_failure_unwinds"]);
        assert!(
            is_subsequence(&listed, &want),
            "{ctx}: on_failure_unwinds of {}: {listed:?} is not within {want:?}",
            id(i)
        );
        let skipped = |u: &String| common::step(plan, u)["when_value"] == false;
        let live = |l: &[String]| {
            l.iter()
                .filter(|u| !skipped(u))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            live(&listed),
            live(&want),
            "{ctx}: on_failure_unwinds of {}",
            id(i)
        );
        assert_eq!(s["on_failure_unwinds_more"], 0, "{ctx}");
        let needs: Vec<String> = dag.needs[i].iter().map(|&j| id(j)).collect();
        assert_eq!(strings(&s["needs"]), needs, "{ctx}: needs of {}", id(i));
    }
    check_waves(plan, ctx);
}

/// Every step is in exactly one wave, after the waves of all it needs.
fn check_waves(plan: &Json, ctx: &str) {
    let mut wave_of: HashMap<String, usize> = HashMap::new();
    for (w, wave) in plan["waves"].as_array().expect("waves").iter().enumerate() {
        for s in strings(wave) {
            assert!(
                wave_of.insert(s.clone(), w).is_none(),
                "{ctx}: {s} in two waves"
            );
        }
    }
    let steps = plan["steps"].as_array().expect("steps");
    assert_eq!(wave_of.len(), steps.len(), "{ctx}: waves miss steps");
    for s in steps {
        let me = s["id"].as_str().expect("id");
        assert_eq!(
            s["wave"].as_u64(),
            Some(wave_of[me] as u64 + 1),
            "{ctx}: {me}'s wave"
        );
        for need in strings(&s["needs"]) {
            assert!(
                wave_of[&need] < wave_of[me],
                "{ctx}: {me} is in a wave not after {need}"
            );
        }
    }
    // A dependent comes before its ancestor in unwind_order.
    let unwind = strings(&plan["unwind_order"]);
    let pos: HashMap<&str, usize> = unwind
        .iter()
        .enumerate()
        .map(|(p, s)| (s.as_str(), p))
        .collect();
    for s in steps {
        let me = s["id"].as_str().expect("id");
        let Some(&mine) = pos.get(me) else { continue };
        for need in strings(&s["needs"]) {
            if let Some(&theirs) = pos.get(need.as_str()) {
                assert!(
                    mine < theirs,
                    "{ctx}: {me} needs {need} but is undone after it"
                );
            }
        }
    }
}

fn check_run(dag: &Dag, seed: u64) {
    let ctx = format!("seed {seed}\n{}\nparams {:?}", dag.yaml, dag.params);
    let params: Vec<&str> = dag.params.iter().map(String::as_str).collect();
    let plan = plan_json(Test::new().file(RB, &dag.yaml), RB, &params);
    check_plan(dag, &plan, &ctx);
    let unwind = strings(&plan["unwind_order"]);

    let mut args = vec!["run", RB, "--state-dir", "st", "--report", "report.json"];
    for p in &params {
        args.extend(["--param", p]);
    }
    let out = Test::new().file(RB, &dag.yaml).args(&args).run();
    let rep = report(&out);
    let status = |i: usize| -> String {
        common::step(&rep, &id(i))["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let n = dag.needs.len();
    let log: Vec<String> = std::fs::read_to_string(out.path().join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let undone: Vec<String> = log
        .iter()
        .filter_map(|l| l.strip_prefix("undo-"))
        .map(str::to_string)
        .collect();
    let ctx = format!("{ctx}\nlog {log:?}\nstdout:\n{}", out.stdout);

    // Which step failed: the failing one, unless `when` skipped it.
    let failed: Option<usize> = dag.failing.filter(|&f| status(f) != "skipped");
    for i in 0..n {
        let s = status(i);
        let ran = log.contains(&id(i));
        match s.as_str() {
            "skipped" | "not_started" => {
                assert!(!ran, "{ctx}\n{} ran but is {s}", id(i));
                assert!(
                    !undone.contains(&id(i)),
                    "{ctx}\n{} is {s} but was undone",
                    id(i)
                );
            }
            "succeeded" => assert!(ran, "{ctx}\n{} succeeded without running", id(i)),
            "failed" => assert_eq!(Some(i), failed, "{ctx}\n{} failed", id(i)),
            "cancelled" => assert!(failed.is_some(), "{ctx}\n{} cancelled", id(i)),
            other => panic!("{ctx}\n{} has status {other}", id(i)),
        }
    }
    let started = |i: usize| matches!(status(i).as_str(), "succeeded" | "failed" | "cancelled");

    match failed {
        None => {
            assert_eq!(out.code, Some(0), "{ctx}\nno step failed");
            assert_eq!(rep["status"], "succeeded", "{ctx}");
            assert!(undone.is_empty(), "{ctx}\nundone without a failure");
            for i in 0..n {
                assert!(
                    matches!(status(i).as_str(), "succeeded" | "skipped"),
                    "{ctx}"
                );
            }
        }
        Some(f) => {
            assert_eq!(status(f), "failed", "{ctx}");
            assert_eq!(out.code, Some(1), "{ctx}\nrolled back");
            assert_eq!(rep["status"], "rolled_back", "{ctx}");
            let fid = id(f);
            let mut allowed: Vec<String> = Vec::new();
            if dag.rollback[f] {
                allowed.push(fid.clone());
            }
            allowed.extend(unwind.iter().filter(|u| **u != fid).cloned());
            assert!(
                is_subsequence(&undone, &allowed),
                "{ctx}\nundo order {undone:?} is not a subsequence of {allowed:?}"
            );
            if dag.rollback[f] {
                assert_eq!(undone.first(), Some(&fid), "{ctx}\nthe failed step first");
            }
            let planned = strings(&common::step(&plan, &fid)["on_failure_unwinds"]);
            for u in &planned {
                let j: usize = u[1..].parse().expect("sN");
                if status(j) == "skipped" {
                    continue;
                }
                assert!(
                    undone.contains(u),
                    "{ctx}\n{u} is in on_failure_unwinds of {fid} but was not undone"
                );
            }
            // Exactly: every started step with a rollback, in the plan's order.
            let want: Vec<String> = allowed
                .iter()
                .filter(|u| started(u[1..].parse().expect("sN")))
                .cloned()
                .collect();
            assert_eq!(undone, want, "{ctx}\nundo order");
            // Nothing depending on the failed step started.
            for i in 0..n {
                if is_ancestor(&dag.needs, f, i) {
                    assert_eq!(status(i), "not_started", "{ctx}\n{} needs {fid}", id(i));
                }
            }
        }
    }
}

#[test]
fn random_dags_unwind_in_the_plans_order() {
    let mut failures = 0;
    for seed in 1..=30u64 {
        let dag = random_dag(seed * 7919);
        failures += usize::from(dag.failing.is_some());
        check_run(&dag, seed * 7919);
    }
    assert!(
        failures >= 15,
        "the generator should mostly pick a failing step"
    );
}

/// The runbooks and examples the repository ships, with the params the
/// required ones need.
const SHIPPED: &[(&str, &[&str])] = &[
    (
        "runbooks/db-migration.yaml",
        &["database_url=postgresql://u@127.0.0.1:5432/db"],
    ),
    ("runbooks/emergency-disable.yaml", &["reason=test"]),
    ("runbooks/k8s-canary.yaml", &["image=app:1.2.3"]),
    ("runbooks/production-rollout.yaml", &["revision=v1.2.3"]),
    ("runbooks/rollout-guard.yaml", &[]),
    ("runbooks/staging-deploy.yaml", &[]),
    ("examples/hello.yaml", &[]),
    ("examples/demo/rollout.yaml", &[]),
];

#[test]
fn shipped_runbooks_plan_with_waves_and_unwind_order_that_agree_with_needs() {
    // Every shipped runbook is in the list (a new one must be added).
    let mut shipped: Vec<String> = Vec::new();
    for dir in ["runbooks", "examples", "examples/demo"] {
        for e in std::fs::read_dir(common::repo_root().join(dir)).expect("read dir") {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            if name.ends_with(".yaml") {
                shipped.push(format!("{dir}/{name}"));
            }
        }
    }
    shipped.sort();
    let mut listed: Vec<String> = SHIPPED.iter().map(|(f, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(
        shipped, listed,
        "SHIPPED is not the list of shipped runbooks"
    );

    for (file, params) in SHIPPED {
        let plan = plan_json(Test::new().shipped(file), file, params);
        check_waves(&plan, file);
        let unwind = strings(&plan["unwind_order"]);
        for s in plan["steps"].as_array().expect("steps") {
            let listed = strings(&s["on_failure_unwinds"]);
            assert!(
                is_subsequence(&listed, &unwind),
                "{file}: on_failure_unwinds of {} is not in unwind order",
                s["id"]
            );
            let has_rollback = !s["rollback"].as_array().is_none_or(Vec::is_empty);
            assert_eq!(
                listed.first().map(String::as_str) == s["id"].as_str(),
                has_rollback,
                "{file}: {} with a rollback is first in its own on_failure_unwinds",
                s["id"]
            );
        }
    }
}
/// The plan shows a rollback as planned only where it can run: a step that
/// the given params skip (`when` false) never runs, so it is never undone.
/// Found by this file: `on_failure_unwinds` listed such a step ("if b fails:
/// undo b, then a" under "a ... (false: skipped)").
#[test]
fn on_failure_unwinds_listed_steps_the_params_skip() {
    let yaml = "version: 1
name: skipped-ancestor
params:
  migrate: { type: boolean, default: false }
steps:
  - id: a
    when: \"params.migrate\"
    shell: echo a >> log
    rollback: { shell: echo undo-a >> log }
  - id: b
    shell: echo b >> log; exit 1
    rollback: { shell: echo undo-b >> log }
";
    let plan = plan_json(Test::new().file(RB, yaml), RB, &[]);
    assert_eq!(common::step(&plan, "a")["when_value"], false);
    let out = Test::new()
        .file(RB, yaml)
        .args(&["run", RB, "--state-dir", "st"])
        .run()
        .code(1);
    let log = std::fs::read_to_string(out.path().join("log")).unwrap_or_default();
    assert_eq!(log, "b\nundo-b\n");
    assert_eq!(
        strings(&common::step(&plan, "b")["on_failure_unwinds"]),
        ["b"],
        "the plan promises a rollback of a step that will be skipped"
    );
}
