//! `docker update` (`POST /containers/{id}/update`): new cgroup limits and restart policy
//! for an existing container.
//!
//! Rules and messages follow moby's `daemon/update.go`, `daemon/daemon_unix.go`
//! (`verifyContainerResources`) and `container/container_unix.go` (`UpdateContainer`):
//! a field left at 0 (or absent) keeps its value; conflicts with what is already set answer
//! 409 "Cannot update container <id>: ..."; invalid values answer 400. The limits of a
//! running or paused container are applied to its cgroups at once (libcgroups); a created,
//! exited or restarting container only keeps them, and its next start applies them. Fields
//! of the update body berth does not apply (KernelMemory, Blkio*, CpuRealtime*, Devices,
//! Ulimits, ...) are refused by name when set.

use serde::Deserialize;
use serde_json::Value;

use super::config::{is_unset, RestartPolicy};
use crate::error::ServiceError;

/// Keys of the update body berth applies.
pub const UPDATE_HONOURED: &[&str] = &[
    "Memory",
    "MemorySwap",
    "MemoryReservation",
    "NanoCpus",
    "CpuShares",
    "CpuQuota",
    "CpuPeriod",
    "CpusetCpus",
    "CpusetMems",
    "PidsLimit",
    "RestartPolicy",
];

/// The update body's honoured fields (Engine API `ContainerUpdate`; 0 or absent: keep).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateBody {
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub cpu_shares: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// `None`: keep; 0 or -1: unlimited.
    pub pids_limit: Option<i64>,
    pub restart_policy: Option<bollard_stubs::models::RestartPolicy>,
}

/// Parses the body, refusing by name any set field berth cannot apply.
pub fn parse_update(body: &Value) -> Result<UpdateBody, ServiceError> {
    let Some(obj) = body.as_object() else {
        return Err(ServiceError::invalid("update body must be a JSON object"));
    };
    for (k, v) in obj {
        let default = is_unset(v) || (k == "MemorySwappiness" && v.as_i64() == Some(-1));
        if !UPDATE_HONOURED.contains(&k.as_str()) && !default {
            return Err(ServiceError::invalid(format!(
                "{k} cannot be updated by berth: remove the option (berth applies {})",
                UPDATE_HONOURED.join(", ")
            )));
        }
    }
    serde_json::from_value(body.clone()).map_err(|e| ServiceError::invalid(e.to_string()))
}

const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// moby's `verifyContainerResources` checks of the update's own values (400).
pub fn verify(u: &UpdateBody, cpus_available: i64) -> Result<(), ServiceError> {
    let mem = u.memory.unwrap_or(0);
    let swap = u.memory_swap.unwrap_or(0);
    let resv = u.memory_reservation.unwrap_or(0);
    let bad = |m: &str| Err(ServiceError::invalid(m));
    if mem < 0 || resv < 0 || swap < -1 {
        return bad("invalid memory value: must not be negative");
    }
    if mem != 0 && mem < MIN_MEMORY {
        return bad("Minimum memory limit allowed is 6MB");
    }
    if mem > 0 && swap > 0 && swap < mem {
        return bad("Minimum memoryswap limit should be larger than memory limit, see usage");
    }
    if resv != 0 && resv < MIN_MEMORY {
        return bad("Minimum memory reservation allowed is 6MB");
    }
    if mem > 0 && resv > 0 && mem < resv {
        return bad(
            "Minimum memory limit can not be less than memory reservation limit, see usage",
        );
    }
    let nano = u.nano_cpus.unwrap_or(0);
    let (quota, period) = (u.cpu_quota.unwrap_or(0), u.cpu_period.unwrap_or(0));
    if nano > 0 && period > 0 {
        return bad("Conflicting options: Nano CPUs and CPU Period cannot both be set");
    }
    if nano > 0 && quota > 0 {
        return bad("Conflicting options: Nano CPUs and CPU Quota cannot both be set");
    }
    if nano < 0 || nano > cpus_available * 1_000_000_000 {
        return Err(ServiceError::invalid(format!(
            "Range of CPUs is from 0.01 to {cpus_available}.00, as there are only {cpus_available} CPUs available"
        )));
    }
    if period != 0 && !(1000..=1_000_000).contains(&period) {
        return bad(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
        );
    }
    if quota > 0 && quota < 1000 {
        return bad("CPU cfs quota can not be less than 1ms (i.e. 1000)");
    }
    if u.cpu_shares.unwrap_or(0) < 0 {
        return bad("invalid CPU shares: must not be negative");
    }
    for (v, what) in [
        (&u.cpuset_cpus, "cpuset cpus"),
        (&u.cpuset_mems, "cpuset mems"),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            let ok = v.split(',').all(|part| {
                part.splitn(2, '-')
                    .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            });
            if !ok {
                return Err(ServiceError::invalid(format!(
                    "Invalid value {v} for {what}"
                )));
            }
        }
    }
    Ok(())
}

/// The restart policy the body asks for; `None` when it names none.
pub fn restart_policy(u: &UpdateBody) -> Result<Option<RestartPolicy>, ServiceError> {
    match &u.restart_policy {
        Some(p) => super::config::parse_restart_policy(p),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_refused_by_name_and_defaults_pass() {
        let ok = json!({"Memory": 1 << 26, "KernelMemory": 0, "BlkioWeight": 0,
            "MemorySwappiness": -1, "Ulimits": null});
        assert_eq!(parse_update(&ok).unwrap().memory, Some(1 << 26));
        let e = parse_update(&json!({"BlkioWeight": 300})).unwrap_err();
        assert!(e.to_string().contains("BlkioWeight"), "{e}");
        let e = parse_update(&json!({"KernelMemory": 1})).unwrap_err();
        assert!(e.to_string().contains("KernelMemory"), "{e}");
    }

    #[test]
    fn docker_value_rules() {
        let v = |b: Value| verify(&parse_update(&b).unwrap(), 2).map_err(|e| e.to_string());
        assert!(v(json!({"Memory": 4 << 20}))
            .unwrap_err()
            .contains("Minimum memory limit allowed is 6MB"));
        assert!(v(json!({"Memory": 64 << 20, "MemorySwap": 32 << 20}))
            .unwrap_err()
            .contains("larger than memory limit"));
        assert!(v(json!({"NanoCpus": 500_000_000, "CpuQuota": 50_000}))
            .unwrap_err()
            .contains("Nano CPUs and CPU Quota"));
        assert!(v(json!({"NanoCpus": 3_000_000_000i64}))
            .unwrap_err()
            .contains("only 2 CPUs"));
        assert!(v(json!({"Memory": 64 << 20, "MemorySwap": -1, "NanoCpus": 500_000_000})).is_ok());
    }

    #[test]
    fn restart_policies() {
        let p = |b: Value| restart_policy(&parse_update(&b).unwrap());
        assert_eq!(p(json!({})).unwrap(), None);
        assert_eq!(
            p(json!({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3}})).unwrap(),
            Some(RestartPolicy::OnFailure { max: 3 })
        );
        assert!(p(json!({"RestartPolicy": {"Name": "always", "MaximumRetryCount": 3}})).is_err());
    }
}
