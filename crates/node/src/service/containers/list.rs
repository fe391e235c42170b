//! `docker ps` filters with dockerd's semantics. Pure: the filters are parsed and checked
//! here, the lookups they need (containers for `before`/`since`, images for `ancestor`) are
//! done by the caller and passed in.
//!
//! dockerd's rules: values of one key are OR'ed and keys AND'ed, except `label`, whose
//! values must all match. `name` values are regular expressions (unanchored, as Go's
//! `regexp.MatchString`) tried after an exact match; an invalid expression matches nothing.
//! `id` values are unique ID prefixes. `status` implies `all`; a `limit` shows stopped
//! containers too.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::config::{PortProto, Protocol};
use super::record::ContainerRecord;
use super::ContainerService;
use crate::error::ServiceError;
use crate::service::pattern::Pattern;

/// The keys `GET /containers/json` accepts (dockerd's `acceptedPsFilterTags`).
pub const KEYS: &[&str] = &[
    "ancestor",
    "before",
    "exited",
    "id",
    "isolation",
    "label",
    "name",
    "status",
    "health",
    "since",
    "volume",
    "network",
    "is-task",
    "publish",
    "expose",
];

const STATES: &[&str] = &[
    "paused",
    "restarting",
    "running",
    "removing",
    "dead",
    "created",
    "exited",
];

const HEALTH: &[&str] = &["starting", "healthy", "unhealthy", "none"];

/// Validated `docker ps` filters.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    ids: Vec<String>,
    names: Vec<Pattern>,
    labels: Vec<String>,
    statuses: Vec<String>,
    exited: Vec<i64>,
    health: Vec<String>,
    is_task: Option<bool>,
    /// Container references, resolved by the caller.
    pub before: Option<String>,
    pub since: Option<String>,
    volumes: Vec<String>,
    networks: Vec<String>,
    publish: BTreeSet<PortProto>,
    expose: BTreeSet<PortProto>,
    /// Image references, resolved by the caller.
    pub ancestors: Vec<String>,
}

/// What the caller looked up for a [`ListFilter`].
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// Full ID of the `before` container.
    pub before: Option<String>,
    /// Full ID of the `since` container.
    pub since: Option<String>,
    /// Image IDs of the `ancestor` images that exist (`None`: no ancestor filter).
    pub ancestor_ids: Option<HashSet<String>>,
}

/// Expands `80`, `80/udp`, `8000-8080/tcp` (dockerd's `portOp`).
fn parse_ports(key: &str, value: &str, into: &mut BTreeSet<PortProto>) -> Result<(), ServiceError> {
    if value.contains(':') {
        return Err(ServiceError::invalid(format!(
            "filter for '{key}' should not contain ':': {value}"
        )));
    }
    let bad = |why: &str| {
        ServiceError::invalid(format!("error while looking up for {key} {value}: {why}"))
    };
    let (port, proto) = match value.split_once('/') {
        Some((p, "")) => (p, "tcp"),
        Some((p, proto)) => (p, proto),
        None => (value, "tcp"),
    };
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => return Err(bad(&format!("invalid proto: {other}"))),
    };
    let num = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| bad(&format!("invalid port: {s}")))
    };
    let (start, end) = match port.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let p = num(port)?;
            (p, p)
        }
    };
    if end < start {
        return Err(bad(&format!("invalid range specified for port: {port}")));
    }
    for p in start..=end {
        into.insert(PortProto { port: p, proto });
    }
    Ok(())
}

impl ListFilter {
    /// From the `filters` query parameter (key -> values). Errors are dockerd's, status 400;
    /// unknown keys are refused.
    pub fn parse(raw: &BTreeMap<String, Vec<String>>) -> Result<Self, ServiceError> {
        if let Some(k) = raw.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(ServiceError::invalid(format!("Invalid filter '{k}'")));
        }
        let get = |k: &str| raw.get(k).cloned().unwrap_or_default();
        let mut f = ListFilter {
            ids: get("id"),
            names: get("name").iter().map(|n| Pattern::new(n)).collect(),
            labels: get("label"),
            volumes: get("volume"),
            networks: get("network"),
            ancestors: get("ancestor"),
            ..Default::default()
        };
        for v in get("exited") {
            f.exited.push(v.parse::<i64>().map_err(|_| {
                ServiceError::invalid(format!("strconv.Atoi: parsing {v:?}: invalid syntax"))
            })?);
        }
        for v in get("status") {
            if !STATES.contains(&v.as_str()) {
                return Err(ServiceError::invalid(format!(
                    "Invalid filter 'status={v}'"
                )));
            }
            f.statuses.push(v);
        }
        for v in get("health") {
            if !HEALTH.contains(&v.as_str()) {
                return Err(ServiceError::invalid(format!(
                    "Unrecognised filter value for health: {v}"
                )));
            }
            f.health.push(v);
        }
        let task = get("is-task");
        if !task.is_empty() {
            f.is_task = if task.iter().any(|v| v == "true") {
                Some(true)
            } else if task.iter().any(|v| v == "false") {
                Some(false)
            } else {
                return Err(ServiceError::invalid(format!(
                    "Invalid filter 'is-task=[{}]'",
                    task.join(" ")
                )));
            };
        }
        for v in get("isolation") {
            if !matches!(v.as_str(), "default" | "") {
                return Err(ServiceError::invalid(format!(
                    "Invalid isolation: {v:?}. Linux containers only support \"default\""
                )));
            }
        }
        f.before = get("before").pop();
        f.since = get("since").pop();
        for v in get("publish") {
            parse_ports("publish", &v, &mut f.publish)?;
        }
        for v in get("expose") {
            parse_ports("expose", &v, &mut f.expose)?;
        }
        Ok(f)
    }

    /// Whether `status` filters are given (they make the list include stopped containers).
    pub fn has_status(&self) -> bool {
        !self.statuses.is_empty()
    }

    /// The ID filters resolved against `all_ids`: each value must be a unique prefix.
    fn id_set<'a>(&self, all_ids: impl Iterator<Item = &'a str> + Clone) -> HashSet<String> {
        self.ids
            .iter()
            .filter_map(|v| {
                let mut hits = all_ids.clone().filter(|id| id.starts_with(v.as_str()));
                match (hits.next(), hits.next()) {
                    (Some(id), None) if !v.is_empty() => Some(id.to_string()),
                    _ => None,
                }
            })
            .collect()
    }

    fn matches(&self, r: &ContainerRecord, ids: &HashSet<String>, r2: &Resolved) -> bool {
        let any = |list: &[String], f: &dyn Fn(&str) -> bool| {
            list.is_empty() || list.iter().any(|v| f(v))
        };
        let running = matches!(r.state.status.as_str(), "running" | "paused" | "restarting");
        let health = r
            .state
            .health
            .as_ref()
            .map_or("none", |h| h.status.as_str());
        (self.ids.is_empty() || ids.contains(&r.id))
            && (self.names.is_empty()
                || self
                    .names
                    .iter()
                    .any(|p| p.matches(&r.name) || p.matches(&format!("/{}", r.name))))
            && self.labels.iter().all(|l| match l.split_once('=') {
                Some((k, v)) => r.labels.get(k).is_some_and(|x| x == v),
                None => r.labels.contains_key(l.as_str()),
            })
            && self
                .is_task
                .is_none_or(|t| t == r.labels.contains_key(crate::service::agent::TASK_ID_LABEL))
            && (self.exited.is_empty()
                || (!running
                    && !r.state.started_at.is_empty()
                    && self.exited.contains(&r.state.exit_code)))
            && any(&self.statuses, &|s| s == r.state.status)
            && any(&self.health, &|h| h == health)
            && any(&self.volumes, &|v| {
                r.mounts.iter().any(|m| {
                    m.destination == v
                        || (if m.name.is_empty() {
                            &m.source
                        } else {
                            &m.name
                        }) == v
                })
            })
            && any(&self.networks, &|n| {
                if r.endpoints.is_empty() {
                    r.spec.network.mode_name() == n
                } else {
                    r.shown_endpoints()
                        .any(|e| e.network == n || e.network_id.starts_with(n))
                }
            })
            && (self.publish.is_empty()
                || r.ports.iter().any(|p| self.publish.contains(&p.container)))
            && (self.expose.is_empty() || r.exposed.iter().any(|p| self.expose.contains(p)))
            && r2
                .ancestor_ids
                .as_ref()
                .is_none_or(|set| set.contains(&r.image_id))
    }

    /// The containers to list, from `recs` sorted newest first, as dockerd picks them:
    /// running ones unless `all` (or a `status` filter, or a `limit`); after `before`,
    /// until `since`; at most `limit`.
    pub fn select<'a>(
        &self,
        recs: &'a [ContainerRecord],
        resolved: &Resolved,
        all: bool,
        limit: Option<usize>,
    ) -> Vec<&'a ContainerRecord> {
        let all = all || self.has_status();
        let ids = self.id_set(recs.iter().map(|r| r.id.as_str()));
        let mut before = resolved.before.clone();
        let mut out = Vec::new();
        for r in recs {
            if let Some(b) = &before {
                if *b == r.id {
                    before = None;
                }
                continue;
            }
            if resolved.since.as_deref() == Some(r.id.as_str()) {
                break;
            }
            let running = matches!(r.state.status.as_str(), "running" | "paused" | "restarting");
            if !running && !all && limit.is_none() {
                continue;
            }
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            if self.matches(r, &ids, resolved) {
                out.push(r);
            }
        }
        out
    }
}

impl ContainerService {
    /// `GET /containers/json`: the containers `filter` picks, newest first. `before` and
    /// `since` must name a container (404 otherwise); `ancestor` images that do not exist
    /// match nothing.
    pub fn list(
        &self,
        filter: &ListFilter,
        all: bool,
        limit: Option<usize>,
    ) -> Result<Vec<ContainerRecord>, ServiceError> {
        let recs = self.all();
        let lookup = |key: &Option<String>| -> Result<Option<String>, ServiceError> {
            key.as_ref()
                .map(|k| {
                    self.resolve(k)
                        .map_err(|_| ServiceError::not_found(format!("no such container {k}")))
                })
                .transpose()
        };
        let resolved = Resolved {
            before: lookup(&filter.before)?,
            since: lookup(&filter.since)?,
            ancestor_ids: (!filter.ancestors.is_empty()).then(|| {
                filter
                    .ancestors
                    .iter()
                    .filter_map(|a| self.inner.images.inspect(a).ok())
                    .map(|d| d.id.to_string())
                    .collect()
            }),
        };
        Ok(filter
            .select(&recs, &resolved, all, limit)
            .into_iter()
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::containers::health::{Health, HealthStatus};

    fn rec(id: &str, name: &str, status: &str, created: u32) -> ContainerRecord {
        let spec = super::super::config::parse_create(
            serde_json::from_value(serde_json::json!({"Image": "busybox"})).unwrap(),
        )
        .unwrap();
        ContainerRecord {
            id: id.into(),
            name: name.into(),
            created: format!("2026-01-01T00:00:{created:02}Z"),
            spec,
            image_id: "sha256:aaaa".into(),
            path: "sh".into(),
            args: vec![],
            env: vec![],
            working_dir: String::new(),
            user: String::new(),
            hostname: String::new(),
            labels: BTreeMap::new(),
            exposed: vec![],
            mounts: vec![],
            ports: vec![],
            endpoints: vec![],
            log_path: String::new(),
            state: super::super::record::ContainerState {
                status: status.into(),
                started_at: if status == "created" {
                    String::new()
                } else {
                    "2026-01-01T00:00:00Z".into()
                },
                ..Default::default()
            },
            healthcheck: None,
            shell: vec![],
        }
    }

    fn filters(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in pairs {
            m.entry(k.to_string()).or_default().push(v.to_string());
        }
        m
    }

    fn names(f: &[(&str, &str)], recs: &[ContainerRecord], all: bool) -> Vec<String> {
        let lf = ListFilter::parse(&filters(f)).unwrap();
        lf.select(recs, &Resolved::default(), all, None)
            .iter()
            .map(|r| r.name.clone())
            .collect()
    }

    fn sample() -> Vec<ContainerRecord> {
        let mut a = rec("aaa111", "us1", "running", 3);
        a.labels.insert("a".into(), "1".into());
        a.labels.insert("b".into(), "2".into());
        let mut b = rec("aab222", "us10", "running", 2);
        b.labels.insert("a".into(), "1".into());
        b.state.health = Some(Health {
            status: HealthStatus::Healthy,
            ..Default::default()
        });
        let mut c = rec("bbb333", "xus1", "exited", 1);
        c.state.exit_code = 137;
        vec![a, b, c]
    }

    #[test]
    fn names_are_regexes_and_repeated_keys_are_ored() {
        let s = sample();
        assert_eq!(names(&[("name", "^us1$")], &s, false), ["us1"]);
        assert_eq!(names(&[("name", "^/us1$")], &s, false), ["us1"]);
        assert_eq!(names(&[("name", "us1")], &s, false), ["us1", "us10"]);
        assert_eq!(
            names(&[("name", "^us1$"), ("name", "^us10$")], &s, false),
            ["us1", "us10"]
        );
        assert!(names(&[("name", "[")], &s, true).is_empty());
        assert_eq!(names(&[("name", "us1")], &s, true), ["us1", "us10", "xus1"]);
    }

    #[test]
    fn labels_must_all_match_and_keys_are_anded() {
        let s = sample();
        assert_eq!(
            names(&[("label", "a=1"), ("label", "b=2")], &s, false),
            ["us1"]
        );
        assert_eq!(names(&[("label", "a"), ("label", "b")], &s, false), ["us1"]);
        assert!(names(&[("label", "a=1"), ("label", "a=2")], &s, false).is_empty());
        assert_eq!(
            names(&[("label", "a"), ("name", "10")], &s, false),
            ["us10"]
        );
    }

    #[test]
    fn status_health_exited_and_ids() {
        let s = sample();
        assert_eq!(names(&[("status", "exited")], &s, false), ["xus1"]);
        assert_eq!(
            names(&[("status", "running"), ("status", "exited")], &s, false),
            ["us1", "us10", "xus1"]
        );
        assert_eq!(names(&[("health", "healthy")], &s, false), ["us10"]);
        assert_eq!(names(&[("health", "none")], &s, false), ["us1"]);
        // exited does not imply all, as with dockerd.
        assert!(names(&[("exited", "137")], &s, false).is_empty());
        assert_eq!(names(&[("exited", "137")], &s, true), ["xus1"]);
        assert!(names(&[("exited", "0")], &s, true).is_empty());
        // IDs: unique prefixes only.
        assert_eq!(names(&[("id", "aab")], &s, false), ["us10"]);
        assert!(names(&[("id", "aa")], &s, false).is_empty());
        assert!(names(&[("id", "111")], &s, false).is_empty());
        assert_eq!(
            names(&[("id", "aaa"), ("id", "aab")], &s, false),
            ["us1", "us10"]
        );
        assert_eq!(names(&[("is-task", "false")], &s, false), ["us1", "us10"]);
        assert!(names(&[("is-task", "true")], &s, false).is_empty());
    }

    #[test]
    fn before_since_and_limit() {
        let s = sample();
        let lf = ListFilter::default();
        let pick = |r: Resolved, all: bool, limit: Option<usize>| -> Vec<String> {
            lf.select(&s, &r, all, limit)
                .iter()
                .map(|r| r.name.clone())
                .collect()
        };
        let before = |id: &str| Resolved {
            before: Some(id.into()),
            ..Default::default()
        };
        assert_eq!(pick(before("aaa111"), false, None), ["us10"]);
        assert_eq!(pick(before("aaa111"), true, None), ["us10", "xus1"]);
        let since = Resolved {
            since: Some("bbb333".into()),
            ..Default::default()
        };
        assert_eq!(pick(since, false, None), ["us1", "us10"]);
        assert_eq!(
            pick(Resolved::default(), false, Some(5)),
            ["us1", "us10", "xus1"]
        );
        assert_eq!(pick(Resolved::default(), false, Some(1)), ["us1"]);
        let anc = Resolved {
            ancestor_ids: Some(HashSet::new()),
            ..Default::default()
        };
        assert!(pick(anc, true, None).is_empty());
    }

    #[test]
    fn ports_volumes_and_bad_values() {
        let mut s = sample();
        s[0].exposed.push(PortProto::parse("9000/tcp").unwrap());
        s[1].ports.push(super::super::record::PublishedPort {
            container: PortProto::parse("80").unwrap(),
            host_ip: "0.0.0.0".into(),
            host_port: 8080,
        });
        s[1].mounts.push(super::super::record::ResolvedMount {
            kind: "volume".into(),
            name: "data".into(),
            source: "/var/lib/x".into(),
            destination: "/data".into(),
            read_write: true,
        });
        assert_eq!(names(&[("expose", "8999-9001")], &s, false), ["us1"]);
        assert!(names(&[("expose", "9000/udp")], &s, false).is_empty());
        assert_eq!(names(&[("publish", "80/tcp")], &s, false), ["us10"]);
        assert!(names(&[("publish", "8080")], &s, false).is_empty());
        assert_eq!(names(&[("volume", "data")], &s, false), ["us10"]);
        assert_eq!(names(&[("volume", "/data")], &s, false), ["us10"]);
        assert_eq!(
            names(&[("network", "none")], &s, false),
            Vec::<String>::new()
        );
        assert_eq!(names(&[("network", "bridge")], &s, false), ["us1", "us10"]);

        let err = |k: &str, v: &str| {
            ListFilter::parse(&filters(&[(k, v)]))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(err("status", "foo"), "Invalid filter 'status=foo'");
        assert_eq!(
            err("health", "bogus"),
            "Unrecognised filter value for health: bogus"
        );
        assert_eq!(
            err("exited", "x"),
            "strconv.Atoi: parsing \"x\": invalid syntax"
        );
        assert_eq!(err("is-task", "maybe"), "Invalid filter 'is-task=[maybe]'");
        assert_eq!(
            err("publish", "80:80"),
            "filter for 'publish' should not contain ':': 80:80"
        );
        assert_eq!(err("bogus", "1"), "Invalid filter 'bogus'");
    }
}
