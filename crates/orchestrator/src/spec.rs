//! Parsing the orchestration part of a Docker `ServiceSpec` (Engine API v1.41+) into the
//! typed [`ServiceSpec`], with Docker's and swarmkit's defaults filled in and their
//! validation applied.
//!
//! Only the fields the orchestrator reads are parsed here (`Name`, `Mode`,
//! `TaskTemplate.RestartPolicy`, `TaskTemplate.Placement`,
//! `TaskTemplate.Resources.Reservations`); the container part of the spec is the agent's
//! and the API layer's business.
//!
//! Error wording follows the daemon where it has one:
//! - a JSON value of the wrong type (a negative `Replicas`, which docker-py can send, a
//!   string where a number belongs) is dockerd's `encoding/json` decode error, e.g.
//!   `json: cannot unmarshal number -1 into Go struct field
//!   ReplicatedService.Mode.Replicated.Replicas of type uint64`;
//! - names, restart policy and resources: swarmkit's `manager/controlapi` validation
//!   (`validateAnnotations`, `validateRestartPolicy`, `validateResources`, `validateMode`);
//! - constraints: swarmkit's `manager/constraint.Parse` (see [`crate::constraint`]);
//! - the restart condition: moby's `daemon/cluster/convert` (`invalid RestartCondition: "x"`).

use serde_json::{Map, Value};

use crate::model::{
    Constraint, Placement, Platform, Resources, RestartCondition, RestartPolicy, ServiceMode,
    ServiceSpec, UpdateConfig, UpdateOrder,
};
use crate::update::FailureAction;

/// A service spec the orchestrator cannot accept. `Display` is the message, worded as
/// dockerd/swarmkit word it; the API layer answers it with status 400.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

/// Docker's default restart delay (swarmkit `api/defaults`): 5 s, in ns.
pub const DEFAULT_RESTART_DELAY: u64 = 5_000_000_000;

/// Docker's default `ContainerSpec.StopGracePeriod` (swarmkit `api/defaults`): 10 s, in ns.
pub const DEFAULT_STOP_GRACE_PERIOD: u64 = 10_000_000_000;

impl ServiceSpec {
    /// Parse the orchestration part of a Docker ServiceSpec JSON (`Name`, `Mode`,
    /// `TaskTemplate.RestartPolicy/Placement/Resources.Reservations`), Docker's defaults
    /// filled in:
    /// - `Mode` absent (or `null`) = `Replicated` with 1 replica; `Replicas` absent = 1;
    ///   `ReplicatedJob.MaxConcurrent` absent = 1, `TotalCompletions` absent =
    ///   `MaxConcurrent`;
    /// - `RestartPolicy.Condition` absent = `any` (jobs: `on-failure`), `Delay` absent = 5 s
    ///   (ns in the JSON, as Docker's `time.Duration`), `MaxAttempts`/`Window` absent = 0
    ///   (unlimited / unbounded).
    ///
    /// An empty or absent `Name` is accepted and left empty: dockerd names such a service
    /// itself (a random name), which is the API layer's job since this core has no
    /// randomness.
    ///
    /// Errors ([`SpecError`], Docker-worded, answered with 400): a field of the wrong JSON
    /// type or a negative count (`json: cannot unmarshal number -1 into Go struct field
    /// ReplicatedService.Mode.Replicated.Replicas of type uint64`), an unknown mode
    /// (`Unrecognized service mode`), two modes (`must specify only one service mode`), an
    /// invalid name (`name must be valid as a DNS
    /// name component`), a negative delay or window (`TaskSpec: restart-delay cannot be
    /// negative`), an unknown restart condition, a malformed or unknown constraint (see
    /// [`Constraint::parse`]), a malformed placement preference or platform, reservations
    /// below swarmkit's minimums (`invalid memory value 1: Must be at least 4MiB`).
    pub fn from_docker(spec: &Value) -> Result<ServiceSpec, SpecError> {
        let obj = spec
            .as_object()
            .ok_or_else(|| SpecError(go_value_error(spec, "swarm.ServiceSpec")))?;

        let name = get_str(obj, "Name", "ServiceSpec", "Name")?.unwrap_or_default();
        validate_name(&name)?;

        let mode = parse_mode(obj.get("Mode"))?;

        let template = get_obj(
            obj,
            "TaskTemplate",
            "ServiceSpec",
            "TaskTemplate",
            "swarm.TaskSpec",
        )?;
        let restart = parse_restart(template.and_then(|t| t.get("RestartPolicy")), mode.is_job())?;
        let placement = parse_placement(template.and_then(|t| t.get("Placement")))?;
        let reservations = match template {
            Some(t) => {
                let resources = get_obj(
                    t,
                    "Resources",
                    "TaskSpec",
                    "TaskTemplate.Resources",
                    "swarm.ResourceRequirements",
                )?;
                match resources {
                    Some(r) => parse_reservations(r)?,
                    None => Resources::default(),
                }
            }
            None => Resources::default(),
        };

        let update = parse_update(obj.get("UpdateConfig"), "UpdateConfig")?;
        let rollback = parse_update(obj.get("RollbackConfig"), "RollbackConfig")?;
        Ok(ServiceSpec {
            name,
            mode,
            restart,
            placement,
            reservations,
            update,
            rollback,
        })
    }
}

/// swarmkit's default update monitoring period (5 s, ns): the docker CLI sends it when
/// any `--update-*` flag is given.
pub const DEFAULT_UPDATE_MONITOR: i64 = 5_000_000_000;

/// `UpdateConfig` (or `RollbackConfig`, `which`), as moby's `updateConfigToGRPC` and
/// swarmkit's `validateUpdate` read it. Absent or `null`: Docker's defaults. Present: Go's
/// decoding, so an absent `Parallelism`, `Monitor` or `MaxFailureRatio` is 0 and an absent
/// `FailureAction` is `pause`.
fn parse_update(v: Option<&Value>, which: &str) -> Result<UpdateConfig, SpecError> {
    let cfg = match v {
        None | Some(Value::Null) => return Ok(UpdateConfig::default()),
        Some(c) => as_obj(c, "ServiceSpec", which, "swarm.UpdateConfig")?,
    };
    const S: &str = "UpdateConfig";
    let path = |f: &str| format!("{which}.{f}");
    let parallelism = get_u64(cfg, "Parallelism", S, &path("Parallelism"))?.unwrap_or(0);
    let delay = get_i64(cfg, "Delay", S, &path("Delay"), "time.Duration")?.unwrap_or(0);
    if delay < 0 {
        return Err(SpecError(
            "TaskSpec: update-delay cannot be negative".into(),
        ));
    }
    let order = match get_str(cfg, "Order", S, &path("Order"))?.as_deref() {
        None | Some("") | Some("stop-first") => UpdateOrder::StopFirst,
        Some("start-first") => UpdateOrder::StartFirst,
        Some(other) => return Err(SpecError(format!("unrecognized update order {other}"))),
    };
    let failure_action = match get_str(cfg, "FailureAction", S, &path("FailureAction"))?.as_deref()
    {
        None | Some("") | Some("pause") => FailureAction::Pause,
        Some("continue") => FailureAction::Continue,
        Some("rollback") => FailureAction::Rollback,
        Some(other) => {
            return Err(SpecError(format!(
                "unrecognized update failure action {other}"
            )))
        }
    };
    let monitor = get_i64(cfg, "Monitor", S, &path("Monitor"), "time.Duration")?.unwrap_or(0);
    if monitor < 0 {
        return Err(SpecError(
            "TaskSpec: update-monitor cannot be negative".into(),
        ));
    }
    let max_failure_ratio = match cfg.get("MaxFailureRatio") {
        None | Some(Value::Null) => 0.0,
        Some(r) => {
            let r = r.as_f64().ok_or_else(|| {
                SpecError(go_field_error(r, S, &path("MaxFailureRatio"), "float32"))
            })?;
            if !(0.0..=1.0).contains(&r) {
                return Err(SpecError(
                    "TaskSpec: update-maxfailureratio cannot be less than 0 or bigger than 1"
                        .into(),
                ));
            }
            r as f32
        }
    };
    Ok(UpdateConfig {
        parallelism,
        delay: delay as u64,
        order,
        failure_action,
        monitor: monitor as u64,
        max_failure_ratio,
    })
}

/// Whether two service specs (with their pinned images) give tasks the same thing to run:
/// the same `TaskTemplate` (`ForceUpdate` included) and `EndpointSpec`, compared as they
/// mean and not as they were spelled (see [`comparable`]), and the same pinned image. The
/// cluster state bumps [`crate::Service::template_version`] when this is false.
pub fn same_task_template(
    old_spec: &Value,
    old_image: &str,
    new_spec: &Value,
    new_image: &str,
) -> bool {
    let same = |k: &str| {
        comparable(old_spec.get(k).unwrap_or(&Value::Null))
            == comparable(new_spec.get(k).unwrap_or(&Value::Null))
    };
    old_image == new_image
        && template_as_meant(old_spec) == template_as_meant(new_spec)
        && same("EndpointSpec")
}

/// A service spec's `TaskTemplate` as [`comparable`] gives it, with the defaults that
/// `GET /services/{id}?insertDefaults=true` shows taken out again where they are spelled
/// out: `ContainerSpec.StopGracePeriod` of 10 s, `RestartPolicy.Condition` `any` (jobs:
/// `on-failure`) and `RestartPolicy.Delay` of 5 s. docker-py's `Service.scale` and
/// `update_service(fetch_current_spec=True)` send back such a spec; it gives tasks the same
/// thing to run, so it must not redeploy them.
fn template_as_meant(spec: &Value) -> Value {
    let mut t = spec.get("TaskTemplate").cloned().unwrap_or(Value::Null);
    let is_job = spec
        .get("Mode")
        .and_then(Value::as_object)
        .is_some_and(|m| m.contains_key("ReplicatedJob") || m.contains_key("GlobalJob"));
    let is = |v: Option<&Value>, n: u64| v.and_then(Value::as_f64) == Some(n as f64);
    if let Some(cs) = t.get_mut("ContainerSpec").and_then(Value::as_object_mut) {
        if is(cs.get("StopGracePeriod"), DEFAULT_STOP_GRACE_PERIOD) {
            cs.remove("StopGracePeriod");
        }
    }
    if let Some(rp) = t.get_mut("RestartPolicy").and_then(Value::as_object_mut) {
        let default_condition = if is_job { "on-failure" } else { "any" };
        if rp.get("Condition").and_then(Value::as_str) == Some(default_condition) {
            rp.remove("Condition");
        }
        if is(rp.get("Delay"), DEFAULT_RESTART_DELAY) {
            rp.remove("Delay");
        }
    }
    comparable(&t)
}

/// A spec part as it means, not as it was spelled: zero values dropped (a client that
/// sends back an inspected spec omits or adds them, as Go's `omitempty` does), the image
/// left out (pinned separately, compared as the service's image) and the values dockerd
/// fills in (`Isolation: default`, `Runtime: container`) taken as unset.
pub fn comparable(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, v)| {
                    let filled = matches!(
                        (k.as_str(), v.as_str()),
                        ("Isolation", Some("default"))
                            | ("Runtime", Some("container"))
                            | ("Image", _)
                    );
                    !filled && !is_unset(v)
                })
                .map(|(k, v)| (k.clone(), comparable(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(comparable).collect()),
        other => other.clone(),
    }
}

/// Whether a JSON value is its field's zero value as clients send it for "not set", the
/// value Go leaves out with `omitempty` (or decodes to its zero value): null, false, 0, "",
/// and arrays or objects of nothing but zero values (`"ConsoleSize":[0,0]`,
/// `"LogConfig":{"Type":"","Config":{}}`).
pub fn is_unset(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(is_unset),
        Value::Object(o) => o.values().all(is_unset),
    }
}

/// swarmkit `validateAnnotations`: a DNS name component of at most 63 characters
/// (`^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$`). Empty is left to the API layer (see
/// [`ServiceSpec::from_docker`]).
fn validate_name(name: &str) -> Result<(), SpecError> {
    if name.is_empty() {
        return Ok(());
    }
    let bytes = name.as_bytes();
    let ok = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric();
    if !ok {
        return Err(SpecError(
            "name must be valid as a DNS name component".into(),
        ));
    }
    if name.len() > 63 {
        return Err(SpecError("name must be 63 characters or fewer".into()));
    }
    Ok(())
}

fn parse_mode(mode: Option<&Value>) -> Result<ServiceMode, SpecError> {
    let mode = match mode {
        None | Some(Value::Null) => return Ok(ServiceMode::Replicated { replicas: 1 }),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(SpecError(go_field_error(
                other,
                "ServiceSpec",
                "Mode",
                "swarm.ServiceMode",
            )))
        }
    };
    let present: Vec<(&String, &Value)> = mode.iter().filter(|(_, v)| !v.is_null()).collect();
    let (kind, body) = match present.as_slice() {
        // moby `convert.ServiceSpecToGRPC`: no mode set is one replica.
        [] => return Ok(ServiceMode::Replicated { replicas: 1 }),
        [one] => *one,
        // moby `convert.ServiceSpecToGRPC`.
        _ => return Err(SpecError("must specify only one service mode".into())),
    };
    match kind.as_str() {
        "Replicated" => {
            let body = as_obj(
                body,
                "ServiceMode",
                "Mode.Replicated",
                "swarm.ReplicatedService",
            )?;
            let replicas = get_u64(
                body,
                "Replicas",
                "ReplicatedService",
                "Mode.Replicated.Replicas",
            )?
            .unwrap_or(1);
            Ok(ServiceMode::Replicated { replicas })
        }
        "Global" => {
            as_obj(body, "ServiceMode", "Mode.Global", "swarm.GlobalService")?;
            Ok(ServiceMode::Global)
        }
        "ReplicatedJob" => {
            let body = as_obj(
                body,
                "ServiceMode",
                "Mode.ReplicatedJob",
                "swarm.ReplicatedJob",
            )?;
            let max_concurrent = get_u64(
                body,
                "MaxConcurrent",
                "ReplicatedJob",
                "Mode.ReplicatedJob.MaxConcurrent",
            )?
            .unwrap_or(1);
            let total_completions = get_u64(
                body,
                "TotalCompletions",
                "ReplicatedJob",
                "Mode.ReplicatedJob.TotalCompletions",
            )?
            .unwrap_or(max_concurrent);
            Ok(ServiceMode::ReplicatedJob {
                max_concurrent,
                total_completions,
            })
        }
        "GlobalJob" => {
            as_obj(body, "ServiceMode", "Mode.GlobalJob", "swarm.GlobalJob")?;
            Ok(ServiceMode::GlobalJob)
        }
        // swarmkit `validateMode`. (dockerd's JSON decoding would drop an unknown key and
        // create one replica; refusing it is kinder than running something else.)
        _ => Err(SpecError("Unrecognized service mode".into())),
    }
}

fn parse_restart(policy: Option<&Value>, is_job: bool) -> Result<RestartPolicy, SpecError> {
    let mut out = RestartPolicy {
        condition: if is_job {
            RestartCondition::OnFailure
        } else {
            RestartCondition::Any
        },
        delay: DEFAULT_RESTART_DELAY,
        max_attempts: 0,
        window: 0,
    };
    let policy = match policy {
        None | Some(Value::Null) => return Ok(out),
        Some(p) => as_obj(
            p,
            "TaskSpec",
            "TaskTemplate.RestartPolicy",
            "swarm.RestartPolicy",
        )?,
    };
    const S: &str = "RestartPolicy";
    if let Some(c) = get_typed_str(
        policy,
        "Condition",
        S,
        "TaskTemplate.RestartPolicy.Condition",
        "swarm.RestartPolicyCondition",
    )? {
        out.condition = match c.as_str() {
            "none" => RestartCondition::None,
            "on-failure" => RestartCondition::OnFailure,
            "any" => RestartCondition::Any,
            // moby daemon/cluster/convert restartPolicyToGRPC. An empty condition is the
            // default there too.
            "" => out.condition,
            other => return Err(SpecError(format!("invalid RestartCondition: {other:?}"))),
        };
    }
    if let Some(d) = get_i64(
        policy,
        "Delay",
        S,
        "TaskTemplate.RestartPolicy.Delay",
        "time.Duration",
    )? {
        if d < 0 {
            return Err(SpecError(
                "TaskSpec: restart-delay cannot be negative".into(),
            ));
        }
        out.delay = d as u64;
    }
    if let Some(m) = get_u64(
        policy,
        "MaxAttempts",
        S,
        "TaskTemplate.RestartPolicy.MaxAttempts",
    )? {
        out.max_attempts = m;
    }
    if let Some(w) = get_i64(
        policy,
        "Window",
        S,
        "TaskTemplate.RestartPolicy.Window",
        "time.Duration",
    )? {
        if w < 0 {
            return Err(SpecError(
                "TaskSpec: restart-window cannot be negative".into(),
            ));
        }
        out.window = w as u64;
    }
    Ok(out)
}

fn parse_placement(placement: Option<&Value>) -> Result<Placement, SpecError> {
    let placement = match placement {
        None | Some(Value::Null) => return Ok(Placement::default()),
        Some(p) => as_obj(p, "TaskSpec", "TaskTemplate.Placement", "swarm.Placement")?,
    };
    const S: &str = "Placement";
    let mut out = Placement::default();
    for c in get_array(
        placement,
        "Constraints",
        S,
        "TaskTemplate.Placement.Constraints",
        "[]string",
    )? {
        let c = c.as_str().ok_or_else(|| {
            SpecError(go_field_error(
                c,
                S,
                "TaskTemplate.Placement.Constraints",
                "string",
            ))
        })?;
        out.constraints.push(Constraint::parse(c)?);
    }
    for p in get_array(
        placement,
        "Preferences",
        S,
        "TaskTemplate.Placement.Preferences",
        "[]swarm.PlacementPreference",
    )? {
        out.spread.push(parse_preference(p)?);
    }
    out.max_replicas = get_u64(
        placement,
        "MaxReplicas",
        S,
        "TaskTemplate.Placement.MaxReplicas",
    )?
    .unwrap_or(0);
    for p in get_array(
        placement,
        "Platforms",
        S,
        "TaskTemplate.Placement.Platforms",
        "[]swarm.Platform",
    )? {
        let p = as_obj(p, S, "TaskTemplate.Placement.Platforms", "swarm.Platform")?;
        let architecture = get_str(
            p,
            "Architecture",
            "Platform",
            "TaskTemplate.Placement.Platforms.Architecture",
        )?
        .unwrap_or_default();
        let os = get_str(p, "OS", "Platform", "TaskTemplate.Placement.Platforms.OS")?
            .unwrap_or_default();
        out.platforms.push(Platform { os, architecture });
    }
    Ok(out)
}

/// `{"Spread": {"SpreadDescriptor": "node.labels.zone"}}`. swarmkit spreads over
/// `node.labels.*` and `engine.labels.*` descriptors only; anything else would be silently
/// useless, so it is refused.
fn parse_preference(p: &Value) -> Result<String, SpecError> {
    let p = as_obj(
        p,
        "Placement",
        "TaskTemplate.Placement.Preferences",
        "swarm.PlacementPreference",
    )?;
    let spread = match p.get("Spread") {
        Some(Value::Object(s)) => s,
        _ => {
            return Err(SpecError(
                "invalid placement preference: only Spread preferences are supported".into(),
            ))
        }
    };
    let descriptor = get_str(
        spread,
        "SpreadDescriptor",
        "SpreadOver",
        "TaskTemplate.Placement.Preferences.Spread.SpreadDescriptor",
    )?
    .unwrap_or_default();
    let lower = descriptor.to_ascii_lowercase();
    let valid = [
        crate::constraint::NODE_LABEL_PREFIX,
        crate::constraint::ENGINE_LABEL_PREFIX,
    ]
    .iter()
    .any(|prefix| lower.starts_with(prefix) && lower.len() > prefix.len());
    if !valid {
        return Err(SpecError(format!(
            "invalid placement preference: spread descriptor {descriptor:?} must be node.labels.<key> or engine.labels.<key>"
        )));
    }
    Ok(descriptor)
}

/// `Resources.Reservations`, checked as swarmkit's `validateResources` checks it.
fn parse_reservations(resources: &Map<String, Value>) -> Result<Resources, SpecError> {
    let r = match resources.get("Reservations") {
        None | Some(Value::Null) => return Ok(Resources::default()),
        Some(r) => as_obj(
            r,
            "ResourceRequirements",
            "TaskTemplate.Resources.Reservations",
            "swarm.Resources",
        )?,
    };
    const S: &str = "Resources";
    let nano_cpus = get_i64(
        r,
        "NanoCPUs",
        S,
        "TaskTemplate.Resources.Reservations.NanoCPUs",
        "int64",
    )?
    .unwrap_or(0);
    let memory_bytes = get_i64(
        r,
        "MemoryBytes",
        S,
        "TaskTemplate.Resources.Reservations.MemoryBytes",
        "int64",
    )?
    .unwrap_or(0);
    if nano_cpus != 0 && nano_cpus < 1_000_000 {
        return Err(SpecError(format!(
            "invalid cpu value {}: Must be at least {}",
            go_g(nano_cpus as f64 / 1e9),
            go_g(1e6 / 1e9)
        )));
    }
    if memory_bytes != 0 && memory_bytes < 4 * 1024 * 1024 {
        return Err(SpecError(format!(
            "invalid memory value {memory_bytes}: Must be at least 4MiB"
        )));
    }
    Ok(Resources {
        nano_cpus: nano_cpus as u64,
        memory_bytes: memory_bytes as u64,
    })
}

/// Go's `%g` for the small values `validateResources` prints: shortest digits, an
/// exponent (`5e-09`) below 1e-4 or from 1e21 on.
fn go_g(v: f64) -> String {
    let abs = v.abs();
    if v != 0.0 && !(1e-4..1e21).contains(&abs) {
        let e = format!("{v:e}");
        let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        format!("{mantissa}e{sign}{digits:0>2}")
    } else {
        format!("{v}")
    }
}

// --- JSON access with Go encoding/json's error wording ---------------------------------

/// How Go's decoder names a JSON value in an `UnmarshalTypeError`: numbers with their
/// literal when decoded into a number type.
fn go_value_kind(v: &Value, with_literal: bool) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(n) if with_literal => format!("number {n}"),
        Value::Number(_) => "number".into(),
        Value::String(_) => "string".into(),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

/// `json: cannot unmarshal <value> into Go value of type <ty>` (top-level mismatch).
fn go_value_error(v: &Value, ty: &str) -> String {
    format!(
        "json: cannot unmarshal {} into Go value of type {ty}",
        go_value_kind(v, false)
    )
}

/// `json: cannot unmarshal <value> into Go struct field <Struct>.<path> of type <ty>`.
fn go_field_error(v: &Value, strct: &str, path: &str, ty: &str) -> String {
    let numeric = matches!(ty, "uint64" | "int64" | "time.Duration");
    format!(
        "json: cannot unmarshal {} into Go struct field {strct}.{path} of type {ty}",
        go_value_kind(v, numeric)
    )
}

fn as_obj<'a>(
    v: &'a Value,
    strct: &str,
    path: &str,
    ty: &str,
) -> Result<&'a Map<String, Value>, SpecError> {
    v.as_object()
        .ok_or_else(|| SpecError(go_field_error(v, strct, path, ty)))
}

fn get_obj<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    strct: &str,
    path: &str,
    ty: &str,
) -> Result<Option<&'a Map<String, Value>>, SpecError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => as_obj(v, strct, path, ty).map(Some),
    }
}

fn get_array<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    strct: &str,
    path: &str,
    ty: &str,
) -> Result<&'a [Value], SpecError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(v) => Err(SpecError(go_field_error(v, strct, path, ty))),
    }
}

fn get_str(
    obj: &Map<String, Value>,
    key: &str,
    strct: &str,
    path: &str,
) -> Result<Option<String>, SpecError> {
    get_typed_str(obj, key, strct, path, "string")
}

/// A string field of Go type `ty` (`string`, or a named string type).
fn get_typed_str(
    obj: &Map<String, Value>,
    key: &str,
    strct: &str,
    path: &str,
    ty: &str,
) -> Result<Option<String>, SpecError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(SpecError(go_field_error(v, strct, path, ty))),
    }
}

fn get_u64(
    obj: &Map<String, Value>,
    key: &str,
    strct: &str,
    path: &str,
) -> Result<Option<u64>, SpecError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| SpecError(go_field_error(v, strct, path, "uint64"))),
    }
}

fn get_i64(
    obj: &Map<String, Value>,
    key: &str,
    strct: &str,
    path: &str,
    ty: &str,
) -> Result<Option<i64>, SpecError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| SpecError(go_field_error(v, strct, path, ty))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConstraintOp;
    use serde_json::json;

    fn err(v: Value) -> String {
        ServiceSpec::from_docker(&v).unwrap_err().0
    }

    #[test]
    fn defaults_mode_absent_is_one_replica_restart_any_5s() {
        let s = ServiceSpec::from_docker(&json!({"Name": "web"})).unwrap();
        assert_eq!(s.name, "web");
        assert_eq!(s.mode, ServiceMode::Replicated { replicas: 1 });
        assert_eq!(s.restart.condition, RestartCondition::Any);
        assert_eq!(s.restart.delay, 5_000_000_000);
        assert_eq!(s.restart.max_attempts, 0);
        assert_eq!(s.restart.window, 0);
        assert_eq!(s.placement, Placement::default());
        assert_eq!(s.reservations, Resources::default());
        let s = ServiceSpec::from_docker(&json!({"Mode": {"Replicated": {}}})).unwrap();
        assert_eq!(s.mode, ServiceMode::Replicated { replicas: 1 });
        assert_eq!(s.name, "");
    }

    #[test]
    fn modes_parse_with_job_defaults() {
        let s =
            ServiceSpec::from_docker(&json!({"Mode": {"Replicated": {"Replicas": 6}}})).unwrap();
        assert_eq!(s.mode, ServiceMode::Replicated { replicas: 6 });
        let s = ServiceSpec::from_docker(&json!({"Mode": {"Global": {}}})).unwrap();
        assert_eq!(s.mode, ServiceMode::Global);
        assert_eq!(s.restart.condition, RestartCondition::Any);
        let s = ServiceSpec::from_docker(&json!({"Mode": {"GlobalJob": {}}})).unwrap();
        assert_eq!(s.mode, ServiceMode::GlobalJob);
        assert_eq!(s.restart.condition, RestartCondition::OnFailure);
        let s = ServiceSpec::from_docker(&json!({"Mode": {"ReplicatedJob": {}}})).unwrap();
        assert_eq!(
            s.mode,
            ServiceMode::ReplicatedJob {
                max_concurrent: 1,
                total_completions: 1
            }
        );
        let s = ServiceSpec::from_docker(&json!({"Mode": {"ReplicatedJob": {"MaxConcurrent": 3}}}))
            .unwrap();
        assert_eq!(
            s.mode,
            ServiceMode::ReplicatedJob {
                max_concurrent: 3,
                total_completions: 3
            }
        );
        let s = ServiceSpec::from_docker(
            &json!({"Mode": {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 5}}}),
        )
        .unwrap();
        assert_eq!(
            s.mode,
            ServiceMode::ReplicatedJob {
                max_concurrent: 2,
                total_completions: 5
            }
        );
    }

    #[test]
    fn negative_or_fractional_replicas_get_dockerds_decode_error() {
        assert_eq!(
            err(json!({"Mode": {"Replicated": {"Replicas": -1}}})),
            "json: cannot unmarshal number -1 into Go struct field ReplicatedService.Mode.Replicated.Replicas of type uint64"
        );
        assert_eq!(
            err(json!({"Mode": {"Replicated": {"Replicas": 1.5}}})),
            "json: cannot unmarshal number 1.5 into Go struct field ReplicatedService.Mode.Replicated.Replicas of type uint64"
        );
        assert_eq!(
            err(json!({"Mode": {"Replicated": {"Replicas": "3"}}})),
            "json: cannot unmarshal string into Go struct field ReplicatedService.Mode.Replicated.Replicas of type uint64"
        );
        assert!(
            err(json!({"Mode": {"ReplicatedJob": {"MaxConcurrent": -2}}}))
                .contains("ReplicatedJob.Mode.ReplicatedJob.MaxConcurrent of type uint64")
        );
        assert_eq!(
            err(json!([])),
            "json: cannot unmarshal array into Go value of type swarm.ServiceSpec"
        );
    }

    #[test]
    fn wrong_json_types_name_the_go_field_and_type() {
        assert_eq!(
            err(json!({"Name": 3})),
            "json: cannot unmarshal number into Go struct field ServiceSpec.Name of type string"
        );
        assert_eq!(
            err(json!({"TaskTemplate": "x"})),
            "json: cannot unmarshal string into Go struct field ServiceSpec.TaskTemplate of type swarm.TaskSpec"
        );
        assert_eq!(
            err(json!({"Mode": {"Global": 1}})),
            "json: cannot unmarshal number into Go struct field ServiceMode.Mode.Global of type swarm.GlobalService"
        );
        assert_eq!(
            err(json!({"TaskTemplate": {"RestartPolicy": {"Condition": 1}}})),
            "json: cannot unmarshal number into Go struct field RestartPolicy.TaskTemplate.RestartPolicy.Condition of type swarm.RestartPolicyCondition"
        );
        assert_eq!(
            err(json!({"TaskTemplate": {"Placement": {"Platforms": {}}}})),
            "json: cannot unmarshal object into Go struct field Placement.TaskTemplate.Placement.Platforms of type []swarm.Platform"
        );
        assert_eq!(
            err(json!({"TaskTemplate": {"RestartPolicy": {"Delay": "5s"}}})),
            "json: cannot unmarshal string into Go struct field RestartPolicy.TaskTemplate.RestartPolicy.Delay of type time.Duration"
        );
    }

    #[test]
    fn unknown_or_multiple_modes_are_refused() {
        assert_eq!(
            err(json!({"Mode": {"Foo": {}}})),
            "Unrecognized service mode"
        );
        assert_eq!(
            err(json!({"Mode": {"Global": {}, "Replicated": {"Replicas": 1}}})),
            "must specify only one service mode"
        );
        // No mode set: Docker's one replica.
        assert_eq!(
            ServiceSpec::from_docker(&json!({"Mode": {}})).unwrap().mode,
            ServiceMode::Replicated { replicas: 1 }
        );
    }

    #[test]
    fn names_are_dns_components() {
        assert_eq!(
            err(json!({"Name": "-web"})),
            "name must be valid as a DNS name component"
        );
        assert_eq!(
            err(json!({"Name": "we b"})),
            "name must be valid as a DNS name component"
        );
        assert_eq!(
            err(json!({"Name": "a".repeat(64)})),
            "name must be 63 characters or fewer"
        );
        assert!(ServiceSpec::from_docker(&json!({"Name": "my_web-1"})).is_ok());
    }

    #[test]
    fn restart_policy_parses_and_validates() {
        let s = ServiceSpec::from_docker(&json!({"TaskTemplate": {"RestartPolicy": {
            "Condition": "on-failure", "Delay": 1_000_000_000u64, "MaxAttempts": 2, "Window": 60_000_000_000u64}}}))
        .unwrap();
        assert_eq!(
            s.restart,
            RestartPolicy {
                condition: RestartCondition::OnFailure,
                delay: 1_000_000_000,
                max_attempts: 2,
                window: 60_000_000_000
            }
        );
        let s = ServiceSpec::from_docker(
            &json!({"TaskTemplate": {"RestartPolicy": {"Condition": "none"}}}),
        )
        .unwrap();
        assert_eq!(s.restart.condition, RestartCondition::None);
        assert_eq!(s.restart.delay, DEFAULT_RESTART_DELAY);
        assert_eq!(
            err(json!({"TaskTemplate": {"RestartPolicy": {"Condition": "always"}}})),
            "invalid RestartCondition: \"always\""
        );
        assert_eq!(
            err(json!({"TaskTemplate": {"RestartPolicy": {"Delay": -1}}})),
            "TaskSpec: restart-delay cannot be negative"
        );
        assert_eq!(
            err(json!({"TaskTemplate": {"RestartPolicy": {"Window": -1}}})),
            "TaskSpec: restart-window cannot be negative"
        );
        assert_eq!(
            err(json!({"TaskTemplate": {"RestartPolicy": {"MaxAttempts": -1}}})),
            "json: cannot unmarshal number -1 into Go struct field RestartPolicy.TaskTemplate.RestartPolicy.MaxAttempts of type uint64"
        );
    }

    #[test]
    fn placement_parses_constraints_preferences_platforms() {
        let s = ServiceSpec::from_docker(&json!({"TaskTemplate": {"Placement": {
            "Constraints": ["node.role==worker", "node.labels.zone != b"],
            "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.rack"}}],
            "MaxReplicas": 2,
            "Platforms": [{"Architecture": "amd64", "OS": "linux"}]}}}))
        .unwrap();
        assert_eq!(s.placement.constraints.len(), 2);
        assert_eq!(s.placement.constraints[1].key, "node.labels.zone");
        assert_eq!(s.placement.constraints[1].op, ConstraintOp::Ne);
        assert_eq!(s.placement.constraints[1].value, "b");
        assert_eq!(s.placement.spread, vec!["node.labels.rack".to_string()]);
        assert_eq!(s.placement.max_replicas, 2);
        assert_eq!(
            s.placement.platforms,
            vec![Platform {
                os: "linux".into(),
                architecture: "amd64".into()
            }]
        );
    }

    #[test]
    fn malformed_or_unknown_constraints_are_refused() {
        let c = |c: &str| err(json!({"TaskTemplate": {"Placement": {"Constraints": [c]}}}));
        assert_eq!(
            c("node.role=worker"),
            "constraint expected one operator from ==, !="
        );
        assert!(c("node.foo==x").contains("node.foo"));
        assert_eq!(c("node.role==wor<ker"), "value 'wor<ker' is invalid");
        assert_eq!(c("==x"), "key '' is invalid");
        assert_eq!(
            err(json!({"TaskTemplate": {"Placement": {"Constraints": [3]}}})),
            "json: cannot unmarshal number into Go struct field Placement.TaskTemplate.Placement.Constraints of type string"
        );
    }

    #[test]
    fn bad_preferences_are_refused() {
        assert!(err(json!({"TaskTemplate": {"Placement": {"Preferences": [{"Spread": {"SpreadDescriptor": "node.role"}}]}}}))
            .contains("spread descriptor \"node.role\""));
        assert!(
            err(json!({"TaskTemplate": {"Placement": {"Preferences": [{"Pack": {}}]}}}))
                .contains("only Spread")
        );
    }

    #[test]
    fn reservations_parse_and_meet_swarmkits_minimums() {
        let s = ServiceSpec::from_docker(&json!({"TaskTemplate": {"Resources": {
            "Reservations": {"NanoCPUs": 500_000_000, "MemoryBytes": 67_108_864},
            "Limits": {"MemoryBytes": 1}}}}))
        .unwrap();
        assert_eq!(
            s.reservations,
            Resources {
                nano_cpus: 500_000_000,
                memory_bytes: 67_108_864
            }
        );
        assert_eq!(
            err(json!({"TaskTemplate": {"Resources": {"Reservations": {"MemoryBytes": 1024}}}})),
            "invalid memory value 1024: Must be at least 4MiB"
        );
        assert_eq!(
            err(json!({"TaskTemplate": {"Resources": {"Reservations": {"NanoCPUs": 500_000}}}})),
            "invalid cpu value 0.0005: Must be at least 0.001"
        );
        assert_eq!(
            err(json!({"TaskTemplate": {"Resources": {"Reservations": {"NanoCPUs": 5}}}})),
            "invalid cpu value 5e-09: Must be at least 0.001"
        );
    }

    #[test]
    fn update_config_defaults_and_docker_cli_values() {
        use crate::model::{UpdateConfig, UpdateOrder};
        let s = ServiceSpec::from_docker(&json!({"Name": "web"})).unwrap();
        assert_eq!(s.update, UpdateConfig::default());
        assert_eq!(s.rollback, UpdateConfig::default());
        assert_eq!(s.update.monitor, DEFAULT_UPDATE_MONITOR as u64);
        // What the docker CLI sends with --update-* flags (its defaults for the rest), and
        // what dockerd's insertDefaults shows for RollbackConfig.
        let cli = json!({"Parallelism": 2, "Delay": 3_000_000_000u64, "FailureAction": "pause",
                         "Monitor": 5_000_000_000u64, "MaxFailureRatio": 0, "Order": "start-first"});
        let rollback = json!({"Parallelism": 1, "FailureAction": "pause",
                              "Monitor": 5_000_000_000u64, "MaxFailureRatio": 0, "Order": "stop-first"});
        let s = ServiceSpec::from_docker(
            &json!({"Name": "web", "UpdateConfig": cli, "RollbackConfig": rollback}),
        )
        .unwrap();
        assert_eq!(
            s.update,
            UpdateConfig {
                parallelism: 2,
                delay: 3_000_000_000,
                order: UpdateOrder::StartFirst,
                ..UpdateConfig::default()
            }
        );
        assert_eq!(s.rollback, UpdateConfig::default());
        // Every failure setting is honoured, in both configs.
        let s = ServiceSpec::from_docker(&json!({
            "UpdateConfig": {"FailureAction": "rollback", "Monitor": 2_000_000_000u64,
                             "MaxFailureRatio": 0.5, "Parallelism": 2},
            "RollbackConfig": {"FailureAction": "continue", "Monitor": 7,
                               "Parallelism": 3, "Delay": 1, "Order": "start-first"}}))
        .unwrap();
        assert_eq!(
            s.update,
            UpdateConfig {
                parallelism: 2,
                delay: 0,
                order: UpdateOrder::StopFirst,
                failure_action: crate::update::FailureAction::Rollback,
                monitor: 2_000_000_000,
                max_failure_ratio: 0.5,
            }
        );
        assert_eq!(
            s.rollback,
            UpdateConfig {
                parallelism: 3,
                delay: 1,
                order: UpdateOrder::StartFirst,
                failure_action: crate::update::FailureAction::Continue,
                monitor: 7,
                max_failure_ratio: 0.0,
            }
        );
        // Go's decoding: a present UpdateConfig without Parallelism means 0 (all at once).
        let s = ServiceSpec::from_docker(&json!({"UpdateConfig": {}})).unwrap();
        assert_eq!(s.update.parallelism, 0);
    }

    #[test]
    fn update_settings_out_of_range_are_refused_in_swarmkits_words() {
        assert_eq!(
            err(json!({"UpdateConfig": {"Order": "sideways"}})),
            "unrecognized update order sideways"
        );
        assert_eq!(
            err(json!({"UpdateConfig": {"FailureAction": "explode"}})),
            "unrecognized update failure action explode"
        );
        assert_eq!(
            err(json!({"UpdateConfig": {"Delay": -1}})),
            "TaskSpec: update-delay cannot be negative"
        );
        assert_eq!(
            err(json!({"UpdateConfig": {"MaxFailureRatio": 2}})),
            "TaskSpec: update-maxfailureratio cannot be less than 0 or bigger than 1"
        );
        assert!(err(json!({"UpdateConfig": {"Parallelism": -1}})).contains("cannot unmarshal"));
    }

    #[test]
    fn task_templates_compare_as_they_mean() {
        let a = json!({"TaskTemplate": {"ContainerSpec": {"Image": "busybox:latest", "Env": []}}});
        let b = json!({"TaskTemplate": {"ContainerSpec": {"Image": "busybox:latest@sha256:00",
                        "Isolation": "default"}, "ForceUpdate": 0, "Runtime": "container"},
                       "Mode": {"Replicated": {"Replicas": 9}}});
        assert!(same_task_template(&a, "i@sha256:00", &b, "i@sha256:00"));
        assert!(!same_task_template(&a, "i@sha256:00", &b, "i@sha256:11"));
        let mut c = b.clone();
        c["TaskTemplate"]["ForceUpdate"] = json!(1);
        assert!(!same_task_template(&b, "i", &c, "i"));
        let mut d = b.clone();
        d["EndpointSpec"] = json!({"Mode": "dnsrr"});
        assert!(!same_task_template(&b, "i", &d, "i"));
    }

    #[test]
    fn defaults_spelled_out_by_insert_defaults_do_not_change_the_template() {
        // What docker-py creates, and what its `scale` sends back after reading the
        // service with insertDefaults=true.
        let created = json!({"TaskTemplate": {"ContainerSpec": {"Image": "bb", "Command": ["sleep", "9"]}},
                             "Mode": {"Replicated": {"Replicas": 2}}});
        let mut scaled = created.clone();
        scaled["Mode"]["Replicated"]["Replicas"] = json!(4);
        scaled["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"] = json!(10_000_000_000u64);
        scaled["TaskTemplate"]["RestartPolicy"] =
            json!({"Condition": "any", "Delay": 5_000_000_000u64, "MaxAttempts": 0});
        assert!(same_task_template(&created, "i", &scaled, "i"));
        // A value that is not the default is a change, either way round.
        let mut other = scaled.clone();
        other["TaskTemplate"]["RestartPolicy"]["Delay"] = json!(6_000_000_000u64);
        assert!(!same_task_template(&created, "i", &other, "i"));
        assert!(!same_task_template(&other, "i", &created, "i"));
        let mut grace = scaled.clone();
        grace["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"] = json!(1_000_000_000u64);
        assert!(!same_task_template(&created, "i", &grace, "i"));
        // Jobs default to on-failure: `any` is a change for them.
        let job = json!({"TaskTemplate": {"ContainerSpec": {"Image": "bb"}},
                         "Mode": {"ReplicatedJob": {"MaxConcurrent": 1}}});
        let mut job_any = job.clone();
        job_any["TaskTemplate"]["RestartPolicy"] = json!({"Condition": "any"});
        assert!(!same_task_template(&job, "i", &job_any, "i"));
        let mut job_default = job.clone();
        job_default["TaskTemplate"]["RestartPolicy"] = json!({"Condition": "on-failure"});
        assert!(same_task_template(&job, "i", &job_default, "i"));
    }
}
