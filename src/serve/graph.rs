//! A run's step graph as inline SVG, drawn here: one column per wave (the
//! steps whose `needs` are all in earlier columns), one box per step
//! coloured by its status, a line per `needs`. Our own SVG rather than
//! Mermaid: no script to run in the page (the CSP allows none inline), and
//! the server already knows every position.

use std::fmt::Write as _;

use serde_json::Value;

use super::pages::esc;

const W: usize = 170;
const H: usize = 34;
const GAP_X: usize = 40;
const GAP_Y: usize = 14;

fn colour(status: &str) -> &'static str {
    match status {
        "succeeded" => "#d7f0d7",
        "failed" | "rolled_back" => "#f6d2d2",
        "running" => "#d6e4fa",
        "skipped" | "cancelled" => "#eeeeee",
        _ => "#ffffff",
    }
}

/// The graph of `rb`'s main steps, their states from the run's JSON.
pub(super) fn svg(rb: &crate::runbook::Runbook, run: &Value) -> String {
    let status = |id: &str| {
        run["steps"]
            .as_array()
            .and_then(|l| l.iter().find(|s| s["id"] == id))
            .and_then(|s| s["status"].as_str())
            .unwrap_or("not_started")
            .to_string()
    };
    let waves = rb.graph.waves();
    let mut at = vec![(0usize, 0usize); rb.steps.len()];
    let rows = waves.iter().map(Vec::len).max().unwrap_or(1);
    for (x, wave) in waves.iter().enumerate() {
        for (y, &i) in wave.iter().enumerate() {
            if let Some(slot) = at.get_mut(i) {
                *slot = (x * (W + GAP_X) + 4, y * (H + GAP_Y) + 4);
            }
        }
    }
    let width = waves.len() * (W + GAP_X) + 8;
    let height = rows * (H + GAP_Y) + 8;
    let mut out = format!(
        "<svg class=\"graph\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"step graph\">"
    );
    for i in 0..rb.steps.len() {
        for p in rb.graph.parents(i) {
            let ((px, py), (cx, cy)) = (at[p], at[i]);
            let _ = write!(
                out,
                "<line x1=\"{}\" y1=\"{}\" x2=\"{cx}\" y2=\"{}\" stroke=\"#888\"/>",
                px + W,
                py + H / 2,
                cy + H / 2
            );
        }
    }
    for (i, step) in rb.steps.iter().enumerate() {
        let (x, y) = at[i];
        let st = status(&step.id);
        let _ = write!(
            out,
            "<g data-step=\"{id}\"><rect x=\"{x}\" y=\"{y}\" width=\"{W}\" height=\"{H}\" rx=\"4\" fill=\"{}\" stroke=\"#555\"/><text x=\"{}\" y=\"{}\" font-size=\"12\">{id}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"#444\">{}</text></g>",
            colour(&st),
            x + 6,
            y + 14,
            x + 6,
            y + 28,
            esc(&st),
            id = esc(&step.id),
        );
    }
    out.push_str("</svg>");
    out
}
