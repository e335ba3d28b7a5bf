//! Backends behind their own traits: flag stores and metric sources. A new
//! backend is one new file implementing one trait.

pub mod command_metric;
pub mod exact;
pub mod file_flags;
pub mod prometheus;
pub mod redis_flags;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value as Json;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A feature-flag store.
pub trait FlagStore: Send + Sync {
    /// Reads a flag; `None` when it does not exist.
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Json>, String>>;

    /// Sets a flag and returns its previous value (`None`: it did not exist).
    /// `record` receives the previous value before the new one is written, so
    /// the journal holds it before the change can be observed; when it fails
    /// (the journal could not record it), nothing is written.
    fn set<'a>(
        &'a self,
        name: &'a str,
        value: &'a Json,
        record: &'a (dyn Fn(Option<&Json>) -> Result<(), String> + Send + Sync),
    ) -> BoxFuture<'a, Result<Option<Json>, String>>;

    /// Puts back a previous value, deleting the flag when it had none.
    fn restore<'a>(
        &'a self,
        name: &'a str,
        previous: Option<&'a Json>,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// A source of one number per evaluation: what a `metric:` step's gate
/// reads. Implementations: [`prometheus::Prometheus`] (an instant query over
/// the HTTP API) and [`command_metric::CommandMetric`] (a shell command that
/// prints a number).
///
/// A source may also answer range queries ([`MetricSource::query_range`]):
/// the points a baseline vs canary comparison ([`crate::analysis::compare`])
/// judges. Only Prometheus does; the provided method is an error saying so.
pub trait MetricSource: Send + Sync {
    /// Evaluates the (already rendered) `query` once, at the instant `at`
    /// when given (else now). `Ok(None)` is "no data": an empty result, or
    /// NaN. Dropping the future abandons the query (a command's process
    /// group is killed).
    fn query<'a>(
        &'a self,
        query: &'a str,
        at: Option<SystemTime>,
    ) -> BoxFuture<'a, Result<Option<f64>, String>>;

    /// Evaluates the (already rendered) `query` over `start..=end`, every
    /// `step`: the points of its one series, in time order, NaN kept (the
    /// comparison's NaN strategy decides), empty when there is no series.
    /// By default an error: the provider answers instant queries only.
    fn query_range<'a>(
        &'a self,
        query: &'a str,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> BoxFuture<'a, Result<Vec<f64>, String>> {
        let _ = (query, start, end, step);
        Box::pin(async {
            Err(
                "this provider answers instant queries only; `compare` needs a prometheus provider"
                    .to_string(),
            )
        })
    }
}

/// A metric provider as resolved before the run: what a `metric:` step is
/// handed. Which backend a provider is was checked once, when it was built.
pub enum MetricProvider {
    /// A server queried with the step's rendered query (PromQL): one client,
    /// built from the provider's rendered `url` and `headers`, for the whole
    /// run.
    Server(Arc<dyn MetricSource>),
    /// A [`command_metric::CommandMetric`] per step attempt: the query is a
    /// shell-rendered script run under the step's own interpreter, `env` and
    /// `cwd`, which only the attempt can render.
    Command {
        /// Per-evaluation limit (the provider's `timeout`), if any.
        timeout: Option<Duration>,
    },
}
