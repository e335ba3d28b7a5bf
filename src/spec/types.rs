//! The runbook file as written: serde types with spans on the values that
//! later rules point at. The JSON Schema is generated from these same types
//! (`runbook schema`), so an editor and the loader can never disagree on a
//! field name.
//!
//! Fields whose meaning depends on their shape (a rollback that is `false`, a
//! body or a list of bodies; an HTTP status that is a code, a list or `2xx`)
//! stay raw here and are decided by validation, which has the spans to hand.

use std::borrow::Cow;
use std::fmt;

use indexmap::IndexMap;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::de::{exact_list, from_node, record, Checked, RawNode, Spanned};
use super::node::Value;

/// A runbook: a DAG of steps with parameters, providers and failure handling.
#[derive(Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
#[schemars(title = "runbook", extend("$id" = "https://runbook.dev/schemas/runbook.schema.json"))]
pub struct RunbookSpec {
    /// Format version; only `1` exists.
    pub version: Spanned<u32>,
    /// The runbook's name, shown in plans, status and reports.
    pub name: Spanned<String>,
    pub description: Option<String>,
    /// Parameters given with `--param name=value`.
    #[serde(default)]
    pub params: IndexMap<Spanned<String>, Checked<ParamSpec>>,
    /// Values rendered once, in order, after params; each may use the ones above it.
    #[serde(default)]
    pub vars: IndexMap<Spanned<String>, RawNode>,
    /// Secret values, masked as `***` in everything the engine writes.
    #[serde(default)]
    pub secrets: IndexMap<Spanned<String>, Checked<SecretSpec>>,
    /// Environment of every shell step (templates allowed).
    #[serde(default)]
    pub env: IndexMap<Spanned<String>, Spanned<String>>,
    pub defaults: Option<Checked<DefaultsSpec>>,
    /// The most steps running at once (default 4).
    pub concurrency: Option<Spanned<u32>>,
    /// Runs holding the same lock key never overlap (templates allowed):
    /// a key refuses a second run at once; `{ key, wait }` queues it.
    pub lock: Option<Checked<LockField>>,
    /// An OpenSSH allowed-signers file (relative to the runbook): approvals
    /// must be signed by a key it lists for the approver's name.
    pub allowed_signers: Option<Spanned<String>>,
    /// Flag stores and metric sources, by name.
    #[serde(default)]
    pub providers: IndexMap<Spanned<String>, Checked<ProviderSpec>>,
    /// The steps, in reading order. A step without `needs` waits for the one before it.
    #[serde(deserialize_with = "exact_list")]
    pub steps: Vec<Checked<StepSpec>>,
    /// Steps run after unwinding, when the run failed.
    #[serde(default, deserialize_with = "exact_list")]
    pub on_failure: Vec<Checked<StepSpec>>,
    /// Steps run last, whatever happened.
    #[serde(default, deserialize_with = "exact_list")]
    pub finally: Vec<Checked<StepSpec>>,
}

#[derive(Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
}

impl ParamType {
    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
        }
    }
}

#[derive(Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    #[serde(rename = "type", default = "default_param_type")]
    pub ty: ParamType,
    /// The allowed values.
    #[serde(rename = "enum")]
    pub allowed: Option<Spanned<Vec<RawNode>>>,
    pub default: Option<RawNode>,
    #[serde(default)]
    pub required: bool,
    pub description: Option<String>,
    /// A secret parameter is masked like a secret.
    #[serde(default)]
    pub secret: bool,
}

fn default_param_type() -> ParamType {
    ParamType::String
}

/// Where a secret's value comes from: exactly one of `env` or `file`.
#[derive(Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    pub env: Option<Spanned<String>>,
    pub file: Option<Spanned<String>>,
}

#[derive(Deserialize, JsonSchema, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct DefaultsSpec {
    pub timeout: Option<Spanned<String>>,
    pub retry: Option<Checked<RetrySpec>>,
    /// The argv a shell script is appended to (default `[bash, -eo, pipefail, -c]`).
    pub interpreter: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Redis,
    File,
    Prometheus,
    Command,
}

impl ProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Redis => "redis",
            ProviderKind::File => "file",
            ProviderKind::Prometheus => "prometheus",
            ProviderKind::Command => "command",
        }
    }
    pub fn serves_flags(self) -> bool {
        matches!(self, ProviderKind::Redis | ProviderKind::File)
    }
    pub fn serves_metrics(self) -> bool {
        matches!(self, ProviderKind::Prometheus | ProviderKind::Command)
    }
}

#[derive(Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    pub kind: Spanned<ProviderKind>,
    /// `redis://…` or `http://…` (redis, prometheus).
    pub url: Option<Spanned<String>>,
    /// Key prefix (redis).
    pub prefix: Option<String>,
    /// JSON file of flags (file; default `<state dir>/flags.json`).
    pub path: Option<Spanned<String>>,
    /// Extra HTTP headers, e.g. authorization (prometheus).
    #[serde(default)]
    pub headers: IndexMap<String, Spanned<String>>,
    /// Per-request timeout.
    pub timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    #[default]
    Fixed,
    Exponential,
}

#[derive(Deserialize, JsonSchema, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, the first try included.
    pub attempts: Option<Spanned<IntOrTemplate>>,
    pub delay: Option<Spanned<String>>,
    pub backoff: Option<Backoff>,
    pub max_delay: Option<Spanned<String>>,
    /// Randomise each delay by up to ±25%.
    #[serde(default)]
    pub jitter: bool,
}

#[derive(Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnResume {
    #[default]
    Rerun,
    Fail,
}

#[derive(Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnNoData {
    #[default]
    Fail,
    Pass,
}

/// One step. Exactly one of `shell`, `http`, `metric`, `approval`, `flag`.
// The kinds and `retry` are boxed (here and in `BodySpec`): most steps have
// none of them, and a file of many steps is held whole while it is validated.
#[derive(Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// `[a-z][a-z0-9_]*`, unique in the file.
    pub id: Spanned<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    /// Display grouping label, e.g. `canary`.
    pub stage: Option<String>,
    /// Steps this one waits for. Absent: the step before it. `[]`: none.
    pub needs: Option<Spanned<Vec<Spanned<String>>>>,
    // Boxed, these and `cwd`, `interpreter`: most steps have none, and
    // every step of a long file held their room while it was read.
    /// An expression; false skips the step.
    pub when: Option<Box<Spanned<String>>>,
    /// Per attempt: `250ms`, `30s`, `5m`, `2h`, `1d`.
    pub timeout: Option<Box<Spanned<String>>>,
    pub retry: Option<Box<Checked<RetrySpec>>>,
    #[serde(default)]
    pub continue_on_failure: bool,
    /// After a crash: run the step again (`rerun`) or stop for a person (`fail`).
    pub on_resume: Option<OnResume>,
    /// A body (or a list of bodies) that undoes this step; `false` turns off an automatic one.
    pub rollback: Option<Checked<RollbackSpec>>,
    #[serde(default)]
    pub env: IndexMap<Spanned<String>, Spanned<String>>,
    pub cwd: Option<Box<Spanned<String>>>,
    pub interpreter: Option<Box<Spanned<Vec<String>>>>,
    /// A script run under the interpreter.
    pub shell: Option<Spanned<String>>,
    pub http: Option<Box<Checked<HttpSpec>>>,
    pub metric: Option<Box<Checked<MetricSpec>>>,
    pub approval: Option<Box<Checked<ApprovalSpec>>>,
    pub flag: Option<Box<Checked<FlagSpec>>>,
}

/// A rollback body: what a step does, without the graph fields.
#[derive(Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct BodySpec {
    pub name: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<Spanned<String>>,
    pub retry: Option<Box<Checked<RetrySpec>>>,
    #[serde(default)]
    pub env: IndexMap<Spanned<String>, Spanned<String>>,
    pub cwd: Option<Spanned<String>>,
    pub interpreter: Option<Spanned<Vec<String>>>,
    pub shell: Option<Spanned<String>>,
    pub http: Option<Box<Checked<HttpSpec>>>,
    pub metric: Option<Box<Checked<MetricSpec>>>,
    pub approval: Option<Box<Checked<ApprovalSpec>>>,
    pub flag: Option<Box<Checked<FlagSpec>>>,
}

/// `false`, one body, or a list of bodies run in order.
#[derive(Debug, Clone)]
pub enum RollbackSpec {
    Off,
    Bodies(Vec<Spanned<BodySpec>>),
}

impl<'de> Deserialize<'de> for RollbackSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let RawNode(node) = RawNode::deserialize(d)?;
        // A broken body is recorded with its own span and left out; the file
        // is then invalid, so the shortened list is never run.
        let body = |n: &super::node::Node| match from_node::<BodySpec>(n) {
            Ok(b) => Some(Spanned::new(b, n.span)),
            Err(e) => {
                record(e.into_diagnostic());
                None
            }
        };
        match &node.value {
            Value::Bool(false) => Ok(RollbackSpec::Off),
            Value::Map(_) => Ok(RollbackSpec::Bodies(body(&node).into_iter().collect())),
            Value::Seq(items) if !items.is_empty() => Ok(RollbackSpec::Bodies(
                items.iter().filter_map(body).collect(),
            )),
            _ => Err(de::Error::invalid_type(
                de::Unexpected::Other(match &node.value {
                    Value::Seq(_) => "an empty list",
                    _ => node.kind_name(),
                }),
                &"`false`, a step body, or a non-empty list of step bodies",
            )),
        }
    }
}

impl JsonSchema for RollbackSpec {
    fn schema_name() -> Cow<'static, str> {
        "Rollback".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let body = g.subschema_for::<BodySpec>();
        json_schema!({
            "description": "`false`, a step body, or a list of bodies run in order (a gradual step-down).",
            "oneOf": [
                { "const": false },
                body,
                { "type": "array", "items": body, "minItems": 1 }
            ]
        })
    }
}

/// `lock:` as written: a key (a second run is refused at once while it is
/// held), or a mapping whose `wait` queues the second run instead.
#[derive(Debug, Clone)]
pub enum LockField {
    Key(Spanned<String>),
    /// `None` when the mapping was broken (already reported).
    Mapping(Checked<LockMapping>),
}

/// `lock: { key, wait }`.
#[derive(Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct LockMapping {
    /// The lock key (templates allowed).
    pub key: Spanned<String>,
    /// How long a run waits in line (first come, first served) for the key
    /// before it gives up (exit 4). Absent: refused at once, as a plain key.
    pub wait: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for LockField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let RawNode(node) = RawNode::deserialize(d)?;
        match &node.value {
            // A scalar is its text, as for any other string field.
            Value::Str(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
                Ok(LockField::Key(Spanned::new(node.scalar_text(), node.span)))
            }
            // Its errors keep their own code and span (a missing `key`, an
            // unknown field, a `wait` of the wrong type).
            Value::Map(_) => Ok(LockField::Mapping(Checked(
                match from_node::<LockMapping>(&node) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        record(e.into_diagnostic());
                        None
                    }
                },
            ))),
            _ => Err(de::Error::invalid_type(
                de::Unexpected::Other(node.kind_name()),
                &"a lock key or `{ key, wait }`",
            )),
        }
    }
}

impl JsonSchema for LockField {
    fn schema_name() -> Cow<'static, str> {
        "Lock".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let mapping = g.subschema_for::<LockMapping>();
        json_schema!({
            "description": "A key: a second run is refused at once while it is held. `{ key, wait }`: it waits in line for up to `wait` instead.",
            "oneOf": [
                { "type": "string" },
                mapping
            ]
        })
    }
}

#[derive(Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    pub url: Spanned<String>,
    /// GET unless given.
    pub method: Option<Spanned<String>>,
    #[serde(default)]
    pub headers: IndexMap<String, Spanned<String>>,
    /// A string sent as is, or any other value sent as JSON.
    pub body: Option<RawNode>,
    pub expect: Option<Checked<ExpectSpec>>,
}

#[derive(Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// A code, a list of codes, or a class such as `2xx` (default `2xx`).
    pub status: Option<RawNode>,
    pub body_contains: Option<Spanned<String>>,
    /// JSON pointer -> expected value.
    #[serde(default)]
    pub json: IndexMap<Spanned<String>, RawNode>,
    pub max_latency: Option<Spanned<String>>,
}

#[derive(Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    pub provider: Option<Spanned<String>>,
    /// What one evaluation reads (one number); or `compare`.
    pub query: Option<Spanned<String>>,
    /// An expression over `value`, e.g. `value < 0.01`: with
    /// `failure_condition`, the success condition.
    pub condition: Option<Spanned<String>>,
    /// An evaluation meeting it fails; one meeting neither condition is
    /// inconclusive.
    pub failure_condition: Option<Spanned<String>>,
    /// Baseline vs canary (Mann-Whitney U) instead of `query`.
    pub compare: Option<Checked<CompareSpec>>,
    pub interval: Option<Spanned<String>>,
    pub samples: Option<Spanned<IntOrTemplate>>,
    pub failure_limit: Option<Spanned<IntOrTemplate>>,
    /// Most inconclusive evaluations tolerated (default 0).
    pub inconclusive_limit: Option<Spanned<IntOrTemplate>>,
    /// What more inconclusive evaluations than `inconclusive_limit` do
    /// (default `pause`: wait for a person, as an approval does).
    pub on_inconclusive: Option<Spanned<OnInconclusive>>,
    /// Consecutive provider errors tolerated before the gate fails (default 4).
    pub error_limit: Option<Spanned<IntOrTemplate>>,
    /// A wait before the first evaluation.
    pub initial_delay: Option<Spanned<String>>,
    /// Evaluated and recorded, never fails or pauses the run.
    #[serde(default)]
    pub dry_run: bool,
    /// Sample alongside the following steps until one of them finishes.
    pub background: Option<Checked<BackgroundSpec>>,
    pub on_no_data: Option<OnNoData>,
    /// Evaluate at this instant (RFC 3339 or unix seconds) instead of now.
    pub at: Option<RawNode>,
    /// A paused gate: who may answer (anyone when absent), as an approval's.
    pub approvers: Option<Spanned<Vec<Spanned<String>>>>,
    /// A paused gate: distinct approvals that pass it (default 1).
    pub required: Option<Spanned<IntOrTemplate>>,
    /// A paused gate: how long it waits for an answer before failing.
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub allow_self_approval: bool,
    /// A paused gate: what the person is asked.
    pub message: Option<Spanned<String>>,
}

#[derive(Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnInconclusive {
    #[default]
    Pause,
    Fail,
    Pass,
}

#[derive(Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct BackgroundSpec {
    /// The step whose end ends the gate (it passes then).
    pub until: Spanned<String>,
}

#[derive(Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct CompareSpec {
    /// A PromQL query for the baseline's series.
    pub baseline: Spanned<String>,
    /// A PromQL query for the canary's series.
    pub canary: Spanned<String>,
    /// How far back each evaluation reads (default 30m).
    pub range: Option<Spanned<String>>,
    /// The resolution of the range queries (default 1m).
    pub step: Option<Spanned<String>>,
    /// Which change fails (default `increase`).
    pub direction: Option<Direction>,
    /// Significance needed to fail, in (0, 1) (default 0.98); or a template.
    pub confidence: Option<RawNode>,
    /// Largest relative change of the medians tolerated (default 0.1); or a template.
    pub allowed_change: Option<RawNode>,
    /// NaN points: `remove` (default) or `replace` (with 0).
    pub nan: Option<Nan>,
}

#[derive(Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Increase,
    Decrease,
    Either,
}

#[derive(Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Nan {
    #[default]
    Remove,
    Replace,
}

#[derive(Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSpec {
    pub message: Option<Spanned<String>>,
    /// Who may approve; anyone when absent.
    pub approvers: Option<Spanned<Vec<Spanned<String>>>>,
    /// Distinct approvals needed (default 1).
    pub required: Option<Spanned<IntOrTemplate>>,
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub allow_self_approval: bool,
    /// This step's allowed-signers file, instead of the runbook's.
    pub allowed_signers: Option<Spanned<String>>,
}

#[derive(Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct FlagSpec {
    pub provider: Option<Spanned<String>>,
    pub name: Spanned<String>,
    /// Any YAML value: bool, number, string, map.
    pub value: RawNode,
}

/// A whole number, or a template that renders to one once params are known.
#[derive(Debug, Clone, PartialEq)]
pub enum IntOrTemplate {
    Int(i64),
    Template(String),
}

impl<'de> Deserialize<'de> for IntOrTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrTemplate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number or a `{{ ... }}` template")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrTemplate, E> {
                Ok(IntOrTemplate::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrTemplate, E> {
                i64::try_from(v)
                    .map(IntOrTemplate::Int)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrTemplate, E> {
                if v.contains("{{") {
                    Ok(IntOrTemplate::Template(v.to_string()))
                } else {
                    Err(E::invalid_type(de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for IntOrTemplate {
    fn schema_name() -> Cow<'static, str> {
        "IntOrTemplate".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "oneOf": [
                { "type": "integer" },
                { "type": "string", "pattern": "\\{\\{.*\\}\\}" }
            ]
        })
    }
}

impl JsonSchema for RawNode {
    fn schema_name() -> Cow<'static, str> {
        "AnyValue".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!(true)
    }
}
