//! A [`Plan`] as a Mermaid flowchart, for `plan --format mermaid` and the
//! "Graph" section of the Markdown preview.
//!
//! The diagram is put in front of reviewers (a pull-request comment that
//! GitHub renders), so nothing a runbook author writes may change its
//! structure. It is shaped so:
//!
//! - **Node ids are generated, never step ids**: `s0`, `s1`, … by step
//!   index, `r0`, … for the rollback of step `sN`, `f0`, … for `on_failure`
//!   steps, `z0`, … for `finally` steps, `t0`, … for stages and `main`,
//!   `on_failure`, `finally` for the three groups. A step id such as `end`,
//!   `graph`, `subgraph`, `click`, `style` or `o` (which turns `o --> x`
//!   into a circle edge) would otherwise be read as Mermaid syntax.
//! - **Every text is a quoted label** built by [`label`]: anything but
//!   letters, digits, spaces and a little harmless punctuation becomes a
//!   Mermaid entity code (`#quot;`, `#35;` for `#`, `#lt;`, `#gt;`, `#37;`
//!   for `%` so no `%%{init}%%` directive can be smuggled in, `#58;` for `:`
//!   so no `style`/`classDef` line is mistaken, …). Only the `<br/>` and
//!   `<small>` tags written here are markup.
//! - **Stages** (a step's `stage`) are `subgraph tN["stage"]` blocks, in the
//!   order their first step appears; steps without a stage sit outside any.
//! - **Rollbacks**: a step with a rollback gets a dotted edge
//!   `sN -.->|rollback| rN` to a small stadium node of class `rollback`
//!   (dashed border), declared next to the step so it stays in its stage.
//! - **`on_failure` and `finally`** are subgraphs of their own, their steps
//!   chained in the order they run. When either exists the main steps are
//!   wrapped in a `main` subgraph, with a dotted `main -.->|a step fails|
//!   on_failure` edge, a `main -->|at the end| finally` edge and
//!   `on_failure --> finally`, so the picture says when each runs.
//! - Every node is declared (inside its subgraph) before any edge, since
//!   Mermaid puts a node where it is first mentioned.
//!
//! The output depends on the plan alone, in its order: it is deterministic.
//! `tests/mermaid.rs` runs it through the real Mermaid parser.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::{Plan, PlannedStep};

/// The plan as a Mermaid flowchart, ending with a newline.
pub(super) fn mermaid(plan: &Plan) -> String {
    let mut o = String::from("flowchart TD\n");
    let groups = !plan.on_failure.is_empty() || !plan.finally.is_empty();
    let indent = if groups {
        let _ = writeln!(o, "  subgraph main[\"steps\"]");
        "    "
    } else {
        "  "
    };
    main_nodes(&mut o, plan, indent);
    if groups {
        let _ = writeln!(o, "  end");
    }
    for (group, title, prefix, list) in [
        ("on_failure", "on failure", 'f', &plan.on_failure),
        ("finally", "finally", 'z', &plan.finally),
    ] {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(o, "  subgraph {group}[\"{title}\"]");
        for (i, s) in list.iter().enumerate() {
            node(&mut o, "    ", &format!("{prefix}{i}"), s);
        }
        let _ = writeln!(o, "  end");
    }

    let index: HashMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    for (i, s) in plan.steps.iter().enumerate() {
        for need in &s.needs {
            // Validation proved every need names a step; one that did not
            // would be left out rather than drawn under its raw id.
            if let Some(n) = index.get(need.as_str()) {
                let _ = writeln!(o, "  s{n} --> s{i}");
            }
        }
    }
    let mut rollbacks = Vec::new();
    for (i, s) in plan.steps.iter().enumerate() {
        if !s.rollback.is_empty() {
            let _ = writeln!(o, "  s{i} -.->|rollback| r{i}");
            rollbacks.push(format!("r{i}"));
        }
    }
    for (prefix, list) in [('f', &plan.on_failure), ('z', &plan.finally)] {
        for i in 1..list.len() {
            let _ = writeln!(o, "  {prefix}{} --> {prefix}{i}", i - 1);
        }
    }
    if !plan.on_failure.is_empty() {
        let _ = writeln!(o, "  main -.->|a step fails| on_failure");
    }
    if !plan.finally.is_empty() {
        let _ = writeln!(o, "  main -->|at the end| finally");
        if !plan.on_failure.is_empty() {
            let _ = writeln!(o, "  on_failure --> finally");
        }
    }
    if !rollbacks.is_empty() {
        let _ = writeln!(o, "  classDef rollback stroke-dasharray: 4 3");
        let _ = writeln!(o, "  class {} rollback", rollbacks.join(","));
    }
    o
}

/// The main steps' nodes (and their rollback nodes), grouped by stage.
fn main_nodes(o: &mut String, plan: &Plan, indent: &str) {
    // Stages in the order their first step appears; `None` (no stage) is
    // drawn first, outside any subgraph.
    let mut stages: Vec<Option<&str>> = Vec::new();
    for s in &plan.steps {
        let stage = s.stage.as_deref();
        if !stages.contains(&stage) {
            stages.push(stage);
        }
    }
    stages.sort_by_key(Option::is_some);
    let mut t = 0;
    for stage in &stages {
        let inner = match stage {
            Some(title) => {
                let _ = writeln!(o, "{indent}subgraph t{t}[\"{}\"]", label(title));
                t += 1;
                format!("{indent}  ")
            }
            None => indent.to_string(),
        };
        for (i, s) in plan.steps.iter().enumerate() {
            if s.stage.as_deref() != *stage {
                continue;
            }
            node(o, &inner, &format!("s{i}"), s);
            if !s.rollback.is_empty() {
                let _ = writeln!(o, "{inner}r{i}([\"rollback\"])");
            }
        }
        if stage.is_some() {
            let _ = writeln!(o, "{indent}end");
        }
    }
}

/// One step's node: its id, its name when it has one, its kind; shaped by kind.
fn node(o: &mut String, indent: &str, id: &str, s: &PlannedStep) {
    let (open, close) = match s.kind {
        "approval" => ("{{", "}}"),
        "metric" => ("{", "}"),
        "flag" => ("[/", "/]"),
        _ => ("[", "]"),
    };
    let mut text = label(&s.id);
    if let Some(name) = &s.name {
        let _ = write!(text, "<br/>{}", label(name));
    }
    let _ = write!(text, "<br/><small>{}</small>", label(s.kind));
    let _ = writeln!(o, "{indent}{id}{open}\"{text}\"{close}");
}

/// `text` made safe inside a quoted Mermaid label: letters, digits, spaces
/// and `_ - . , / ( ) ' + = @ ! ?` stay; a line break or tab becomes a space;
/// every other character becomes an entity code (`#quot;`, `#35;`, …),
/// which Mermaid shows as the character itself.
pub(super) fn label(text: &str) -> String {
    const PLAIN: &str = " _-.,/()'+=@!?";
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            c if c.is_alphanumeric() || PLAIN.contains(c) => out.push(c),
            '\n' | '\r' | '\t' => out.push(' '),
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            c => {
                let _ = write!(out, "#{};", u32::from(c));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn labels_keep_plain_text_and_encode_the_rest() {
        let cases: &[(&str, &str)] = &[
            ("deploy_web", "deploy_web"),
            ("Roll out (v1.2, canary)", "Roll out (v1.2, canary)"),
            ("say \"hi\"", "say #quot;hi#quot;"),
            ("#1; <script>", "#35;1#59; #lt;script#gt;"),
            ("a --> b; end", "a --#gt; b#59; end"),
            (
                "%%{init: {}}%%",
                "#37;#37;#123;init#58; #123;#125;#125;#37;#37;",
            ),
            ("`md` & more", "#96;md#96; #amp; more"),
            ("two\nlines\r\n", "two lines  "),
            ("déploiement ✓", "déploiement #10003;"),
            ("a|b[c]", "a#124;b#91;c#93;"),
        ];
        for (text, want) in cases {
            assert_eq!(label(text), *want, "label({text:?})");
        }
    }
}
