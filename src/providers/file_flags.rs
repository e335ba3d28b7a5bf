//! Flags in a JSON file: `{ "flag": value, ... }`.
//!
//! Only the entry a step writes changes: every other entry keeps its exact
//! text (`1.50`, big numbers, repeated keys, nested spacing), and a
//! previous value is restored as the exact text it had ([`exact`]).
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
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value as Json;

use super::{exact, BoxFuture, FlagStore};
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

    /// The file's entries in order, each value as its exact text.
    fn read(&self) -> Result<Entries, String> {
        match fs::read_to_string(&self.path) {
            Ok(text) if text.trim().is_empty() => Ok(Entries::default()),
            Ok(text) => serde_json::from_str::<Entries>(&text).map_err(|e| {
                if e.is_data() {
                    format!("{} does not hold a JSON object", self.path.display())
                } else {
                    format!("{} is not valid JSON: {e}", self.path.display())
                }
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Entries::default()),
            Err(e) => Err(format!("cannot read {}: {e}", self.path.display())),
        }
    }

    fn write(&self, flags: &Entries) -> Result<(), String> {
        let mut text = String::from("{");
        for (n, (k, v)) in flags.0.iter().enumerate() {
            text.push_str(if n == 0 { "\n  " } else { ",\n  " });
            text.push_str(&serde_json::to_string(k).map_err(|e| e.to_string())?);
            text.push_str(": ");
            text.push_str(v.get());
        }
        text.push_str(if flags.0.is_empty() { "}\n" } else { "\n}\n" });
        fsutil::write_atomic(&self.path, text.as_bytes(), fsutil::SHARED_READ)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}

/// A flags file's entries in file order, values as their exact text, so
/// entries a run does not touch are written back byte for byte (numbers
/// such as `1.50` and repeated keys included).
#[derive(Default)]
struct Entries(Vec<(String, Box<RawValue>)>);

impl Entries {
    /// The value a reader sees (the last of repeated keys), exactly.
    fn get(&self, name: &str) -> Option<Json> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| exact::from_bytes(v.get().as_bytes()))
    }

    /// Sets (or with `None` removes) `name`, in the place of its first entry.
    fn put(&mut self, name: &str, value: Option<&Json>) -> Result<(), String> {
        let at = self.0.iter().position(|(k, _)| k == name);
        self.0.retain(|(k, _)| k != name);
        if let Some(v) = value {
            let text = String::from_utf8(exact::to_bytes(v))
                .map_err(|_| format!("flag {name}: the value to write is not UTF-8 text"))?;
            let raw = RawValue::from_string(text)
                .map_err(|e| format!("flag {name}: the value to write is not JSON: {e}"))?;
            let at = at.unwrap_or(self.0.len()).min(self.0.len());
            self.0.insert(at, (name.to_string(), raw));
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object of flags")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(pair) = m.next_entry::<String, Box<RawValue>>()? {
                    out.push(pair);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(Pairs)
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
            Ok(self.read()?.get(name))
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
            let previous = flags.get(name);
            record(previous.as_ref())?;
            flags.put(name, Some(value))?;
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
            flags.put(name, previous)?;
            self.write(&flags)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_not_written_stay_byte_identical_and_restores_are_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flags.json");
        let before = "{\"price\": 1.50, \"big\": 12345678901234567890123, \"dup\": 1, \"dup\": 2, \"mine\": {\"a\":  1}}";
        fs::write(&path, before).unwrap();
        let store = FileFlags::new(&path);
        let noop = |_: Option<&Json>| Ok(());
        let previous = store.set("mine", &Json::from(5), &noop).await.unwrap();
        let text = fs::read_to_string(&path).unwrap();
        for kept in [
            "\"price\": 1.50",
            "\"big\": 12345678901234567890123",
            "\"dup\": 1",
            "\"dup\": 2",
        ] {
            assert!(text.contains(kept), "{kept} in {text}");
        }
        assert!(text.contains("\"mine\": 5"), "{text}");
        store.restore("mine", previous.as_ref()).await.unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"mine\": {\"a\":  1}"), "{text}");
    }

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
        let m: serde_json::Map<String, Json> = serde_json::from_str(&text).unwrap();
        assert_eq!(m.len(), 160);
    }
}
