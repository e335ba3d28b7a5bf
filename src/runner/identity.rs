//! Who runs this process, in its own file because reading the login name is
//! one of the crate's three `unsafe` places (the others are the template
//! allocator and restoring SIGPIPE) and approvals ask the same question.

/// Who runs this process: `--as`, else `$RUNBOOK_USER`, else the login name.
pub(crate) fn operator(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_string)
        .or_else(|| std::env::var("RUNBOOK_USER").ok().filter(|s| !s.is_empty()))
        .or_else(|| std::env::var("USER").ok().filter(|s| !s.is_empty()))
        .or_else(|| std::env::var("LOGNAME").ok().filter(|s| !s.is_empty()))
        .or_else(login_name)
        .unwrap_or_else(|| "unknown".into())
}

/// The login name of the real user, from the password database (rustix has
/// no `getpwuid`; one of the three `unsafe` places).
#[allow(unsafe_code)]
fn login_name() -> Option<String> {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy
    // the name out at once and this process does not call it concurrently.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if pw.is_null() || (*pw).pw_name.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// Who this process is beyond the name it claims: the OS user (from the
/// password database, not the environment) and the host, for the audit of
/// a decision.
pub(crate) fn os_user_and_host() -> crate::events::Proof {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    crate::events::Proof {
        os_user: login_name(),
        host: Some(host).filter(|h| !h.is_empty()),
        key: None,
        signature: None,
    }
}
