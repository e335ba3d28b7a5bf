//! Flags in a JSON file: `{ "flag": value, ... }`.
//!
//! Each change takes an exclusive `flock` on a sidecar lock file, reads the
//! whole object and replaces the file atomically ([`fsutil::write_atomic`]):
//! readers see the old or the new file, never half of one, and two writers
//! (two runs, or a run and `runbook rollback`) never lose an update. A new
//! flags file is readable by others (the services that poll it); an existing
//! one keeps its mode.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};
use serde_json::{Map, Value as Json};

use super::{BoxFuture, FlagStore};
use crate::fsutil;

pub struct FileFlags {
    path: PathBuf,
}

impl FileFlags {
    pub fn new(path: impl Into<PathBuf>) -> FileFlags {
        FileFlags { path: path.into() }
    }

    fn lock(&self) -> Result<Locked, String> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let lock_path = lock_path(&self.path);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        // Released when `file` closes.
        flock(&file, FlockOperation::LockExclusive)
            .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
        Ok(Locked { _file: file })
    }

    fn read(&self) -> Result<Map<String, Json>, String> {
        match fs::read_to_string(&self.path) {
            Ok(text) if text.trim().is_empty() => Ok(Map::new()),
            Ok(text) => match serde_json::from_str::<Json>(&text) {
                Ok(Json::Object(m)) => Ok(m),
                Ok(_) => Err(format!(
                    "{} does not hold a JSON object",
                    self.path.display()
                )),
                Err(e) => Err(format!("{} is not valid JSON: {e}", self.path.display())),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
            Err(e) => Err(format!("cannot read {}: {e}", self.path.display())),
        }
    }

    fn write(&self, flags: &Map<String, Json>) -> Result<(), String> {
        let mut text = serde_json::to_string_pretty(flags).map_err(|e| e.to_string())?;
        text.push('\n');
        fsutil::write_atomic(&self.path, text.as_bytes(), fsutil::SHARED_READ)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}

struct Locked {
    _file: File,
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_default();
    name.push(".lock");
    path.with_file_name(name)
}

impl FlagStore for FileFlags {
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Json>, String>> {
        Box::pin(async move {
            let _l = self.lock()?;
            Ok(self.read()?.get(name).cloned())
        })
    }

    fn set<'a>(
        &'a self,
        name: &'a str,
        value: &'a Json,
        record: &'a (dyn Fn(Option<&Json>) -> Result<(), String> + Send + Sync),
    ) -> BoxFuture<'a, Result<Option<Json>, String>> {
        Box::pin(async move {
            let _l = self.lock()?;
            let mut flags = self.read()?;
            let previous = flags.get(name).cloned();
            record(previous.as_ref())?;
            flags.insert(name.to_string(), value.clone());
            self.write(&flags)?;
            Ok(previous)
        })
    }

    fn restore<'a>(
        &'a self,
        name: &'a str,
        previous: Option<&'a Json>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let _l = self.lock()?;
            let mut flags = self.read()?;
            match previous {
                Some(v) => {
                    flags.insert(name.to_string(), v.clone());
                }
                None => {
                    flags.remove(name);
                }
            }
            self.write(&flags)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn set_returns_previous_and_restore_deletes_new_flags() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileFlags::new(dir.path().join("flags.json"));
        let noop = |_: Option<&Json>| Ok(());
        assert_eq!(store.set("a", &Json::from(1), &noop).await.unwrap(), None);
        assert_eq!(
            store.set("a", &Json::from(2), &noop).await.unwrap(),
            Some(Json::from(1))
        );
        store.restore("a", Some(&Json::from(1))).await.unwrap();
        assert_eq!(store.get("a").await.unwrap(), Some(Json::from(1)));
        store.restore("a", None).await.unwrap();
        assert_eq!(store.get("a").await.unwrap(), None);
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flags.json");
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    let store = FileFlags::new(path);
                    for i in 0..20 {
                        let noop = |_: Option<&Json>| Ok(());
                        rt.block_on(store.set(&format!("t{t}_{i}"), &Json::from(i), &noop))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = fs::read_to_string(&path).unwrap();
        let m: Map<String, Json> = serde_json::from_str(&text).unwrap();
        assert_eq!(m.len(), 160);
    }
}
