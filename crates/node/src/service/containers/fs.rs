//! A container's filesystem: `docker diff`, `cp`, `export`, `commit`, sizes and the
//! overlay directories `GraphDriver.Data` shows. The file work is berth-runtime's
//! ([`berth_runtime::changes`], [`berth_runtime::container_fs`]); this module adds the
//! container records, pausing, the image store and Docker's `--change` rules.

use std::fs::File;
use std::path::PathBuf;

use berth_registry_mirror::archive::HistoryEntry;
use berth_registry_mirror::Reference;
use berth_runtime::changes::Change;
use berth_runtime::container_fs::{CopyError, ExtraMount};
use serde_json::{json, Map, Value};

use super::ContainerService;
use crate::error::ServiceError;

/// What `POST /commit` asks for.
#[derive(Debug, Clone, Default)]
pub struct CommitRequest {
    pub container: String,
    /// `repo` + `tag` of the query, if any.
    pub reference: Option<Reference>,
    pub comment: Option<String>,
    pub author: Option<String>,
    /// `--change` lines (Dockerfile instructions).
    pub changes: Vec<String>,
    /// Pause the container while its changes are read (default true).
    pub pause: bool,
    /// The body: a container config whose set fields override the container's.
    pub config: Option<Value>,
}

/// The overlay directories of a container (what `GraphDriver.Data` shows).
#[derive(Debug, Clone)]
pub struct GraphDirs {
    pub upper: PathBuf,
    pub lowers: Vec<PathBuf>,
    pub merged: PathBuf,
    pub work: PathBuf,
}

fn copy_error(id: &str, e: CopyError) -> ServiceError {
    match e {
        CopyError::NotFound(p) => {
            ServiceError::not_found(format!("Could not find the file {p} in container {id}"))
        }
        e @ (CopyError::NotADirectory | CopyError::BadArchive(_)) => {
            ServiceError::invalid(e.to_string())
        }
        e @ CopyError::ReadOnly => ServiceError::Forbidden {
            message: e.to_string(),
        },
        CopyError::Runtime(e) => ServiceError::runtime(e),
    }
}

/// Splits a Dockerfile instruction line into (lowercase keyword, rest).
fn instruction(line: &str) -> (String, String) {
    let line = line.trim();
    match line.split_once(char::is_whitespace) {
        Some((k, rest)) => (k.to_ascii_lowercase(), rest.trim().to_string()),
        None => (line.to_ascii_lowercase(), String::new()),
    }
}

/// JSON array form if it parses as an array of strings, else shell form.
fn exec_or_shell(rest: &str) -> Value {
    if let Ok(v) = serde_json::from_str::<Vec<String>>(rest) {
        return json!(v);
    }
    json!(["/bin/sh", "-c", rest])
}

/// Splits `a=b "c d"=e` style words, honouring double and single quotes and backslashes.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                any = true;
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// `KEY=VALUE ...` pairs, or the legacy `KEY VALUE` form (one pair).
fn pairs(rest: &str, what: &str) -> Result<Vec<(String, String)>, ServiceError> {
    let ws = words(rest);
    if ws.is_empty() {
        return Err(ServiceError::invalid(format!(
            "{what} requires at least one argument"
        )));
    }
    if !ws[0].contains('=') {
        let (k, v) = rest
            .split_once(char::is_whitespace)
            .map(|(k, v)| (k.to_string(), words(v).join(" ")))
            .ok_or_else(|| ServiceError::invalid(format!("{what} must have two arguments")))?;
        return Ok(vec![(k, v)]);
    }
    ws.into_iter()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    ServiceError::invalid(format!(
                        "Syntax error - can't find = in {w:?}. Must be of the form: name=value"
                    ))
                })
        })
        .collect()
}

/// Applies `docker commit --change` / `docker import --change` lines to a container
/// config object, with Docker's allowed set (moby `builder/dockerfile`
/// `validCommitCommands`: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME,
/// WORKDIR); any other instruction is refused with Docker's "<cmd> is not a valid change
/// command" (400).
pub fn apply_changes(
    config: &mut Map<String, Value>,
    changes: &[String],
) -> Result<(), ServiceError> {
    for line in changes
        .iter()
        .flat_map(|c| c.lines())
        .filter(|l| !l.trim().is_empty())
    {
        let (kw, rest) = instruction(line);
        match kw.as_str() {
            "cmd" => {
                config.insert("Cmd".into(), exec_or_shell(&rest));
            }
            "entrypoint" => {
                config.insert("Entrypoint".into(), exec_or_shell(&rest));
                // Docker: a new ENTRYPOINT resets a CMD set before it by the image
            }
            "env" => {
                let mut env: Vec<String> = config
                    .get("Env")
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
                    .unwrap_or_default();
                for (k, v) in pairs(&rest, "ENV")? {
                    env.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != k);
                    env.push(format!("{k}={v}"));
                }
                config.insert("Env".into(), json!(env));
            }
            "label" => {
                let labels = config.entry("Labels").or_insert_with(|| json!({}));
                if !labels.is_object() {
                    *labels = json!({});
                }
                for (k, v) in pairs(&rest, "LABEL")? {
                    labels[k] = json!(v);
                }
            }
            "expose" => {
                let ports = config.entry("ExposedPorts").or_insert_with(|| json!({}));
                if !ports.is_object() {
                    *ports = json!({});
                }
                for p in words(&rest) {
                    let p = if p.contains('/') {
                        p
                    } else {
                        format!("{p}/tcp")
                    };
                    ports[p] = json!({});
                }
            }
            "volume" => {
                let vols = config.entry("Volumes").or_insert_with(|| json!({}));
                if !vols.is_object() {
                    *vols = json!({});
                }
                let list =
                    serde_json::from_str::<Vec<String>>(&rest).unwrap_or_else(|_| words(&rest));
                for v in list {
                    vols[v] = json!({});
                }
            }
            "user" => {
                config.insert("User".into(), json!(rest));
            }
            "workdir" => {
                let cur = config
                    .get("WorkingDir")
                    .and_then(Value::as_str)
                    .unwrap_or("/")
                    .to_string();
                let w = if rest.starts_with('/') {
                    rest
                } else {
                    format!("{}/{rest}", cur.trim_end_matches('/'))
                };
                config.insert("WorkingDir".into(), json!(w));
            }
            "onbuild" => {
                let mut ob: Vec<String> = config
                    .get("OnBuild")
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
                    .unwrap_or_default();
                ob.push(rest);
                config.insert("OnBuild".into(), json!(ob));
            }
            "from" | "run" | "copy" | "add" | "arg" | "maintainer" | "stopsignal"
            | "healthcheck" | "shell" => {
                return Err(ServiceError::invalid(format!(
                    "{kw} is not a valid change command"
                )));
            }
            _ => {
                return Err(ServiceError::invalid(format!(
                    "dockerfile parse error line 1: unknown instruction: {}",
                    kw.to_ascii_uppercase()
                )));
            }
        }
    }
    Ok(())
}

impl ContainerService {
    /// `GET /containers/{id}/changes`.
    pub fn changes_blocking(&self, key: &str) -> Result<Vec<Change>, ServiceError> {
        let (upper, lowers) = self.upper_and_lowers(key)?;
        berth_runtime::changes::changes(&upper, &lowers).map_err(ServiceError::runtime)
    }

    /// The overlay directories of a container, for `GraphDriver.Data`.
    pub fn graph_dirs(&self, key: &str) -> Result<GraphDirs, ServiceError> {
        let id = self.resolve(key)?;
        let (upper, lowers) = self.upper_and_lowers(&id)?;
        let rt = &self.inner.runtime;
        Ok(GraphDirs {
            work: rt.snapshots().active_dir(&id).join("work"),
            merged: rt
                .config()
                .data_root
                .join("containers")
                .join(&id)
                .join("rootfs"),
            upper,
            lowers,
        })
    }

    /// `(SizeRw, SizeRootFs)`: bytes of the container's upper dir, and that plus its image.
    pub fn sizes(&self, key: &str) -> Result<(u64, u64), ServiceError> {
        let rec = self.get(key)?;
        let (upper, _) = self.upper_and_lowers(&rec.id)?;
        let rw = berth_runtime::changes::dir_size(&upper).map_err(ServiceError::runtime)?;
        let image = self
            .inner
            .images
            .inspect(&rec.image_id)
            .map(|d| d.size)
            .unwrap_or(0);
        Ok((rw, rw + image))
    }

    /// Runs `f` on the container's root (see
    /// [`berth_runtime::Runtime::with_container_root`]); `rootfs_only` for export.
    pub fn with_root<T: Send>(
        &self,
        key: &str,
        rootfs_only: bool,
        f: impl FnOnce(&File) -> Result<T, CopyError> + Send,
    ) -> Result<T, ServiceError> {
        let rec = self.get(key)?;
        let mounts: Vec<ExtraMount> = rec
            .mounts
            .iter()
            .map(|m| ExtraMount {
                source: PathBuf::from(&m.source),
                destination: m.destination.clone(),
                read_only: !m.read_write,
            })
            .collect();
        self.inner
            .runtime
            .with_container_root(&rec.id, &mounts, rootfs_only, f)
            .map_err(ServiceError::runtime)?
            .map_err(|e| copy_error(&rec.id, e))
    }

    /// The uid/gid of the container's process (`docker cp -a`).
    pub fn process_owner(&self, key: &str) -> Result<(u32, u32), ServiceError> {
        let id = self.resolve(key)?;
        self.inner
            .runtime
            .process_owner(&id)
            .map_err(ServiceError::runtime)
    }

    /// `POST /commit`: the container's changes as a new layer on its image, its config
    /// with the `--change` lines applied; pauses a running container meanwhile when
    /// asked. Returns the new image ID.
    pub fn commit_blocking(&self, req: CommitRequest) -> Result<String, ServiceError> {
        let rec = self.get(&req.container)?;
        let mut config = match rec.inspect()["Config"].clone() {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        if let Some(Value::Object(body)) = &req.config {
            for (k, v) in body {
                if !v.is_null() {
                    config.insert(k.clone(), v.clone());
                }
            }
        }
        apply_changes(&mut config, &req.changes)?;
        let paused = req.pause && rec.state.status == "running";
        if paused {
            self.inner
                .runtime
                .pause(&rec.id)
                .map_err(ServiceError::runtime)?;
        }
        let (upper, lowers) = self.upper_and_lowers(&rec.id)?;
        let dir = self.inner.runtime.snapshots().active_dir(&rec.id);
        let written = tempfile::NamedTempFile::new_in(&dir)
            .map_err(|e| ServiceError::io("create", &dir, e))
            .and_then(|tmp| {
                let f = std::io::BufWriter::new(tmp.as_file());
                berth_runtime::changes::write_layer_tar(&upper, &lowers, f)
                    .map_err(ServiceError::runtime)?;
                Ok(tmp)
            });
        if paused {
            if let Err(e) = self.inner.runtime.unpause(&rec.id) {
                tracing::warn!(container = %rec.id, error = %e, "unpause after commit");
            }
        }
        let tmp = written?;
        let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let created_by = std::iter::once(rec.path.clone())
            .chain(rec.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        let tags: Vec<Reference> = req.reference.into_iter().collect();
        let id = self.inner.images.commit_image(
            Some(&rec.image_id),
            Value::Object(config),
            HistoryEntry {
                created_by,
                comment: req.comment.filter(|c| !c.is_empty()),
                author: req.author.filter(|a| !a.is_empty()),
                empty_layer: false,
            },
            Some(tmp.path()),
            &created,
            &tags,
        )?;
        self.event("commit", &rec, &[]);
        Ok(id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply_as_docker_does() {
        let mut c = Map::new();
        c.insert("Env".into(), json!(["PATH=/bin", "A=1"]));
        c.insert("WorkingDir".into(), json!("/srv"));
        apply_changes(
            &mut c,
            &[
                "CMD [\"echo\", \"hi\"]".into(),
                "ENV A=2 B=\"x y\"".into(),
                "EXPOSE 80 53/udp".into(),
                "LABEL a=b".into(),
                "WORKDIR app".into(),
                "USER nobody".into(),
                "VOLUME /data".into(),
                "ENTRYPOINT /bin/sh -c".into(),
                "ONBUILD RUN true".into(),
            ],
        )
        .unwrap();
        assert_eq!(c["Cmd"], json!(["echo", "hi"]));
        assert_eq!(c["Env"], json!(["PATH=/bin", "A=2", "B=x y"]));
        assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(c["Labels"], json!({"a": "b"}));
        assert_eq!(c["WorkingDir"], json!("/srv/app"));
        assert_eq!(c["User"], json!("nobody"));
        assert_eq!(c["Volumes"], json!({"/data": {}}));
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "/bin/sh -c"]));
        assert_eq!(c["OnBuild"], json!(["RUN true"]));
        let e = apply_changes(&mut c, &["RUN true".into()]).unwrap_err();
        assert_eq!(e.to_string(), "run is not a valid change command");
    }
}
