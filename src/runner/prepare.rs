//! Everything that can refuse a run, before anything is written: secrets,
//! the template context, pre-flight, `env`, the lock key, flag stores and
//! metric sources.
//!
//! Apart from `start.rs` so that the line between "checked" and
//! "written" is a file boundary: nothing here touches the state dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value as Json;

use crate::commands::{self, Loaded};
use crate::engine::Context;
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::providers::file_flags::FileFlags;
use crate::providers::prometheus::Prometheus;
use crate::providers::redis_flags::RedisFlags;
use crate::providers::MetricProvider;
use crate::runbook::{Action, ActionKind, Provider, ProviderKind, Rollback, Runbook};
use crate::secrets::{self, Masker};
use crate::steps::{FlagStores, MetricSources};

use super::Output;

/// A run as prepared: everything checked, nothing written yet.
pub(super) struct Launch {
    pub(super) plan: Arc<Plan>,
    /// The runbook's text as read (journaled, for resume).
    pub(super) text: String,
    pub(super) file: PathBuf,
    pub(super) run_id: String,
    /// Who started the run (approvals compare against it).
    pub(super) identity: String,
    /// Who runs this command.
    pub(super) operator: String,
    pub(super) output: Output,
    pub(super) flag_ledger: crate::state::FlagLedger,
    /// Where steps run: the run's original working directory when resuming.
    pub(super) cwd: PathBuf,
    pub(super) store: Arc<dyn crate::store::Store>,
    pub(super) ctx: Context,
    pub(super) masker: Arc<Masker>,
    pub(super) base_env: Vec<(String, String)>,
    pub(super) flags: FlagStores,
    pub(super) metrics: MetricSources,
    pub(super) lock_key: Option<String>,
    /// `lock: { wait }`: queue for the key this long instead of refusing.
    pub(super) lock_wait: Option<std::time::Duration>,
    /// The allowed signers of the run's approvals.
    pub(super) signers: crate::approvals::RunSigners,
    /// The operator's key: `--key`, proven against the runbook's allowed
    /// signers; its fingerprint.
    pub(super) key: Option<(PathBuf, String)>,
    /// Resume and rollback: how many events the journal held when the run
    /// was read, checked again once the run is claimed.
    pub(super) events_seen: Option<usize>,
}

/// What [`prepare`] needs besides the runbook and its plan.
pub(super) struct Prepare {
    pub(super) store: Arc<dyn crate::store::Store>,
    pub(super) file: PathBuf,
    pub(super) run_id: String,
    pub(super) identity: String,
    pub(super) operator: String,
    pub(super) output: Output,
    pub(super) flag_ledger: crate::state::FlagLedger,
    pub(super) cwd: PathBuf,
    /// The allowed signers the run started with (resume); `None`: read the
    /// runbook's files now.
    pub(super) signers: Option<crate::approvals::RunSigners>,
}

/// Everything that can refuse a run, before anything is written: secrets,
/// the template context, pre-flight, `env`, the lock key, flag stores and
/// metric sources.
pub(super) fn prepare(loaded: &Loaded, plan: Arc<Plan>, p: Prepare) -> Result<Launch> {
    let rb = plan.runbook();
    if let Some(report) = &p.output.report {
        report_writable(&p.cwd.join(report))?;
    }
    let secret_values = secrets::load(rb, &p.cwd).map_err(Error::invalid)?;
    let mut masked: Vec<String> = secret_values.iter().map(|(_, v)| v.clone()).collect();
    let params: IndexMap<String, Json> = plan
        .resolved
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    for sp in rb.params.iter().filter(|sp| sp.secret) {
        match params.get(&sp.name) {
            Some(Json::String(v)) => masked.push(v.clone()),
            Some(Json::Null) | None => {}
            Some(other) => masked.push(other.to_string()),
        }
    }
    masked.extend(p.store.secrets());
    let masker = Arc::new(Masker::new(masked));
    // `std::env::vars` panics on a variable that is not UTF-8; such a
    // variable cannot be read by a template either, so it is left out (and
    // said so) rather than stopping the run.
    let mut process_env: Vec<(String, String)> = Vec::new();
    for (k, v) in std::env::vars_os() {
        match (k.into_string(), v.into_string()) {
            (Ok(k), Ok(v)) => process_env.push((k, v)),
            (Ok(k), Err(_)) => {
                crate::broken_pipe::eprint_line(&format!(
                    "note: environment variable {k} is not UTF-8; steps do not get it"
                ));
            }
            (Err(k), _) => crate::broken_pipe::eprint_line(&format!(
                "note: an environment variable whose name is not UTF-8 ({}) is left out",
                k.to_string_lossy()
            )),
        }
    }
    // The context's vars and pre-flight render on one template worker.
    let (ctx, mut problems) = {
        let (rb, run_id, params, secrets, env) = (
            plan.source.clone(),
            p.run_id.clone(),
            params.clone(),
            secret_values.clone(),
            process_env.clone(),
        );
        crate::template::budget::batch(plan.source.renders, move || {
            Ok(
                Context::new(&rb, &run_id, &params, &secrets, &env).map(|ctx| {
                    let problems = crate::plan::preflight(
                        &rb,
                        &ctx.for_step(None),
                        crate::plan::RUN_ROOTS,
                        &[],
                    );
                    (ctx, problems)
                }),
            )
        })
        .map_err(|e| crate::steps::template_message(&e))
        .and_then(|r| r)
        .map_err(|e| Error::invalid(masker.mask(&e)))?
    };
    for d in &mut problems {
        masker.mask_in_place(&mut d.message);
    }
    commands::preflight_errors(loaded, problems)?;
    let mut base_env = process_env;
    for (k, v) in &rb.env {
        match ctx.render(v) {
            Ok(v) => base_env.push((k.clone(), v)),
            Err(e) => return Err(Error::invalid(format!("env {k}: {}", masker.mask(&e)))),
        }
    }
    base_env.push(("RUNBOOK_RUN_ID".into(), p.run_id.clone()));
    // A step that calls `runbook status` or reads the default flag file
    // finds this run's state dir, wherever the default would point.
    // (A database is named without its password: a step that needs it
    // must be given it, e.g. as PGPASSWORD in the engine's environment.)
    base_env.push(("RUNBOOK_STATE_DIR".into(), p.store.describe()));
    let flags = flag_stores(rb, p.store.as_ref(), &p.run_id, &ctx)
        .map_err(|e| Error::invalid(masker.mask(&e)))?;
    let metrics = metric_sources(rb, &ctx).map_err(|e| Error::invalid(masker.mask(&e)))?;
    let fresh = p.signers.is_none();
    let signers = match p.signers {
        Some(s) => s,
        None => commands::signers_of(rb, &p.file).map_err(|items| Error::Diagnostics {
            file: loaded.name.clone(),
            text: loaded.text.clone(),
            items,
        })?,
    };
    let key = match &p.output.key {
        // A fresh run: who started it decides the no-self-approval rule,
        // so where approvals are proven, so is the starter.
        None if signers.top().is_some() && fresh => {
            return Err(Error::invalid(format!(
                "this runbook proves identities (`allowed_signers`): start it with --as NAME --key PATH, so the rule that the starter cannot approve knows who {} is",
                p.operator
            )))
        }
        None => None,
        Some(path) => Some((
            path.clone(),
            prove(&signers, path, &p.operator, &p.run_id, &plan.fingerprint)?,
        )),
    };
    let (lock_key, lock_wait) = match &rb.lock {
        None => (None, None),
        Some(lock) => {
            let key = ctx
                .render(&lock.key)
                .map_err(|e| Error::invalid(format!("lock: {}", masker.mask(&e))))?;
            let wait = match &lock.wait {
                None => None,
                Some(crate::runbook::Dur::Fixed(d)) => Some(*d),
                Some(crate::runbook::Dur::Template(t)) => Some(
                    ctx.render(t)
                        .and_then(|text| crate::duration::parse(&text))
                        .map_err(|e| Error::invalid(format!("lock.wait: {}", masker.mask(&e))))?,
                ),
            };
            (Some(key), wait)
        }
    };
    Ok(Launch {
        plan,
        text: loaded.text.clone(),
        file: p.file,
        run_id: p.run_id,
        identity: p.identity,
        operator: p.operator,
        output: p.output,
        flag_ledger: {
            // The journal holds references to secrets, read again now.
            let mut ledger = p.flag_ledger;
            for v in ledger.values_mut() {
                masker.resolve_refs(v);
            }
            ledger
        },
        cwd: p.cwd,
        store: p.store,
        ctx,
        masker,
        base_env,
        flags,
        metrics,
        lock_key,
        lock_wait,
        signers,
        key,
        events_seen: None,
    })
}

/// `--key`: signs a statement that `who` runs this run and checks it
/// against the runbook's allowed signers; the key's fingerprint.
fn prove(
    signers: &crate::approvals::RunSigners,
    key: &Path,
    who: &str,
    run_id: &str,
    fingerprint: &str,
) -> Result<String> {
    let Some(top) = signers.top() else {
        return Err(Error::invalid(
            "--key proves --as against the runbook's `allowed_signers`, and it has none",
        ));
    };
    let statement = crate::signing::Statement {
        run_id,
        step: "",
        decision: "run",
        comment: None,
        fingerprint,
    };
    let signed = crate::signing::sign(key, &statement.bytes()).map_err(Error::invalid)?;
    top.signers
        .verify(
            who,
            &statement.bytes(),
            &signed.signature,
            std::time::SystemTime::now(),
        )
        .map_err(|why| Error::invalid(format!("--key does not prove that you are {who}: {why}")))
}

fn flag_stores(
    rb: &Runbook,
    store: &dyn crate::store::Store,
    run_id: &str,
    ctx: &Context,
) -> std::result::Result<FlagStores, String> {
    let mut stores: FlagStores = Vec::new();
    let uses_default = rb
        .steps
        .iter()
        .chain(&rb.on_failure)
        .chain(&rb.finally)
        .any(|s| matches!(&s.action.kind, ActionKind::Flag(f) if f.provider.is_none()));
    if uses_default {
        stores.push((None, store.default_flags(run_id)));
    }
    for p in &rb.providers {
        match p.kind {
            ProviderKind::File => {
                let flags: Arc<dyn crate::providers::FlagStore> = match &p.path {
                    Some(path) => Arc::new(FileFlags::new(PathBuf::from(ctx.render(path)?))),
                    None => store.default_flags(run_id),
                };
                stores.push((Some(p.name.clone()), flags));
            }
            ProviderKind::Redis => {
                let url = provider_url(p, ctx)?;
                let store = RedisFlags::new(&url, &p.prefix, p.timeout)
                    .map_err(|e| format!("provider `{}`: {e}", p.name))?;
                stores.push((Some(p.name.clone()), Arc::new(store)));
            }
            _ => {}
        }
    }
    Ok(stores)
}

/// A provider's `url`, rendered in the run-level context.
fn provider_url(p: &Provider, ctx: &Context) -> std::result::Result<String, String> {
    let url = p
        .url
        .as_deref()
        .ok_or_else(|| format!("provider `{}` needs a `url`", p.name))?;
    ctx.render(url)
        .map_err(|e| format!("provider `{}`: url: {e}", p.name))
}

/// The metric providers some `metric:` step (or rollback body) uses, built
/// once: a Prometheus client from the provider's rendered `url` and
/// `headers`, a command provider's settings. Pre-flight already reported a
/// `url` that renders badly; what is left (a header value that is not one)
/// refuses the run here, before anything ran.
fn metric_sources(rb: &Runbook, ctx: &Context) -> std::result::Result<MetricSources, String> {
    let used = |name: &str| {
        rb.steps
            .iter()
            .chain(&rb.on_failure)
            .chain(&rb.finally)
            .flat_map(|s| {
                let bodies: &[Action] = match &s.rollback {
                    Rollback::Bodies(b) => b,
                    _ => &[],
                };
                std::iter::once(&s.action).chain(bodies)
            })
            .any(|a| matches!(&a.kind, ActionKind::Metric(m) if m.provider == name))
    };
    let mut sources: MetricSources = Vec::new();
    for p in rb.providers.iter().filter(|p| used(&p.name)) {
        let source = match p.kind {
            ProviderKind::Prometheus => {
                let url = provider_url(p, ctx)?;
                let headers = p
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        ctx.render(v)
                            .map(|v| (k.clone(), v))
                            .map_err(|e| format!("provider `{}`: header {k}: {e}", p.name))
                    })
                    .collect::<std::result::Result<Vec<_>, String>>()?;
                let prom = Prometheus::new(&url, &headers, p.timeout)
                    .map_err(|e| format!("provider `{}`: {e}", p.name))?;
                MetricProvider::Server(Arc::new(prom))
            }
            ProviderKind::Command => MetricProvider::Command { timeout: p.timeout },
            // Validation lets metric steps name metric providers only.
            _ => continue,
        };
        sources.push((p.name.clone(), source));
    }
    Ok(sources)
}

/// A report is written at the end of the run, days later maybe: a path that
/// cannot be written is found now, before anything runs (a usage error),
/// by making and removing a file beside it as the atomic write will.
fn report_writable(path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    tempfile::NamedTempFile::new_in(dir).map(drop).map_err(|e| {
        Error::invalid(format!(
            "--report {}: cannot write there: {e}",
            path.display()
        ))
    })
}
