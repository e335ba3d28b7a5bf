//! Run locks: runs holding the same `lock:` key never overlap on this machine.
//!
//! A lock is an exclusive `flock` on `<state dir>/locks/<hash>.lock`, held for
//! the life of the process: the kernel releases it when the holder exits or
//! dies, so a crashed run never leaves a stale lock. The holder writes its run
//! id into the file so a second run can say who holds it. Team mode keeps
//! locks as rows in PostgreSQL instead (`store/postgres/locks.rs`), behind
//! the same [`crate::store::Store::lock`].
//!
//! `lock: { key, wait }` queues instead of refusing, first come first
//! served, and the queue is made of the same kernel-held locks so that it
//! needs no cleanup either: `locks/<hash>.queue/` holds one entry per waiter,
//! named `<ticket>-<run id>` and `flock`ed by that waiter for as long as it
//! waits. Tickets come from `locks/<hash>.counter`, taken under its own
//! `flock` together with creating the entry, so entries appear in ticket
//! order and a waiter that sees none ahead of it really is first. An entry
//! is created under a dot name, locked, then renamed into place: nobody sees
//! an entry before its lock is held, so an entry whose lock can be taken
//! belongs to a process that died, and whoever sees it removes it. A waiter
//! takes the key only when no live entry is ahead of it; the queue is polled
//! (every 50 ms, up to the wait), since a `flock` cannot wait for "every
//! entry ahead is gone". Names are the key's hash, so neither a listing nor
//! a queue shows the key (it may carry a param or a secret).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;

/// How often a waiter looks at the queue and tries the key again.
const POLL: Duration = Duration::from_millis(50);
/// How often a waiter tries the counter's lock, held only while one entry
/// is created.
const COUNTER_POLL: Duration = Duration::from_millis(2);

pub struct Lock {
    _file: File,
}

#[derive(Debug)]
pub enum LockError {
    Held {
        holder: String,
    },
    Io(std::io::Error),
    /// The waiter was asked to stop (a signal) before its turn came.
    Stopped,
}

impl Lock {
    /// Takes `key` for `run_id`, or refuses at once when another run holds
    /// it or runs wait for it in its queue (they asked first).
    pub fn acquire(state_dir: &Path, key: &str, run_id: &str) -> Result<Lock, LockError> {
        let paths = KeyPaths::new(state_dir, key).map_err(LockError::Io)?;
        let file = try_flock(&paths.lock)?;
        // Between one holder's release and the next waiter's poll the key
        // is free; a run that does not wait must not take it then.
        if let Some(first) = live_entries(&paths.queue, None)?.first() {
            return Err(LockError::Held {
                holder: first.run_id.clone(),
            });
        }
        write_holder(file, run_id)
    }

    /// Takes `key` like `acquire`, but when it is held waits in a FIFO queue
    /// for up to `wait`, calling `queued(position)` (1 = next in line)
    /// whenever this run's place changes (and once at first), and giving up
    /// its place ([`LockError::Stopped`]) as soon as `stopped` says so. A
    /// run that gets the key without waiting is never told a place.
    /// `Err(LockError::Held { holder })` when `wait` passes (holder = the run
    /// id holding it then); the run's entry is gone from the queue then.
    pub fn acquire_queued(
        state_dir: &Path,
        key: &str,
        run_id: &str,
        wait: Duration,
        queued: &mut dyn FnMut(usize),
        stopped: &dyn Fn() -> bool,
    ) -> Result<Lock, LockError> {
        if !entry_name_ok(run_id) {
            return Err(LockError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{run_id:?} cannot name a lock queue entry"),
            )));
        }
        let deadline = Instant::now() + wait;
        let paths = KeyPaths::new(state_dir, key).map_err(LockError::Io)?;
        std::fs::create_dir_all(&paths.queue).map_err(LockError::Io)?;
        let entry = join(&paths, run_id, deadline)?;
        // Whatever happens from here, the entry goes when this returns.
        let result = wait_in_queue(&paths, &entry, run_id, deadline, queued, stopped);
        let _ = std::fs::remove_file(&entry.path);
        drop(entry);
        result
    }

    /// Takes an exclusive lock on `path`, writing `holder` into it.
    pub fn acquire_file(path: &Path, holder_name: &str) -> Result<Lock, LockError> {
        write_holder(try_flock(path)?, holder_name)
    }
}

/// Whether someone holds the lock on `path` right now (without taking it).
pub fn is_held(path: &Path) -> bool {
    let Ok(file) = OpenOptions::new().read(true).write(true).open(path) else {
        return false;
    };
    // A lock we get is released when `file` closes.
    flock(&file, FlockOperation::NonBlockingLockExclusive).is_err()
}

/// The place (1 = next) of `run_id` in any lock queue of the state dir,
/// while a live process waits there.
pub fn queue_position(state_dir: &Path, run_id: &str) -> Option<usize> {
    if !entry_name_ok(run_id) {
        return None;
    }
    let dirs = std::fs::read_dir(state_dir.join("locks")).ok()?;
    for dir in dirs.flatten() {
        let path = dir.path();
        if path.extension().is_none_or(|e| e != "queue") {
            continue;
        }
        let Ok(live) = live_entries(&path, None) else {
            continue;
        };
        if let Some(at) = live.iter().position(|e| e.run_id == run_id) {
            return Some(at + 1);
        }
    }
    None
}

/// A lock key's file name: the first 32 hex digits of its SHA-256.
pub(crate) fn key_file_name(key: &str) -> String {
    let mut hex = crate::journal::hash(key);
    hex.truncate(32);
    hex
}

/// The files of one key under `<state dir>/locks/`.
struct KeyPaths {
    lock: PathBuf,
    queue: PathBuf,
    counter: PathBuf,
}

impl KeyPaths {
    /// Creates `locks/` (not the queue: a key nobody waits for has none).
    fn new(state_dir: &Path, key: &str) -> std::io::Result<KeyPaths> {
        let dir = state_dir.join("locks");
        std::fs::create_dir_all(&dir)?;
        let name = key_file_name(key);
        Ok(KeyPaths {
            lock: dir.join(format!("{name}.lock")),
            queue: dir.join(format!("{name}.queue")),
            counter: dir.join(format!("{name}.counter")),
        })
    }
}

/// A run id names its queue entry, so it must be one file name.
fn entry_name_ok(run_id: &str) -> bool {
    !run_id.is_empty()
        && run_id.len() <= 200
        && !run_id.starts_with('.')
        && !run_id.contains(['/', '\0'])
}

/// Opens `path` and takes its exclusive lock without waiting.
fn try_flock(path: &Path) -> Result<File, LockError> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(LockError::Io)?;
    // Released when the file closes or the process dies.
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(Errno::WOULDBLOCK) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim().to_string();
            Err(LockError::Held {
                holder: if holder.is_empty() {
                    "unknown".into()
                } else {
                    holder
                },
            })
        }
        Err(e) => Err(LockError::Io(e.into())),
    }
}

fn write_holder(mut file: File, holder_name: &str) -> Result<Lock, LockError> {
    file.set_len(0).map_err(LockError::Io)?;
    file.seek(SeekFrom::Start(0)).map_err(LockError::Io)?;
    // Not synced: the name only says who holds the lock, and a power
    // loss that could drop it releases the lock too.
    file.write_all(holder_name.as_bytes())
        .map_err(LockError::Io)?;
    Ok(Lock { _file: file })
}

/// This waiter's entry in a queue, locked while it is held.
struct Entry {
    path: PathBuf,
    ticket: u64,
    _file: File,
}

/// A live entry seen in a queue.
struct Seen {
    ticket: u64,
    run_id: String,
}

/// Takes a ticket and puts this run's entry in the queue, both under the
/// counter's lock, so entries appear in ticket order.
fn join(paths: &KeyPaths, run_id: &str, deadline: Instant) -> Result<Entry, LockError> {
    let mut counter = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&paths.counter)
        .map_err(LockError::Io)?;
    // Held for one file's creation: tried until the deadline rather than
    // waited for, so a holder stopped mid-creation cannot hold this run
    // past its wait.
    loop {
        match flock(&counter, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(Errno::WOULDBLOCK) if Instant::now() < deadline => {
                std::thread::sleep(COUNTER_POLL);
            }
            Err(Errno::WOULDBLOCK) => {
                return Err(LockError::Held {
                    holder: current_holder(paths, None),
                })
            }
            Err(e) => return Err(LockError::Io(e.into())),
        }
    }
    // Only the counter's holder creates dot files: any left belong to a
    // waiter that died before its entry was in place.
    if let Ok(names) = std::fs::read_dir(&paths.queue) {
        for name in names.flatten() {
            if name.file_name().to_string_lossy().starts_with('.') {
                let _ = std::fs::remove_file(name.path());
            }
        }
    }
    let mut text = String::new();
    counter.read_to_string(&mut text).map_err(LockError::Io)?;
    // A counter that is new, or was cut short by a crash mid-write,
    // restarts above every entry in the queue, live or not.
    let last = match text.trim().parse::<u64>() {
        Ok(n) => n,
        Err(_) => std::fs::read_dir(&paths.queue)
            .map_err(LockError::Io)?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let (ticket, _) = name.to_str()?.split_once('-')?;
                ticket.parse::<u64>().ok()
            })
            .max()
            .unwrap_or(0),
    };
    let ticket = last.saturating_add(1);
    counter.set_len(0).map_err(LockError::Io)?;
    counter.seek(SeekFrom::Start(0)).map_err(LockError::Io)?;
    counter
        .write_all(ticket.to_string().as_bytes())
        .map_err(LockError::Io)?;
    let name = format!("{ticket:020}-{run_id}");
    let temp = paths.queue.join(format!(".{name}"));
    let path = paths.queue.join(&name);
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&temp)
        .map_err(LockError::Io)?;
    let placed = flock(&file, FlockOperation::NonBlockingLockExclusive)
        .map_err(std::io::Error::from)
        .and_then(|()| std::fs::rename(&temp, &path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temp);
        return Err(LockError::Io(e));
    }
    // The counter's lock is released when `counter` closes.
    Ok(Entry {
        path,
        ticket,
        _file: file,
    })
}

fn wait_in_queue(
    paths: &KeyPaths,
    entry: &Entry,
    run_id: &str,
    deadline: Instant,
    queued: &mut dyn FnMut(usize),
    stopped: &dyn Fn() -> bool,
) -> Result<Lock, LockError> {
    let mut told = None;
    let mut holder = None;
    loop {
        if stopped() {
            return Err(LockError::Stopped);
        }
        let ahead = live_entries(&paths.queue, Some(entry.ticket))?;
        if ahead.is_empty() {
            match try_flock(&paths.lock) {
                Ok(file) => return write_holder(file, run_id),
                Err(LockError::Held { holder: h }) => holder = Some(h),
                Err(e) => return Err(e),
            }
        }
        let now = Instant::now();
        if now >= deadline {
            let first_ahead = ahead.first().map(|e| e.run_id.as_str());
            return Err(LockError::Held {
                holder: match holder {
                    Some(h) if first_ahead.is_none() => h,
                    _ => current_holder(paths, first_ahead),
                },
            });
        }
        let place = ahead.len() + 1;
        if told != Some(place) {
            told = Some(place);
            queued(place);
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
}

/// Who holds the key now: the name in its file while it is held, else the
/// first run ahead in the queue (it takes the key next).
fn current_holder(paths: &KeyPaths, first_ahead: Option<&str>) -> String {
    if is_held(&paths.lock) {
        if let Ok(name) = std::fs::read_to_string(&paths.lock) {
            let name = name.trim();
            if !name.is_empty() {
                return name.to_string();
            }
        }
    }
    first_ahead.map_or_else(|| "unknown".to_string(), str::to_string)
}

/// The live entries of a queue (all, or those with a ticket below
/// `before`), in ticket order. Dead entries met on the way are removed.
fn live_entries(queue: &Path, before: Option<u64>) -> Result<Vec<Seen>, LockError> {
    let names = match std::fs::read_dir(queue) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LockError::Io(e)),
    };
    let mut seen = Vec::new();
    for name in names {
        let name = name.map_err(LockError::Io)?;
        let file_name = name.file_name();
        let file_name = file_name.to_string_lossy();
        let Some((ticket, run_id)) = file_name.split_once('-') else {
            continue;
        };
        let Ok(ticket) = ticket.parse::<u64>() else {
            continue;
        };
        if file_name.starts_with('.') || before.is_some_and(|b| ticket >= b) {
            continue;
        }
        let path = name.path();
        // Gone already: its waiter took the key or gave up.
        let Ok(file) = File::open(&path) else {
            continue;
        };
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Err(Errno::WOULDBLOCK) => seen.push(Seen {
                ticket,
                run_id: run_id.to_string(),
            }),
            // Nobody holds it: its waiter died. Removed while we hold it.
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => return Err(LockError::Io(e.into())),
        }
    }
    seen.sort_by_key(|s| s.ticket);
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    const KEY: &str = "rollout-production";

    fn queue_dir(state: &Path) -> PathBuf {
        state
            .join("locks")
            .join(format!("{}.queue", key_file_name(KEY)))
    }

    /// Every name in the key's queue, dot files included.
    fn queue_names(state: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(queue_dir(state))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Waits (bounded) until `check` holds.
    fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn plain_acquire_refuses_a_held_key_and_names_the_holder() {
        let state = tempfile::tempdir().unwrap();
        let held = Lock::acquire(state.path(), KEY, "run-a").unwrap();
        match Lock::acquire(state.path(), KEY, "run-b") {
            Err(LockError::Held { holder }) => assert_eq!(holder, "run-a"),
            other => panic!("expected Held, got {:?}", other.err()),
        }
        drop(held);
        assert!(Lock::acquire(state.path(), KEY, "run-b").is_ok());
        // A key nobody waited for has no queue.
        assert!(!queue_dir(state.path()).exists());
    }

    #[test]
    fn a_free_key_is_taken_at_once_without_a_place() {
        let state = tempfile::tempdir().unwrap();
        let mut places = Vec::new();
        let lock = Lock::acquire_queued(
            state.path(),
            KEY,
            "run-a",
            Duration::from_secs(5),
            &mut |p| places.push(p),
            &|| false,
        )
        .unwrap();
        assert!(places.is_empty(), "{places:?}");
        assert!(queue_names(state.path()).is_empty());
        assert!(matches!(
            Lock::acquire(state.path(), KEY, "run-b"),
            Err(LockError::Held { holder }) if holder == "run-a"
        ));
        drop(lock);
    }

    /// The places a waiter was told, shared with the test.
    type Places = Arc<Mutex<Vec<usize>>>;

    /// A thread waiting for `KEY` as `run_id`: once it has the key it
    /// records `run_id` in `order`, holds the key for `hold`, and lets go.
    fn waiter(
        dir: &Path,
        run_id: &str,
        order: &Arc<Mutex<Vec<String>>>,
        hold: Duration,
    ) -> (std::thread::JoinHandle<bool>, Places) {
        let places: Places = Arc::default();
        let (dir, id, order, told) = (
            dir.to_path_buf(),
            run_id.to_string(),
            order.clone(),
            places.clone(),
        );
        let thread = std::thread::spawn(move || {
            let lock = Lock::acquire_queued(
                &dir,
                KEY,
                &id,
                Duration::from_secs(30),
                &mut |p| {
                    told.lock().unwrap().push(p);
                },
                &|| false,
            );
            let got = lock.is_ok();
            if got {
                order.lock().unwrap().push(id);
                std::thread::sleep(hold);
            }
            got
        });
        (thread, places)
    }

    fn told(places: &Places) -> Vec<usize> {
        places.lock().unwrap().clone()
    }

    #[test]
    fn waiters_get_the_key_in_the_order_they_asked() {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().to_path_buf();
        let holder = Lock::acquire(&dir, KEY, "holder").unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for n in 1..=4 {
            let run_id = format!("waiter-{n}");
            // Held long enough for every waiter behind to see its place move.
            let (thread, places) = waiter(&dir, &run_id, &order, Duration::from_millis(300));
            // Each joins only once the one before it is waiting in line.
            eventually(&format!("{run_id} told its place"), || told(&places) == [n]);
            assert_eq!(queue_position(&dir, &run_id), Some(n));
            waiters.push((thread, places));
        }
        assert_eq!(queue_position(&dir, "holder"), None);
        drop(holder);
        let places: Vec<Vec<usize>> = waiters
            .into_iter()
            .map(|(thread, places)| {
                assert!(thread.join().unwrap());
                told(&places)
            })
            .collect();
        assert_eq!(
            *order.lock().unwrap(),
            ["waiter-1", "waiter-2", "waiter-3", "waiter-4"]
        );
        assert_eq!(
            places,
            [vec![1], vec![2, 1], vec![3, 2, 1], vec![4, 3, 2, 1]]
        );
        assert!(queue_names(&dir).is_empty(), "{:?}", queue_names(&dir));
    }

    #[test]
    fn a_waiter_that_times_out_is_refused_and_leaves_no_entry() {
        let state = tempfile::tempdir().unwrap();
        let holder = Lock::acquire(state.path(), KEY, "holder").unwrap();
        let started = Instant::now();
        let mut places = Vec::new();
        let r = Lock::acquire_queued(
            state.path(),
            KEY,
            "late",
            Duration::from_millis(300),
            &mut |p| places.push(p),
            &|| false,
        );
        let waited = started.elapsed();
        match r {
            Err(LockError::Held { holder }) => assert_eq!(holder, "holder"),
            other => panic!("expected Held, got {:?}", other.err()),
        }
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        assert_eq!(places, [1]);
        assert!(queue_names(state.path()).is_empty());
        assert_eq!(queue_position(state.path(), "late"), None);
        drop(holder);
    }

    #[test]
    fn a_zero_wait_is_one_try() {
        let state = tempfile::tempdir().unwrap();
        let holder = Lock::acquire(state.path(), KEY, "holder").unwrap();
        let r = Lock::acquire_queued(
            state.path(),
            KEY,
            "now",
            Duration::ZERO,
            &mut |_| {},
            &|| false,
        );
        assert!(matches!(r, Err(LockError::Held { holder }) if holder == "holder"));
        drop(holder);
        assert!(Lock::acquire_queued(
            state.path(),
            KEY,
            "now",
            Duration::ZERO,
            &mut |_| {},
            &|| false
        )
        .is_ok());
    }

    #[test]
    fn a_dead_entry_is_skipped_and_removed() {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().to_path_buf();
        let holder = Lock::acquire(&dir, KEY, "holder").unwrap();
        std::fs::create_dir_all(queue_dir(&dir)).unwrap();
        // What a waiter that died leaves: its entry, with nobody's lock on it,
        // and a half-made one.
        let ghost = queue_dir(&dir).join(format!("{:020}-ghost", 0));
        std::fs::write(&ghost, "").unwrap();
        std::fs::write(queue_dir(&dir).join(format!(".{:020}-ghost2", 0)), "").unwrap();
        assert_eq!(queue_position(&dir, "ghost"), None);
        assert!(!ghost.exists(), "seeing a dead entry removes it");
        std::fs::write(&ghost, "").unwrap();
        let order = Arc::default();
        let (thread, places) = waiter(&dir, "alive", &order, Duration::ZERO);
        eventually("the waiter told its place", || told(&places) == [1]);
        assert_eq!(queue_position(&dir, "alive"), Some(1));
        assert!(!ghost.exists());
        assert_eq!(queue_names(&dir), [format!("{:020}-alive", 1)]);
        drop(holder);
        assert!(thread.join().unwrap());
        assert_eq!(told(&places), [1]);
        assert_eq!(*order.lock().unwrap(), ["alive"]);
    }

    #[test]
    fn plain_acquire_does_not_jump_the_queue() {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().to_path_buf();
        let holder = Lock::acquire(&dir, KEY, "holder").unwrap();
        // A live waiter whose poll has not come round yet: the key is free.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let waiter = {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let paths = KeyPaths::new(&dir, KEY).unwrap();
                std::fs::create_dir_all(&paths.queue).unwrap();
                let entry = join(&paths, "first", Instant::now() + Duration::from_secs(5)).unwrap();
                let _ = rx.recv();
                drop(entry);
            })
        };
        eventually("the waiter in line", || {
            queue_position(&dir, "first") == Some(1)
        });
        drop(holder);
        assert!(matches!(
            Lock::acquire(&dir, KEY, "pusher"),
            Err(LockError::Held { holder }) if holder == "first"
        ));
        tx.send(()).unwrap();
        waiter.join().unwrap();
        // Its lock gone, the entry is dead: it no longer blocks anyone.
        assert!(Lock::acquire(&dir, KEY, "pusher").is_ok());
    }

    #[test]
    fn queue_position_counts_live_entries_ahead_in_any_queue() {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().to_path_buf();
        assert_eq!(queue_position(&dir, "nobody"), None);
        let other = "another-key";
        let held = [
            Lock::acquire(&dir, KEY, "h1").unwrap(),
            Lock::acquire(&dir, other, "h2").unwrap(),
        ];
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        for (key, id) in [(KEY, "a"), (KEY, "b"), (other, "x"), (KEY, "c")] {
            let (d, rx) = (dir.clone(), rx.clone());
            threads.push(std::thread::spawn(move || {
                let r = Lock::acquire_queued(
                    &d,
                    key,
                    id,
                    Duration::from_secs(30),
                    &mut |_| {},
                    &|| false,
                );
                // Hold nothing for long: wait to be told to finish.
                drop(r);
                let _ = rx.lock().unwrap().recv();
            }));
            eventually(id, || queue_position(&dir, id).is_some());
        }
        assert_eq!(queue_position(&dir, "a"), Some(1));
        assert_eq!(queue_position(&dir, "b"), Some(2));
        assert_eq!(queue_position(&dir, "c"), Some(3));
        assert_eq!(queue_position(&dir, "x"), Some(1));
        assert_eq!(queue_position(&dir, "h1"), None);
        assert_eq!(queue_position(&dir, "../a"), None);
        drop(held);
        for _ in &threads {
            let _ = tx.send(());
        }
        for t in threads {
            t.join().unwrap();
        }
        for id in ["a", "b", "c", "x"] {
            assert_eq!(queue_position(&dir, id), None, "{id}");
        }
    }

    /// Run by `a_waiter_killed_in_line_gives_up_its_place` in a child
    /// process: waits in the queue of the state dir it is given.
    #[test]
    fn child_waiter() {
        let Some(dir) = std::env::var_os("RUNBOOK_LOCK_TEST_CHILD_DIR") else {
            return;
        };
        let _ = Lock::acquire_queued(
            Path::new(&dir),
            KEY,
            "child",
            Duration::from_secs(60),
            &mut |_| {},
            &|| false,
        );
    }

    #[test]
    fn a_waiter_killed_in_line_gives_up_its_place() {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().to_path_buf();
        let holder = Lock::acquire(&dir, KEY, "holder").unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "lock::tests::child_waiter", "--nocapture"])
            .env("RUNBOOK_LOCK_TEST_CHILD_DIR", &dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        eventually("the child in line", || {
            queue_position(&dir, "child") == Some(1)
        });
        let (thread, places) = waiter(&dir, "behind", &Arc::default(), Duration::ZERO);
        eventually("the second waiter told its place", || told(&places) == [2]);
        child.kill().unwrap();
        child.wait().unwrap();
        eventually("the second waiter moving up", || told(&places) == [2, 1]);
        assert_eq!(queue_position(&dir, "behind"), Some(1));
        assert_eq!(queue_position(&dir, "child"), None);
        drop(holder);
        assert!(thread.join().unwrap());
        assert!(queue_names(&dir).is_empty(), "{:?}", queue_names(&dir));
    }
}
