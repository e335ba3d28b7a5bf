//! Writing a file so that a reader, or a crash, sees its old contents or its
//! new ones, never part of either.
//!
//! One helper for every file we replace in place (the file flag store, an
//! approval's `waiting.json` and decisions): a temporary file is created
//! beside the target (same directory, so the rename never crosses a file
//! system), written, fsync'd and renamed over the target, then the directory
//! is fsync'd so the rename itself survives a crash. `tempfile` makes the
//! temporary file: an unpredictable name opened with `O_EXCL`, and removed
//! again if anything fails before the rename.

use std::ffi::OsString;
use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Mode for a file only its owner should read: run state, decisions.
pub const PRIVATE: u32 = 0o600;

/// Mode for a file other local users or services may need to read, such as
/// flags an application polls (less the process umask).
pub const SHARED_READ: u32 = 0o644;

/// Replaces `path` with `contents` atomically.
///
/// A new file gets `mode` (less the umask); a file that already exists keeps
/// its permission bits, so a `chmod` someone made on purpose survives the
/// rewrite (ownership does not carry over: the new file is ours). The
/// temporary file is `.<name>.<random>.tmp`: hidden, and never with the
/// target's extension, so a directory scan for `*.json` does not pick it up.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    if let Ok(existing) = std::fs::metadata(path) {
        let bits = existing.permissions().mode() & 0o7777;
        tmp.as_file()
            .set_permissions(Permissions::from_mode(bits))?;
    }
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // Best effort: the new contents are in place whatever this says, and
    // some file systems refuse to fsync a directory.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one", PRIVATE).unwrap();
        write_atomic(&path, b"two", PRIVATE).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn a_new_file_gets_the_mode_an_existing_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flags.json");
        write_atomic(&path, b"{}", PRIVATE).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        std::fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"{}", SHARED_READ).unwrap();
        assert_eq!(mode_of(&path), 0o640);
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        let err = write_atomic(Path::new("/"), b"", PRIVATE).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/file.json");
        assert!(write_atomic(&path, b"x", PRIVATE).is_err());
    }
}
