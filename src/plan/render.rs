//! Renderings of a [`Plan`]: text for terminals, Markdown for pull-request
//! comments, JSON for tools, Mermaid for pictures. Each reads the same struct.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::mermaid::mermaid;
use super::{Plan, PlannedApproval, PlannedStep, TimeSpan};

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

/// A worst case as text: `unbounded` when nothing bounds it.
pub(super) fn worst(d: Option<&TimeSpan>) -> String {
    d.map_or_else(|| "unbounded".to_string(), |t| t.text.clone())
}

fn step_meta(s: &PlannedStep) -> Vec<String> {
    let mut meta = Vec::new();
    if let Some(stage) = &s.stage {
        meta.push(format!("stage {stage}"));
    }
    if let Some(t) = &s.timeout {
        meta.push(format!("timeout {}", t.text));
    }
    if let Some(r) = &s.retry {
        meta.push(format!("retry {}", r.text));
    }
    if s.continue_on_failure {
        meta.push("continues on failure".into());
    }
    meta
}

fn when_text(s: &PlannedStep) -> Option<String> {
    let w = s.when.as_ref()?;
    Some(match s.when_value {
        _ if !s.when_not_given.is_empty() => format!(
            "when {w} (depends on {}, not given: decided at run time)",
            s.when_not_given
                .iter()
                .map(|p| format!("params.{p}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(true) => format!("when {w} (true: runs)"),
        Some(false) => format!("when {w} (false: skipped)"),
        None => format!("when {w} (decided at run time)"),
    })
}

fn not_given_line(plan: &Plan) -> Option<String> {
    (!plan.not_given.is_empty()).then(|| {
        plan.not_given
            .iter()
            .map(|p| format!("{p} (shown as <params.{p}>)"))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

fn approval_who(a: &PlannedApproval) -> String {
    a.approvers
        .as_ref()
        .map_or("anyone".into(), |l| l.join(", "))
}

fn durations(plan: &Plan) -> String {
    format!(
        "typical {} (gate windows; commands and waits for people not counted), worst case {}",
        worst(plan.critical_path.typical.as_ref()),
        worst(plan.critical_path.worst_case.as_ref())
    )
}

fn text(plan: &Plan) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Plan: {}", plan.runbook);
    if let Some(d) = &plan.description {
        let _ = writeln!(o, "  {d}");
    }
    let _ = writeln!(o, "Fingerprint: {}", plan.fingerprint);
    if let Some(n) = not_given_line(plan) {
        let _ = writeln!(o, "Not given: {n}");
    }
    if !plan.params.is_empty() {
        let _ = writeln!(o, "\nParameters:");
        for p in &plan.params {
            let _ = writeln!(
                o,
                "  {} = {} ({})",
                p.name,
                p.value,
                p.source.replace('_', " ")
            );
        }
    }
    let _ = write!(o, "\nConcurrency: {}", plan.concurrency);
    match &plan.lock {
        Some(l) => {
            let _ = write!(o, "   Lock: {l}");
            if let Some(w) = &plan.lock_wait {
                let _ = write!(o, " (waits up to {})", w.text);
            }
        }
        None => {
            let _ = write!(o, "   Lock: none");
        }
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
        let how = if plan.identity == "signed" {
            "proven by SSH signatures against allowed_signers"
        } else {
            "names as given with --as, not verified"
        };
        let _ = writeln!(o, "\nApprovals (identities {}: {how}):", plan.identity);
        for a in &plan.approvals {
            let within = a
                .timeout
                .as_ref()
                .map_or(String::new(), |t| format!(" within {}", t.text));
            let own = if a.allow_self_approval {
                "; the starter may approve"
            } else {
                ""
            };
            let _ = writeln!(
                o,
                "  {}: {} of {}{within}{own}",
                a.step,
                a.required.text,
                approval_who(a)
            );
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
                f.step,
                f.name,
                json_text(&f.value),
                f.provider
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
        "\nDuration: {} along {}",
        durations(plan),
        plan.critical_path.steps.join(" -> ")
    );
    o
}

/// A flag value as text: a string as is, anything else as JSON.
fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        j => j.to_string(),
    }
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
    if let Some(g) = &s.gate {
        if g.condition_rendered != g.condition {
            let _ = writeln!(o, "      threshold: {}", g.condition_rendered);
        }
        if let (Some(f), Some(r)) = (&g.failure_condition, &g.failure_condition_rendered) {
            if f != r {
                let _ = writeln!(o, "      failure threshold: {r}");
            }
        }
    }
    let meta = step_meta(s);
    if !meta.is_empty() {
        let _ = writeln!(o, "      {}", meta.join(" | "));
    }
    for (n, line) in s.rollback.iter().flat_map(|r| &r.does).enumerate() {
        let label = if n == 0 { "rollback:" } else { "         " };
        let _ = writeln!(o, "      {label} {line}");
    }
}

/// An inline code span for a table cell. Text that itself holds backticks
/// (`query (prometheus `prom`)`) gets a longer fence, as CommonMark asks,
/// so the span does not end early.
pub(super) fn md_code(s: &str) -> String {
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

/// Text outside code spans: `<state dir>` would otherwise be taken for an
/// HTML tag and vanish from a rendered pull-request comment, and `*`, `_`,
/// `[` would turn into emphasis and links.
pub(super) fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let chars: Vec<char> = s.chars().collect();
    let rest_starts = |chars: &[char], i: usize, what: &str| {
        what.chars()
            .enumerate()
            .all(|(k, w)| chars.get(i + 1 + k) == Some(&w))
    };
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            '|' => out.push_str("\\|"),
            '*' | '_' | '[' | ']' | '#' | '~' | '\\' | '`' => {
                out.push('\\');
                out.push(c);
            }
            // A zero-width space stops GitHub from turning `@name` into a
            // mention and `www.`/`https://` into a link.
            '@' => out.push_str("@\u{200B}"),
            ':' if rest_starts(&chars, i, "//") => out.push_str(":\u{200B}"),
            '.' if out.ends_with("www") => out.push_str("\u{200B}."),
            c => out.push(c),
        }
    }
    out
}

/// What a table cell cannot hold as is, inside a code span too: `|` and line breaks.
fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn md_list(ids: &[String]) -> String {
    ids.iter()
        .map(|s| md_code(s))
        .collect::<Vec<_>>()
        .join(" → ")
}

fn markdown(plan: &Plan) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "## Runbook plan: {}\n", md_code(&plan.runbook));
    if let Some(d) = &plan.description {
        let _ = writeln!(o, "{}\n", md_text(d));
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
        worst(plan.critical_path.worst_case.as_ref())
    );
    let _ = writeln!(o, "| | |\n| --- | --- |");
    let _ = writeln!(o, "| Plan fingerprint | {} |", md_code(&plan.fingerprint));
    if !plan.not_given.is_empty() {
        let _ = writeln!(
            o,
            "| **Not given** | {} — shown as `<params.NAME>`; a run must give them, and its fingerprint covers their values |",
            plan.not_given.iter().map(|p| md_code(p)).collect::<Vec<_>>().join(", ")
        );
    }
    let _ = writeln!(
        o,
        "| Lock | {} |",
        plan.lock.as_deref().map_or_else(
            || "**none**: two runs of this runbook can act at once".to_string(),
            |l| match &plan.lock_wait {
                Some(w) => format!(
                    "{}; a second run waits up to {} in line for it",
                    md_code(l),
                    md_text(&w.text)
                ),
                None => md_code(l),
            }
        )
    );
    let _ = writeln!(
        o,
        "| Concurrency | {} step(s) at a time |",
        plan.concurrency
    );
    if !plan.approvals.is_empty() {
        let how = if plan.identity == "signed" {
            "proven by SSH signatures against `allowed_signers`, bound to this plan's fingerprint"
        } else {
            "names as given with `--as`, not verified"
        };
        let _ = writeln!(o, "| Approver identity | **{}**: {how} |", plan.identity);
    }
    let _ = writeln!(
        o,
        "| Duration | {} along {} |\n",
        md_text(&durations(plan)),
        md_list(&plan.critical_path.steps)
    );
    if !plan.params.is_empty() {
        let _ = writeln!(
            o,
            "### Parameters\n\n| name | value | source | read by |\n| --- | --- | --- | --- |"
        );
        for p in &plan.params {
            let value = if p.source == "not_given" {
                format!(
                    "**not given** ({})",
                    md_code(&format!("<params.{}>", p.name))
                )
            } else {
                md_code(&p.value.to_string())
            };
            let _ = writeln!(
                o,
                "| {} | {value} | {} | {} |",
                md_code(&p.name),
                p.source.replace('_', " "),
                p.used_by
                    .iter()
                    .map(|s| md_code(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let _ = writeln!(o);
    }
    if !plan.providers.is_empty() {
        let _ = writeln!(
            o,
            "### Providers\n\n| name | kind | source |\n| --- | --- | --- |"
        );
        for p in &plan.providers {
            let _ = writeln!(
                o,
                "| {} | {} | {} |",
                md_code(&p.name),
                p.kind,
                md_code(&p.source)
            );
        }
        let _ = writeln!(o);
    }
    if !plan.stages.is_empty() {
        let _ = writeln!(o, "### Stages\n");
        for st in &plan.stages {
            let _ = writeln!(o, "- **{}**: {}", md_text(&st.name), md_list(&st.steps));
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(o, "### Waves\n");
    for (w, ids) in plan.waves.iter().enumerate() {
        let _ = writeln!(
            o,
            "{}. {}",
            w + 1,
            ids.iter()
                .map(|s| md_code(s))
                .collect::<Vec<_>>()
                .join(" · ")
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "### Steps\n\n| wave | step | kind | stage | does | timeout / retry | rollback |\n| --- | --- | --- | --- | --- | --- | --- |");
    for s in &plan.steps {
        md_step_row(&mut o, s, &s.wave.to_string());
    }
    let _ = writeln!(o);
    md_gates(&mut o, plan);
    if !plan.approvals.is_empty() {
        let _ = writeln!(o, "### Approvals\n\n| step | needs | from | within | starter may approve | identity |\n| --- | --- | --- | --- | --- | --- |");
        for a in &plan.approvals {
            let _ = writeln!(
                o,
                "| {} | **{}** | {} | {} | {} | {} |",
                md_code(&a.step),
                md_text(&a.required.text),
                a.approvers.as_ref().map_or_else(
                    || "**anyone**".to_string(),
                    |l| l.iter().map(|n| md_code(n)).collect::<Vec<_>>().join(", ")
                ),
                a.timeout
                    .as_ref()
                    .map_or("no limit".into(), |t| md_text(&t.text)),
                if a.allow_self_approval {
                    "**yes**"
                } else {
                    "no"
                },
                a.identity
            );
        }
        let _ = writeln!(o);
    }
    if !plan.flags.is_empty() {
        let _ = writeln!(o, "### Flags touched\n\n| step | flag | value on success | store | on failure |\n| --- | --- | --- | --- | --- |");
        for f in &plan.flags {
            let undo = if f.restored_on_failure {
                "restored"
            } else {
                "left as is"
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {undo} |",
                md_code(&f.step),
                md_code(&f.name),
                md_code(&json_text(&f.value)),
                md_text(&f.provider)
            );
        }
        let _ = writeln!(o);
    }
    for (title, list, note) in [
        (
            "On failure",
            &plan.on_failure,
            "after a failure's unwind, in order",
        ),
        (
            "Finally",
            &plan.finally,
            "at the end of every run, in order",
        ),
    ] {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(o, "### {title} ({note})\n\n| step | kind | does | timeout / retry |\n| --- | --- | --- | --- |");
        for s in list {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} |",
                md_code(&s.id),
                s.kind,
                md_does(s),
                md_limits(s)
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
        let _ = writeln!(o, "Full unwind order: {}\n", md_list(&plan.unwind_order));
        let _ = writeln!(
            o,
            "<details><summary>What unwinds if a given step fails, and the values each flag takes</summary>\n"
        );
        for s in plan
            .steps
            .iter()
            .filter(|s| !s.on_failure_unwinds.is_empty())
        {
            let _ = writeln!(
                o,
                "- {} fails → {}{}",
                md_code(&s.id),
                md_list(&s.on_failure_unwinds),
                unwinds_more(s, " → ")
            );
            for t in &s.flags_on_failure {
                let _ = writeln!(o, "  - flag {}: {}", md_code(&t.flag), md_list(&t.values));
            }
        }
        let _ = writeln!(o, "\n</details>\n");
    }
    let _ = writeln!(o, "### Graph\n\n```mermaid\n{}```\n", mermaid(plan));
    o
}

fn md_does(s: &PlannedStep) -> String {
    let mut does = s
        .action
        .iter()
        .map(|l| md_code(l))
        .collect::<Vec<_>>()
        .join("<br>");
    if let Some(w) = when_text(s) {
        does = format!("_{}_<br>{does}", md_text(&w));
    }
    does
}

fn md_limits(s: &PlannedStep) -> String {
    [
        s.timeout.as_ref().map(|t| format!("timeout {}", t.text)),
        s.retry.as_ref().map(|r| r.text.clone()),
        s.continue_on_failure
            .then(|| "continues on failure".to_string()),
    ]
    .into_iter()
    .flatten()
    .map(|t| md_text(&t))
    .collect::<Vec<_>>()
    .join("<br>")
}

fn md_step_row(o: &mut String, s: &PlannedStep, wave: &str) {
    let rollback = s
        .rollback
        .iter()
        .flat_map(|r| &r.does)
        .map(|l| md_code(l))
        .collect::<Vec<_>>()
        .join("<br>");
    let title = s
        .name
        .as_ref()
        .map_or(String::new(), |n| format!("<br>{}", md_text(n)));
    let _ = writeln!(
        o,
        "| {wave} | {}{title} | {} | {} | {} | {} | {} |",
        md_code(&s.id),
        s.kind,
        s.stage.as_deref().map(md_text).unwrap_or_default(),
        md_does(s),
        md_limits(s),
        rollback
    );
}

/// Every gate, main or inside a rollback, with its rendered threshold.
fn md_gates(o: &mut String, plan: &Plan) {
    let mut rows = Vec::new();
    for s in &plan.steps {
        if let Some(g) = &s.gate {
            rows.push((md_code(&s.id), g));
        }
        for (n, r) in s.rollback.iter().enumerate() {
            if let Some(g) = &r.gate {
                rows.push((format!("{} rollback {}", md_code(&s.id), n + 1), g));
            }
        }
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(o, "### Gates\n\n| gate | query | passes when | samples | fails after | no data |\n| --- | --- | --- | --- | --- | --- |");
    for (label, g) in rows {
        let (query, passes) = match &g.compare {
            Some(c) => (
                format!(
                    "baseline {} vs canary {}",
                    md_code(&c.baseline),
                    md_code(&c.canary)
                ),
                md_text(&c.text),
            ),
            None => {
                let mut passes = md_code(&g.condition_rendered);
                if let Some(f) = &g.failure_condition_rendered {
                    passes.push_str(&format!("; fails when {}", md_code(f)));
                }
                (md_code(&g.query), passes)
            }
        };
        let mut samples = match &g.background_until {
            Some(until) => format!(
                "in the background until {} finishes, every {}",
                md_code(until),
                md_text(&g.interval.text)
            ),
            None => format!(
                "{} × every {}",
                md_text(&g.samples.text),
                md_text(&g.interval.text)
            ),
        };
        if g.dry_run {
            samples.push_str(" (dry run)");
        }
        let mut fails = format!("more than {} failed", md_text(&g.failure_limit.text));
        if let (Some(limit), Some(then)) = (&g.inconclusive_limit, g.on_inconclusive) {
            fails.push_str(&format!(
                "; more than {} inconclusive: {then}",
                md_text(&limit.text)
            ));
        }
        let _ = writeln!(
            o,
            "| {label} | {query} | {passes} | {samples} | {fails} | {} |",
            g.on_no_data
        );
    }
    let _ = writeln!(o);
}
