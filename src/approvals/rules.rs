//! Who may answer an approval and what it is still waiting for.
//!
//! The rules are what `waiting.json` holds, so the waiting executor and
//! `runbook approve` in another process judge a decision by the same code.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

/// What `waiting.json` holds: everything `submit` needs to judge a decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Rules {
    pub(crate) step: String,
    /// Who may answer; anyone when `None`.
    pub(crate) approvers: Option<Vec<String>>,
    pub(crate) required: usize,
    pub(crate) allow_self_approval: bool,
    /// The identity that started the run.
    pub(crate) started_by: String,
    #[serde(default)]
    pub(crate) message: Option<String>,
    #[serde(default)]
    pub(crate) pid: u32,
    /// Where decisions must be signed: what they are checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) signed: Option<SignedBy>,
}

/// What a signed decision of a waiting step is checked against: the
/// allowed signers (public keys only), and what the statement names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SignedBy {
    pub(crate) allowed_signers: String,
    pub(crate) run_id: String,
    pub(crate) fingerprint: String,
}

impl Rules {
    fn listed(&self, who: &str) -> bool {
        self.approvers
            .as_ref()
            .is_none_or(|l| l.iter().any(|a| a == who))
    }

    /// `Err(why)` when `who` may not approve.
    pub(crate) fn may_approve(&self, who: &str) -> Result<(), String> {
        if !self.listed(who) {
            return Err(format!(
                "{who} is not an approver of step `{}`; {}",
                self.step,
                self.who_can()
            ));
        }
        if who == self.started_by && !self.allow_self_approval {
            return Err(format!(
                "{who} started this run and cannot approve step `{}` (allow_self_approval is not set); {}",
                self.step,
                self.who_can()
            ));
        }
        Ok(())
    }

    /// `Err(why)` when `who` may not reject. Starting the run does not stop
    /// anyone from stopping it.
    pub(crate) fn may_reject(&self, who: &str) -> Result<(), String> {
        if self.listed(who) || who == self.started_by {
            Ok(())
        } else {
            Err(format!(
                "{who} is not an approver of step `{}`; {}",
                self.step,
                self.who_can()
            ))
        }
    }

    /// The listed approvers who may approve (the starter left out unless
    /// self approval is allowed), in list order, without repeats.
    pub(crate) fn eligible(&self) -> Option<Vec<String>> {
        self.approvers.as_ref().map(|list| {
            let mut seen = HashSet::new();
            list.iter()
                .filter(|a| self.allow_self_approval || **a != self.started_by)
                .filter(|a| seen.insert(a.as_str()))
                .cloned()
                .collect()
        })
    }

    fn who_can(&self) -> String {
        match self.eligible() {
            Some(list) if list.is_empty() => "nobody else is listed".into(),
            Some(list) => format!("approvers: {}", list.join(", ")),
            None if self.allow_self_approval => "anyone may approve".into(),
            None => format!("anyone but {} may approve", self.started_by),
        }
    }

    /// `approval 1/2 (alice); waiting for bob or carol`
    pub(crate) fn waiting_on(&self, approved: &[String]) -> String {
        let mut s = format!("approval {}/{}", approved.len(), self.required);
        if !approved.is_empty() {
            s.push_str(&format!(" ({})", approved.join(", ")));
        }
        let pending = match self.eligible() {
            Some(list) => {
                let rest: Vec<String> =
                    list.into_iter().filter(|a| !approved.contains(a)).collect();
                or_list(&rest)
            }
            None if self.allow_self_approval => "anyone".into(),
            None => format!("anyone but {}", self.started_by),
        };
        s.push_str(&format!("; waiting for {pending}"));
        s
    }
}

/// `a`, `a or b`, `a, b or c`.
fn or_list(items: &[String]) -> String {
    match items {
        [] => "nobody".into(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(approvers: Option<&[&str]>, required: usize, allow_self: bool) -> Rules {
        Rules {
            step: "gate".into(),
            approvers: approvers.map(|l| l.iter().map(ToString::to_string).collect()),
            required,
            allow_self_approval: allow_self,
            started_by: "alice".into(),
            message: None,
            pid: 0,
            signed: None,
        }
    }

    #[test]
    fn waiting_text_names_who_is_left() {
        let r = rules(Some(&["alice", "bob", "carol", "dave"]), 2, false);
        assert_eq!(
            r.waiting_on(&["bob".into()]),
            "approval 1/2 (bob); waiting for carol or dave"
        );
        assert_eq!(
            r.waiting_on(&[]),
            "approval 0/2; waiting for bob, carol or dave"
        );
        let anyone = rules(None, 1, false);
        assert_eq!(
            anyone.waiting_on(&[]),
            "approval 0/1; waiting for anyone but alice"
        );
    }

    #[test]
    fn self_approval_and_lists() {
        let r = rules(Some(&["alice", "bob"]), 1, false);
        assert!(r.may_approve("bob").is_ok());
        let e = r.may_approve("alice").unwrap_err();
        assert!(e.contains("started this run"), "{e}");
        assert!(e.contains("approvers: bob"), "{e}");
        let e = r.may_approve("mallory").unwrap_err();
        assert!(e.contains("not an approver"), "{e}");
        assert!(r.may_reject("alice").is_ok());
        assert!(r.may_reject("mallory").is_err());
        assert!(rules(Some(&["alice"]), 1, true)
            .may_approve("alice")
            .is_ok());
        assert!(rules(None, 1, false).may_approve("zed").is_ok());
    }
}
