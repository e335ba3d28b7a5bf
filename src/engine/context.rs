//! The template context of a run: `params`, `vars`, `env`, `secrets`,
//! `steps`, `run`, and `step` inside rollback bodies.
//!
//! `steps` is a live view rather than a copy: a step starting late in a long
//! run does not pay to clone every earlier step's outputs.
//! A finished step whose value is the one the step before it got (most
//! steps: succeeded at the first attempt, exit code 0, no outputs) shares
//! that value rather than holding a copy of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use indexmap::IndexMap;
use minijinja::value::{Object, Value};
use serde_json::{json, Value as Json};

use crate::runbook::Runbook;
use crate::state::StepRecord;
use crate::template;

/// A map read live by templates: `steps` as steps finish, `vars` while they
/// are rendered in order. A step that has not finished reads as one shared
/// `not_started` value, not one built per step up front.
#[derive(Debug, Default)]
struct StepsView {
    steps: Mutex<HashMap<String, Value>>,
    /// The steps of the runbook, and what they read as until they finish;
    /// `None` for `vars` (only what was rendered).
    not_started: Option<(Arc<Runbook>, Value)>,
}

impl Object for StepsView {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let id = key.as_str()?;
        if let Some(v) = self.steps.lock().ok()?.get(id) {
            return Some(v.clone());
        }
        let (rb, value) = self.not_started.as_ref()?;
        rb.steps
            .iter()
            .chain(&rb.on_failure)
            .chain(&rb.finally)
            .any(|s| s.id == id)
            .then(|| value.clone())
    }
}

pub struct Context {
    params: Value,
    vars: Value,
    env: Value,
    secrets: Value,
    steps: Arc<StepsView>,
    run: Mutex<Json>,
    /// The last value [`Context::set_step`] built, and what it was built from.
    last_step: Mutex<Option<(Json, Value)>>,
}

impl Context {
    /// Builds the context and renders `vars` in order. A var that does not
    /// render is an error before anything runs.
    pub fn new(
        rb: &Arc<Runbook>,
        run_id: &str,
        params: &IndexMap<String, Json>,
        secrets: &[(String, String)],
        env: &[(String, String)],
    ) -> Result<Context, String> {
        let params = Value::from_serialize(params);
        let secrets: serde_json::Map<String, Json> = secrets
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect();
        let secrets = Value::from_serialize(&secrets);
        let env_map: serde_json::Map<String, Json> = env
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect();
        let env = Value::from_serialize(&env_map);
        let run = json!({
            "id": run_id,
            "name": rb.name,
            "status": "running",
            "failed_step": null,
            "error": null,
            "started_at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        });
        let steps = Arc::new(StepsView {
            steps: Mutex::default(),
            not_started: Some((
                rb.clone(),
                Value::from_serialize(StepRecord::new().template_value()),
            )),
        });
        let mut ctx = Context {
            params,
            vars: Value::from(()),
            env,
            secrets,
            steps,
            run: Mutex::new(run),
            last_step: Mutex::new(None),
        };
        // Each var sees those above it through a live view, so rendering n
        // vars costs n renders, not n copies of a growing map.
        let live = Arc::new(StepsView::default());
        ctx.vars = Value::from_dyn_object(live.clone());
        let mut vars = serde_json::Map::new();
        for (k, v) in &rb.vars {
            let rendered = template::render_json(v, &ctx.for_step(None))
                .map_err(|e| format!("var `{k}`: {}", crate::steps::template_message(&e)))?;
            if let Ok(mut m) = live.steps.lock() {
                m.insert(k.clone(), Value::from_serialize(&rendered));
            }
            vars.insert(k.clone(), rendered);
        }
        ctx.vars = Value::from_serialize(&vars);
        Ok(ctx)
    }

    /// The context for a step, or for a rollback body of the step `rollback_of`.
    pub fn for_step(&self, rollback_of: Option<&StepRecord>) -> Value {
        let run = self
            .run
            .lock()
            .map(|r| Value::from_serialize(&*r))
            .unwrap_or_default();
        let step = rollback_of.map_or(Value::UNDEFINED, |r| {
            Value::from_serialize(r.template_value())
        });
        minijinja::context! {
            params => self.params.clone(),
            vars => self.vars.clone(),
            env => self.env.clone(),
            secrets => self.secrets.clone(),
            steps => Value::from_dyn_object(self.steps.clone()),
            run => run,
            step => step,
        }
    }

    /// Renders a template in the run-level context (for `env`, `lock`, providers).
    pub fn render(&self, source: &str) -> Result<String, String> {
        template::render_str(source, &self.for_step(None))
            .map_err(|e| crate::steps::template_message(&e))
    }

    pub fn set_step(&self, id: &str, rec: &StepRecord) {
        let json = rec.template_value();
        let value = match self.last_step.lock() {
            Ok(mut last) => match &*last {
                Some((seen, value)) if crate::state::identical(seen, &json) => value.clone(),
                _ => {
                    let value = Value::from_serialize(&json);
                    *last = Some((json, value.clone()));
                    value
                }
            },
            Err(_) => Value::from_serialize(&json),
        };
        if let Ok(mut m) = self.steps.steps.lock() {
            m.insert(id.to_string(), value);
        }
    }

    pub fn set_run_failure(&self, failed_step: Option<String>, error: &str) {
        if let Ok(mut r) = self.run.lock() {
            r["failed_step"] = failed_step.map_or(Json::Null, Json::String);
            r["error"] = Json::String(error.to_string());
            r["status"] = Json::String("unwinding".into());
        }
    }

    pub fn set_run_status(&self, status: &str) {
        if let Ok(mut r) = self.run.lock() {
            r["status"] = Json::String(status.to_string());
        }
    }

    /// The params as the template sees them, for journals and reports.
    pub fn params(&self) -> &Value {
        &self.params
    }
}
