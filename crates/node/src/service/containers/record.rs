//! The persisted record of a container and its Docker-shaped views (inspect, list). The
//! views are pure functions of the record and `now`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::config::{ContainerSpec, NetworkChoice, PortProto};
use super::health::{Health, Healthcheck};

/// Observed state, as `docker inspect` shows it. Written by the daemon from what the runtime
/// reports; never by a client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    /// `created`, `running`, `paused`, `restarting`, `removing`, `exited`, `dead`.
    pub status: String,
    pub pid: u32,
    pub exit_code: i64,
    pub error: String,
    pub oom_killed: bool,
    /// RFC 3339, empty when never.
    pub started_at: String,
    pub finished_at: String,
    pub restart_count: u32,
    /// The last stop was asked for (stop/kill/docker rm -f), so restart policies hold off.
    pub stopped_by_user: bool,
    /// `State.Health`: present once a container with an enabled healthcheck has started.
    #[serde(default)]
    pub health: Option<Health>,
}

/// A mount as resolved at create time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedMount {
    /// `bind` or `volume`.
    pub kind: String,
    /// Volume name (empty for binds).
    pub name: String,
    pub source: String,
    pub destination: String,
    pub read_write: bool,
}

/// A published port as bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    pub container: PortProto,
    pub host_ip: String,
    pub host_port: u16,
}

/// The container's place on a network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    pub network_id: String,
    pub endpoint_id: String,
    pub ip_address: String,
    pub prefix_len: u8,
    pub gateway: String,
    pub mac_address: String,
    pub aliases: Vec<String>,
}

/// Everything berthd keeps about one container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    /// RFC 3339 with nanoseconds.
    pub created: String,
    pub spec: ContainerSpec,
    /// The image ID (`sha256:` config digest).
    pub image_id: String,
    /// The process: image entrypoint/cmd merged with the request.
    pub path: String,
    pub args: Vec<String>,
    /// Environment as the process gets it.
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    pub exposed: Vec<PortProto>,
    pub mounts: Vec<ResolvedMount>,
    pub ports: Vec<PublishedPort>,
    pub endpoints: Vec<Endpoint>,
    pub log_path: String,
    pub state: ContainerState,
    /// The effective healthcheck: the request's merged with the image's (`None`: neither
    /// has one).
    #[serde(default)]
    pub healthcheck: Option<Healthcheck>,
    /// The image's `Shell` (for `CMD-SHELL` probes; empty: `/bin/sh -c`).
    #[serde(default)]
    pub shell: Vec<String>,
}

/// Docker's `units.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        _ if m == 1 => "About a minute".into(),
        _ if m < 60 => format!("{m} minutes"),
        _ if h == 1 => "About an hour".into(),
        _ if h < 48 => format!("{h} hours"),
        _ if d < 14 => format!("{d} days"),
        _ if d < 90 => format!("{} weeks", d / 7),
        _ if d < 730 => format!("{} months", d / 30),
        _ => format!("{} years", d / 365),
    }
}

fn unix_secs(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp())
}

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn or_zero(t: &str) -> &str {
    if t.is_empty() {
        ZERO_TIME
    } else {
        t
    }
}

impl ContainerRecord {
    /// `docker ps`'s STATUS column.
    pub fn status_text(&self, now_secs: i64) -> String {
        let st = &self.state;
        let since = |t: &str| human_duration(now_secs - unix_secs(t).unwrap_or(now_secs));
        match st.status.as_str() {
            "running" => match &st.health {
                Some(h) => format!("Up {} ({})", since(&st.started_at), h.ps_text()),
                None => format!("Up {}", since(&st.started_at)),
            },
            "paused" => format!("Up {} (Paused)", since(&st.started_at)),
            "restarting" => format!(
                "Restarting ({}) {} ago",
                st.exit_code,
                since(&st.finished_at)
            ),
            "exited" => format!("Exited ({}) {} ago", st.exit_code, since(&st.finished_at)),
            "removing" => "Removal In Progress".into(),
            "dead" => "Dead".into(),
            _ => "Created".into(),
        }
    }

    fn command(&self) -> String {
        let mut parts = vec![self.path.clone()];
        parts.extend(self.args.iter().cloned());
        parts.join(" ")
    }

    fn port_map(&self) -> Value {
        let mut m = serde_json::Map::new();
        for p in &self.exposed {
            m.insert(p.to_string(), Value::Null);
        }
        for p in &self.ports {
            let e = m.entry(p.container.to_string()).or_insert(Value::Null);
            if e.is_null() {
                *e = json!([]);
            }
            if let Some(a) = e.as_array_mut() {
                a.push(json!({"HostIp": p.host_ip, "HostPort": p.host_port.to_string()}));
            }
        }
        Value::Object(m)
    }

    /// The endpoints inspect and `ps` show: a swarm task's endpoint on the gateway bridge
    /// is its namespace's way out, not one of its networks (dockerd shows only a task's
    /// overlays and lists the gateway endpoint under `docker_gwbridge` alone).
    pub fn shown_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        let task = self
            .labels
            .contains_key(crate::service::agent::TASK_ID_LABEL);
        self.endpoints
            .iter()
            .filter(move |e| !(task && e.network == crate::service::networks::GATEWAY_BRIDGE_NAME))
    }

    fn networks(&self) -> Value {
        let mut m = serde_json::Map::new();
        if self.endpoints.is_empty() {
            let mode = self.spec.network.mode_name();
            if matches!(self.spec.network, NetworkChoice::Host | NetworkChoice::None) {
                m.insert(
                    mode,
                    json!({"NetworkID": "", "EndpointID": "", "Gateway": "", "IPAddress": "",
                           "IPPrefixLen": 0, "MacAddress": "", "Aliases": null}),
                );
            }
        }
        for e in self.shown_endpoints() {
            m.insert(
                e.network.clone(),
                json!({
                    "NetworkID": e.network_id, "EndpointID": e.endpoint_id,
                    "Gateway": e.gateway, "IPAddress": e.ip_address,
                    "IPPrefixLen": e.prefix_len, "MacAddress": e.mac_address,
                    "Aliases": e.aliases, "IPv6Gateway": "", "GlobalIPv6Address": "",
                    "GlobalIPv6PrefixLen": 0,
                }),
            );
        }
        Value::Object(m)
    }

    fn mounts_json(&self) -> Value {
        Value::Array(
            self.mounts
                .iter()
                .map(|m| {
                    let mut v = json!({
                        "Type": m.kind, "Source": m.source, "Destination": m.destination,
                        "Mode": if m.read_write { "" } else { "ro" }, "RW": m.read_write,
                        "Propagation": if m.kind == "bind" { "rprivate" } else { "" },
                    });
                    if m.kind == "volume" {
                        v["Name"] = json!(m.name);
                        v["Driver"] = json!("local");
                    }
                    v
                })
                .collect(),
        )
    }

    /// `GET /containers/{id}/json`.
    pub fn inspect(&self) -> Value {
        let s = &self.spec;
        let st = &self.state;
        let r = &s.run;
        let binds: Vec<String> = s
            .mounts
            .iter()
            .filter_map(|m| match m {
                super::config::MountRequest::Bind {
                    source,
                    destination,
                    read_only,
                } => Some(format!(
                    "{}:{destination}{}",
                    source.display(),
                    if *read_only { ":ro" } else { "" }
                )),
                super::config::MountRequest::Volume {
                    name: Some(n),
                    destination,
                    read_only,
                } => Some(format!(
                    "{n}:{destination}{}",
                    if *read_only { ":ro" } else { "" }
                )),
                _ => None,
            })
            .collect();
        let mut port_bindings = serde_json::Map::new();
        for p in &s.ports {
            let e = port_bindings
                .entry(p.container.to_string())
                .or_insert_with(|| json!([]));
            if let Some(a) = e.as_array_mut() {
                a.push(json!({
                    "HostIp": p.host_ip.map(|i| i.to_string()).unwrap_or_default(),
                    "HostPort": p.host_port.map(|p| p.to_string()).unwrap_or_default(),
                }));
            }
        }
        let exposed: serde_json::Map<String, Value> = self
            .exposed
            .iter()
            .map(|p| (p.to_string(), json!({})))
            .collect();
        let volumes: serde_json::Map<String, Value> = self
            .mounts
            .iter()
            .filter(|m| m.kind == "volume")
            .map(|m| (m.destination.clone(), json!({})))
            .collect();
        let mut v = json!({
            "Id": self.id,
            "Created": self.created,
            "Path": self.path,
            "Args": self.args,
            "State": {
                "Status": st.status,
                "Running": st.status == "running" || st.status == "paused",
                "Paused": st.status == "paused",
                "Restarting": st.status == "restarting",
                "OOMKilled": st.oom_killed,
                "Dead": st.status == "dead",
                "Pid": st.pid,
                "ExitCode": st.exit_code,
                "Error": st.error,
                "StartedAt": or_zero(&st.started_at),
                "FinishedAt": or_zero(&st.finished_at),
            },
            "Image": self.image_id,
            "ResolvConfPath": "",
            "HostnamePath": "",
            "HostsPath": "",
            "LogPath": self.log_path,
            "Name": format!("/{}", self.name),
            "RestartCount": st.restart_count,
            "Driver": "overlay2",
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": r.apparmor_profile.clone().unwrap_or_default(),
            "ExecIDs": null,
            "HostConfig": {
                "Binds": if binds.is_empty() { Value::Null } else { json!(binds) },
                "NetworkMode": s.network.mode_name(),
                "PortBindings": port_bindings,
                "RestartPolicy": {"Name": s.restart.name(), "MaximumRetryCount": s.restart.max_retries()},
                "AutoRemove": s.auto_remove,
                "Memory": r.resources.memory.unwrap_or(0),
                "MemorySwap": r.resources.memory_swap.unwrap_or(0),
                "NanoCpus": r.resources.nano_cpus.unwrap_or(0),
                "CpuShares": r.resources.cpu_shares.unwrap_or(0),
                "PidsLimit": r.resources.pids_limit,
                "PublishAllPorts": s.publish_all,
                "ReadonlyRootfs": r.read_only_rootfs,
                "CapAdd": r.cap_add,
                "CapDrop": r.cap_drop,
                "Privileged": r.privileged,
                "LogConfig": {"Type": r.log.driver.name(), "Config": r.log.options},
            },
            "GraphDriver": {"Name": "overlay2", "Data": null},
            "Mounts": self.mounts_json(),
            "Config": {
                "Hostname": self.hostname,
                "Domainname": s.domainname,
                "User": self.user,
                "AttachStdin": s.attach_stdin,
                "AttachStdout": s.attach_stdout,
                "AttachStderr": s.attach_stderr,
                "ExposedPorts": if exposed.is_empty() { Value::Null } else { Value::Object(exposed) },
                "Tty": r.tty,
                "OpenStdin": r.open_stdin,
                "StdinOnce": s.stdin_once,
                "Env": self.env,
                "Cmd": r.cmd,
                "Image": s.image,
                "Volumes": if volumes.is_empty() { Value::Null } else { Value::Object(volumes) },
                "WorkingDir": self.working_dir,
                "Entrypoint": r.entrypoint,
                "Labels": self.labels,
                "StopSignal": r.stop_signal,
                "StopTimeout": r.stop_timeout,
            },
            "NetworkSettings": {
                "Bridge": "",
                "SandboxID": "",
                "Ports": self.port_map(),
                "IPAddress": self.shown_endpoints().next().map(|e| e.ip_address.clone()).unwrap_or_default(),
                "IPPrefixLen": self.shown_endpoints().next().map_or(0, |e| e.prefix_len),
                "Gateway": self.shown_endpoints().next().map(|e| e.gateway.clone()).unwrap_or_default(),
                "MacAddress": self.shown_endpoints().next().map(|e| e.mac_address.clone()).unwrap_or_default(),
                "Networks": self.networks(),
            },
        });
        let hc = s.request.host_config.clone().unwrap_or_default();
        v["HostConfig"]["Init"] = json!(s.init);
        v["HostConfig"]["Tmpfs"] = json!(hc.tmpfs);
        v["HostConfig"]["ExtraHosts"] = json!(hc.extra_hosts);
        v["HostConfig"]["Dns"] = json!(hc.dns.unwrap_or_default());
        v["HostConfig"]["DnsSearch"] = json!(hc.dns_search.unwrap_or_default());
        v["HostConfig"]["DnsOptions"] = json!(hc.dns_options.unwrap_or_default());
        v["HostConfig"]["ShmSize"] = json!(r.shm_size.unwrap_or(67_108_864));
        // Every other field of the request shows back as sent (only honoured fields can
        // be set: see `config::refuse_unsupported`).
        let request = serde_json::to_value(&s.request).unwrap_or(Value::Null);
        if let Value::Object(req) = request {
            for (k, val) in req {
                let (section, key) = match k.as_str() {
                    "HostConfig" => {
                        if let Value::Object(hc) = val {
                            for (hk, hv) in hc {
                                if let Some(o) = v["HostConfig"].as_object_mut() {
                                    let shown = o.entry(hk).or_insert(Value::Null);
                                    if shown.is_null() {
                                        *shown = hv;
                                    }
                                }
                            }
                        }
                        continue;
                    }
                    "NetworkingConfig" => continue,
                    _ => ("Config", k),
                };
                if let Some(o) = v[section].as_object_mut() {
                    let shown = o.entry(key).or_insert(Value::Null);
                    if shown.is_null() {
                        *shown = val;
                    }
                }
            }
        }
        // Both are omitted when absent, as Go's `omitempty` does.
        if let Some(h) = &st.health {
            v["State"]["Health"] = h.to_json();
        }
        if let Some(h) = &self.healthcheck {
            v["Config"]["Healthcheck"] = h.to_json();
        }
        v
    }

    /// One entry of `GET /containers/json`.
    pub fn summary(&self, now_secs: i64) -> Value {
        let ports: Vec<Value> = self
            .exposed
            .iter()
            .filter(|e| !self.ports.iter().any(|p| p.container == **e))
            .map(|e| json!({"PrivatePort": e.port, "Type": e.proto.as_str()}))
            .chain(self.ports.iter().map(|p| {
                json!({"IP": p.host_ip, "PrivatePort": p.container.port,
                       "PublicPort": p.host_port, "Type": p.container.proto.as_str()})
            }))
            .collect();
        json!({
            "Id": self.id,
            "Names": [format!("/{}", self.name)],
            "Image": self.spec.image,
            "ImageID": self.image_id,
            "Command": self.command(),
            "Created": unix_secs(&self.created).unwrap_or(0),
            "Ports": ports,
            "Labels": self.labels,
            "State": self.state.status,
            "Status": self.status_text(now_secs),
            "HostConfig": {"NetworkMode": self.spec.network.mode_name()},
            "NetworkSettings": {"Networks": self.networks()},
            "Mounts": self.mounts_json(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(61), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3700), "About an hour");
        assert_eq!(human_duration(5 * 3600), "5 hours");
        assert_eq!(human_duration(3 * 86_400), "3 days");
        assert_eq!(human_duration(800 * 86_400), "2 years");
    }
}
