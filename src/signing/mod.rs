//! SSH signatures proving who approved a step: a person signs a
//! [`Statement`] with their SSH key, the engine checks it against an
//! allowed-signers file for the principal they claim.
//!
//! Why it is shaped so:
//!
//! - **The format git uses for SSH-signed commits** (`ssh-keygen -Y sign` /
//!   `-Y verify`, the OpenSSH `SSHSIG` armor and allowed-signers file), so
//!   people sign with the keys and agent they already have, a team can reuse
//!   (a copy of) the allowed-signers file it keeps for git, and anyone can
//!   make or check a signature with `ssh-keygen` alone: the engine is not the
//!   only judge of its own evidence.
//! - **Our own namespace, [`NAMESPACE`]**: SSHSIG binds every signature to a
//!   namespace, so a signature made for git (or any other tool) cannot be
//!   passed off as an approval, nor an approval as a signed commit.
//! - **A statement of fixed bytes** ([`Statement::bytes`]): one line of JSON
//!   with its keys in a fixed order and its escaping written here, not left
//!   to a serializer's options, so the bytes can be rebuilt exactly by anyone
//!   reading the run. It names the run, the step, the decision, the comment
//!   and the plan's fingerprint, so a signature cannot be replayed for
//!   another run, another step, the opposite decision or a changed plan.
//! - **Plain keys and exact principals only**: certificates, wildcard and
//!   negated principals are refused when the file is read, so "who may
//!   approve" is a list of names one can read, and a mistake in the file is
//!   told at once rather than silently matching nobody (or everybody).
//! - **Errors are sentences** (`String`), not an error enum: every caller
//!   shows them to a person, who needs to know which of the ways a signature
//!   can be refused it was.
//! - Three files: the statement and fingerprints here; the file format and
//!   verification in [`allowed_signers`]; making a signature (key files,
//!   passphrases, the agent) in [`sign`](mod@sign).

pub mod allowed_signers;
pub mod sign;

pub use allowed_signers::AllowedSigners;
pub use sign::{sign, Signed};

/// The SSHSIG namespace of every signature made or accepted here
/// (`ssh-keygen -Y sign -n runbook`).
pub const NAMESPACE: &str = "runbook";

/// What a decision signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement<'a> {
    pub run_id: &'a str,
    pub step: &'a str,
    /// `approve` or `reject`.
    pub decision: &'a str,
    pub comment: Option<&'a str>,
    /// The fingerprint of the plan being approved (not of a key).
    pub fingerprint: &'a str,
}

impl<'a> Statement<'a> {
    /// What a decision on step `step` of run `run_id` signs, for the plan
    /// with `fingerprint`: approving, or rejecting when `approved` is false.
    pub fn for_decision(
        run_id: &'a str,
        step: &'a str,
        approved: bool,
        comment: Option<&'a str>,
        fingerprint: &'a str,
    ) -> Statement<'a> {
        Statement {
            run_id,
            step,
            decision: if approved { "approve" } else { "reject" },
            comment,
            fingerprint,
        }
    }

    /// The signed bytes: one line of JSON with the keys in this order:
    /// `{"signed":"runbook decision","run_id":..,"step":..,"decision":..,"comment":..,"fingerprint":..}`,
    /// `comment` being `null` when `None`. No spaces and no trailing newline.
    ///
    /// Strings are escaped as JSON requires and no more: `"` and `\` by a
    /// backslash, `\n` `\r` `\t` `\b` `\f` by their short escapes, the other
    /// control characters below U+0020 as `\u00XX` (lower-case hex); every
    /// other character, non-ASCII included, is written as itself in UTF-8.
    /// (What `serde_json` writes too; spelled out here because the bytes
    /// must never change.)
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(128);
        out.push_str("{\"signed\":\"runbook decision\",\"run_id\":");
        push_json_string(&mut out, self.run_id);
        out.push_str(",\"step\":");
        push_json_string(&mut out, self.step);
        out.push_str(",\"decision\":");
        push_json_string(&mut out, self.decision);
        out.push_str(",\"comment\":");
        match self.comment {
            Some(c) => push_json_string(&mut out, c),
            None => out.push_str("null"),
        }
        out.push_str(",\"fingerprint\":");
        push_json_string(&mut out, self.fingerprint);
        out.push('}');
        out.into_bytes()
    }
}

/// Appends `s` as a JSON string literal (see [`Statement::bytes`]).
fn push_json_string(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `SHA256:...` of a public key, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &ssh_key::PublicKey) -> String {
    key.fingerprint(ssh_key::HashAlg::Sha256).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn statement_bytes_are_one_line_of_json_in_order() {
        let s = Statement {
            run_id: "r-1",
            step: "deploy",
            decision: "approve",
            comment: None,
            fingerprint: "sha256:abc",
        };
        assert_eq!(
            String::from_utf8(s.bytes()).unwrap(),
            r#"{"signed":"runbook decision","run_id":"r-1","step":"deploy","decision":"approve","comment":null,"fingerprint":"sha256:abc"}"#
        );
        let s = Statement {
            comment: Some("ok"),
            ..s
        };
        assert!(String::from_utf8(s.bytes())
            .unwrap()
            .contains(r#","comment":"ok","#));
    }

    #[test]
    fn statement_escaping_matches_json() {
        let tricky =
            "quote\" back\\ nl\n cr\r tab\t bs\u{8} ff\u{c} nul\u{0} us\u{1f} del\u{7f} é 😀 </";
        let s = Statement {
            run_id: tricky,
            step: "s",
            decision: "reject",
            comment: Some(tricky),
            fingerprint: "f",
        };
        let bytes = s.bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains('\n'));
        assert!(text.contains(r#"nul\u0000 us\u001f"#));
        // Same bytes as serde_json writes, and it reads back.
        assert_eq!(
            text,
            format!(
                r#"{{"signed":"runbook decision","run_id":{t},"step":"s","decision":"reject","comment":{t},"fingerprint":"f"}}"#,
                t = serde_json::to_string(tricky).unwrap()
            )
        );
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["run_id"], tricky);
        assert_eq!(v["comment"], tricky);
    }
}

/// The real `ssh-keygen`, `ssh-add` and `ssh-agent`, for the tests of this
/// module. A missing program fails the test: nothing is skipped.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod testkit {
    use std::os::unix::net::UnixStream;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Output, Stdio};
    use std::time::Duration;

    /// A command with none of the environment that changes how the SSH
    /// tools find keys and passphrases.
    pub(crate) fn ssh_tool(program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_remove("SSH_AUTH_SOCK")
            .env_remove("SSH_ASKPASS")
            .env_remove("SSH_ASKPASS_REQUIRE")
            .env_remove("DISPLAY")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `cmd`; its output whether it succeeded or not.
    pub(crate) fn output(cmd: &mut Command) -> Output {
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
    }

    /// Runs `cmd`, failing the test when it fails.
    pub(crate) fn run(cmd: &mut Command) -> Output {
        let out = output(cmd);
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `ssh-keygen {kind} -N passphrase -f dir/name`: the private key's path
    /// (the public key is next to it, `.pub` added).
    pub(crate) fn keygen(dir: &Path, name: &str, kind: &[&str], passphrase: &str) -> PathBuf {
        let path = dir.join(name);
        // -a 2: few KDF rounds, so decrypting in a debug build is quick.
        run(ssh_tool("ssh-keygen")
            .args(["-q", "-a", "2"])
            .args(kind)
            .args(["-N", passphrase, "-C", name, "-f"])
            .arg(&path));
        path
    }

    pub(crate) fn pub_path(key: &Path) -> PathBuf {
        PathBuf::from(format!("{}.pub", key.display()))
    }

    /// The public key line of a key made by [`keygen`].
    pub(crate) fn pub_line(key: &Path) -> String {
        std::fs::read_to_string(pub_path(key))
            .unwrap()
            .trim()
            .to_string()
    }

    /// `SHA256:...` as `ssh-keygen -l` prints it.
    pub(crate) fn keygen_fingerprint(key: &Path) -> String {
        let out = run(ssh_tool("ssh-keygen").arg("-lf").arg(pub_path(key)));
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    }

    /// `ssh-keygen -Y sign -f key -n namespace`: the armored signature.
    pub(crate) fn keygen_sign(key: &Path, namespace: &str, message: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let msg = dir.path().join("msg");
        std::fs::write(&msg, message).unwrap();
        run(ssh_tool("ssh-keygen")
            .args(["-Y", "sign", "-n", namespace, "-f"])
            .arg(key)
            .arg(&msg));
        std::fs::read_to_string(dir.path().join("msg.sig")).unwrap()
    }

    /// `ssh-keygen -Y verify -f allowed -I principal -n runbook -s sig < msg`
    /// (and `-O verify-time=` when given): its output, success or not.
    pub(crate) fn keygen_verify(
        allowed: &str,
        principal: &str,
        message: &[u8],
        signature: &str,
        verify_time: Option<&str>,
    ) -> Output {
        let dir = tempfile::tempdir().unwrap();
        let (a, m, s) = (
            dir.path().join("allowed"),
            dir.path().join("msg"),
            dir.path().join("sig.sig"),
        );
        std::fs::write(&a, allowed).unwrap();
        std::fs::write(&m, message).unwrap();
        std::fs::write(&s, signature).unwrap();
        let mut cmd = ssh_tool("ssh-keygen");
        cmd.args(["-Y", "verify", "-f"])
            .arg(&a)
            .args(["-I", principal, "-n", super::NAMESPACE, "-s"])
            .arg(&s)
            .stdin(std::fs::File::open(&m).unwrap());
        if let Some(t) = verify_time {
            cmd.args(["-O", &format!("verify-time={t}")]);
        }
        output(&mut cmd)
    }

    /// An `ssh-agent -D -a SOCK`, killed when dropped.
    pub(crate) struct Agent {
        child: Child,
        pub(crate) socket: PathBuf,
    }

    impl Agent {
        pub(crate) fn start(dir: &Path) -> Agent {
            let socket = dir.join("agent.sock");
            let child = ssh_tool("ssh-agent")
                .arg("-D")
                .arg("-a")
                .arg(&socket)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run ssh-agent: {e}"));
            let agent = Agent { child, socket };
            for _ in 0..100 {
                if UnixStream::connect(&agent.socket).is_ok() {
                    return agent;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!(
                "ssh-agent did not listen on {} within 2 s",
                agent.socket.display()
            );
        }

        /// `ssh-add key`.
        pub(crate) fn add(&self, key: &Path) {
            run(ssh_tool("ssh-add")
                .arg("-q")
                .arg(key)
                .env("SSH_AUTH_SOCK", &self.socket));
        }
    }

    impl Drop for Agent {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
