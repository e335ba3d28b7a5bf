#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! `plan --format mermaid` (and the graph in `--format markdown`) through
//! the real Mermaid parser: every shipped runbook, and a fixture whose step
//! ids, names and stages are Mermaid syntax (tests/fixtures/mermaid_nasty.yaml),
//! must parse, and the fixture must keep the structure it was meant to have:
//! generated node ids, the edges of its graph, labels that read as written
//! and carry no markup in.
//!
//! The parser is the `mermaid` npm package under node, with jsdom for the
//! DOM it wants (tests/mermaid/check.mjs; the choice is in docs/decisions.md).
//! scripts/test.sh installs it into tests/mermaid/node_modules (`npm ci`).
//! Without node or those packages these tests FAIL: they never skip. One
//! node process checks every diagram of the file.
//!
//! The checker is shown able to fail: diagrams broken the ways the old
//! renderer broke them (a raw `end` id, an unescaped quote) are rejected.

mod common;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::{repo_root, Test};

const NASTY: &str = "tests/fixtures/mermaid_nasty.yaml";

/// What Mermaid made of one diagram (see tests/mermaid/check.mjs).
#[derive(Debug, serde::Deserialize)]
struct Verdict {
    name: String,
    ok: bool,
    error: Option<String>,
    graph: Option<Graph>,
}

#[derive(Debug, serde::Deserialize)]
struct Graph {
    nodes: Vec<Node>,
    subgraphs: Vec<Subgraph>,
    edges: Vec<Edge>,
}

#[derive(Debug, serde::Deserialize)]
struct Node {
    id: String,
    text: String,
    tags: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
struct Subgraph {
    id: String,
    title: String,
    tags: Vec<String>,
    nodes: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
struct Edge {
    from: String,
    to: String,
    label: String,
    stroke: String,
}

/// Diagrams that are not valid Mermaid: (what is wrong, the diagram).
const BROKEN: &[(&str, &str)] = &[
    (
        "raw step id `end`, as the old renderer wrote it",
        "graph TD\n  end[\"end<br/><small>shell</small>\"]\n  graph[\"graph<br/><small>shell</small>\"]\n  end --> graph\n",
    ),
    (
        "a quote inside a quoted label, as the old renderer let through",
        "graph TD\n  a[\"say \"hi\" to all\"]\n",
    ),
    (
        "a raw `subgraph` id",
        "graph TD\n  subgraph[\"subgraph<br/><small>shell</small>\"]\n  a --> subgraph\n",
    ),
    (
        "a subgraph that is never closed",
        "flowchart TD\n  subgraph t0[\"stage\"]\n    s0[\"a\"]\n",
    ),
];

/// Every runbook the repository ships: runbooks/*.yaml and examples/**/*.yaml.
fn shipped_runbooks() -> Vec<String> {
    fn walk(dir: &Path, recurse: bool, out: &mut Vec<PathBuf>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                if recurse {
                    walk(&path, recurse, out);
                }
            } else if path.extension().is_some_and(|x| x == "yaml") {
                out.push(path);
            }
        }
    }
    let root = repo_root();
    let mut paths = Vec::new();
    walk(&root.join("runbooks"), false, &mut paths);
    walk(&root.join("examples"), true, &mut paths);
    let mut files: Vec<String> = paths
        .iter()
        .map(|p| {
            p.strip_prefix(&root)
                .expect("under the repository")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    files
}

/// `runbook plan FILE --format FORMAT`, giving each required param a
/// placeholder (the shipped ones are strings), as the CI example does.
fn plan(file: &str, format: &str) -> String {
    let mut params: Vec<String> = Vec::new();
    loop {
        let mut args = vec!["plan", file, "--format", format];
        for p in &params {
            args.extend(["--param", p]);
        }
        let out = Test::new().shipped(file).args(&args).run();
        if out.code == Some(0) {
            return out.stdout;
        }
        let required: Vec<String> = out
            .stderr
            .lines()
            .filter_map(|l| {
                l.split_once("is required: pass --param ")?
                    .1
                    .split_once('=')
            })
            .map(|(name, _)| format!("{name}=preview"))
            .filter(|p| !params.contains(p))
            .collect();
        assert!(
            !required.is_empty(),
            "`runbook {}` failed:\n{}",
            args.join(" "),
            out.stderr
        );
        params.extend(required);
    }
}

/// The diagram inside a Markdown plan's "### Graph" section.
fn graph_of_markdown(md: &str) -> String {
    let (_, rest) = md
        .split_once("### Graph\n\n```mermaid\n")
        .unwrap_or_else(|| panic!("no mermaid block under ### Graph in:\n{md}"));
    let (diagram, _) = rest.split_once("```").expect("the mermaid block closes");
    diagram.to_string()
}

/// The tests/mermaid directory, with its packages installed.
fn checker_dir() -> PathBuf {
    let dir = repo_root().join("tests/mermaid");
    for package in ["mermaid", "jsdom"] {
        let installed = dir.join("node_modules").join(package).join("package.json");
        assert!(
            installed.is_file(),
            "{} is missing: run scripts/test.sh, or `npm ci` in {}",
            installed.display(),
            dir.display()
        );
    }
    dir
}

/// Runs every diagram through Mermaid in one node process.
fn check(diagrams: &[(String, String)]) -> Vec<Verdict> {
    let input: Vec<serde_json::Value> = diagrams
        .iter()
        .map(|(name, text)| serde_json::json!({ "name": name, "text": text }))
        .collect();
    let dir = checker_dir();
    let mut child = Command::new("node")
        .arg("check.mjs")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node (is Node.js installed?): {e}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .expect("write the diagrams to node");
    let out = child.wait_with_output().expect("wait for node");
    assert!(
        out.status.success(),
        "the Mermaid checker failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<Verdict> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the checker's output is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(verdicts.len(), diagrams.len(), "one verdict per diagram");
    verdicts
}

/// The diagrams of every test in this file, checked once, with the
/// renderer's text of each.
fn verdicts() -> &'static [(String, Verdict)] {
    static VERDICTS: OnceLock<Vec<(String, Verdict)>> = OnceLock::new();
    VERDICTS.get_or_init(|| {
        let mut diagrams = Vec::new();
        let mut files = shipped_runbooks();
        files.extend(["tests/fixtures/rollout.yaml".to_string(), NASTY.to_string()]);
        for file in &files {
            diagrams.push((format!("{file} mermaid"), plan(file, "mermaid")));
            diagrams.push((
                format!("{file} markdown"),
                graph_of_markdown(&plan(file, "markdown")),
            ));
        }
        let nasty = plan(NASTY, "mermaid");
        diagrams.push((
            "broken: the nasty fixture's diagram with its quotes unescaped".into(),
            nasty.replace("#quot;", "\""),
        ));
        for (what, text) in BROKEN {
            diagrams.push((format!("broken: {what}"), (*text).to_string()));
        }
        let verdicts = check(&diagrams);
        diagrams
            .into_iter()
            .zip(verdicts)
            .map(|((name, text), v)| {
                assert_eq!(v.name, name, "verdicts come back in order");
                (text, v)
            })
            .collect()
    })
}

fn verdict(name: &str) -> (&'static str, &'static Verdict) {
    verdicts()
        .iter()
        .find(|(_, v)| v.name == name)
        .map(|(text, v)| (text.as_str(), v))
        .unwrap_or_else(|| panic!("no diagram named {name:?}"))
}

#[test]
fn every_shipped_runbook_renders_a_diagram_mermaid_parses() {
    let shipped = shipped_runbooks();
    assert!(
        shipped.len() >= 8,
        "found too few shipped runbooks: {shipped:?}"
    );
    assert!(shipped.iter().any(|f| f.starts_with("examples/demo/")));
    let mut failures = Vec::new();
    let mut checked = 0;
    for (text, v) in verdicts()
        .iter()
        .filter(|(_, v)| !v.name.starts_with("broken:"))
    {
        checked += 1;
        if !v.ok {
            failures.push(format!(
                "{}: {}\n{text}",
                v.name,
                v.error.as_deref().unwrap_or("")
            ));
        }
    }
    assert_eq!(checked, 2 * (shipped.len() + 2));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_checker_rejects_broken_diagrams() {
    let broken: Vec<&(String, Verdict)> = verdicts()
        .iter()
        .filter(|(_, v)| v.name.starts_with("broken:"))
        .collect();
    assert_eq!(broken.len(), BROKEN.len() + 1);
    for (text, v) in broken {
        assert!(!v.ok, "Mermaid accepted {}:\n{text}", v.name);
        let error = v.error.as_deref().unwrap_or("");
        assert!(error.contains("Parse error"), "{}: {error}", v.name);
    }
}

/// The nasty fixture's steps: (step id, name as the runbook writes it, kind, node id).
const NASTY_STEPS: &[(&str, Option<&str>, &str, &str)] = &[
    (
        "end",
        Some("The \"end\"; of it --> all #35; &amp; <script>alert(1)</script>"),
        "shell",
        "s0",
    ),
    ("graph", Some("graph TD; A-->B"), "shell", "s1"),
    (
        "o",
        Some("o--o x--x %%{init: {'theme':'dark'}}%%"),
        "shell",
        "s2",
    ),
    (
        "x1",
        Some("click x1 call alert() | style x1 fill:#f00"),
        "shell",
        "s3",
    ),
    (
        "subgraph",
        Some("ünïcödé ✓ 日本語 🚀 ]] )) }} :::"),
        "shell",
        "s4",
    ),
    (
        "click",
        Some("line one line two ::warning::x"),
        "shell",
        "s5",
    ),
    ("style", Some("classDef style fill:#f00;"), "shell", "s6"),
    ("class", None, "approval", "s7"),
    ("default", Some("on failure: \"page\" <i>"), "shell", "f0"),
    ("direction", None, "shell", "f1"),
    ("flowchart", Some("finally --> end"), "shell", "z0"),
    ("subgraph_end", None, "shell", "z1"),
];

#[test]
fn nasty_ids_and_labels_keep_their_structure() {
    let (text, v) = verdict(&format!("{NASTY} mermaid"));
    assert!(v.ok, "{:?}\n{text}", v.error);
    let graph = v.graph.as_ref().expect("a flowchart's structure");

    // Every label reads as the runbook wrote it, and holds no markup but ours.
    for (id, name, kind, node) in NASTY_STEPS {
        let n = graph
            .nodes
            .iter()
            .find(|n| n.id == *node)
            .unwrap_or_else(|| panic!("no node {node} for step {id}:\n{text}"));
        let want = match name {
            Some(name) => format!("{id}\n{name}\n{kind}"),
            None => format!("{id}\n{kind}"),
        };
        assert_eq!(n.text, want, "label of {node}");
        let tags: BTreeSet<&str> = n.tags.iter().map(String::as_str).collect();
        assert!(
            tags.is_subset(&BTreeSet::from(["br", "small"])),
            "{node} carries {tags:?}"
        );
    }
    let ids: BTreeSet<&str> = graph.nodes.iter().map(|n| n.id.as_str()).collect();
    let mut want: BTreeSet<&str> = NASTY_STEPS.iter().map(|s| s.3).collect();
    // The rollback nodes, and the groups that edges join.
    want.extend(["r0", "r2", "main", "on_failure", "finally"]);
    assert_eq!(ids, want, "node ids:\n{text}");

    let subgraphs: Vec<(&str, &str, Vec<&str>)> = graph
        .subgraphs
        .iter()
        .map(|s| {
            assert!(s.tags.is_empty(), "subgraph {} carries {:?}", s.id, s.tags);
            (
                s.id.as_str(),
                s.title.as_str(),
                s.nodes.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        subgraphs,
        [
            (
                "t0",
                "stage \"one\" #1 <b>bold</b> `code`",
                vec!["s0", "r0", "s1"]
            ),
            ("t1", "end", vec!["s2", "r2"]),
            ("t2", "subgraph", vec!["s3"]),
            ("t3", "a-b.c", vec!["s6"]),
            (
                "main",
                "steps",
                vec!["s4", "s5", "s7", "t0", "t1", "t2", "t3"]
            ),
            ("on_failure", "on failure", vec!["f0", "f1"]),
            ("finally", "finally", vec!["z0", "z1"]),
        ]
    );

    let edges: Vec<(&str, &str, &str, &str)> = graph
        .edges
        .iter()
        .map(|e| {
            (
                e.from.as_str(),
                e.to.as_str(),
                e.label.as_str(),
                e.stroke.as_str(),
            )
        })
        .collect();
    assert_eq!(
        edges,
        [
            ("s0", "s1", "", "normal"),
            ("s1", "s2", "", "normal"),
            ("s2", "s3", "", "normal"),
            ("s3", "s4", "", "normal"),
            ("s2", "s4", "", "normal"),
            ("s4", "s5", "", "normal"),
            ("s5", "s6", "", "normal"),
            ("s6", "s7", "", "normal"),
            ("s0", "r0", "rollback", "dotted"),
            ("s2", "r2", "rollback", "dotted"),
            ("f0", "f1", "", "normal"),
            ("z0", "z1", "", "normal"),
            ("main", "on_failure", "a step fails", "dotted"),
            ("main", "finally", "at the end", "normal"),
            ("on_failure", "finally", "", "normal"),
        ]
    );
}

#[test]
fn the_markdown_graph_is_the_mermaid_format() {
    for file in ["examples/hello.yaml", NASTY] {
        let (mermaid, _) = verdict(&format!("{file} mermaid"));
        let (markdown, _) = verdict(&format!("{file} markdown"));
        assert_eq!(markdown, mermaid, "{file}");
    }
}
