//! Evaluation budgets: every render runs on a worker thread of its own
//! (never on an async executor's thread), with fuel, a recursion limit, an
//! output cap and, when the binary installs [`Alloc`], a memory cap.
//! See docs/engine.md, "Template budgets".
//!
//! A module of its own because it holds the allocator (one of the crate's three
//! `unsafe` places; the others are reading the login name and restoring
//! SIGPIPE) and the worker that every render runs on.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::io;
use std::sync::mpsc;

use minijinja::value::Value;
use minijinja::{Error, ErrorKind, Template};

/// Largest template source, in bytes.
pub const MAX_SOURCE_BYTES: usize = 128 * 1024;
/// Deepest bracket nesting inside one expression.
pub const MAX_NESTING: usize = 32;
/// Most operators, filters, tests and lookups in one `{{ }}` or `{% %}`.
pub const MAX_CHAIN: usize = 256;
/// Instructions one render may execute.
pub const FUEL: u64 = 1_000_000;
/// Deepest macro/call recursion.
pub const RECURSION_LIMIT: usize = 64;
/// Most bytes one render may produce.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// Most heap one render may hold at once.
pub const MAX_MEMORY_BYTES: usize = 64 * 1024 * 1024;
/// The render worker's stack.
const WORKER_STACK: usize = 16 * 1024 * 1024;

thread_local! {
    /// Memory budget left on this thread; `usize::MAX` when not rendering.
    static LEFT: Cell<usize> = const { Cell::new(usize::MAX) };
    /// What to do if this worker's render runs out of memory.
    static ON_OVER: RefCell<Option<Box<dyn FnOnce()>>> = const { RefCell::new(None) };
    /// Whether this thread is a render worker.
    static IN_WORKER: Cell<bool> = const { Cell::new(false) };
    /// This thread's render worker.
    static WORKER: RefCell<Option<mpsc::Sender<Job>>> = const { RefCell::new(None) };
}

type Job = Box<dyn FnOnce() + Send>;

/// The global allocator of the `runbook` binary: the system allocator,
/// charging allocations made while a render runs against its memory
/// budget. A render that would go over never gets the memory: its
/// worker reports the error and stops for good (a Rust thread cannot be
/// cancelled, and an allocation cannot fail without aborting).
pub struct Alloc;

fn charge(n: usize) {
    let left = LEFT.get();
    if left == usize::MAX {
        return;
    }
    match left.checked_sub(n) {
        Some(l) => LEFT.set(l),
        None => over_budget(),
    }
}

fn credit(n: usize) {
    let left = LEFT.get();
    if left != usize::MAX {
        LEFT.set(left.saturating_add(n).min(usize::MAX - 1));
    }
}

#[cold]
fn over_budget() -> ! {
    LEFT.set(usize::MAX);
    if let Some(report) = ON_OVER.with(|o| o.borrow_mut().take()) {
        report();
    }
    loop {
        std::thread::park();
    }
}

// SAFETY: every call is forwarded to `System` unchanged; the accounting
// touches only const-initialised thread-locals and never unwinds.
unsafe impl GlobalAlloc for Alloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        credit(layout.size());
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            charge(new_size - layout.size());
        } else {
            credit(layout.size() - new_size);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn spawn_worker() -> Option<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("runbook-template".into())
        .stack_size(WORKER_STACK)
        .spawn(move || {
            IN_WORKER.set(true);
            for job in rx {
                job();
            }
        })
        .ok()?;
    Some(tx)
}

/// Runs `f` on this thread's render worker under the budgets and waits
/// for it; on a multi-threaded tokio runtime the wait gives up the
/// executor thread, so timers, signals and other steps go on meanwhile (the
/// engine's own runtime has one thread: there the wait, bounded by fuel,
/// holds it up).
pub(super) fn on_worker<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    if IN_WORKER.get() {
        // Already on a worker (inside a [`batch`]): render here, with a
        // memory budget of its own.
        let outer = LEFT.replace(MAX_MEMORY_BYTES);
        let r = f();
        LEFT.set(outer);
        return r.map_err(explain);
    }
    run_on_worker(f, MAX_MEMORY_BYTES)
}

/// Runs `f`, which renders many templates (a plan, pre-flight), on one
/// worker: each render inside keeps its own budgets, and the work pays one
/// thread hop instead of one per template. `renders` false (a runbook
/// without a template or an expression) runs `f` here: it has nothing to
/// render, and starting the worker and two hops were a tenth of a one-step
/// run. Should it render after all, each render goes to the worker as a
/// render outside a batch does.
pub fn batch<T: Send + 'static>(
    renders: bool,
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    if IN_WORKER.get() || !renders {
        return f();
    }
    run_on_worker(f, usize::MAX)
}

fn run_on_worker<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
    budget: usize,
) -> Result<T, Error> {
    // (result, whether the worker lives on)
    let (tx, rx) = mpsc::sync_channel::<(Result<T, Error>, bool)>(1);
    let over = tx.clone();
    let job: Job = Box::new(move || {
        ON_OVER.with(|o| {
            *o.borrow_mut() = Some(Box::new(move || {
                let _ = over.try_send((Err(memory_error()), false));
            }));
        });
        LEFT.set(budget);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        LEFT.set(usize::MAX);
        ON_OVER.with(|o| o.borrow_mut().take());
        let r = r.unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::InvalidOperation,
                "template rendering panicked",
            ))
        });
        let _ = tx.try_send((r.map_err(explain), true));
    });
    let sent = WORKER.with(|w| {
        let mut w = w.borrow_mut();
        if w.is_none() {
            *w = spawn_worker();
        }
        match w.as_ref().map(|s| s.send(job)) {
            Some(Ok(())) => true,
            _ => {
                *w = None;
                false
            }
        }
    });
    if !sent {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "cannot start a template worker thread",
        ));
    }
    let wait = || rx.recv();
    let got = match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    };
    match got {
        Ok((r, true)) => r,
        Ok((r, false)) => {
            WORKER.with(|w| w.borrow_mut().take());
            r
        }
        Err(_) => {
            WORKER.with(|w| w.borrow_mut().take());
            Err(Error::new(
                ErrorKind::InvalidOperation,
                "the template worker stopped",
            ))
        }
    }
}

fn memory_error() -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "template ran out of its memory budget ({} MiB)",
            MAX_MEMORY_BYTES >> 20
        ),
    )
}

/// Says which budget ran out, with its limit.
fn explain(e: Error) -> Error {
    match e.kind() {
        ErrorKind::OutOfFuel => Error::new(
            ErrorKind::InvalidOperation,
            format!("template ran out of its evaluation budget ({FUEL} steps)"),
        ),
        _ => e,
    }
}

fn output_error() -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "template output exceeds its budget of {} MiB",
            MAX_OUTPUT_BYTES >> 20
        ),
    )
}

/// The rendered text, refused once it passes [`MAX_OUTPUT_BYTES`].
struct Capped(Vec<u8>);

impl io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.len() + buf.len() > MAX_OUTPUT_BYTES {
            return Err(io::Error::other("output budget"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(super) fn render_capped(t: &Template<'_, '_>, ctx: &Value) -> Result<String, Error> {
    let mut out = Capped(Vec::new());
    match t.render_captured_to(ctx, &mut out) {
        Ok(_) => Ok(String::from_utf8(out.0)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())),
        Err(e) if e.kind() == ErrorKind::WriteFailure => Err(output_error()),
        Err(e) => Err(e),
    }
}

/// A sole expression's value is output too.
pub(super) fn check_value(v: &Value) -> Result<(), Error> {
    match v.as_str() {
        Some(s) if s.len() > MAX_OUTPUT_BYTES => Err(output_error()),
        _ => Ok(()),
    }
}
