//! A task's container: Docker's `TaskTemplate` (as the client sent it in the service spec)
//! translated into the Engine API create body a node's agent posts to its own runtime.
//!
//! Owns: the mapping of `TaskTemplate.ContainerSpec`, `TaskTemplate.Resources.Limits`,
//! `TaskTemplate.LogDriver` and host-mode `EndpointSpec.Ports` onto a container create body,
//! Swarm's container name and `com.docker.swarm.*` labels, and the refusal of everything in
//! a task template berth cannot honour (the error names the field).
//!
//! Does not own: orchestration fields (`Mode`, `RestartPolicy`, `Placement`,
//! `Resources.Reservations`: `berth_orchestrator::ServiceSpec::from_docker`), pulling the
//! image or running the container (the agent), update/rollback settings (stored with the
//! spec; applied by the service lifecycle, not by a task's container).
//!
//! ```text
//!  Service.spec (client JSON) ─┐
//!  Task (id, slot, image) ─────┼─> task_container() ─> (name, create body) ─> agent
//!  node id ────────────────────┘         │
//!                                        └─> create_body_from_json + parse_create
//!                                            (the container path's own checks)
//! ```
//!
//! The create body is checked with the same parser `POST /containers/create` uses, so a
//! service whose tasks could not be created is refused at `docker service create` (400),
//! not discovered later by every node's agent.

use std::collections::BTreeMap;

use berth_orchestrator::{Service, Task};
use serde_json::{json, Map, Value};

use berth_consensus::ObjectKind;

use crate::error::ServiceError;
use crate::service::containers::config::{create_body_from_json, is_unset, parse_create};

/// `TaskTemplate` keys berth reads. `ContainerSpec`, `Resources` and `LogDriver` are
/// mapped here; `RestartPolicy` and `Placement` are the orchestrator's; `ForceUpdate` only
/// bumps the spec (every update replaces the tasks anyway); `Runtime` must be `container`.
const TASK_TEMPLATE_KEYS: &[&str] = &[
    "ContainerSpec",
    "Resources",
    "RestartPolicy",
    "Placement",
    "ForceUpdate",
    "Runtime",
    "LogDriver",
    "Networks",
];

/// `ContainerSpec` keys mapped onto the create body (the rest are refused when set).
const CONTAINER_SPEC_KEYS: &[&str] = &[
    "Image",
    "Labels",
    "Command",
    "Args",
    "Hostname",
    "Env",
    "Dir",
    "User",
    "Groups",
    "Privileges",
    "Init",
    "StopSignal",
    "TTY",
    "OpenStdin",
    "ReadOnly",
    "Mounts",
    "StopGracePeriod",
    "Healthcheck",
    "Hosts",
    "DNSConfig",
    "Isolation",
    "Sysctls",
    "CapabilityAdd",
    "CapabilityDrop",
    "Ulimits",
    "OomScoreAdj",
    "Secrets",
    "Configs",
];

/// `Resources.Limits` keys mapped onto `HostConfig`.
const LIMITS_KEYS: &[&str] = &["NanoCPUs", "MemoryBytes", "Pids"];
/// `Resources` keys: `Limits` here, `Reservations` for the scheduler.
const RESOURCES_KEYS: &[&str] = &["Limits", "Reservations"];

/// Label keys Swarm sets on every task container (after `com.docker.swarm.`).
pub const SWARM_LABEL_PREFIX: &str = "com.docker.swarm";

fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::invalid(msg)
}

fn refused(field: &str, why: &str) -> ServiceError {
    invalid(format!("{field} is not supported by berth{why}"))
}

/// The first key of `obj` that is set (not its zero value) and not in `known`.
fn first_unknown<'a>(obj: &'a Map<String, Value>, known: &[&str]) -> Option<&'a str> {
    obj.iter()
        .find(|(k, v)| !known.contains(&k.as_str()) && !is_unset(v))
        .map(|(k, _)| k.as_str())
}

fn object<'a>(
    v: Option<&'a Value>,
    field: &str,
) -> Result<Option<&'a Map<String, Value>>, ServiceError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(invalid(format!("{field} must be a JSON object"))),
    }
}

fn string_list(v: Option<&Value>, field: &str) -> Result<Vec<String>, ServiceError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(format!("{field} must be a list of strings")))
            })
            .collect(),
        Some(_) => Err(invalid(format!("{field} must be a list of strings"))),
    }
}

fn string(v: Option<&Value>, field: &str) -> Result<String, ServiceError> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(invalid(format!("{field} must be a string"))),
    }
}

fn boolean(v: Option<&Value>, field: &str) -> Result<Option<bool>, ServiceError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(format!("{field} must be a boolean"))),
    }
}

fn integer(v: Option<&Value>, field: &str) -> Result<Option<i64>, ServiceError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| invalid(format!("{field} must be an integer"))),
    }
}

/// Swarm's service templates (`{{.Task.Slot}}`) are not expanded by berth: refuse them
/// rather than create containers with the braces in their names and values.
fn no_template(value: &str, field: &str) -> Result<(), ServiceError> {
    if value.contains("{{") {
        return Err(refused(
            &format!("a template in {field} ({value:?})"),
            " yet: use a literal value",
        ));
    }
    Ok(())
}

/// Where a task's secret files go when `File.Name` is relative (Docker's).
pub const SECRETS_DIR: &str = "/run/secrets";

/// A secret or config file of a task's container (`ContainerSpec.Secrets[]` /
/// `Configs[]` with its `File` target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFileRef {
    /// Secret or config.
    pub kind: ObjectKind,
    /// The object's id (`SecretID` / `ConfigID`).
    pub id: String,
    /// Its name (`SecretName` / `ConfigName`).
    pub name: String,
    /// Absolute path in the container: a secret's relative `File.Name` is under
    /// [`SECRETS_DIR`], a config's under `/` (dockerd's `getSecretTargetPath` /
    /// `getConfigTargetPath`).
    pub target: String,
    /// `File.UID` (numeric string in the spec; `0` when empty).
    pub uid: u32,
    /// `File.GID`.
    pub gid: u32,
    /// `File.Mode` (permission bits; Docker's CLI sends 0444 by default).
    pub mode: u32,
}

/// The secret and config files of a spec's tasks, checked as swarmkit's
/// `validateSecretRefsSpec` / `validateConfigRefsSpec` do (its wording): each reference
/// names its object's id and name and a `File` target with a name, and no two share a
/// target. A config's `Runtime` target (Windows credential specs) is refused by name.
pub fn task_files(spec: &Value) -> Result<Vec<TaskFileRef>, ServiceError> {
    let rpc = |m: String| invalid(format!("rpc error: code = InvalidArgument desc = {m}"));
    let mut out: Vec<TaskFileRef> = Vec::new();
    for kind in [ObjectKind::Secret, ObjectKind::Config] {
        let list_field = format!("TaskTemplate.ContainerSpec.{}", kind.spec_list());
        let refs = match spec.pointer(&format!("/TaskTemplate/ContainerSpec/{}", kind.spec_list()))
        {
            None | Some(Value::Null) => continue,
            Some(Value::Array(a)) => a,
            Some(_) => return Err(invalid(format!("{list_field} must be a list"))),
        };
        let (id_key, name_key) = match kind {
            ObjectKind::Secret => ("SecretID", "SecretName"),
            ObjectKind::Config => ("ConfigID", "ConfigName"),
        };
        for r in refs {
            let r = object(Some(r), &list_field)?
                .ok_or_else(|| rpc(format!("malformed {kind} reference")))?;
            if let Some(k) = first_unknown(r, &[id_key, name_key, "File", "Runtime"]) {
                return Err(refused(&format!("{list_field}.{k}"), ""));
            }
            let id = string(r.get(id_key), id_key)?;
            let name = string(r.get(name_key), name_key)?;
            if id.is_empty() || name.is_empty() {
                return Err(rpc(format!("malformed {kind} reference")));
            }
            let file = object(r.get("File"), &format!("{list_field}.File"))?;
            if file.is_none() && r.get("Runtime").is_some_and(|v| !v.is_null()) {
                return Err(refused(
                    &format!("{list_field}.Runtime"),
                    ": runtime targets are Windows credential specs",
                ));
            }
            let file =
                file.ok_or_else(|| rpc(format!("malformed {kind} reference, no target provided")))?;
            let file_name = string(file.get("Name"), "File.Name")?;
            if file_name.is_empty() {
                return Err(rpc(format!(
                    "malformed file {kind} reference, invalid target file name provided"
                )));
            }
            let number = |k: &str| -> Result<u32, ServiceError> {
                let v = string(file.get(k), &format!("File.{k}"))?;
                if v.is_empty() {
                    return Ok(0);
                }
                v.parse::<u32>()
                    .map_err(|_| invalid(format!("{list_field}.File.{k} {v:?} is not a numeric id (berth does not look up user or group names for {kind} files)")))
            };
            let mode = integer(file.get("Mode"), &format!("{list_field}.File.Mode"))?.map_or(
                Ok(0o444),
                |m| {
                    u32::try_from(m)
                        .ok()
                        .filter(|m| m & !0o7777 == 0)
                        .ok_or_else(|| {
                            invalid(format!(
                                "{list_field}.File.Mode {m} is not a file permission"
                            ))
                        })
                },
            )?;
            let target = if file_name.starts_with('/') {
                file_name.clone()
            } else {
                match kind {
                    ObjectKind::Secret => format!("{SECRETS_DIR}/{file_name}"),
                    ObjectKind::Config => format!("/{file_name}"),
                }
            };
            if file_name.split('/').any(|c| c == "..") {
                return Err(invalid(format!(
                    "{list_field}.File.Name {file_name:?} must not contain '..'"
                )));
            }
            if let Some(prev) = out.iter().find(|f| f.kind == kind && f.target == target) {
                return Err(rpc(format!(
                    "{kind} references '{}' and '{name}' have a conflicting target: '{file_name}'",
                    prev.name
                )));
            }
            if let Some(prev) = out.iter().find(|f| f.target == target) {
                return Err(invalid(format!(
                    "{} {} and {kind} {name} have the same target {target}",
                    prev.kind, prev.name
                )));
            }
            out.push(TaskFileRef {
                kind,
                id,
                name,
                uid: number("UID")?,
                gid: number("GID")?,
                mode,
                target,
            });
        }
    }
    Ok(out)
}

/// The service's name (`Spec.Name`).
pub fn service_name(service: &Service) -> &str {
    service
        .spec
        .get("Name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The container name of a task: `<service>.<slot>.<task id>`, or for global services
/// (slot 0) `<service>.<node id>.<task id>`, as Swarm names them.
pub fn task_container_name(service: &Service, task: &Task, node_id: &str) -> String {
    let slot = if task.slot == 0 {
        node_id.to_string()
    } else {
        task.slot.to_string()
    };
    format!("{}.{}.{}", service_name(service), slot, task.id)
}

/// One entry of `TaskTemplate.Networks` (or the deprecated top-level `Networks`): the
/// network (`Target`, a swarm-scoped network's name or id; resolved by the cluster state,
/// which refuses an unknown one with 404 "network X not found") and its `Aliases` (DNS names
/// of the service on that network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkAttachment {
    /// Network name or id, as given.
    pub target: String,
    /// `--network name=N,alias=A` names.
    pub aliases: Vec<String>,
}

/// Parses a `Networks` list (Docker's `NetworkAttachmentConfig`: `Target`, `Aliases`,
/// `DriverOpts`). Errors (400): not a list of objects, a missing `Target`, `DriverOpts`
/// (per-attachment driver options are not supported by berth's overlay driver).
pub fn network_attachments(
    v: Option<&Value>,
    field: &str,
) -> Result<Vec<NetworkAttachment>, ServiceError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(invalid(format!("{field} must be a list"))),
    };
    let mut out = Vec::new();
    for n in list {
        let o = object(Some(n), &format!("{field}[]"))?
            .ok_or_else(|| invalid(format!("{field}[] must be an object")))?;
        if let Some(k) = first_unknown(o, &["Target", "Aliases", "DriverOpts"]) {
            return Err(refused(&format!("{field}.{k}"), ""));
        }
        if o.get("DriverOpts").is_some_and(|d| !is_unset(d)) {
            return Err(refused(
                &format!("{field}.DriverOpts"),
                ": the overlay driver takes no per-attachment options",
            ));
        }
        let target = string(o.get("Target"), &format!("{field}.Target"))?;
        if target.is_empty() {
            return Err(invalid(format!(
                "{field}: a network attachment needs a Target"
            )));
        }
        out.push(NetworkAttachment {
            target,
            aliases: string_list(o.get("Aliases"), &format!("{field}.Aliases"))?,
        });
    }
    Ok(out)
}

/// The network attachments of a service spec: `TaskTemplate.Networks`, or else the
/// deprecated top-level `Networks` (dockerd's order). Unparsable lists give none (the spec
/// was validated when written).
pub fn service_attachments(spec: &Value) -> Vec<NetworkAttachment> {
    let t = network_attachments(
        spec.pointer("/TaskTemplate/Networks"),
        "TaskTemplate.Networks",
    )
    .unwrap_or_default();
    if !t.is_empty() {
        return t;
    }
    network_attachments(spec.get("Networks"), "Networks").unwrap_or_default()
}

/// The container of a task: its name (`<service>.<slot>.<task id>`, global services
/// `<service>.<node id>.<task id>`) and the Engine API create body (as for POST
/// /containers/create) built from TaskTemplate.ContainerSpec (+ Resources limits,
/// LogDriver and host-mode published ports; RestartPolicy is NOT mapped: the orchestrator
/// restarts), with Swarm's labels com.docker.swarm.{node.id, service.id, service.name,
/// task, task.id, task.name}. `Image` is the task's pinned `task.image`.
///
/// `network`: where the container's namespace plugs in besides its overlays
/// ([`TaskNetworkMode`]).
///
/// Errors (`InvalidArgument`, the API answers 400): a field berth cannot honour, named
/// (`TaskTemplate.ContainerSpec.Secrets is not supported by berth ...`); a create body the container path would refuse (its message, prefixed
/// with `invalid task template: `).
/// Where a task container's own network namespace plugs in, besides the overlay networks
/// the agent plugs in before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskNetworkMode<'a> {
    /// The node's default bridge: a task on no overlay network, or one naming Swarm's
    /// predefined `bridge` network.
    DefaultBridge,
    /// The node's own namespace (`--network host`, Swarm's predefined `host` network):
    /// its host-mode published ports are the ports it listens on itself, so no port
    /// bindings (dockerd discards them for host-network containers too).
    Host,
    /// A local network by name: Swarm's gateway bridge (`docker_gwbridge`) for a task on
    /// overlay networks, its way out and the way in for its host-mode published ports.
    Network(&'a str),
}

pub fn task_container(
    service: &Service,
    task: &Task,
    node_id: &str,
    network: TaskNetworkMode<'_>,
) -> Result<(String, Value), ServiceError> {
    let spec = &service.spec;
    let name = task_container_name(service, task, node_id);
    network_attachments(spec.get("Networks"), "Networks")?;
    let template = object(spec.get("TaskTemplate"), "TaskTemplate")?
        .ok_or_else(|| invalid("TaskTemplate: ContainerSpec is required"))?;
    if let Some(k) = first_unknown(template, TASK_TEMPLATE_KEYS) {
        let why = match k {
            "PluginSpec" | "NetworkAttachmentSpec" => ": only container tasks are supported",
            _ => "",
        };
        return Err(refused(&format!("TaskTemplate.{k}"), why));
    }
    network_attachments(template.get("Networks"), "TaskTemplate.Networks")?;
    match string(template.get("Runtime"), "TaskTemplate.Runtime")?.as_str() {
        "" | "container" => {}
        other => {
            return Err(invalid(format!(
                "TaskTemplate.Runtime {other:?} is not supported by berth (supported: container)"
            )))
        }
    }
    let cs = object(template.get("ContainerSpec"), "TaskTemplate.ContainerSpec")?
        .ok_or_else(|| invalid("TaskTemplate: ContainerSpec is required"))?;
    if let Some(k) = first_unknown(cs, CONTAINER_SPEC_KEYS) {
        return Err(refused(&format!("TaskTemplate.ContainerSpec.{k}"), ""));
    }
    task_files(spec)?;
    let f = |k: &str| format!("TaskTemplate.ContainerSpec.{k}");
    if string(cs.get("Image"), &f("Image"))?.is_empty() {
        return Err(invalid("ContainerSpec: image reference must be provided"));
    }

    let mut config = Map::new();
    let mut host = Map::new();
    config.insert("Image".into(), json!(task.image));

    // Labels: the spec's, then Swarm's (which win, as in Swarm).
    let mut labels: BTreeMap<String, String> = match object(cs.get("Labels"), &f("Labels"))? {
        Some(o) => o
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_string()))
                    .ok_or_else(|| invalid(format!("{} values must be strings", f("Labels"))))
            })
            .collect::<Result<_, _>>()?,
        None => BTreeMap::new(),
    };
    for (k, v) in [
        ("node.id", node_id.to_string()),
        ("service.id", service.id.clone()),
        ("service.name", service_name(service).to_string()),
        ("task", String::new()),
        ("task.id", task.id.clone()),
        ("task.name", name.clone()),
    ] {
        labels.insert(format!("{SWARM_LABEL_PREFIX}.{k}"), v);
    }
    config.insert("Labels".into(), json!(labels));

    // Command replaces the entrypoint (and Args are its arguments); Args alone are the
    // image entrypoint's arguments.
    let command = string_list(cs.get("Command"), &f("Command"))?;
    let args = string_list(cs.get("Args"), &f("Args"))?;
    if !command.is_empty() {
        config.insert("Entrypoint".into(), json!(command));
        config.insert("Cmd".into(), json!(args));
    } else if !args.is_empty() {
        config.insert("Cmd".into(), json!(args));
    }
    for (from, to) in [
        ("Hostname", "Hostname"),
        ("Dir", "WorkingDir"),
        ("User", "User"),
        ("StopSignal", "StopSignal"),
    ] {
        let v = string(cs.get(from), &f(from))?;
        no_template(&v, &f(from))?;
        if !v.is_empty() {
            config.insert(to.into(), json!(v));
        }
    }
    let env = string_list(cs.get("Env"), &f("Env"))?;
    for e in &env {
        no_template(e, &f("Env"))?;
    }
    if !env.is_empty() {
        config.insert("Env".into(), json!(env));
    }
    for (from, to) in [("TTY", "Tty"), ("OpenStdin", "OpenStdin")] {
        if let Some(b) = boolean(cs.get(from), &f(from))? {
            config.insert(to.into(), json!(b));
        }
    }
    if let Some(ns) = integer(cs.get("StopGracePeriod"), &f("StopGracePeriod"))? {
        if ns < 0 {
            return Err(invalid(format!(
                "{} must not be negative",
                f("StopGracePeriod")
            )));
        }
        // The container path counts whole seconds: round up, never cut the grace short.
        let secs = (ns + 999_999_999) / 1_000_000_000;
        config.insert("StopTimeout".into(), json!(secs));
    }
    if let Some(hc) = cs.get("Healthcheck").filter(|v| !v.is_null()) {
        config.insert("Healthcheck".into(), hc.clone());
    }

    // HostConfig.
    let groups = string_list(cs.get("Groups"), &f("Groups"))?;
    if !groups.is_empty() {
        host.insert("GroupAdd".into(), json!(groups));
    }
    if let Some(b) = boolean(cs.get("ReadOnly"), &f("ReadOnly"))? {
        host.insert("ReadonlyRootfs".into(), json!(b));
    }
    if let Some(b) = boolean(cs.get("Init"), &f("Init"))? {
        host.insert("Init".into(), json!(b));
    }
    if let Some(mounts) = cs.get("Mounts").filter(|v| !v.is_null()) {
        let list = mounts
            .as_array()
            .ok_or_else(|| invalid(format!("{} must be a list", f("Mounts"))))?;
        for m in list {
            for k in ["Source", "Target"] {
                if let Some(s) = m.get(k).and_then(Value::as_str) {
                    no_template(s, &format!("{}.{k}", f("Mounts")))?;
                }
            }
        }
        host.insert("Mounts".into(), mounts.clone());
    }
    if let Some(s) = object(cs.get("Sysctls"), &f("Sysctls"))? {
        host.insert("Sysctls".into(), Value::Object(s.clone()));
    }
    for (from, to) in [("CapabilityAdd", "CapAdd"), ("CapabilityDrop", "CapDrop")] {
        let caps = string_list(cs.get(from), &f(from))?;
        if !caps.is_empty() {
            host.insert(to.into(), json!(caps));
        }
    }
    if let Some(u) = cs.get("Ulimits").filter(|v| !v.is_null()) {
        host.insert("Ulimits".into(), u.clone());
    }
    if let Some(a) = integer(cs.get("OomScoreAdj"), &f("OomScoreAdj"))? {
        host.insert("OomScoreAdj".into(), json!(a));
    }
    match string(cs.get("Isolation"), &f("Isolation"))?.as_str() {
        "" | "default" => {}
        other => {
            return Err(invalid(format!(
                "{} {other:?} is not supported by berth (supported: default)",
                f("Isolation")
            )))
        }
    }
    // Swarm's hosts(5) lines `IP host [alias...]` become `host:IP` entries; every name
    // of the line is honoured.
    let mut extra_hosts = Vec::new();
    for line in string_list(cs.get("Hosts"), &f("Hosts"))? {
        let mut parts = line.split_whitespace();
        let (Some(ip), Some(first)) = (parts.next(), parts.next()) else {
            return Err(invalid(format!(
                "invalid {} entry {line:?}: expected \"IP_address canonical_hostname [aliases...]\"",
                f("Hosts")
            )));
        };
        for h in std::iter::once(first).chain(parts) {
            extra_hosts.push(format!("{h}:{ip}"));
        }
    }
    if !extra_hosts.is_empty() {
        host.insert("ExtraHosts".into(), json!(extra_hosts));
    }
    if let Some(dns) = object(cs.get("DNSConfig"), &f("DNSConfig"))? {
        if let Some(k) = first_unknown(dns, &["Nameservers", "Search", "Options"]) {
            return Err(refused(&format!("{}.{k}", f("DNSConfig")), ""));
        }
        for (from, to) in [
            ("Nameservers", "Dns"),
            ("Search", "DnsSearch"),
            ("Options", "DnsOptions"),
        ] {
            let l = string_list(dns.get(from), &format!("{}.{from}", f("DNSConfig")))?;
            if !l.is_empty() {
                host.insert(to.into(), json!(l));
            }
        }
    }
    let security_opt = privileges(object(cs.get("Privileges"), &f("Privileges"))?)?;
    if !security_opt.is_empty() {
        host.insert("SecurityOpt".into(), json!(security_opt));
    }

    // Resources.Limits.
    if let Some(res) = object(template.get("Resources"), "TaskTemplate.Resources")? {
        if let Some(k) = first_unknown(res, RESOURCES_KEYS) {
            return Err(refused(&format!("TaskTemplate.Resources.{k}"), ""));
        }
        if let Some(limits) = object(res.get("Limits"), "TaskTemplate.Resources.Limits")? {
            if let Some(k) = first_unknown(limits, LIMITS_KEYS) {
                return Err(refused(&format!("TaskTemplate.Resources.Limits.{k}"), ""));
            }
            for (from, to) in [
                ("NanoCPUs", "NanoCpus"),
                ("MemoryBytes", "Memory"),
                ("Pids", "PidsLimit"),
            ] {
                let field = format!("TaskTemplate.Resources.Limits.{from}");
                match integer(limits.get(from), &field)? {
                    Some(n) if n < 0 => {
                        return Err(invalid(format!("{field} must not be negative")))
                    }
                    Some(0) | None => {}
                    Some(n) => {
                        host.insert(to.into(), json!(n));
                    }
                }
            }
        }
    }

    // LogDriver.
    if let Some(ld) = object(template.get("LogDriver"), "TaskTemplate.LogDriver")? {
        if let Some(k) = first_unknown(ld, &["Name", "Options"]) {
            return Err(refused(&format!("TaskTemplate.LogDriver.{k}"), ""));
        }
        let driver = string(ld.get("Name"), "TaskTemplate.LogDriver.Name")?;
        let options: BTreeMap<String, String> =
            match object(ld.get("Options"), "TaskTemplate.LogDriver.Options")? {
                Some(o) => o
                    .iter()
                    .map(|(k, v)| {
                        v.as_str()
                            .map(|s| (k.clone(), s.to_string()))
                            .ok_or_else(|| {
                                invalid("TaskTemplate.LogDriver.Options values must be strings")
                            })
                    })
                    .collect::<Result<_, _>>()?,
                None => BTreeMap::new(),
            };
        if !driver.is_empty() {
            berth_runtime::log_config::LogConfig::new(&driver, options.clone())
                .map_err(|e| invalid(format!("TaskTemplate.LogDriver: {e}")))?;
            host.insert(
                "LogConfig".into(),
                json!({"Type": driver, "Config": options}),
            );
        } else if !options.is_empty() {
            return Err(invalid(
                "TaskTemplate.LogDriver.Options need a LogDriver.Name",
            ));
        }
    }

    // Published ports: host mode binds on the node running the task.
    let (bindings, exposed) = host_ports(spec.get("EndpointSpec"))?;
    match network {
        TaskNetworkMode::Host => {
            host.insert("NetworkMode".into(), json!("host"));
        }
        TaskNetworkMode::Network(name) => {
            host.insert("NetworkMode".into(), json!(name));
        }
        TaskNetworkMode::DefaultBridge => {}
    }
    if network != TaskNetworkMode::Host && !bindings.is_empty() {
        host.insert("PortBindings".into(), Value::Object(bindings));
    }
    if !exposed.is_empty() {
        config.insert("ExposedPorts".into(), Value::Object(exposed));
    }

    config.insert("HostConfig".into(), Value::Object(host));
    let body = Value::Object(config);
    validate_create_body(&body)?;
    Ok((name, body))
}

/// `ContainerSpec.Privileges` as the container path's `SecurityOpt` entries; what has no
/// equivalent there is refused, named.
fn privileges(p: Option<&Map<String, Value>>) -> Result<Vec<String>, ServiceError> {
    let mut out = Vec::new();
    let Some(p) = p else { return Ok(out) };
    let f = |k: &str| format!("TaskTemplate.ContainerSpec.Privileges.{k}");
    if let Some(k) = first_unknown(
        p,
        &["NoNewPrivileges", "Seccomp", "AppArmor", "SELinuxContext"],
    ) {
        return Err(refused(&f(k), ""));
    }
    if boolean(p.get("NoNewPrivileges"), &f("NoNewPrivileges"))? == Some(true) {
        out.push("no-new-privileges".to_string());
    }
    if let Some(s) = object(p.get("Seccomp"), &f("Seccomp"))? {
        if let Some(k) = first_unknown(s, &["Mode"]) {
            return Err(refused(&format!("{}.{k}", f("Seccomp")), ""));
        }
        match string(s.get("Mode"), &f("Seccomp.Mode"))?.as_str() {
            "" | "default" => {}
            "unconfined" => out.push("seccomp=unconfined".to_string()),
            other => {
                return Err(invalid(format!(
                    "{} {other:?} is not supported by berth (supported: default, unconfined)",
                    f("Seccomp.Mode")
                )))
            }
        }
    }
    if let Some(a) = object(p.get("AppArmor"), &f("AppArmor"))? {
        if let Some(k) = first_unknown(a, &["Mode"]) {
            return Err(refused(&format!("{}.{k}", f("AppArmor")), ""));
        }
        match string(a.get("Mode"), &f("AppArmor.Mode"))?.as_str() {
            "" | "default" => {}
            "disabled" => out.push("apparmor=unconfined".to_string()),
            other => {
                return Err(invalid(format!(
                    "{} {other:?} is not supported by berth (supported: default, disabled)",
                    f("AppArmor.Mode")
                )))
            }
        }
    }
    if let Some(s) = object(p.get("SELinuxContext"), &f("SELinuxContext"))? {
        if let Some(k) = first_unknown(s, &["Disable"]) {
            return Err(refused(&format!("{}.{k}", f("SELinuxContext")), ""));
        }
        if boolean(s.get("Disable"), &f("SELinuxContext.Disable"))? == Some(true) {
            out.push("label=disable".to_string());
        }
    }
    Ok(out)
}

/// A create body's `HostConfig.PortBindings` and `ExposedPorts`.
type PortMaps = (Map<String, Value>, Map<String, Value>);

/// `EndpointSpec.Ports` with `PublishMode: host` as `(PortBindings, ExposedPorts)`.
/// Ingress ports (the routing mesh, the CLI's default for `-p`) are only exposed: every
/// node publishes them (`service::mesh`), those without a published port on the one the
/// cluster state allocated from 30000-32767 (`Service::dynamic_ports`). swarmkit's spec checks: no ingress port with `dnsrr`,
/// no published port twice.
fn host_ports(endpoint: Option<&Value>) -> Result<PortMaps, ServiceError> {
    let mut bindings = Map::new();
    let mut exposed = Map::new();
    let Some(ep) = object(endpoint, "EndpointSpec")? else {
        return Ok((bindings, exposed));
    };
    if let Some(k) = first_unknown(ep, &["Mode", "Ports"]) {
        return Err(refused(&format!("EndpointSpec.{k}"), ""));
    }
    let dnsrr = match string(ep.get("Mode"), "EndpointSpec.Mode")?.as_str() {
        "" | "vip" => false,
        "dnsrr" => true,
        other => {
            return Err(invalid(format!(
                "invalid endpoint mode {other:?}: expected vip or dnsrr"
            )))
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    let ports = match ep.get("Ports") {
        None | Some(Value::Null) => return Ok((bindings, exposed)),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(invalid("EndpointSpec.Ports must be a list")),
    };
    for p in ports {
        let p = object(Some(p), "EndpointSpec.Ports[]")?
            .unwrap_or(&Map::new())
            .clone();
        if let Some(k) = first_unknown(
            &p,
            &[
                "Name",
                "Protocol",
                "TargetPort",
                "PublishedPort",
                "PublishMode",
            ],
        ) {
            return Err(refused(&format!("EndpointSpec.Ports.{k}"), ""));
        }
        let target = integer(p.get("TargetPort"), "EndpointSpec.Ports.TargetPort")?.unwrap_or(0);
        let published =
            integer(p.get("PublishedPort"), "EndpointSpec.Ports.PublishedPort")?.unwrap_or(0);
        let proto = match string(p.get("Protocol"), "EndpointSpec.Ports.Protocol")?.as_str() {
            "" | "tcp" => "tcp",
            "udp" => "udp",
            other => {
                return Err(invalid(format!(
                    "EndpointSpec.Ports.Protocol {other:?} is not supported by berth (supported: tcp, udp)"
                )))
            }
        };
        if !(1..=65535).contains(&target) {
            return Err(invalid(format!(
                "invalid target port {target}: must be between 1 and 65535"
            )));
        }
        if !(0..=65535).contains(&published) {
            return Err(invalid(format!(
                "invalid published port {published}: must be between 0 and 65535"
            )));
        }
        let ingress = match string(p.get("PublishMode"), "EndpointSpec.Ports.PublishMode")?.as_str()
        {
            "host" => false,
            "" | "ingress" => true,
            other => {
                return Err(invalid(format!(
                    "invalid publish mode {other:?}: expected ingress or host"
                )))
            }
        };
        // swarmkit's validateEndpointSpec (manager/controlapi/service.go).
        if ingress && dnsrr {
            return Err(invalid(
                "rpc error: code = InvalidArgument desc = EndpointSpec: port published with ingress mode can't be used with dnsrr mode",
            ));
        }
        if published != 0 && !seen.insert((published, proto)) {
            return Err(invalid(
                "rpc error: code = InvalidArgument desc = EndpointSpec: duplicate published ports provided",
            ));
        }
        if ingress {
            // The routing mesh publishes it on every node (service::mesh), not the container.
            exposed.insert(format!("{target}/{proto}"), json!({}));
            continue;
        }
        let key = format!("{target}/{proto}");
        let binding = if published == 0 {
            json!({"HostIp": "", "HostPort": ""})
        } else {
            json!({"HostIp": "", "HostPort": published.to_string()})
        };
        let entry = bindings.entry(key.clone()).or_insert_with(|| json!([]));
        if let Some(a) = entry.as_array_mut() {
            a.push(binding);
        }
        exposed.insert(key, json!({}));
    }
    Ok((bindings, exposed))
}

/// Checks a create body with the container path's own parser (what `POST
/// /containers/create` refuses, a task's container would too). The image is not looked
/// up: the agent pulls it.
pub fn validate_create_body(body: &Value) -> Result<(), ServiceError> {
    let parsed = create_body_from_json(body.clone()).map_err(prefix)?;
    parse_create(parsed).map_err(prefix)?;
    Ok(())
}

fn prefix(e: ServiceError) -> ServiceError {
    match e {
        ServiceError::InvalidArgument { message } => {
            invalid(format!("invalid task template: {message}"))
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_orchestrator::{TaskState, TaskStatus};

    fn service(spec: Value) -> Service {
        Service {
            id: "svc0000000000000000000001".into(),
            spec,
            previous_spec: None,
            registry_auth: None,
            image: "busybox:latest@sha256:abc".into(),
            version: 3,
            created_at: 1,
            updated_at: 1,
            job_iteration: 0,
            template_version: 0,
            previous_image: None,
            previous_template_version: None,
            update_status: None,
            dynamic_ports: Vec::new(),
        }
    }

    fn task(slot: u64) -> Task {
        Task {
            id: "task000000000000000000001".into(),
            service_id: "svc0000000000000000000001".into(),
            slot,
            node_id: Some(7),
            service_version: 3,
            image: "busybox:latest@sha256:0123".into(),
            job_iteration: 0,
            restart_times: Vec::new(),
            template_version: 0,
            running_at: None,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Assigned, 1, "assigned"),
            created_at: 1,
            version: 4,
        }
    }

    fn spec_with(cs: Value) -> Value {
        json!({"Name": "web", "TaskTemplate": {"ContainerSpec": cs}})
    }

    fn build(spec: Value) -> Result<(String, Value), ServiceError> {
        task_container(
            &service(spec),
            &task(2),
            "0000000000000007",
            TaskNetworkMode::DefaultBridge,
        )
    }

    fn err(spec: Value) -> String {
        build(spec).unwrap_err().to_string()
    }

    #[test]
    fn names_and_swarm_labels() {
        let (name, body) = build(spec_with(
            json!({"Image": "busybox", "Labels": {"a": "b", "com.docker.swarm.task": "x"}}),
        ))
        .unwrap();
        assert_eq!(name, "web.2.task000000000000000000001");
        assert_eq!(body["Image"], "busybox:latest@sha256:0123");
        let l = &body["Labels"];
        assert_eq!(l["a"], "b");
        assert_eq!(l["com.docker.swarm.task"], "");
        assert_eq!(l["com.docker.swarm.task.id"], "task000000000000000000001");
        assert_eq!(l["com.docker.swarm.task.name"], name.as_str());
        assert_eq!(l["com.docker.swarm.node.id"], "0000000000000007");
        assert_eq!(
            l["com.docker.swarm.service.id"],
            "svc0000000000000000000001"
        );
        assert_eq!(l["com.docker.swarm.service.name"], "web");
        let global = task_container(
            &service(spec_with(json!({"Image": "busybox"}))),
            &task(0),
            "00000000000000aa",
            TaskNetworkMode::DefaultBridge,
        )
        .unwrap();
        assert_eq!(global.0, "web.00000000000000aa.task000000000000000000001");
    }

    #[test]
    fn command_is_the_entrypoint_and_args_the_cmd() {
        let (_, b) = build(spec_with(
            json!({"Image": "busybox", "Command": ["sh", "-c"], "Args": ["sleep 1"]}),
        ))
        .unwrap();
        assert_eq!(b["Entrypoint"], json!(["sh", "-c"]));
        assert_eq!(b["Cmd"], json!(["sleep 1"]));
        let (_, b) = build(spec_with(json!({"Image": "busybox", "Args": ["top"]}))).unwrap();
        assert!(b.get("Entrypoint").is_none());
        assert_eq!(b["Cmd"], json!(["top"]));
    }

    #[test]
    fn container_spec_fields_map_onto_the_create_body() {
        let (_, b) = build(json!({
            "Name": "web",
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "busybox", "Hostname": "h1", "Env": ["A=1"], "Dir": "/tmp",
                    "User": "1000", "Groups": ["audio"], "TTY": true, "OpenStdin": true,
                    "ReadOnly": true, "StopSignal": "SIGINT", "StopGracePeriod": 2_500_000_000u64,
                    "Init": false,
                    "Hosts": ["10.0.0.1 db db.local", "::1 v6host"],
                    "DNSConfig": {"Nameservers": ["1.1.1.1"], "Search": ["example"], "Options": ["ndots:2"]},
                    "Sysctls": {"net.ipv4.ip_forward": "1"},
                    "CapabilityAdd": ["CAP_NET_ADMIN"], "CapabilityDrop": ["CAP_CHOWN"],
                    "Ulimits": [{"Name": "nofile", "Soft": 100, "Hard": 200}],
                    "Mounts": [{"Type": "tmpfs", "Target": "/scratch"},
                               {"Type": "volume", "Source": "data", "Target": "/data"},
                               {"Type": "bind", "Source": "/tmp", "Target": "/host", "ReadOnly": true}],
                    "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1_000_000_000u64},
                    "Privileges": {"NoNewPrivileges": true, "Seccomp": {"Mode": "unconfined"}},
                    "Isolation": "default",
                },
                "Resources": {"Limits": {"NanoCPUs": 500_000_000u64, "MemoryBytes": 67_108_864u64, "Pids": 50},
                              "Reservations": {"MemoryBytes": 1024}},
                "RestartPolicy": {"Condition": "any"},
                "LogDriver": {"Name": "json-file", "Options": {"max-size": "1m"}},
            },
            "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "host"}]},
        }))
        .unwrap();
        assert_eq!(b["Hostname"], "h1");
        assert_eq!(b["Env"], json!(["A=1"]));
        assert_eq!(b["WorkingDir"], "/tmp");
        assert_eq!(b["User"], "1000");
        assert_eq!(b["Tty"], true);
        assert_eq!(b["OpenStdin"], true);
        assert_eq!(b["StopSignal"], "SIGINT");
        assert_eq!(b["StopTimeout"], 3);
        assert_eq!(b["Healthcheck"]["Test"], json!(["CMD", "true"]));
        assert_eq!(b["ExposedPorts"], json!({"80/tcp": {}}));
        let h = &b["HostConfig"];
        assert_eq!(h["GroupAdd"], json!(["audio"]));
        assert_eq!(h["ReadonlyRootfs"], true);
        assert_eq!(h["Init"], false);
        assert_eq!(
            h["ExtraHosts"],
            json!(["db:10.0.0.1", "db.local:10.0.0.1", "v6host:::1"])
        );
        assert_eq!(h["Dns"], json!(["1.1.1.1"]));
        assert_eq!(h["DnsSearch"], json!(["example"]));
        assert_eq!(h["DnsOptions"], json!(["ndots:2"]));
        assert_eq!(h["Sysctls"], json!({"net.ipv4.ip_forward": "1"}));
        assert_eq!(h["CapAdd"], json!(["CAP_NET_ADMIN"]));
        assert_eq!(h["CapDrop"], json!(["CAP_CHOWN"]));
        assert_eq!(h["Ulimits"][0]["Name"], "nofile");
        assert_eq!(h["Mounts"].as_array().unwrap().len(), 3);
        assert_eq!(
            h["SecurityOpt"],
            json!(["no-new-privileges", "seccomp=unconfined"])
        );
        assert_eq!(h["NanoCpus"], 500_000_000);
        assert_eq!(h["Memory"], 67_108_864);
        assert_eq!(h["PidsLimit"], 50);
        assert_eq!(
            h["LogConfig"],
            json!({"Type": "json-file", "Config": {"max-size": "1m"}})
        );
        assert_eq!(
            h["PortBindings"],
            json!({"80/tcp": [{"HostIp": "", "HostPort": "8080"}]})
        );
        assert!(
            h.get("RestartPolicy").is_none(),
            "the orchestrator restarts, not the engine"
        );
    }

    #[test]
    fn secret_and_config_files_follow_swarmkit() {
        let files = task_files(&spec_with(json!({"Image": "busybox",
            "Secrets": [
                {"SecretID": "s1", "SecretName": "pw", "File": {"Name": "pw", "UID": "0", "GID": "0", "Mode": 292}},
                {"SecretID": "s2", "SecretName": "key", "File": {"Name": "/etc/key", "UID": "33", "GID": "44", "Mode": 256}}],
            "Configs": [{"ConfigID": "c1", "ConfigName": "conf", "File": {"Name": "/etc/app.conf", "UID": "", "GID": "", "Mode": 416}}]})))
        .unwrap();
        let targets: Vec<_> = files
            .iter()
            .map(|f| (f.target.as_str(), f.uid, f.gid, f.mode))
            .collect();
        assert_eq!(
            targets,
            vec![
                ("/run/secrets/pw", 0, 0, 0o444),
                ("/etc/key", 33, 44, 0o400),
                ("/etc/app.conf", 0, 0, 0o640)
            ]
        );
        assert_eq!(files[2].kind, ObjectKind::Config);
        let e = err(spec_with(
            json!({"Image": "busybox", "Secrets": [{"SecretName": "s", "File": {"Name": "s"}}]}),
        ));
        assert!(e.contains("malformed secret reference"), "{e}");
        let e = err(spec_with(
            json!({"Image": "busybox", "Secrets": [{"SecretID": "1", "SecretName": "s"}]}),
        ));
        assert!(e.contains("no target provided"), "{e}");
        let e = err(spec_with(json!({"Image": "busybox", "Secrets": [
            {"SecretID": "1", "SecretName": "a", "File": {"Name": "x"}},
            {"SecretID": "2", "SecretName": "b", "File": {"Name": "x"}}]})));
        assert!(
            e.contains("secret references 'a' and 'b' have a conflicting target: 'x'"),
            "{e}"
        );
        let e = err(spec_with(
            json!({"Image": "busybox", "Configs": [{"ConfigID": "1", "ConfigName": "c", "Runtime": {}}]}),
        ));
        assert!(e.contains("Configs.Runtime"), "{e}");
        let e = err(spec_with(
            json!({"Image": "busybox", "Secrets": [{"SecretID": "1", "SecretName": "s", "File": {"Name": "s", "UID": "www-data"}}]}),
        ));
        assert!(e.contains("UID"), "{e}");
    }

    #[test]
    fn what_berth_cannot_honour_is_refused_by_name() {
        let e = err(spec_with(
            json!({"Image": "busybox", "Privileges": {"CredentialSpec": {"File": "x"}}}),
        ));
        assert!(e.contains("Privileges.CredentialSpec"), "{e}");
        let e = err(spec_with(
            json!({"Image": "busybox", "Isolation": "hyperv"}),
        ));
        assert!(e.contains("Isolation"), "{e}");
        let e = err(spec_with(
            json!({"Image": "busybox", "Hostname": "{{.Node.Hostname}}"}),
        ));
        assert!(
            e.contains("template in TaskTemplate.ContainerSpec.Hostname"),
            "{e}"
        );
        let e = err(
            json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}, "Networks": [{"Target": "overlay1", "DriverOpts": {"a": "b"}}]}}),
        );
        assert!(e.contains("TaskTemplate.Networks.DriverOpts"), "{e}");
        let e = err(
            json!({"Name": "web", "Networks": [{"Aliases": ["x"]}], "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}}),
        );
        assert!(
            e.contains("Networks: a network attachment needs a Target"),
            "{e}"
        );
        let e = err(
            json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}, "Resources": {"Limits": {"GenericResources": [{"x": 1}]}}}}),
        );
        assert!(
            e.contains("TaskTemplate.Resources.Limits.GenericResources"),
            "{e}"
        );
        let e = err(
            json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}, "Runtime": "plugin"}}),
        );
        assert!(e.contains("TaskTemplate.Runtime"), "{e}");
        let e = err(
            json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}, "LogDriver": {"Name": "syslog"}}}),
        );
        assert!(e.contains("TaskTemplate.LogDriver"), "{e}");
    }

    #[test]
    fn ingress_ports_are_exposed_and_host_ports_bound() {
        let spec = |ports: Value| {
            json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}},
                   "EndpointSpec": {"Ports": ports}})
        };
        let port =
            |mode: &str| json!([{"TargetPort": 80, "PublishedPort": 8080, "PublishMode": mode}]);
        for mode in ["ingress", ""] {
            let (_, b) = build(spec(port(mode))).unwrap();
            assert!(b["HostConfig"]["PortBindings"].is_null(), "{b}");
            assert_eq!(b["ExposedPorts"], json!({"80/tcp": {}}));
        }
        let (_, b) = build(spec(port("host"))).unwrap();
        assert_eq!(
            b["HostConfig"]["PortBindings"]["80/tcp"][0]["HostPort"],
            "8080"
        );
        // No published port: the cluster allocates one (Service::dynamic_ports); the
        // container only exposes its port, as for any ingress port.
        let (_, b) = build(spec(json!([{"TargetPort": 80}]))).unwrap();
        assert!(b["HostConfig"]["PortBindings"].is_null(), "{b}");
        assert_eq!(b["ExposedPorts"], json!({"80/tcp": {}}));
        let e = err(spec(json!([{"TargetPort": 80, "PublishedPort": 8080},
                                {"TargetPort": 81, "PublishedPort": 8080, "PublishMode": "host"}])));
        assert!(
            e.ends_with("EndpointSpec: duplicate published ports provided"),
            "{e}"
        );
        let mut dnsrr = spec(port("ingress"));
        dnsrr["EndpointSpec"]["Mode"] = json!("dnsrr");
        let e = err(dnsrr);
        assert!(
            e.ends_with("port published with ingress mode can't be used with dnsrr mode"),
            "{e}"
        );
    }

    #[test]
    fn the_container_paths_checks_apply() {
        // A memory limit the container path refuses is refused at service create.
        let e = err(
            json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"},
                           "Resources": {"Limits": {"MemoryBytes": 1024}}}}),
        );
        assert!(e.contains("Minimum memory limit allowed is 6MB"), "{e}");
        let e = err(spec_with(
            json!({"Image": "busybox", "Sysctls": {"kernel.panic": "1"}}),
        ));
        assert!(e.contains("not whitelisted"), "{e}");
        let e = err(spec_with(
            json!({"Image": "busybox", "Mounts": [{"Type": "bind", "Source": "rel", "Target": "/x"}]}),
        ));
        assert!(e.starts_with("invalid task template: "), "{e}");
        let e = err(spec_with(json!({"Image": "busybox", "Hosts": ["lonely"]})));
        assert!(e.contains("Hosts"), "{e}");
        let e = err(spec_with(json!({"Image": ""})));
        assert!(e.contains("image reference must be provided"), "{e}");
    }

    #[test]
    fn unset_fields_as_the_cli_sends_them_are_accepted() {
        // docker CLI 28 sends zero values for options not given.
        let (_, b) = build(spec_with(json!({
            "Image": "busybox", "Init": false, "StopGracePeriod": null, "DNSConfig": {},
            "Isolation": "default", "Privileges": null, "Secrets": null, "Configs": [],
            "Labels": null, "Mounts": null, "Hosts": null, "CapabilityAdd": null,
        })))
        .unwrap();
        assert_eq!(b["HostConfig"]["Init"], false);
    }
}
