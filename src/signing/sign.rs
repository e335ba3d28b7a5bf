//! Making a signature: with a private key file (asking for its passphrase
//! when it is encrypted) or with the ssh-agent holding the private half of a
//! public key file, as `ssh-keygen -Y sign -f` does with either.
//!
//! Everything that comes from the environment (`SSH_ASKPASS`,
//! `SSH_AUTH_SOCK`, the terminal) is read once by [`sign`] and passed down
//! ([`Sources`]), so the tests give their own without touching the
//! process's environment.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ssh_agent_client_rs::{Client, Identity};
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

use super::{fingerprint, NAMESPACE};

/// How long to wait for the agent to answer a request: long, since it may
/// be waiting for a person (a key added with `ssh-add -c`, a hardware key
/// to touch), but bounded, so a socket that is not an agent cannot hang us.
const AGENT_READ_TIMEOUT: Duration = Duration::from_secs(120);
const AGENT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A signature and the fingerprint of the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// Armored (`-----BEGIN SSH SIGNATURE-----`), LF line endings.
    pub signature: String,
    /// `SHA256:...`.
    pub fingerprint: String,
}

/// Signs `message` (namespace `runbook`, SHA-512) with `key`, which is
/// either:
/// - an OpenSSH private key file (ed25519, ECDSA; RSA is refused, saying
///   to use the agent). When it is encrypted, the
///   passphrase comes from the program in `$SSH_ASKPASS` when that is set
///   (run with a prompt as its argument, the first line of its output is
///   the passphrase), else from a prompt on `/dev/tty`; with neither, an
///   error says how to give it. A wrong passphrase is an error saying so.
/// - a public key file (one OpenSSH public key line, as in a `.pub`): the
///   matching private key in the ssh-agent at `$SSH_AUTH_SOCK` (any key
///   type the agent signs with, RSA as `rsa-sha2-512`).
///
/// Errors name the file and, where known, the key's fingerprint; never key
/// material or the passphrase.
///
/// At the terminal prompt echo is turned off while the passphrase is typed;
/// interrupting it there (Ctrl-C) ends the process before echo is turned
/// back on, as with most prompts that install no signal handler (`stty
/// echo` or `reset` restores it).
pub fn sign(key: &Path, message: &[u8]) -> Result<Signed, String> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let sources = Sources {
        askpass: var("SSH_ASKPASS"),
        agent: var("SSH_AUTH_SOCK"),
        tty: Some(PathBuf::from("/dev/tty")),
    };
    sign_with(key, message, &sources)
}

/// Where a passphrase and the agent are found.
#[derive(Debug, Default)]
pub(crate) struct Sources {
    /// `$SSH_ASKPASS`.
    pub(crate) askpass: Option<PathBuf>,
    /// `$SSH_AUTH_SOCK`.
    pub(crate) agent: Option<PathBuf>,
    /// The terminal to prompt on (`/dev/tty`); `None`: never prompt.
    pub(crate) tty: Option<PathBuf>,
}

/// The largest key file read: an OpenSSH private key is a few KiB.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// A key file's bytes: a regular file (not a FIFO that would block, nor a
/// device that never ends) of at most [`MAX_KEY_FILE`].
fn read_key_file(key: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let shown = key.display();
    let meta =
        std::fs::metadata(key).map_err(|e| format!("cannot read the key file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file, so not a key file"));
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(format!(
            "{shown} is {} bytes, too large for an OpenSSH key file",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(key)
        .and_then(|f| f.take(MAX_KEY_FILE + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read the key file {shown}: {e}"))?;
    Ok(bytes)
}

/// [`sign`] with the environment given.
pub(crate) fn sign_with(key: &Path, message: &[u8], sources: &Sources) -> Result<Signed, String> {
    let shown = key.display();
    let bytes = Wiped(read_key_file(key)?);
    let Ok(text) = std::str::from_utf8(&bytes.0) else {
        return Err(format!(
            "{shown} is not an OpenSSH key file (private key, or public key line)"
        ));
    };
    if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
        return sign_with_file(key, text, message, sources);
    }
    if text.contains("-----BEGIN ") && text.contains(" PRIVATE KEY-----") {
        return Err(format!(
            "{shown} is a private key in PEM format; only the OpenSSH format is read: rewrite it with `ssh-keygen -p -f {shown}`, or give its public key with the key in ssh-agent"
        ));
    }
    if text.contains("---- BEGIN SSH2 PUBLIC KEY ----") {
        return Err(format!(
            "{shown} is an RFC 4716 public key; convert it to the OpenSSH format with `ssh-keygen -i -f {shown}`"
        ));
    }
    let public = read_public_key(key, text)?;
    sign_with_agent(key, &public, message, sources.agent.as_deref())
}

/// The one public key line of a `.pub` file.
fn read_public_key(key: &Path, text: &str) -> Result<PublicKey, String> {
    let shown = key.display();
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let Some(line) = lines.next() else {
        return Err(format!(
            "{shown} is empty: expected an OpenSSH private key or a public key line"
        ));
    };
    if lines.next().is_some() {
        return Err(format!(
            "{shown} holds more than one line: expected one public key line (as in a .pub file)"
        ));
    }
    let key_type = line.split_whitespace().next().unwrap_or("");
    if key_type.ends_with("-cert-v01@openssh.com") {
        return Err(format!(
            "{shown} is a certificate; certificates are not supported: give the private key or its plain .pub"
        ));
    }
    PublicKey::from_openssh(line).map_err(|e| {
        format!("{shown} is neither an OpenSSH private key nor a public key line ({e})")
    })
}

/// Signs with an OpenSSH private key file, decrypting it first if needed.
fn sign_with_file(
    key: &Path,
    text: &str,
    message: &[u8],
    sources: &Sources,
) -> Result<Signed, String> {
    let shown = key.display();
    let private = match PrivateKey::from_openssh(text) {
        Ok(k) => k,
        Err(e) => match read_short_scalar(text, None) {
            Ok(k) => k,
            Err(_) => return Err(format!("cannot read the private key {shown} ({e})")),
        },
    };
    let fp = fingerprint(private.public_key());
    check_algorithm(key, &fp, &private.algorithm(), false)?;
    let private = if private.is_encrypted() {
        let passphrase = passphrase(key, sources)?;
        let wrong = || format!("wrong passphrase for the private key {shown} ({fp})");
        match private.decrypt(&passphrase.0) {
            Ok(k) => k,
            Err(ssh_key::Error::Crypto) => return Err(wrong()),
            Err(e) => match read_short_scalar(text, Some((&private, &passphrase.0))) {
                Ok(k) => k,
                Err(Unread::WrongPassphrase) => return Err(wrong()),
                Err(Unread::NotShortScalar) => {
                    return Err(format!(
                        "cannot decrypt the private key {shown} ({fp}): {e}"
                    ))
                }
            },
        }
    } else {
        private
    };
    let sig = private
        .sign(NAMESPACE, HashAlg::Sha512, message)
        .map_err(|e| format!("cannot sign with the private key {shown} ({fp}): {e}"))?;
    armor(&sig, fp)
}

/// Why [`read_short_scalar`] did not read a key.
enum Unread {
    /// Not an ECDSA key with a short scalar: the first error stands.
    NotShortScalar,
    WrongPassphrase,
}

/// Reads an ECDSA private key whose scalar OpenSSH wrote shorter than the
/// curve's size, which ssh-key 0.6.7 refuses: it wants the scalar at its
/// full length (or one byte more, a leading zero), where OpenSSH writes a
/// minimal mpint, so about one P-256 or P-384 key in 512, and one P-521 key
/// in 4, would not be read. The private section (decrypted here when
/// `encrypted` gives the parsed key and the passphrase) is rewritten with
/// the scalar zero-padded, the same number, into an unencrypted container
/// that ssh-key reads.
fn read_short_scalar(
    text: &str,
    encrypted: Option<(&PrivateKey, &[u8])>,
) -> Result<PrivateKey, Unread> {
    use base64::Engine as _;
    const MAGIC: &[u8] = b"openssh-key-v1\0";

    let body: String = text
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let blob = Wiped(
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| Unread::NotShortScalar)?,
    );
    let mut r = SshReader(blob.0.strip_prefix(MAGIC).ok_or(Unread::NotShortScalar)?);
    let _cipher = r.string()?;
    let _kdf = r.string()?;
    let _kdf_options = r.string()?;
    if r.u32()? != 1 {
        return Err(Unread::NotShortScalar);
    }
    let public = r.string()?;
    let section = r.string()?;
    let plain = match encrypted {
        None => Wiped(section.to_vec()),
        Some((parsed, passphrase)) => {
            let cipher = parsed.cipher();
            let (key, iv) = parsed
                .kdf()
                .derive_key_and_iv(cipher, passphrase)
                .map_err(|_| Unread::NotShortScalar)?;
            let tag = if cipher.has_tag() {
                Some(<[u8; 16]>::try_from(r.0).map_err(|_| Unread::NotShortScalar)?)
            } else {
                None
            };
            let mut buffer = Wiped(section.to_vec());
            cipher
                .decrypt(&key, &iv, &mut buffer.0, tag)
                .map_err(|_| Unread::WrongPassphrase)?;
            buffer
        }
    };
    let section = pad_scalar(&plain.0)?;
    let mut out = Wiped(MAGIC.to_vec());
    for field in [&b"none"[..], b"none", b""] {
        put_string(&mut out.0, field);
    }
    out.0.extend_from_slice(&1u32.to_be_bytes());
    put_string(&mut out.0, public);
    put_string(&mut out.0, &section.0);
    PrivateKey::from_bytes(&out.0).map_err(|_| Unread::NotShortScalar)
}

/// The plaintext private section with the ECDSA scalar zero-padded to the
/// curve's size and the padding redone for an unencrypted container.
fn pad_scalar(section: &[u8]) -> Result<Wiped, Unread> {
    let mut r = SshReader(section);
    let (check1, check2) = (r.u32()?, r.u32()?);
    if check1 != check2 {
        return Err(Unread::WrongPassphrase);
    }
    let key_type = r.string()?;
    let size = match key_type {
        b"ecdsa-sha2-nistp256" => 32,
        b"ecdsa-sha2-nistp384" => 48,
        b"ecdsa-sha2-nistp521" => 66,
        _ => return Err(Unread::NotShortScalar),
    };
    let (curve, point, scalar, comment) = (r.string()?, r.string()?, r.string()?, r.string()?);
    if scalar.len() >= size {
        return Err(Unread::NotShortScalar);
    }
    let mut padded = Wiped(vec![0; size - scalar.len()]);
    padded.0.extend_from_slice(scalar);
    let mut out = Wiped(Vec::with_capacity(section.len() + size));
    out.0.extend_from_slice(&check1.to_be_bytes());
    out.0.extend_from_slice(&check2.to_be_bytes());
    for field in [key_type, curve, point, &padded.0, comment] {
        put_string(&mut out.0, field);
    }
    // PROTOCOL.key: padding 1, 2, 3, ... to the block size (8 unencrypted).
    let mut pad = 1u8;
    while out.0.len() % 8 != 0 {
        out.0.push(pad);
        pad += 1;
    }
    Ok(out)
}

/// Reads the SSH wire format (RFC 4251): `uint32`, `string`.
struct SshReader<'a>(&'a [u8]);

impl<'a> SshReader<'a> {
    fn u32(&mut self) -> Result<u32, Unread> {
        let (head, rest) = self
            .0
            .split_first_chunk::<4>()
            .ok_or(Unread::NotShortScalar)?;
        self.0 = rest;
        Ok(u32::from_be_bytes(*head))
    }

    fn string(&mut self) -> Result<&'a [u8], Unread> {
        let len = usize::try_from(self.u32()?).map_err(|_| Unread::NotShortScalar)?;
        if len > self.0.len() {
            return Err(Unread::NotShortScalar);
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(s)
    }
}

/// Appends an SSH `string` (length, then bytes). Only called with fields
/// of a key file, far below 4 GiB.
fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
}

/// Signs with the ssh-agent's private half of `public`.
fn sign_with_agent(
    key: &Path,
    public: &PublicKey,
    message: &[u8],
    socket: Option<&Path>,
) -> Result<Signed, String> {
    let shown = key.display();
    let fp = fingerprint(public);
    check_algorithm(key, &fp, &public.algorithm(), true)?;
    let Some(socket) = socket else {
        return Err(format!(
            "{shown} is a public key ({fp}): signing with it needs its private key in an ssh-agent, and SSH_AUTH_SOCK is not set; start ssh-agent and `ssh-add` the key, or give the private key file"
        ));
    };
    let at = socket.display();
    let unreachable = |e: &dyn std::fmt::Display| {
        format!("cannot reach the ssh-agent at {at} (SSH_AUTH_SOCK): {e}")
    };
    let stream = UnixStream::connect(socket).map_err(|e| unreachable(&e))?;
    stream
        .set_read_timeout(Some(AGENT_READ_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(AGENT_WRITE_TIMEOUT)))
        .map_err(|e| unreachable(&e))?;
    let mut client = Client::with_read_write(Box::new(stream));
    let identities = client
        .list_all_identities()
        .map_err(|e| unreachable(&agent_error(&e)))?;
    // Prefer the plain key; a certificate of it signs the same.
    let identity = identities
        .iter()
        .find(|i| matches!(i, Identity::PublicKey(pk) if pk.key_data() == public.key_data()))
        .or_else(|| {
            identities
                .iter()
                .find(|i| <&ssh_key::public::KeyData>::from(*i) == public.key_data())
        })
        .ok_or_else(|| {
            format!(
                "the ssh-agent at {at} does not hold the private key of {fp} ({shown}): add it with `ssh-add`"
            )
        })?;
    let signed_data = SshSig::signed_data(NAMESPACE, HashAlg::Sha512, message)
        .map_err(|e| format!("cannot prepare the data to sign: {e}"))?;
    let raw = client
        .sign_with_ref(identity, &signed_data)
        .map_err(|e| match e {
            ssh_agent_client_rs::Error::RemoteFailure => format!(
                "the ssh-agent at {at} refused to sign with {fp} (a key added with `ssh-add -c` must be confirmed, a hardware key touched)"
            ),
            e => format!(
                "signing with {fp} in the ssh-agent at {at} failed: {}",
                agent_error(&e)
            ),
        })?;
    let sig = SshSig::new(public.key_data().clone(), NAMESPACE, HashAlg::Sha512, raw)
        .map_err(|e| format!("the ssh-agent's signature with {fp} is not usable: {e}"))?;
    // The agent is another program: check what it returned.
    public
        .verify(NAMESPACE, message, &sig)
        .map_err(|_| format!("the ssh-agent's signature with {fp} does not verify"))?;
    armor(&sig, fp)
}

/// The ssh-agent client's error, with the I/O error it wraps spelled out.
fn agent_error(e: &ssh_agent_client_rs::Error) -> String {
    match e {
        ssh_agent_client_rs::Error::AgentCommunicationError(io) => io.to_string(),
        e => e.to_string(),
    }
}

/// Refuses, before any passphrase is asked, keys that cannot make an SSHSIG
/// signature here. RSA and hardware (FIDO) keys only through the agent:
/// ssh-key 0.6.7 builds an RSA private key from the prime `p` twice (not
/// `p` and `q`), so its RSA signing always fails; and only the agent holds
/// the handle to a token.
fn check_algorithm(key: &Path, fp: &str, algorithm: &Algorithm, agent: bool) -> Result<(), String> {
    match algorithm {
        Algorithm::Ed25519 | Algorithm::Ecdsa { .. } => Ok(()),
        Algorithm::Rsa { .. } | Algorithm::SkEd25519 | Algorithm::SkEcdsaSha2NistP256 if agent => {
            Ok(())
        }
        Algorithm::Rsa { .. } => Err(format!(
            "{} ({fp}) is an RSA private key, which cannot sign here: use an ed25519 or ECDSA key (`ssh-keygen -t ed25519`), or add this one to ssh-agent (`ssh-add`) and give its .pub",
            key.display()
        )),
        Algorithm::SkEd25519 | Algorithm::SkEcdsaSha2NistP256 => Err(format!(
            "{} ({fp}) is a hardware (FIDO) key: sign with it through ssh-agent, giving its .pub",
            key.display()
        )),
        other => Err(format!(
            "{} ({fp}) is a `{other}` key, which cannot sign approvals: use an ed25519 or ECDSA key (`ssh-keygen -t ed25519`)",
            key.display()
        )),
    }
}

/// The armored signature.
fn armor(sig: &SshSig, fingerprint: String) -> Result<Signed, String> {
    let signature = sig
        .to_pem(LineEnding::LF)
        .map_err(|e| format!("cannot encode the signature: {e}"))?;
    Ok(Signed {
        signature,
        fingerprint,
    })
}

/// Bytes overwritten with zeros when dropped (a passphrase, a key file).
struct Wiped(Vec<u8>);

impl Drop for Wiped {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

/// The passphrase of an encrypted key: from the askpass program if there is
/// one, else from the terminal.
fn passphrase(key: &Path, sources: &Sources) -> Result<Wiped, String> {
    let prompt = format!("Enter passphrase for {}: ", key.display());
    if let Some(program) = &sources.askpass {
        return askpass(program, &prompt);
    }
    if let Some(tty) = &sources.tty {
        if let Some(p) = prompt_tty(tty, &prompt)? {
            return Ok(p);
        }
    }
    Err(format!(
        "the private key {} is encrypted and there is no terminal to ask its passphrase on: set SSH_ASKPASS to a program that prints it, or add the key to ssh-agent (`ssh-add`) and give its .pub",
        key.display()
    ))
}

/// Runs the askpass program with the prompt; its first line of output.
fn askpass(program: &Path, prompt: &str) -> Result<Wiped, String> {
    let shown = program.display();
    let output = Command::new(program)
        .arg(prompt)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run the askpass program {shown} (SSH_ASKPASS): {e}"))?;
    let out = Wiped(output.stdout);
    if !output.status.success() {
        return Err(format!(
            "the askpass program {shown} (SSH_ASKPASS) gave no passphrase ({})",
            output.status
        ));
    }
    Ok(first_line(&out.0))
}

/// The bytes up to the first newline, without a trailing `\r`.
fn first_line(bytes: &[u8]) -> Wiped {
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let line = &bytes[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Wiped(line.to_vec())
}

/// Prompts on the terminal with echo off. `Ok(None)`: there is no terminal.
fn prompt_tty(tty: &Path, prompt: &str) -> Result<Option<Wiped>, String> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};

    let Ok(mut file) = std::fs::OpenOptions::new().read(true).write(true).open(tty) else {
        return Ok(None);
    };
    let Ok(original) = tcgetattr(&file) else {
        return Ok(None);
    };
    let failed = |e: &dyn std::fmt::Display| format!("cannot prompt on {}: {e}", tty.display());
    file.write_all(prompt.as_bytes())
        .and_then(|()| file.flush())
        .map_err(|e| failed(&e))?;
    let mut silent = original.clone();
    silent.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&file, OptionalActions::Flush, &silent).map_err(|e| failed(&e))?;

    // Room enough that pushing does not reallocate (and leave copies).
    let mut line = Wiped(Vec::with_capacity(1024));
    let mut byte = [0u8; 1];
    let read = loop {
        match file.read(&mut byte) {
            Ok(0) => break Ok(()),
            Ok(_) if byte[0] == b'\n' => break Ok(()),
            Ok(_) => line.0.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    let restored = tcsetattr(&file, OptionalActions::Now, &original);
    let _ = file.write_all(b"\n");
    read.map_err(|e| failed(&e))?;
    restored.map_err(|e| failed(&e))?;
    Ok(Some(first_line(&line.0)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::signing::testkit::{
        self, keygen, keygen_fingerprint, keygen_verify, pub_line, pub_path, run, Agent,
    };
    use crate::signing::{AllowedSigners, Statement};

    fn statement() -> Vec<u8> {
        Statement {
            run_id: "r-20250101-abc",
            step: "deploy",
            decision: "approve",
            comment: Some("looks \"good\"\n"),
            fingerprint: "sha256:0123",
        }
        .bytes()
    }

    /// Checks `signed` for `key` both with ssh-keygen and with our verify.
    fn check(key: &Path, message: &[u8], signed: &Signed) {
        assert!(signed
            .signature
            .starts_with("-----BEGIN SSH SIGNATURE-----\n"));
        assert!(signed.signature.ends_with("-----END SSH SIGNATURE-----\n"));
        assert!(!signed.signature.contains('\r'));
        assert_eq!(signed.fingerprint, keygen_fingerprint(key));
        let allowed = format!("alice {}\n", pub_line(key));
        let out = keygen_verify(&allowed, "alice", message, &signed.signature, None);
        assert!(
            out.status.success(),
            "ssh-keygen -Y verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let signers = AllowedSigners::parse(&allowed).unwrap();
        assert_eq!(
            signers.verify(
                "alice",
                message,
                &signed.signature,
                std::time::SystemTime::now()
            ),
            Ok(signed.fingerprint.clone())
        );
    }

    /// An executable `/bin/sh` script.
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn private_key_files_sign_what_ssh_keygen_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let message = statement();
        for (name, kind) in [
            ("ed25519", &["-t", "ed25519"][..]),
            ("p256", &["-t", "ecdsa", "-b", "256"][..]),
            ("p384", &["-t", "ecdsa", "-b", "384"][..]),
        ] {
            let key = keygen(dir.path(), name, kind, "");
            let signed = sign_with(&key, &message, &Sources::default()).unwrap();
            check(&key, &message, &signed);
        }
        // P-521, as ssh-keygen makes them: half have a short scalar.
        for n in 0..4 {
            let name = format!("p521-{n}");
            let key = keygen(dir.path(), &name, &["-t", "ecdsa", "-b", "521"], "");
            let signed = sign_with(&key, &message, &Sources::default()).unwrap();
            check(&key, &message, &signed);
        }
        // The public function: an unencrypted key needs nothing from the
        // environment.
        let key = dir.path().join("ed25519");
        check(&key, &message, &sign(&key, &message).unwrap());
    }

    #[test]
    fn an_encrypted_key_takes_its_passphrase_from_askpass() {
        let dir = tempfile::tempdir().unwrap();
        let passphrase = "correct horse battery";
        let key = keygen(dir.path(), "locked", &["-t", "ed25519"], passphrase);
        let message = statement();
        let seen = dir.path().join("prompt-seen");
        let good = script(
            dir.path(),
            "askpass",
            &format!(
                "printf '%s' \"$1\" > '{}'\necho '{passphrase}'",
                seen.display()
            ),
        );
        let sources = Sources {
            askpass: Some(good),
            ..Sources::default()
        };
        let signed = sign_with(&key, &message, &sources).unwrap();
        check(&key, &message, &signed);
        let prompt = std::fs::read_to_string(&seen).unwrap();
        assert_eq!(prompt, format!("Enter passphrase for {}: ", key.display()));

        let wrong = script(dir.path(), "wrong", "echo 'incorrect'");
        let err = sign_with(
            &key,
            &message,
            &Sources {
                askpass: Some(wrong),
                ..Sources::default()
            },
        )
        .unwrap_err();
        assert!(err.contains("wrong passphrase"), "{err}");
        assert!(err.contains(&keygen_fingerprint(&key)), "{err}");
        assert!(
            !err.contains("incorrect") && !err.contains(passphrase),
            "{err}"
        );

        let cancelled = script(dir.path(), "cancel", "exit 1");
        let err = sign_with(
            &key,
            &message,
            &Sources {
                askpass: Some(cancelled),
                ..Sources::default()
            },
        )
        .unwrap_err();
        assert!(err.contains("gave no passphrase"), "{err}");

        // Neither askpass nor a terminal: say how to give it.
        let err = sign_with(&key, &message, &Sources::default()).unwrap_err();
        assert!(err.contains("is encrypted"), "{err}");
        assert!(
            err.contains("SSH_ASKPASS") && err.contains("ssh-add"),
            "{err}"
        );
        // A terminal path that cannot be opened is no terminal.
        let err = sign_with(
            &key,
            &message,
            &Sources {
                tty: Some(dir.path().join("no-such-tty")),
                ..Sources::default()
            },
        )
        .unwrap_err();
        assert!(err.contains("no terminal"), "{err}");
    }

    #[test]
    fn a_public_key_signs_through_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let message = statement();
        let ed = keygen(dir.path(), "ed", &["-t", "ed25519"], "");
        let ec = keygen(dir.path(), "ec", &["-t", "ecdsa", "-b", "256"], "");
        let rsa = keygen(dir.path(), "rsa", &["-t", "rsa", "-b", "2048"], "");
        let absent = keygen(dir.path(), "absent", &["-t", "ed25519"], "");
        let agent = Agent::start(dir.path());
        agent.add(&ed);
        agent.add(&ec);
        agent.add(&rsa);
        let sources = Sources {
            agent: Some(agent.socket.clone()),
            ..Sources::default()
        };
        for key in [&ed, &ec, &rsa] {
            let signed = sign_with(&pub_path(key), &message, &sources).unwrap();
            check(key, &message, &signed);
        }
        // RSA only through the agent, said before any passphrase is asked.
        let err = sign_with(&rsa, &message, &sources).unwrap_err();
        assert!(
            err.contains("RSA private key") && err.contains("ssh-agent"),
            "{err}"
        );

        let err = sign_with(&pub_path(&absent), &message, &sources).unwrap_err();
        assert!(err.contains("does not hold"), "{err}");
        assert!(err.contains(&keygen_fingerprint(&absent)), "{err}");

        let err = sign_with(&pub_path(&ed), &message, &Sources::default()).unwrap_err();
        assert!(err.contains("SSH_AUTH_SOCK is not set"), "{err}");

        let err = sign_with(
            &pub_path(&ed),
            &message,
            &Sources {
                agent: Some(dir.path().join("no-agent.sock")),
                ..Sources::default()
            },
        )
        .unwrap_err();
        assert!(err.contains("cannot reach the ssh-agent"), "{err}");
        drop(agent);
    }

    #[test]
    fn files_that_are_not_keys_are_refused_without_their_content() {
        let dir = tempfile::tempdir().unwrap();
        let message = statement();

        let err =
            sign_with(&dir.path().join("missing"), &message, &Sources::default()).unwrap_err();
        assert!(err.contains("cannot read the key file"), "{err}");

        let junk = dir.path().join("junk");
        std::fs::write(&junk, "hello secret-words\n").unwrap();
        let err = sign_with(&junk, &message, &Sources::default()).unwrap_err();
        assert!(
            err.contains("neither an OpenSSH private key nor a public key"),
            "{err}"
        );
        assert!(!err.contains("secret-words"), "{err}");

        let pem = keygen(
            dir.path(),
            "pem",
            &["-t", "ecdsa", "-b", "256", "-m", "PEM"],
            "",
        );
        let err = sign_with(&pem, &message, &Sources::default()).unwrap_err();
        assert!(err.contains("PEM format"), "{err}");
        let text = std::fs::read_to_string(&pem).unwrap();
        for line in text.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!err.contains(line), "{err}");
        }

        let two = dir.path().join("two.pub");
        let ed = keygen(dir.path(), "ed", &["-t", "ed25519"], "");
        std::fs::write(&two, format!("{0}\n{0}\n", pub_line(&ed))).unwrap();
        let err = sign_with(&two, &message, &Sources::default()).unwrap_err();
        assert!(err.contains("more than one line"), "{err}");
    }

    /// Keys made by `ssh-keygen -t ecdsa` (test fixtures, used nowhere
    /// else) whose scalar OpenSSH wrote shorter than the curve's size:
    /// 31 of 32 bytes, 47 of 48, 65 of 66.
    const SHORT_SCALAR_KEYS: [(&str, &str); 3] = [
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAaAAAABNlY2RzYS
1zaGEyLW5pc3RwMjU2AAAACG5pc3RwMjU2AAAAQQSwagASKoPvfA5p+4Z3vvqaEBE0qMND
DHRjDFGP6sndQW9c+yk8mzqv0zTNR9FmUGNGMkqlGTQyiM3OVAG+uFMKAAAAqBX8Po4V/D
6OAAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBLBqABIqg+98Dmn7
hne++poQETSow0MMdGMMUY/qyd1Bb1z7KTybOq/TNM1H0WZQY0YySqUZNDKIzc5UAb64Uw
oAAAAfFZ5VAeBCNfQDst5ylMeNSI6S5EtzWpoGvdfkh+/+cQAAAApzaG9ydC1wMjU2AQID
BAUGBw==
-----END OPENSSH PRIVATE KEY-----
",
            "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBLBqABIqg+98Dmn7hne++poQETSow0MMdGMMUY/qyd1Bb1z7KTybOq/TNM1H0WZQY0YySqUZNDKIzc5UAb64Uwo= short-p256",
        ),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAiAAAABNlY2RzYS
1zaGEyLW5pc3RwMzg0AAAACG5pc3RwMzg0AAAAYQSbd0McI7mT6+3DdazcAdS0JJmPwhna
QTdP+/jeviRQPGTElAEVZQS6nHMEL9RCVIJR7PCz5thFWrpl0cqcej89H9ThNFCburv/ra
FlMyCUb1Q2V8DMJubBxU6V+7shUhMAAADYXuzy+V7s8vkAAAATZWNkc2Etc2hhMi1uaXN0
cDM4NAAAAAhuaXN0cDM4NAAAAGEEm3dDHCO5k+vtw3Ws3AHUtCSZj8IZ2kE3T/v43r4kUD
xkxJQBFWUEupxzBC/UQlSCUezws+bYRVq6ZdHKnHo/PR/U4TRQm7q7/62hZTMglG9UNlfA
zCbmwcVOlfu7IVITAAAAL2KRiyD6A3BE5cvMSZMM5Fu26hPXUnH/cxMCU0mxPNzrc0NrFW
zS0EQaIThBTm7eAAAACnNob3J0LXAzODQBAgMEBQYH
-----END OPENSSH PRIVATE KEY-----
",
            "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBJt3QxwjuZPr7cN1rNwB1LQkmY/CGdpBN0/7+N6+JFA8ZMSUARVlBLqccwQv1EJUglHs8LPm2EVaumXRypx6Pz0f1OE0UJu6u/+toWUzIJRvVDZXwMwm5sHFTpX7uyFSEw== short-p384",
        ),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAArAAAABNlY2RzYS
1zaGEyLW5pc3RwNTIxAAAACG5pc3RwNTIxAAAAhQQA3KupSYYaBAa83GPjIO05hoNnjVV8
bWx1ZMNoD8gn4ST8t7uOgD5P9DtpLyRUXimgm4xcbjZRqbfxR8D7t+LK2X0BS3MEQQ23VT
MnJq3ZCuYMtRUR3ZI7KMG4arhvKI/UZEJAu7H4WJRlI97vYxR5viXFujyVEzJdVoiEvw5h
XR3rt+oAAAEIJ72ADye9gA8AAAATZWNkc2Etc2hhMi1uaXN0cDUyMQAAAAhuaXN0cDUyMQ
AAAIUEANyrqUmGGgQGvNxj4yDtOYaDZ41VfG1sdWTDaA/IJ+Ek/Le7joA+T/Q7aS8kVF4p
oJuMXG42Uam38UfA+7fiytl9AUtzBEENt1UzJyat2QrmDLUVEd2SOyjBuGq4byiP1GRCQL
ux+FiUZSPe72MUeb4lxbo8lRMyXVaIhL8OYV0d67fqAAAAQSzpfSUQavlY+ODROrWILd7i
T2Fw877mHwG4Clj41TiuI72rz5Wx0MsB8farr/IZ1up/ByKdjiFGXY/Gmd30O9gvAAAACn
Nob3J0LXA1MjEB
-----END OPENSSH PRIVATE KEY-----
",
            "ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBADcq6lJhhoEBrzcY+Mg7TmGg2eNVXxtbHVkw2gPyCfhJPy3u46APk/0O2kvJFReKaCbjFxuNlGpt/FHwPu34srZfQFLcwRBDbdVMycmrdkK5gy1FRHdkjsowbhquG8oj9RkQkC7sfhYlGUj3u9jFHm+JcW6PJUTMl1WiIS/DmFdHeu36g== short-p521",
        ),
    ];

    #[test]
    fn ecdsa_keys_with_a_short_scalar_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let message = statement();
        let passphrase = "pass";
        let askpass = script(dir.path(), "askpass", &format!("echo '{passphrase}'"));
        let wrong = script(dir.path(), "wrong", "echo 'nope'");
        for (n, (private, public)) in SHORT_SCALAR_KEYS.into_iter().enumerate() {
            let path = dir.path().join(format!("short-{n}"));
            std::fs::write(&path, private).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::fs::write(pub_path(&path), format!("{public}\n")).unwrap();
            assert!(
                PrivateKey::from_openssh(private).is_err(),
                "ssh-key now reads short ECDSA scalars: read_short_scalar can go"
            );
            let signed = sign_with(&path, &message, &Sources::default()).unwrap();
            check(&path, &message, &signed);

            // Encrypted by ssh-keygen itself.
            run(testkit::ssh_tool("ssh-keygen")
                .args(["-q", "-p", "-a", "2", "-P", "", "-N", passphrase, "-f"])
                .arg(&path));
            let sources = Sources {
                askpass: Some(askpass.clone()),
                ..Sources::default()
            };
            let signed = sign_with(&path, &message, &sources).unwrap();
            check(&path, &message, &signed);
            let sources = Sources {
                askpass: Some(wrong.clone()),
                ..Sources::default()
            };
            let err = sign_with(&path, &message, &sources).unwrap_err();
            assert!(err.contains("wrong passphrase"), "{err}");
        }
    }

    #[test]
    fn first_line_of_askpass_output() {
        assert_eq!(first_line(b"pw\nmore\n").0, b"pw");
        assert_eq!(first_line(b"pw\r\n").0, b"pw");
        assert_eq!(first_line(b"pw").0, b"pw");
        assert_eq!(first_line(b"").0, b"");
    }
}
