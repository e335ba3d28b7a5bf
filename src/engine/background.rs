//! The scheduler's side of background gates: which are running, which have
//! opened (their dependents may start), which are paused (nothing new
//! starts), and the `until` signal each waits for. Its own type so the
//! scheduler's loop reads as "a step ended", "a gate opened", not as the
//! channels behind them.

use std::collections::{HashMap, HashSet};

use tokio::sync::{mpsc, watch};

use crate::engine::StepRecord;
use crate::runbook::{ActionKind, Runbook};
use crate::steps::{BackgroundLink, GateNews};

pub(super) struct Background {
    /// Gate index -> the step whose end passes it.
    until: HashMap<usize, usize>,
    news_tx: mpsc::UnboundedSender<(usize, GateNews)>,
    news_rx: mpsc::UnboundedReceiver<(usize, GateNews)>,
    /// Gate index -> the sender of its `until` signal, while it runs.
    signals: HashMap<usize, watch::Sender<bool>>,
    opened: HashSet<usize>,
    paused: HashSet<usize>,
}

impl Background {
    pub(super) fn new(rb: &Runbook) -> Background {
        let until = rb
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match &s.action.kind {
                ActionKind::Metric(m) => m.until.map(|u| (i, u)),
                _ => None,
            })
            .collect();
        let (news_tx, news_rx) = mpsc::unbounded_channel();
        Background {
            until,
            news_tx,
            news_rx,
            signals: HashMap::new(),
            opened: HashSet::new(),
            paused: HashSet::new(),
        }
    }

    /// The link a starting step `i` gets, if it is a background gate. Its
    /// `until` step may have finished already (a resumed run).
    pub(super) fn start(&mut self, i: usize, records: &[StepRecord]) -> Option<BackgroundLink> {
        let until = *self.until.get(&i)?;
        let finished = records.get(until).is_some_and(|r| {
            r.finished_seq.is_some() || r.status == crate::events::StepStatus::Skipped
        });
        let (tx, rx) = watch::channel(finished);
        self.signals.insert(i, tx);
        Some(BackgroundLink {
            index: i,
            news: self.news_tx.clone(),
            until_done: rx,
        })
    }

    /// Background gates running now (they do not count toward `concurrency`).
    pub(super) fn running(&self) -> usize {
        self.signals.len()
    }

    /// A paused gate holds new starts.
    pub(super) fn holds(&self) -> bool {
        !self.paused.is_empty()
    }

    /// Step `i` ended (or was skipped): the gates it ends are told, and a
    /// gate that ended is forgotten.
    pub(super) fn ended(&mut self, i: usize) {
        for (gate, until) in &self.until {
            if *until == i {
                if let Some(tx) = self.signals.get(gate) {
                    let _ = tx.send(true);
                }
            }
        }
        self.signals.remove(&i);
        self.paused.remove(&i);
    }

    pub(super) fn was_opened(&self, i: usize) -> bool {
        self.opened.contains(&i)
    }

    /// Takes in what gate `i` says; true when it opened just now (its
    /// dependents are released).
    pub(super) fn heard(&mut self, i: usize, news: GateNews) -> bool {
        // News queued before the gate's end was handled: its end decided.
        if !self.signals.contains_key(&i) {
            return false;
        }
        match news {
            GateNews::Opened => return self.opened.insert(i),
            GateNews::Paused => {
                self.paused.insert(i);
            }
            GateNews::Resumed => {
                self.paused.remove(&i);
            }
        }
        false
    }

    /// The next thing a gate says; pending while none runs.
    pub(super) async fn news(&mut self) -> (usize, GateNews) {
        match self.news_rx.recv().await {
            Some(n) => n,
            // We hold a sender: never closed.
            None => std::future::pending().await,
        }
    }
}
