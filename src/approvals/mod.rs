//! Approvals as the waiting executor (`steps/approval.rs`) and `runbook
//! approve` share them: the rules of who may answer (`rules`), the files an
//! answer travels through (`mailbox`), the terminal prompt (`prompt`) and
//! the command that submits a decision (`submit`).
//!
//! Apart from the executor because `runbook approve` runs in another
//! process and needs all of it but the waiting.

mod mailbox;
mod prompt;
mod rules;
mod signers;
mod submit;
mod verify;

pub use mailbox::Decision;
pub(crate) use mailbox::{approvals_dir, consume, file_safe, pending_files, write_atomic};
pub(crate) use prompt::{discard_typed_input, next_line, offer, parse_answer, stdin_lines, Offer};
pub(crate) use rules::{Rules, SignedBy};
pub use signers::{RunSigners, SignerFile};
pub(crate) use submit::decide;
pub use submit::{submit, Answer};
pub use verify::verify;
