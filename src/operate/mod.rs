//! Driving a run from another process and directory: `logs` reads its
//! journal (the run's story, wherever it was started), `cancel` asks the
//! engine holding it to unwind. Neither touches the run's state: the engine
//! is the only writer of its journal.

mod cancel;
mod logs;

pub use cancel::cancel;
pub use logs::logs;
