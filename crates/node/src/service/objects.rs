//! Secret and config objects (`/secrets`, `/configs`): what each call does.
//!
//! Owns: Swarm's checks of a create or update body (name shape, data size, labels-only
//! updates, `Driver` and `Templating` refused by name), the lookup by id, name or id
//! prefix, the list filters, and Swarm's wording of the cluster's refusals.
//!
//! Does not own: the records and their rules (`berth_consensus::state`), sealing (the
//! leader, with the at-rest key: a value goes to it over mTLS and comes back sealed, then
//! is committed), HTTP shapes (`api::objects`).
//!
//! ```text
//!  create: check ─> ClusterNode::seal_object (leader) ─> Command::CreateObject ─> Raft
//!  inspect (configs): record ─> ClusterNode::open_objects (leader) ─> Data
//! ```
//!
//! A secret's value never leaves the cluster again through this layer: inspect and list
//! show no `Data` for secrets (as Swarm); only a task's node gets it (the agent).

use std::collections::BTreeMap;

use berth_consensus::{
    ClusterState, Command, ConsensusError, ObjectKind, Rejection, Response, SealedObject,
};
use serde_json::Value;

use super::cluster::{cluster_error, ClusterService};
use super::orchestrator::unix_nanos;
use super::services::new_object_id;
use crate::error::ServiceError;

/// swarmkit's `MaxSecretSize`: a secret's data is shorter than 500 KiB.
pub const MAX_SECRET_SIZE: usize = 500 * 1024;
/// swarmkit's `MaxConfigSize`: a config's data is shorter than 1000 KiB.
pub const MAX_CONFIG_SIZE: usize = 1000 * 1024;

/// What `POST /secrets/create` and `/configs/create` carry, decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct ObjectSpec {
    /// `Name`.
    pub name: String,
    /// `Labels`.
    pub labels: BTreeMap<String, String>,
    /// `Data`, decoded from base64 (empty when absent).
    pub data: Vec<u8>,
}

impl std::fmt::Debug for ObjectSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectSpec")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// The list filters (`name`: name prefix, `names`: exact names, `id`: id prefix, `label`):
/// an object matches when it matches any of the name and id filters (all objects when
/// none is given) and every label filter, as swarmkit's `ListSecrets`.
#[derive(Debug, Default, Clone)]
pub struct ObjectFilters {
    /// Name prefixes.
    pub name_prefixes: Vec<String>,
    /// Exact names.
    pub names: Vec<String>,
    /// Id prefixes.
    pub id_prefixes: Vec<String>,
    /// `key` or `key=value`.
    pub labels: Vec<String>,
}

impl ObjectFilters {
    fn matches(&self, o: &SealedObject) -> bool {
        let any =
            self.name_prefixes.is_empty() && self.names.is_empty() && self.id_prefixes.is_empty();
        let by_name = any
            || self.names.iter().any(|n| n == &o.name)
            || self
                .name_prefixes
                .iter()
                .any(|p| o.name.starts_with(p.as_str()))
            || self
                .id_prefixes
                .iter()
                .any(|p| o.id.starts_with(p.as_str()));
        by_name && super::services::labels_match(&self.labels, &o.labels)
    }
}

fn rpc_invalid(desc: impl std::fmt::Display) -> ServiceError {
    ServiceError::invalid(format!("rpc error: code = InvalidArgument desc = {desc}"))
}

/// swarmkit's `validateConfigOrSecretAnnotations`.
pub fn check_name(name: &str) -> Result<(), ServiceError> {
    if name.is_empty() {
        return Err(rpc_invalid("name must be provided"));
    }
    let ok_edge = |c: char| c.is_ascii_alphanumeric();
    let ok_mid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let valid = name.len() <= 64
        && name.chars().all(ok_mid)
        && name.chars().next().is_some_and(ok_edge)
        && name.chars().last().is_some_and(ok_edge);
    if !valid {
        return Err(rpc_invalid(
            "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]",
        ));
    }
    Ok(())
}

/// swarmkit's size rule: `0 < len < MAX_SECRET_SIZE` (configs: `MAX_CONFIG_SIZE`).
pub fn check_data(kind: ObjectKind, data: &[u8]) -> Result<(), ServiceError> {
    let max = match kind {
        ObjectKind::Secret => MAX_SECRET_SIZE,
        ObjectKind::Config => MAX_CONFIG_SIZE,
    };
    if data.is_empty() || data.len() >= max {
        return Err(rpc_invalid(format!(
            "{kind} data must be larger than 0 and less than {max} bytes"
        )));
    }
    Ok(())
}

/// Decodes a `SecretSpec` / `ConfigSpec` body. `Driver` (secrets) and `Templating`
/// (configs) are refused by name: berth has no secret drivers and does not expand
/// templates. Go's JSON field matching is case-insensitive; so is this.
pub fn parse_spec(kind: ObjectKind, body: &Value) -> Result<ObjectSpec, ServiceError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ServiceError::invalid(format!("the {kind} spec must be a JSON object")))?;
    let field = |name: &str| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    };
    for refused in ["Driver", "Templating"] {
        if let Some(v) = field(refused) {
            let set = v.as_object().is_none_or(|o| !o.is_empty());
            if set {
                return Err(ServiceError::invalid(format!(
                    "{kind} {refused} is not supported by berth: {kind}s are stored in the cluster's encrypted state{}",
                    if refused == "Templating" { " and mounted as they are, without template expansion" } else { "" }
                )));
            }
        }
    }
    let name = match field("Name") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(ServiceError::invalid(
                "json: cannot unmarshal Name: not a string",
            ))
        }
    };
    let labels = match field("Labels") {
        None => BTreeMap::new(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| ServiceError::invalid(format!("json: cannot unmarshal Labels: {e}")))?,
    };
    let data = match field("Data") {
        None => Vec::new(),
        Some(Value::String(s)) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| ServiceError::invalid(format!("illegal base64 data in Data: {e}")))?
        }
        Some(_) => {
            return Err(ServiceError::invalid(
                "json: cannot unmarshal Data: not a base64 string",
            ))
        }
    };
    Ok(ObjectSpec { name, labels, data })
}

/// Swarm's wording of the cluster's refusals about objects.
pub fn rejection_error(r: Rejection) -> ServiceError {
    match r {
        r @ Rejection::ObjectNameConflict { .. } => {
            ServiceError::conflict(format!("rpc error: code = AlreadyExists desc = {r}"))
        }
        r @ Rejection::ObjectNotFound { .. } => ServiceError::not_found(r.to_string()),
        Rejection::ObjectVersion { .. } => {
            ServiceError::invalid("rpc error: code = Unknown desc = update out of sequence")
        }
        r @ (Rejection::ObjectInUse { .. } | Rejection::ObjectRefsNotFound { .. }) => {
            rpc_invalid(r)
        }
        r => cluster_error(ConsensusError::Rejected(r)),
    }
}

/// An object by full id, exact name, then unique id prefix (dockerd's `getSecret`).
pub fn find(s: &ClusterState, kind: ObjectKind, key: &str) -> Result<SealedObject, ServiceError> {
    let all = s.objects(kind);
    if let Some(o) = all.get(key) {
        return Ok(o.clone());
    }
    if let Some(o) = all.values().find(|o| o.name == key) {
        return Ok(o.clone());
    }
    let by_prefix: Vec<&SealedObject> = all
        .values()
        .filter(|o| !key.is_empty() && o.id.starts_with(key))
        .collect();
    match by_prefix.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ServiceError::not_found(format!("{kind} {key} not found"))),
        many => Err(ServiceError::invalid(format!(
            "{kind} {key} is ambiguous ({} matches found)",
            many.len()
        ))),
    }
}

/// Secrets and configs over this berthd's cluster membership.
#[derive(Clone)]
pub struct ObjectsService {
    cluster: ClusterService,
}

impl ObjectsService {
    /// Objects of the cluster this berthd is a member of.
    pub fn new(cluster: ClusterService) -> Self {
        ObjectsService { cluster }
    }

    fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> Result<T, ServiceError> {
        Ok(self.cluster.member()?.state_view().read(f))
    }

    /// `POST /{kind}s/create`: checks, seals on the leader, commits. Returns the id.
    pub async fn create(&self, kind: ObjectKind, body: &Value) -> Result<String, ServiceError> {
        let node = self.cluster.member()?;
        let spec = parse_spec(kind, body)?;
        check_name(&spec.name)?;
        check_data(kind, &spec.data)?;
        if self.read(|s| s.object_by_name(kind, &spec.name).is_some())? {
            return Err(rejection_error(Rejection::ObjectNameConflict {
                kind,
                name: spec.name,
            }));
        }
        let id = new_object_id();
        let sealed = node
            .seal_object(kind, &id, &spec.data)
            .await
            .map_err(cluster_error)?;
        let now = unix_nanos();
        let object = SealedObject {
            id,
            name: spec.name,
            labels: spec.labels,
            data: sealed,
            version: 0,
            created_at: now,
            updated_at: now,
        };
        match self
            .cluster
            .commit_with(Command::CreateObject { kind, object }, rejection_error)
            .await?
        {
            Response::Object { object, .. } => Ok(object.id),
            other => Err(ServiceError::Cluster(format!(
                "unexpected answer to a {kind} create: {other:?}"
            ))),
        }
    }

    /// `GET /{kind}s`: the objects matching `filters`, in id order.
    pub fn list(
        &self,
        kind: ObjectKind,
        filters: &ObjectFilters,
    ) -> Result<Vec<SealedObject>, ServiceError> {
        self.read(|s| {
            s.objects(kind)
                .values()
                .filter(|o| filters.matches(o))
                .cloned()
                .collect()
        })
    }

    /// `GET /{kind}s/{id}`: the object; for configs also its data (opened by the leader).
    pub async fn inspect(
        &self,
        kind: ObjectKind,
        key: &str,
    ) -> Result<(SealedObject, Option<Vec<u8>>), ServiceError> {
        let object = self.read(|s| find(s, kind, key))??;
        let data = match kind {
            ObjectKind::Secret => None,
            ObjectKind::Config => Some(self.config_data(&object.id).await?),
        };
        Ok((object, data))
    }

    async fn config_data(&self, id: &str) -> Result<Vec<u8>, ServiceError> {
        let node = self.cluster.member()?;
        let mut values = node
            .open_objects(ObjectKind::Config, vec![id.to_string()], None)
            .await
            .map_err(|e| match e {
                ConsensusError::Rejected(r) => rejection_error(r),
                e => cluster_error(e),
            })?;
        values
            .pop()
            .map(|(_, v)| v)
            .ok_or_else(|| ServiceError::Cluster("the leader returned no config data".into()))
    }

    /// `POST /{kind}s/{id}/update?version=`: only `Labels` may change (swarmkit's rule).
    /// A secret update carrying `Data` is refused: the value is never compared outside the
    /// leader; a config update may repeat its current `Data` (as inspect shows it).
    pub async fn update(
        &self,
        kind: ObjectKind,
        key: &str,
        version: u64,
        body: &Value,
    ) -> Result<(), ServiceError> {
        let current = self.read(|s| find(s, kind, key))??;
        let spec = parse_spec(kind, body)?;
        let labels_only = || rpc_invalid("only updates to Labels are allowed");
        if spec.name != current.name {
            return Err(labels_only());
        }
        if !spec.data.is_empty() {
            match kind {
                ObjectKind::Secret => return Err(labels_only()),
                ObjectKind::Config => {
                    if self.config_data(&current.id).await? != spec.data {
                        return Err(labels_only());
                    }
                }
            }
        }
        self.cluster
            .commit_with(
                Command::UpdateObject {
                    kind,
                    id: current.id,
                    expected_version: version,
                    labels: spec.labels,
                    at: unix_nanos(),
                },
                rejection_error,
            )
            .await
            .map(|_| ())
    }

    /// `DELETE /{kind}s/{id}`: refused while a service uses it.
    pub async fn remove(&self, kind: ObjectKind, key: &str) -> Result<(), ServiceError> {
        let current = self.read(|s| find(s, kind, key))??;
        self.cluster
            .commit_with(
                Command::RemoveObject {
                    kind,
                    id: current.id,
                },
                rejection_error,
            )
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_and_sizes_follow_swarmkit() {
        assert!(check_name("db_password.v2").is_ok());
        for bad in ["", "-x", "x-", "a b", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_data(ObjectKind::Secret, &vec![b'a'; MAX_SECRET_SIZE])
                .unwrap_err()
                .to_string(),
            "rpc error: code = InvalidArgument desc = secret data must be larger than 0 and less than 512000 bytes"
        );
        assert!(check_data(ObjectKind::Secret, &vec![b'a'; MAX_SECRET_SIZE - 1]).is_ok());
        assert!(check_data(ObjectKind::Config, b"").is_err());
    }

    #[test]
    fn specs_decode_and_refuse_drivers_and_templating() {
        let s = parse_spec(
            ObjectKind::Secret,
            &json!({"Name": "pw", "Labels": {"a": "b"}, "Data": "aHVudGVyMg=="}),
        )
        .unwrap();
        assert_eq!(
            (s.name.as_str(), s.data.as_slice()),
            ("pw", &b"hunter2"[..])
        );
        assert!(!format!("{s:?}").contains("hunter2"));
        let e = parse_spec(
            ObjectKind::Secret,
            &json!({"Name": "pw", "Driver": {"Name": "vault"}}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("secret Driver is not supported"), "{e}");
        let e = parse_spec(
            ObjectKind::Config,
            &json!({"Name": "c", "Templating": {"Name": "golang"}}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("config Templating is not supported"), "{e}");
        // Unset ones, as clients send them, are fine.
        assert!(parse_spec(ObjectKind::Secret, &json!({"Name": "x", "Driver": null})).is_ok());
        assert!(parse_spec(ObjectKind::Secret, &json!({"Name": "x", "Data": "!"})).is_err());
    }

    #[test]
    fn swarm_wording_of_refusals() {
        let e = rejection_error(Rejection::ObjectInUse {
            kind: ObjectKind::Secret,
            name: "pw".into(),
            services: vec!["web".into()],
        });
        assert_eq!(
            e.to_string(),
            "rpc error: code = InvalidArgument desc = secret 'pw' is in use by the following service: web"
        );
        let e = rejection_error(Rejection::ObjectInUse {
            kind: ObjectKind::Config,
            name: "c".into(),
            services: vec!["a".into(), "b".into()],
        });
        assert!(e
            .to_string()
            .ends_with("config 'c' is in use by the following services: a, b"));
        let e = rejection_error(Rejection::ObjectNameConflict {
            kind: ObjectKind::Secret,
            name: "pw".into(),
        });
        assert_eq!(
            e.to_string(),
            "rpc error: code = AlreadyExists desc = secret pw already exists"
        );
    }
}
