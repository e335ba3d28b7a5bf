//! Run ids as a person types them: a unique prefix of an existing run's id
//! stands for that run (`runbook status 20261201-0930`), as in git.
//!
//! One function, [`resolve`], called by every command that takes a RUN_ID
//! before it does anything else, so all of them agree on what a prefix
//! means. It only ever widens what is accepted: an exact id always wins
//! (even when it is also the prefix of a longer one), an ambiguous prefix
//! is a usage error naming the candidates, and anything else is returned
//! unchanged so the command reports an unknown or malformed id exactly as
//! it did before prefixes existed.

use crate::error::Error;
use crate::journal;
use crate::store::Store;

/// How many candidates an ambiguity error names before it says "and N more".
const SHOWN_CANDIDATES: usize = 10;

/// The id of the run `given` names in `store`: `given` itself when a run
/// has exactly that id, else the one run whose id starts with it.
///
/// # Errors
///
/// [`Error::Invalid`] (exit 2) when several runs start with `given`.
pub fn resolve(store: &dyn Store, given: &str) -> Result<String, Error> {
    if !journal::valid_run_id(given) {
        return Ok(given.to_string());
    }
    if store.exists(given) {
        return Ok(given.to_string());
    }
    // An unreadable state dir is the command's to report, as before.
    let Ok(ids) = store.list() else {
        return Ok(given.to_string());
    };
    let mut matches: Vec<String> = ids
        .into_iter()
        .filter(|id| journal::valid_run_id(id) && id.starts_with(given))
        .collect();
    match matches.len() {
        0 => Ok(given.to_string()),
        1 => Ok(matches.remove(0)),
        n => {
            matches.sort();
            let mut shown = matches[..n.min(SHOWN_CANDIDATES)].join(", ");
            if n > SHOWN_CANDIDATES {
                shown.push_str(&format!(" and {} more", n - SHOWN_CANDIDATES));
            }
            Err(Error::invalid(format!(
                "run id `{given}` is ambiguous: {n} runs in {} start with it: {shown}; give more of the id",
                store.describe()
            )))
        }
    }
}
