#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // a test fails loudly
//! Child output is read with bounded memory and journaled with a bounded
//! size, whatever a step prints (regressions of the hostile-input issue: 100
//! MB without a newline cost 500 MB of memory and a 200 MB journal).

mod common;

use common::Test;

const RB: &str = "rb.yaml";
const MIB: u64 = 1 << 20;

fn journal_len(out: &common::Output, run: &str) -> u64 {
    let path = out.path().join("st/runs").join(run).join("journal.jsonl");
    std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("no journal at {}: {e}", path.display()))
        .len()
}

fn journal_text(out: &common::Output, run: &str) -> String {
    std::fs::read_to_string(out.path().join("st/runs").join(run).join("journal.jsonl"))
        .expect("read the journal")
}

/// The engine's peak resident memory, in KiB, as a later step read it from
/// `/proc/<engine>/status` (the engine is the shell's parent).
fn peak_kib(out: &common::Output) -> u64 {
    let text =
        std::fs::read_to_string(out.path().join("hwm")).expect("the hwm step wrote its file");
    text.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM figure in {text:?}"))
}

#[test]
fn a_gigabyte_without_a_newline_kept_memory_and_journal_growing() {
    let rb = r#"version: 1
name: t
steps:
  - id: zeros
    shell: head -c 1000000000 /dev/zero
  - id: lines
    shell: seq 1 300000
  - id: hwm
    needs: [zeros, lines]
    shell: grep VmHWM /proc/$PPID/status > hwm
"#;
    // Output goes to /dev/null: what is measured is the engine, not the test.
    let out = Test::new()
        .file(RB, rb)
        .wrapped(&["sh", "-c", r#"exec "$0" "$@" >/dev/null 2>&1"#])
        .args(&["run", RB, "--state-dir", "st", "--run-id", "big"])
        .run()
        .success();
    let peak = peak_kib(&out);
    assert!(peak < 100 * 1024, "the engine's peak RSS was {peak} KiB");
    // Two steps of output, each at most 1 MiB of lines (as JSON: NULs are
    // six bytes each, so allow for escaping) plus 1 MiB of kept stdout.
    let len = journal_len(&out, "big");
    assert!(len < 20 * MIB, "the journal is {len} bytes");
    let text = journal_text(&out, "big");
    assert!(
        text.contains("line cut at 64 KiB"),
        "no cut marker in the journal"
    );
    assert!(
        text.contains("further output is shown but not journaled"),
        "no journal-budget marker"
    );
}

#[test]
fn a_long_line_is_cut_and_the_next_line_still_arrives() {
    let rb = r#"version: 1
name: t
steps:
  - id: long
    shell: |
      head -c 200000 /dev/zero | tr '\0' x
      echo
      echo after-the-long-line
  - id: show
    needs: [long]
    shell: printf '%s' "{{ steps.long.stdout }}" | wc -c > kept
"#;
    let out = Test::new()
        .file(RB, rb)
        .args(&[
            "run",
            RB,
            "--state-dir",
            "st",
            "--run-id",
            "l",
            "--log-format",
            "json",
        ])
        .run()
        .success();
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let long_lines: Vec<&str> = lines
        .iter()
        .filter(|e| e["event"] == "output" && e["step"] == "long")
        .filter_map(|e| e["data"]["line"].as_str())
        .collect();
    assert_eq!(long_lines.len(), 2, "{long_lines:?}");
    assert_eq!(
        long_lines[0],
        format!("{} [line cut at 64 KiB]", "x".repeat(64 * 1024))
    );
    assert_eq!(long_lines[1], "after-the-long-line");
    // steps.long.stdout keeps the cut line and the next one.
    let kept: usize = std::fs::read_to_string(out.path().join("kept"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(kept, 64 * 1024 + 1 + "after-the-long-line".len());
}

#[test]
fn a_runbook_output_file_over_one_mebibyte_fails_the_step() {
    let rb = r#"version: 1
name: t
steps:
  - id: big
    shell: head -c 2000000 /dev/zero | tr '\0' a | sed 's/^/k=/' >> "$RUNBOOK_OUTPUT"
"#;
    Test::new()
        .file(RB, rb)
        .args(&["run", RB, "--state-dir", "st"])
        .run()
        .code(1)
        .stdout_contains("more than 1 MiB to $RUNBOOK_OUTPUT");
}
