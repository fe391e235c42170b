//! Secret and config objects (Swarm's `/secrets` and `/configs`) and the rules of their
//! commands.
//!
//! Owns: the records (name, labels, the value sealed with the at-rest key, version,
//! times), name uniqueness (case-insensitive, as swarmkit's store), labels-only updates,
//! refusing removal while a service's spec references the object, checking a service
//! spec's references, and which task may read which secret.
//!
//! Does not own: the key or the cipher ([`crate::pki::seal`]: values arrive sealed, so
//! `apply` stays deterministic and never sees a plaintext), validation of names and sizes
//! (the API layer, with Swarm's wording), writing files into containers (the agent).
//!
//! References in a service spec are Docker's
//! `TaskTemplate.ContainerSpec.Secrets[].{SecretID,SecretName}` and
//! `TaskTemplate.ContainerSpec.Configs[].{ConfigID,ConfigName}`.

use std::collections::BTreeMap;

use berth_orchestrator::Nanos;
use serde::{Deserialize, Serialize};

use super::command::{Rejection, Response};
use super::node::NodeId;
use super::ClusterState;
use crate::pki::seal::Sealed;

/// Secret or config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// `/secrets`.
    Secret,
    /// `/configs`.
    Config,
}

impl ObjectKind {
    /// `secret` / `config`, as Swarm's messages say it.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Secret => "secret",
            ObjectKind::Config => "config",
        }
    }

    /// The key of a service's `ContainerSpec` listing references of this kind.
    pub fn spec_list(self) -> &'static str {
        match self {
            ObjectKind::Secret => "Secrets",
            ObjectKind::Config => "Configs",
        }
    }

    fn ref_keys(self) -> (&'static str, &'static str) {
        match self {
            ObjectKind::Secret => ("SecretID", "SecretName"),
            ObjectKind::Config => ("ConfigID", "ConfigName"),
        }
    }
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret or config: Swarm's object with its value sealed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedObject {
    /// 25 base-36 characters (chosen by the driver).
    pub id: String,
    /// `Spec.Name`.
    pub name: String,
    /// `Spec.Labels`.
    pub labels: BTreeMap<String, String>,
    /// `Spec.Data`, sealed with the at-rest key and `secret:<id>` / `config:<id>` as
    /// associated data.
    pub data: Sealed,
    /// `Version.Index`: the log index of the last change.
    pub version: u64,
    /// Unix ns (chosen by the driver).
    pub created_at: Nanos,
    /// Unix ns of the last change.
    pub updated_at: Nanos,
}

/// One reference of a service spec: (object id, object name).
pub fn spec_references(spec: &serde_json::Value, kind: ObjectKind) -> Vec<(String, String)> {
    let (id_key, name_key) = kind.ref_keys();
    spec.pointer(&format!("/TaskTemplate/ContainerSpec/{}", kind.spec_list()))
        .and_then(serde_json::Value::as_array)
        .map(|refs| {
            refs.iter()
                .map(|r| {
                    let field = |k: &str| {
                        r.get(k)
                            .and_then(serde_json::Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    (field(id_key), field(name_key))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl ClusterState {
    /// The objects of `kind`, by id.
    pub fn objects(&self, kind: ObjectKind) -> &BTreeMap<String, SealedObject> {
        match kind {
            ObjectKind::Secret => &self.secrets,
            ObjectKind::Config => &self.configs,
        }
    }

    fn objects_mut(&mut self, kind: ObjectKind) -> &mut BTreeMap<String, SealedObject> {
        match kind {
            ObjectKind::Secret => &mut self.secrets,
            ObjectKind::Config => &mut self.configs,
        }
    }

    /// The object of `kind` named `name` (case-insensitively, as swarmkit's store).
    pub fn object_by_name(&self, kind: ObjectKind, name: &str) -> Option<&SealedObject> {
        self.objects(kind)
            .values()
            .find(|o| o.name.eq_ignore_ascii_case(name))
    }

    /// Names of the services whose spec references object `id` of `kind`, in id order.
    pub fn services_using(&self, kind: ObjectKind, id: &str) -> Vec<String> {
        self.services
            .values()
            .filter(|s| spec_references(&s.spec, kind).iter().any(|(r, _)| r == id))
            .map(|s| super::service_name(&s.spec).unwrap_or_default().to_string())
            .collect()
    }

    /// swarmkit's `checkSecretExistence` / `checkConfigExistence`: every reference of
    /// `spec` names an existing object by its id and its exact name.
    pub(super) fn check_references(&self, spec: &serde_json::Value) -> Result<(), Rejection> {
        for kind in [ObjectKind::Secret, ObjectKind::Config] {
            let missing: Vec<String> = spec_references(spec, kind)
                .into_iter()
                .filter(|(id, name)| self.objects(kind).get(id).is_none_or(|o| &o.name != name))
                .map(|(_, name)| name)
                .collect();
            if !missing.is_empty() {
                return Err(Rejection::ObjectRefsNotFound {
                    kind,
                    names: missing,
                });
            }
        }
        Ok(())
    }

    /// Whether the task `task_id`, running on `node_id`, may read object `id` of `kind`:
    /// the task is assigned to that node and its service's spec (or the previous spec,
    /// which tasks of a rollback run) references the object.
    pub fn task_may_read(
        &self,
        kind: ObjectKind,
        id: &str,
        task_id: &str,
        node_id: NodeId,
    ) -> Result<(), Rejection> {
        let task = self.tasks.get(task_id).ok_or(Rejection::TaskNotFound {
            id: task_id.to_string(),
        })?;
        if task.node_id != Some(node_id) {
            return Err(Rejection::NotTaskNode {
                id: task_id.to_string(),
                node_id,
            });
        }
        let referenced = self.services.get(&task.service_id).is_some_and(|s| {
            std::iter::once(&s.spec)
                .chain(s.previous_spec.as_ref())
                .any(|spec| spec_references(spec, kind).iter().any(|(r, _)| r == id))
        });
        if !referenced {
            return Err(Rejection::ObjectNotForTask {
                kind,
                id: id.to_string(),
                task: task_id.to_string(),
            });
        }
        Ok(())
    }

    pub(super) fn create_object(
        &mut self,
        index: u64,
        kind: ObjectKind,
        object: &SealedObject,
    ) -> Result<Response, Rejection> {
        if self.objects(kind).contains_key(&object.id) {
            return Err(Rejection::ObjectExists {
                kind,
                id: object.id.clone(),
            });
        }
        if self.object_by_name(kind, &object.name).is_some() {
            return Err(Rejection::ObjectNameConflict {
                kind,
                name: object.name.clone(),
            });
        }
        let mut object = object.clone();
        object.version = index;
        self.objects_mut(kind)
            .insert(object.id.clone(), object.clone());
        Ok(Response::Object { kind, object })
    }

    pub(super) fn update_object(
        &mut self,
        index: u64,
        kind: ObjectKind,
        id: &str,
        expected_version: u64,
        labels: &BTreeMap<String, String>,
        at: Nanos,
    ) -> Result<Response, Rejection> {
        let object =
            self.objects_mut(kind)
                .get_mut(id)
                .ok_or_else(|| Rejection::ObjectNotFound {
                    kind,
                    id: id.to_string(),
                })?;
        if object.version != expected_version {
            return Err(Rejection::ObjectVersion {
                kind,
                id: id.to_string(),
                expected: expected_version,
                actual: object.version,
            });
        }
        object.labels = labels.clone();
        object.version = index;
        object.updated_at = at;
        Ok(Response::Object {
            kind,
            object: object.clone(),
        })
    }

    pub(super) fn remove_object(
        &mut self,
        kind: ObjectKind,
        id: &str,
    ) -> Result<Response, Rejection> {
        let object = self
            .objects(kind)
            .get(id)
            .ok_or_else(|| Rejection::ObjectNotFound {
                kind,
                id: id.to_string(),
            })?;
        let services = self.services_using(kind, id);
        if !services.is_empty() {
            return Err(Rejection::ObjectInUse {
                kind,
                name: object.name.clone(),
                services,
            });
        }
        self.objects_mut(kind).remove(id);
        Ok(Response::ObjectRemoved {
            kind,
            id: id.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use berth_orchestrator::{Service, Task, TaskState, TaskStatus};
    use serde_json::json;

    use super::*;
    use crate::pki::seal::{secret_aad, AtRestKey};
    use crate::state::{Command, NodeRole, NodeSpec};

    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        s.apply(
            1,
            &Command::InitCluster {
                cluster_id: "c".into(),
                first_node: NodeSpec {
                    id: 1,
                    hostname: "m".into(),
                    addr: "127.0.0.1:1".into(),
                    role: NodeRole::Manager,
                    cert_fingerprint: "fp1".into(),
                },
                networking: None,
            },
        );
        s
    }

    fn object(id: &str, name: &str) -> SealedObject {
        let key = AtRestKey::derive(b"ca", "c").unwrap();
        SealedObject {
            id: id.into(),
            name: name.into(),
            labels: BTreeMap::new(),
            data: key.seal(&secret_aad(id), b"value", [1; 12]),
            version: 0,
            created_at: 5,
            updated_at: 5,
        }
    }

    fn service(id: &str, name: &str, secrets: serde_json::Value) -> Service {
        Service {
            id: id.into(),
            spec: json!({"Name": name, "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Secrets": secrets}}}),
            previous_spec: None,
            registry_auth: None,
            image: "busybox".into(),
            version: 0,
            created_at: 0,
            updated_at: 0,
            job_iteration: 0,
            template_version: 0,
            previous_image: None,
            previous_template_version: None,
            update_status: None,
            dynamic_ports: Vec::new(),
        }
    }

    fn rejected(r: Response) -> Rejection {
        match r {
            Response::Rejected { rejection } => rejection,
            other => panic!("not rejected: {other:?}"),
        }
    }

    #[test]
    fn create_stamps_the_version_and_refuses_duplicate_ids_and_names() {
        let mut s = state();
        let create = |o| Command::CreateObject {
            kind: ObjectKind::Secret,
            object: o,
        };
        let Response::Object { object: o, .. } = s.apply(2, &create(object("s1", "pw"))) else {
            panic!("not created")
        };
        assert_eq!((o.version, o.created_at), (2, 5));
        assert_eq!(
            rejected(s.apply(3, &create(object("s1", "other")))),
            Rejection::ObjectExists {
                kind: ObjectKind::Secret,
                id: "s1".into()
            }
        );
        let conflict = rejected(s.apply(4, &create(object("s2", "PW"))));
        assert_eq!(
            conflict.to_string(),
            "secret PW already exists",
            "names compare case-insensitively"
        );
        // The same name is free among configs.
        let config = Command::CreateObject {
            kind: ObjectKind::Config,
            object: object("c1", "pw"),
        };
        assert!(matches!(s.apply(5, &config), Response::Object { .. }));
        assert_eq!((s.secrets.len(), s.configs.len()), (1, 1));
    }

    #[test]
    fn updates_change_labels_at_the_expected_version_only() {
        let mut s = state();
        s.apply(
            2,
            &Command::CreateObject {
                kind: ObjectKind::Secret,
                object: object("s1", "pw"),
            },
        );
        let update = |v| Command::UpdateObject {
            kind: ObjectKind::Secret,
            id: "s1".into(),
            expected_version: v,
            labels: BTreeMap::from([("a".to_string(), "b".to_string())]),
            at: 9,
        };
        assert_eq!(
            rejected(s.apply(3, &update(1))).to_string(),
            "update out of sequence"
        );
        let Response::Object { object: o, .. } = s.apply(4, &update(2)) else {
            panic!("not updated")
        };
        assert_eq!(
            (o.version, o.updated_at, o.labels["a"].as_str()),
            (4, 9, "b")
        );
        assert_eq!(o.data, object("s1", "pw").data);
    }

    #[test]
    fn services_must_reference_existing_objects_which_then_cannot_be_removed() {
        let mut s = state();
        s.apply(
            2,
            &Command::CreateObject {
                kind: ObjectKind::Secret,
                object: object("s1", "pw"),
            },
        );
        let refs = json!([{"SecretID": "s1", "SecretName": "pw", "File": {"Name": "pw"}}]);
        let wrong = json!([{"SecretID": "s1", "SecretName": "nope", "File": {"Name": "x"}},
                           {"SecretID": "s9", "SecretName": "gone", "File": {"Name": "y"}}]);
        let r = rejected(s.apply(
            3,
            &Command::CreateService {
                service: service("v1", "web", wrong),
            },
        ));
        assert_eq!(r.to_string(), "secrets not found: nope, gone");
        assert!(matches!(
            s.apply(
                4,
                &Command::CreateService {
                    service: service("v1", "web", refs.clone()),
                }
            ),
            Response::Service { .. }
        ));
        s.apply(
            5,
            &Command::CreateService {
                service: service("v2", "api", refs),
            },
        );
        let remove = Command::RemoveObject {
            kind: ObjectKind::Secret,
            id: "s1".into(),
        };
        assert_eq!(
            rejected(s.apply(6, &remove)).to_string(),
            "secret 'pw' is in use by the following services: web, api"
        );
        s.apply(7, &Command::RemoveService { id: "v2".into() });
        assert_eq!(
            rejected(s.apply(8, &remove)).to_string(),
            "secret 'pw' is in use by the following service: web"
        );
        s.apply(9, &Command::RemoveService { id: "v1".into() });
        assert_eq!(
            s.apply(10, &remove),
            Response::ObjectRemoved {
                kind: ObjectKind::Secret,
                id: "s1".into()
            }
        );
        assert_eq!(
            rejected(s.apply(11, &remove)),
            Rejection::ObjectNotFound {
                kind: ObjectKind::Secret,
                id: "s1".into()
            }
        );
    }

    #[test]
    fn only_the_tasks_node_may_read_what_its_service_references() {
        let mut s = state();
        for (i, id) in ["s1", "s2"].iter().enumerate() {
            s.apply(
                2 + i as u64,
                &Command::CreateObject {
                    kind: ObjectKind::Secret,
                    object: object(id, id),
                },
            );
        }
        s.apply(
            4,
            &Command::CreateService {
                service: service(
                    "v1",
                    "web",
                    json!([{"SecretID": "s1", "SecretName": "s1", "File": {"Name": "a"}}]),
                ),
            },
        );
        s.tasks.insert(
            "t1".into(),
            Task {
                id: "t1".into(),
                service_id: "v1".into(),
                slot: 1,
                node_id: Some(7),
                service_version: 4,
                image: "busybox".into(),
                job_iteration: 0,
                restart_times: Vec::new(),
                template_version: 4,
                running_at: None,
                desired_state: TaskState::Running,
                status: TaskStatus::new(TaskState::Assigned, 0, ""),
                created_at: 0,
                version: 4,
            },
        );
        assert_eq!(s.task_may_read(ObjectKind::Secret, "s1", "t1", 7), Ok(()));
        assert!(matches!(
            s.task_may_read(ObjectKind::Secret, "s2", "t1", 7),
            Err(Rejection::ObjectNotForTask { .. })
        ));
        assert!(matches!(
            s.task_may_read(ObjectKind::Secret, "s1", "t1", 8),
            Err(Rejection::NotTaskNode { .. })
        ));
        assert!(matches!(
            s.task_may_read(ObjectKind::Secret, "s1", "t9", 7),
            Err(Rejection::TaskNotFound { .. })
        ));
    }
}
