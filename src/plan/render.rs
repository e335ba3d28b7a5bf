//! Renderings of a [`Plan`]: text for terminals, Markdown for pull-request
//! comments, JSON for tools, Mermaid for pictures. Each reads the same struct.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::mermaid::mermaid;
use super::{Plan, PlannedStep};
use crate::duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Markdown,
    Json,
    Mermaid,
}

pub fn render(plan: &Plan, format: Format) -> String {
    match format {
        Format::Text => text(plan),
        Format::Markdown => markdown(plan),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(plan).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Mermaid => mermaid(plan),
    }
}

fn worst(d: Option<std::time::Duration>) -> String {
    d.map_or_else(|| "unbounded".to_string(), duration::format)
}

fn step_meta(s: &PlannedStep) -> Vec<String> {
    let mut meta = Vec::new();
    if let Some(stage) = &s.stage {
        meta.push(format!("stage {stage}"));
    }
    if let Some(t) = &s.timeout {
        meta.push(format!("timeout {t}"));
    }
    if let Some(r) = &s.retry {
        meta.push(format!("retry {r}"));
    }
    if s.continue_on_failure {
        meta.push("continues on failure".into());
    }
    meta
}

fn when_text(s: &PlannedStep) -> Option<String> {
    let w = s.when.as_ref()?;
    Some(match s.when_value {
        Some(true) => format!("when {w} (true: runs)"),
        Some(false) => format!("when {w} (false: skipped)"),
        None => format!("when {w} (decided at run time)"),
    })
}

fn text(plan: &Plan) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Plan: {}", plan.runbook);
    if let Some(d) = &plan.description {
        let _ = writeln!(o, "  {d}");
    }
    let _ = writeln!(o, "Fingerprint: {}", plan.fingerprint);
    if !plan.params.is_empty() {
        let _ = writeln!(o, "\nParameters:");
        for p in &plan.params {
            let _ = writeln!(o, "  {} = {} ({})", p.name, p.value, p.source);
        }
    }
    let _ = write!(o, "\nConcurrency: {}", plan.concurrency);
    if let Some(l) = &plan.lock {
        let _ = write!(o, "   Lock: {l}");
    }
    let _ = writeln!(o);
    // By id, not a search per id: a search is quadratic in the number of steps.
    let by_id: HashMap<&str, &PlannedStep> =
        plan.steps.iter().map(|s| (s.id.as_str(), s)).collect();
    for (w, ids) in plan.waves.iter().enumerate() {
        let _ = writeln!(
            o,
            "\nWave {}{}",
            w + 1,
            if ids.len() > 1 { " (in parallel)" } else { "" }
        );
        for id in ids {
            if let Some(s) = by_id.get(id.as_str()) {
                text_step(&mut o, s);
            }
        }
    }
    for (title, list) in [("On failure", &plan.on_failure), ("Finally", &plan.finally)] {
        if !list.is_empty() {
            let _ = writeln!(o, "\n{title} (in order)");
            for s in list {
                text_step(&mut o, s);
            }
        }
    }
    if !plan.approvals.is_empty() {
        let _ = writeln!(o, "\nApprovals:");
        for a in &plan.approvals {
            let who = a
                .approvers
                .as_ref()
                .map_or("anyone".into(), |l| l.join(", "));
            let within = a
                .timeout
                .as_ref()
                .map_or(String::new(), |t| format!(" within {t}"));
            let _ = writeln!(o, "  {}: {} of {who}{within}", a.step, a.required);
        }
    }
    if !plan.flags.is_empty() {
        let _ = writeln!(o, "\nFlags changed:");
        for f in &plan.flags {
            let undo = if f.restored_on_failure {
                "restored on failure"
            } else {
                "not restored"
            };
            let _ = writeln!(
                o,
                "  {}: {} = {} in {} ({undo})",
                f.step, f.name, f.value, f.provider
            );
        }
    }
    let _ = writeln!(o, "\nRollback plan:");
    let failing: Vec<&PlannedStep> = plan
        .steps
        .iter()
        .filter(|s| !s.on_failure_unwinds.is_empty())
        .collect();
    if failing.is_empty() {
        let _ = writeln!(
            o,
            "  no step has a rollback; a failure stops the run without undoing anything"
        );
    }
    let parallel = plan.waves.iter().any(|w| w.len() > 1);
    for s in failing {
        let _ = writeln!(
            o,
            "  if {} fails: undo {}{}",
            s.id,
            s.on_failure_unwinds.join(", then "),
            unwinds_more(s, ", then ")
        );
        for t in &s.flags_on_failure {
            let _ = writeln!(o, "    flag {}: {}", t.flag, t.values.join(" -> "));
        }
    }
    if parallel && !plan.unwind_order.is_empty() {
        let _ = writeln!(
            o,
            "  steps of other branches that had started are undone too; every unwind follows this order: {}",
            plan.unwind_order.join(", ")
        );
    }
    let _ = writeln!(
        o,
        "\nWorst case: {} along {}",
        worst(plan.critical_path.worst_case),
        plan.critical_path.steps.join(" -> ")
    );
    o
}

/// The tail of a shortened unwind list: `, then 40 more in unwind order`.
fn unwinds_more(s: &PlannedStep, sep: &str) -> String {
    match s.on_failure_unwinds_more {
        0 => String::new(),
        n => format!("{sep}{n} more in unwind order"),
    }
}

fn text_step(o: &mut String, s: &PlannedStep) {
    let title = s.name.as_ref().map_or(String::new(), |n| format!(" - {n}"));
    let _ = writeln!(o, "  [{}] {}{title}", s.kind, s.id);
    if let Some(w) = when_text(s) {
        let _ = writeln!(o, "      {w}");
    }
    for line in &s.action {
        let _ = writeln!(o, "      {line}");
    }
    let meta = step_meta(s);
    if !meta.is_empty() {
        let _ = writeln!(o, "      {}", meta.join(" | "));
    }
    for (n, line) in s.rollback.iter().enumerate() {
        let label = if n == 0 { "rollback:" } else { "         " };
        let _ = writeln!(o, "      {label} {line}");
    }
}

/// An inline code span for a table cell. Text that itself holds backticks
/// (`query (prometheus `prom`)`) gets a longer fence, as CommonMark asks,
/// so the span does not end early.
fn md_code(s: &str) -> String {
    let text = md_escape(s);
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    if longest == 0 {
        return format!("`{text}`");
    }
    let fence = "`".repeat(longest + 1);
    format!("{fence} {text} {fence}")
}

/// Table text outside code spans: `<state dir>` would otherwise be taken
/// for an HTML tag and vanish from a rendered pull-request comment.
fn md_text(s: &str) -> String {
    md_escape(s).replace('<', "&lt;")
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn markdown(plan: &Plan) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "## Runbook plan: `{}`\n", plan.runbook);
    let _ = writeln!(o, "Plan fingerprint: `{}`\n", plan.fingerprint);
    if let Some(d) = &plan.description {
        let _ = writeln!(o, "{d}\n");
    }
    let gates = plan.steps.iter().filter(|s| s.kind == "metric").count();
    let _ = writeln!(
        o,
        "**{} steps** in {} waves · {} approval(s) · {} flag change(s) · {} metric gate(s) · worst case **{}**\n",
        plan.steps.len(),
        plan.waves.len(),
        plan.approvals.len(),
        plan.flags.len(),
        gates,
        worst(plan.critical_path.worst_case)
    );
    if !plan.params.is_empty() {
        let _ = writeln!(
            o,
            "### Parameters\n\n| name | value | source |\n| --- | --- | --- |"
        );
        for p in &plan.params {
            let _ = writeln!(
                o,
                "| `{}` | {} | {} |",
                p.name,
                md_code(&p.value.to_string()),
                p.source
            );
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(o, "### Steps\n\n| wave | step | kind | stage | does | timeout / retry | rollback |\n| --- | --- | --- | --- | --- | --- | --- |");
    for s in &plan.steps {
        let mut does = s
            .action
            .iter()
            .map(|l| md_code(l))
            .collect::<Vec<_>>()
            .join("<br>");
        if let Some(w) = when_text(s) {
            does = format!("_{}_<br>{does}", md_text(&w));
        }
        let limits = [s.timeout.clone(), s.retry.clone()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("<br>");
        let rollback = s
            .rollback
            .iter()
            .map(|l| md_text(l))
            .collect::<Vec<_>>()
            .join("<br>");
        let _ = writeln!(
            o,
            "| {} | `{}` | {} | {} | {} | {} | {} |",
            s.wave,
            s.id,
            s.kind,
            s.stage.as_deref().unwrap_or(""),
            does,
            limits,
            rollback
        );
    }
    let _ = writeln!(o);
    if !plan.approvals.is_empty() {
        let _ = writeln!(o, "### Approvals\n");
        for a in &plan.approvals {
            let who = a
                .approvers
                .as_ref()
                .map_or("anyone".into(), |l| l.join(", "));
            let within = a
                .timeout
                .as_ref()
                .map_or(String::new(), |t| format!(" within {t}"));
            let _ = writeln!(o, "- `{}`: **{}** of {who}{within}", a.step, a.required);
        }
        let _ = writeln!(o);
    }
    if !plan.flags.is_empty() {
        let _ = writeln!(o, "### Flags touched\n\n| step | flag | value | store | on failure |\n| --- | --- | --- | --- | --- |");
        for f in &plan.flags {
            let undo = if f.restored_on_failure {
                "restored"
            } else {
                "left as is"
            };
            let _ = writeln!(
                o,
                "| `{}` | {} | {} | {} | {undo} |",
                f.step,
                md_code(&f.name),
                md_code(&f.value),
                md_text(&f.provider)
            );
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(o, "### Rollback plan\n");
    if plan.unwind_order.is_empty() {
        let _ = writeln!(
            o,
            "No step has a rollback: a failure stops the run without undoing anything.\n"
        );
    } else {
        let _ = writeln!(
            o,
            "Full unwind order: {}\n",
            plan.unwind_order
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(" → ")
        );
        let _ = writeln!(
            o,
            "<details><summary>What unwinds if a given step fails</summary>\n"
        );
        for s in plan
            .steps
            .iter()
            .filter(|s| !s.on_failure_unwinds.is_empty())
        {
            let _ = writeln!(
                o,
                "- `{}` fails → {}{}",
                s.id,
                s.on_failure_unwinds
                    .iter()
                    .map(|x| format!("`{x}`"))
                    .collect::<Vec<_>>()
                    .join(" → "),
                unwinds_more(s, " → ")
            );
            for t in &s.flags_on_failure {
                let _ = writeln!(
                    o,
                    "  - flag `{}`: {}",
                    t.flag,
                    t.values
                        .iter()
                        .map(|v| format!("`{}`", v.replace('`', "'")))
                        .collect::<Vec<_>>()
                        .join(" → ")
                );
            }
        }
        let _ = writeln!(o, "\n</details>\n");
    }
    let _ = writeln!(o, "### Graph\n\n```mermaid\n{}```\n", mermaid(plan));
    let _ = writeln!(
        o,
        "Worst case **{}** along {}.",
        worst(plan.critical_path.worst_case),
        plan.critical_path
            .steps
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(" → ")
    );
    o
}
