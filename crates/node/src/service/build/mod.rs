//! `docker build` (the classic builder): runs the steps that `berth-builder` plans from a
//! Dockerfile on this node, and keeps the build cache.
//!
//! ```text
//!  body --context.rs--> context dir (.dockerignore applied)
//!  Dockerfile --berth_builder::parse/Planner--> steps
//!    FROM       image service (pull, or an earlier stage's image)
//!    RUN        a real container on the node's runtime (the `docker run` path), its upper
//!               dir -> layer tar (berth_runtime::changes) -> image (ImageService::commit_image)
//!    COPY/ADD   overlay of the parent image mounted with a fresh upper, files written
//!               (copy.rs), upper -> layer tar -> image
//!    WORKDIR    the same, mkdir -p
//!    metadata   a config-only image, empty_layer history
//!  every step first asks the cache (cache.rs): key = berth_builder::cache_key(parent, step,
//!  content checksum)
//! ```
//!
//! What this module reports goes out as [`BuildEvent`]s; the API layer renders them as
//! dockerd's JSON messages.

pub mod cache;
pub mod context;
pub mod copy;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_builder::{Action, CopyFrom, ImageConfig, Planner, Step};
use berth_registry_mirror::{Credentials, PullEvent, Reference};
use serde_json::json;

use self::cache::{BuildCache, CacheEntry};
use self::copy::Attrs;
use crate::error::ServiceError;
use crate::service::containers::{blocking, ContainerService, WaitCondition};
use crate::service::images::ImageService;

/// `|e| ServiceError::io(what, path, e)`.
pub(crate) fn io_at(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> ServiceError {
    let path = path.to_path_buf();
    move |e| ServiceError::io(what, &path, e)
}

/// What a build reports, in order.
#[derive(Debug)]
pub enum BuildEvent {
    /// Text for the client's terminal (`{"stream": ...}`): step lines, RUN output.
    Stream(String),
    /// Progress of a FROM pull (`{"status": ..., "id": ...}`), with the pulled reference's
    /// shown tag and repository path.
    Pull {
        event: PullEvent,
        tag: String,
        path: String,
    },
    /// The built image (`{"aux": {"ID": ...}}`).
    Built(String),
}

/// A build failure as dockerd reports it: `{"errorDetail": {"code": N, "message": M},
/// "error": M}` (the code only for a RUN's exit status).
#[derive(Debug)]
pub struct BuildFailure {
    pub message: String,
    pub code: Option<i64>,
}

impl From<ServiceError> for BuildFailure {
    fn from(e: ServiceError) -> Self {
        BuildFailure {
            message: e.to_string(),
            code: None,
        }
    }
}

/// One `POST /build`, parsed.
#[derive(Debug, Default, Clone)]
pub struct BuildRequest {
    /// `dockerfile`: the Dockerfile's path inside the context (default `Dockerfile`).
    pub dockerfile: String,
    /// `t`, each normalized (`name` -> `name:latest`).
    pub tags: Vec<Reference>,
    /// `buildargs` (a null value: take it from the environment, which the daemon has none
    /// of, as Docker's `--build-arg NAME` without a value).
    pub build_args: BTreeMap<String, Option<String>>,
    /// `labels`, added to the final image.
    pub labels: BTreeMap<String, String>,
    /// `target`: the stage to stop at.
    pub target: Option<String>,
    /// `nocache`.
    pub nocache: bool,
    /// `pull`: pull FROM images even when present.
    pub pull: bool,
    /// `rm` (default true): remove RUN containers after a successful step.
    pub rm: bool,
    /// `forcerm`: remove them after a failed one too.
    pub forcerm: bool,
    /// `networkmode` of RUN containers (`default` = bridge, `host`, `none`, a network name).
    pub network_mode: Option<String>,
    /// `extrahosts`, `host:ip` each, for RUN containers' `/etc/hosts`.
    pub extra_hosts: Vec<String>,
    /// `shmsize` in bytes for RUN containers (0: the default).
    pub shm_size: i64,
    /// `platform` (`os/arch[/variant]`), for FROM pulls.
    pub platform: Option<String>,
    /// `cachefrom`: images whose build steps may be reused (see [`BuildService::build`]).
    pub cache_from: Vec<String>,
    /// `X-Registry-Config`: credentials per registry host for FROM pulls.
    pub registry_auth: HashMap<String, Credentials>,
}

struct Inner {
    dir: PathBuf,
    images: ImageService,
    containers: ContainerService,
    cache: Mutex<BuildCache>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildService")
            .field("dir", &self.dir)
            .finish()
    }
}

/// The builder of this node.
#[derive(Debug, Clone)]
pub struct BuildService {
    inner: Arc<Inner>,
}

/// One record of `system df`'s Build Cache and of `builder prune`'s answer.
#[derive(Debug, Clone)]
pub struct CacheRecord {
    pub id: String,
    pub entry: CacheEntry,
}

/// Twelve hex digits of an ID, as Docker prints it.
pub fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

struct MountGuard {
    target: Option<PathBuf>,
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        use berth_runtime::snapshot::Mounter;
        if let Some(t) = self.target.take() {
            if let Err(e) = berth_runtime::snapshot::SysMounter.unmount(&t) {
                tracing::warn!(target = %t.display(), error = %e, "unmount build rootfs");
            }
        }
    }
}

impl BuildService {
    /// Opens the builder; its cache and scratch space live in `<data_root>/build`.
    pub fn open(
        data_root: &Path,
        images: ImageService,
        containers: ContainerService,
    ) -> Result<Self, ServiceError> {
        let dir = data_root.join("build");
        let tmp = dir.join("tmp");
        // Scratch space of builds a crash interrupted.
        if tmp.exists() {
            for e in std::fs::read_dir(&tmp)
                .map_err(io_at("read", &tmp))?
                .flatten()
            {
                let p = e.path();
                let _ = nix::mount::umount2(&p.join("merged"), nix::mount::MntFlags::MNT_DETACH);
                let _ = nix::mount::umount2(&p.join("from"), nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_dir_all(&p);
            }
        }
        std::fs::create_dir_all(&tmp).map_err(io_at("create", &tmp))?;
        let cache = BuildCache::open(&dir);
        Ok(BuildService {
            inner: Arc::new(Inner {
                dir,
                images,
                containers,
                cache: Mutex::new(cache),
            }),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, BuildCache> {
        self.inner.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh scratch directory for one build; removed by the returned guard.
    pub fn scratch(&self) -> Result<tempfile::TempDir, ServiceError> {
        let tmp = self.inner.dir.join("tmp");
        tempfile::Builder::new()
            .prefix("b")
            .tempdir_in(&tmp)
            .map_err(io_at("create", &tmp))
    }

    /// The cache's records whose images still exist (`system df`'s Build Cache).
    pub fn records(&self) -> Vec<CacheRecord> {
        let entries = self.cache().entries().clone();
        entries
            .into_iter()
            .filter(|(_, e)| self.inner.images.inspect(&e.image).is_ok())
            .map(|(id, entry)| CacheRecord { id, entry })
            .collect()
    }

    /// The images some cached step was built on (Docker's intermediate images, which
    /// `docker images` lists only with `-a`).
    pub fn intermediate_images(&self) -> std::collections::HashSet<String> {
        self.cache()
            .entries()
            .values()
            .map(|e| e.parent.clone())
            .filter(|p| !p.is_empty())
            .collect()
    }

    /// The image a cached step's result `image` was built on (`None`: not a build result,
    /// or built `FROM scratch` as its first step).
    pub fn parent_of(&self, image: &str) -> Option<String> {
        self.cache()
            .entries()
            .values()
            .find(|e| e.image == image)
            .map(|e| e.parent.clone())
            .filter(|p| !p.is_empty())
    }

    /// `docker builder prune`: empties the cache and removes the intermediate images only
    /// it kept (untagged, used by no container, no other image's... base: the image store
    /// refuses what is still needed). Returns the records and the bytes reclaimed.
    pub fn prune(&self) -> Result<(Vec<CacheRecord>, u64), ServiceError> {
        let all = self.cache().clear();
        let mut reclaimed = 0u64;
        let mut out = Vec::new();
        // Newest first: a child goes before the parent it was built on.
        let mut entries: Vec<(String, CacheEntry)> = all.into_iter().collect();
        entries.sort_by(|a, b| b.1.created.cmp(&a.1.created));
        for (id, entry) in entries {
            if let Ok(details) = self.inner.images.inspect(&entry.image) {
                if details.repo_tags.is_empty()
                    && self
                        .inner
                        .containers
                        .image_user(&details.id.to_string())
                        .is_none()
                {
                    if let Ok(report) = self.inner.images.remove(&entry.image, false, &|_| None) {
                        reclaimed += report.unused_bytes;
                    }
                }
            }
            out.push(CacheRecord { id, entry });
        }
        Ok((out, reclaimed))
    }

    /// Runs a build whose context is unpacked at `context`; reports through `emit`.
    /// Returns the final image ID.
    ///
    /// `cachefrom`: the local cache is always used (as dockerd's); images named in
    /// `cachefrom` must exist here, and only images this node's build cache produced can
    /// be matched (berth keeps no per-step config in pulled images' history to compare).
    /// A `cachefrom` image that is not one is refused by name rather than ignored.
    pub async fn build(
        &self,
        req: &BuildRequest,
        context: &Path,
        work: &Path,
        emit: &(dyn Fn(BuildEvent) + Send + Sync),
    ) -> Result<String, BuildFailure> {
        for c in &req.cache_from {
            let d = self.inner.images.inspect(c).map_err(|_| BuildFailure {
                message: format!("cachefrom: image {c} not found on this node (berth reuses only images built here)"),
                code: None,
            })?;
            if !self.cache().has_image(&d.id.to_string()) {
                return Err(BuildFailure {
                    message: format!("cachefrom: {c} was not built by this node's builder; berth can only reuse its own build cache"),
                    code: None,
                });
            }
        }
        let df_rel = copy::clean_rel(&req.dockerfile).ok_or_else(|| BuildFailure {
            message: format!(
                "Forbidden path outside the build context: {} ()",
                req.dockerfile
            ),
            code: None,
        })?;
        let df_path = context.join(&df_rel);
        let text = match std::fs::read(&df_path) {
            Ok(t) => String::from_utf8_lossy(&t).into_owned(),
            Err(_) => {
                return Err(BuildFailure {
                    message: format!("Cannot locate specified Dockerfile: {}", req.dockerfile),
                    code: None,
                })
            }
        };
        {
            let ctx = context.to_path_buf();
            let rel = df_rel.clone();
            blocking(move || context::apply_dockerignore(&ctx, &rel)).await?;
        }
        let df = berth_builder::parse(&text).map_err(|e| BuildFailure {
            message: e.to_string(),
            code: None,
        })?;
        let opts = berth_builder::BuildOptions {
            build_args: req.build_args.clone(),
            target: req.target.clone(),
            platform: req.platform.clone(),
            labels: req.labels.clone(),
        };
        let mut planner = Planner::new(df, opts).map_err(|e| BuildFailure {
            message: e.to_string(),
            code: None,
        })?;
        let total = planner.total_steps();
        let mut exec = Exec {
            svc: self,
            req,
            context: context.to_path_buf(),
            work: work.to_path_buf(),
            emit,
            stage_images: HashMap::new(),
            cur: None,
            seq: 0,
        };
        while let Some(step) = planner.next_step() {
            let step = step.map_err(|e| BuildFailure {
                message: e.to_string(),
                code: None,
            })?;
            if let Some(p) = &step.preface {
                emit(BuildEvent::Stream(format!("{p}\n")));
            }
            if !step.trigger {
                // dockerd sends the step line and its newline as two messages.
                emit(BuildEvent::Stream(format!(
                    "Step {}/{} : {}",
                    step.number, total, step.display
                )));
                emit(BuildEvent::Stream("\n".into()));
            }
            if let Action::From { .. } = step.action {
                let cfg = exec.from(&step).await?;
                if let Some(cfg) = cfg {
                    planner.base_resolved(cfg);
                }
                emit(BuildEvent::Stream(format!(
                    " ---> {}\n",
                    short_id(exec.cur.as_deref().unwrap_or(""))
                )));
            } else if !matches!(step.action, Action::MetaArg) {
                exec.step(&step).await?;
                if !step.trigger {
                    emit(BuildEvent::Stream(format!(
                        " ---> {}\n",
                        short_id(exec.cur.as_deref().unwrap_or(""))
                    )));
                }
            }
            if step.is_last_of_stage {
                exec.stage_images.insert(step.stage, exec.cur.clone());
            }
        }
        for w in planner.warnings() {
            emit(BuildEvent::Stream(format!("{w}\n")));
        }
        // An image-less result (`FROM scratch` alone) still gets an image, as Docker's.
        let image = match exec.cur.clone() {
            Some(i) => i,
            None => {
                exec.commit(None, ImageConfig::default(), "", true, None, "")
                    .await?
            }
        };
        if !req.tags.is_empty() {
            let images = self.inner.images.clone();
            let tags = req.tags.clone();
            let id = image.clone();
            blocking(move || {
                for t in &tags {
                    images
                        .images
                        .store
                        .tag(&id, t)
                        .map_err(crate::service::images::image_error)?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(image)
    }
}

struct Exec<'a> {
    svc: &'a BuildService,
    req: &'a BuildRequest,
    context: PathBuf,
    work: PathBuf,
    emit: &'a (dyn Fn(BuildEvent) + Send + Sync),
    stage_images: HashMap<usize, Option<String>>,
    /// The image so far (`None`: `FROM scratch` and nothing committed yet).
    cur: Option<String>,
    seq: u32,
}

fn failure(message: String) -> BuildFailure {
    BuildFailure {
        message,
        code: None,
    }
}

impl Exec<'_> {
    fn images(&self) -> &ImageService {
        &self.svc.inner.images
    }

    fn stream(&self, s: String) {
        (self.emit)(BuildEvent::Stream(s));
    }

    /// FROM: the base image (pulled when absent or with `pull`). Returns its config for
    /// the planner (`None` for scratch and stages, which the planner knows).
    async fn from(&mut self, step: &Step) -> Result<Option<ImageConfig>, BuildFailure> {
        let Action::From {
            image,
            stage,
            platform,
        } = &step.action
        else {
            return Ok(None);
        };
        if let Some(s) = stage {
            self.cur = self.stage_images.get(s).cloned().flatten();
            return Ok(None);
        }
        if image == "scratch" {
            self.cur = None;
            return Ok(None);
        }
        let reference = ImageService::parse_reference(image)?;
        let local = self.images().inspect(&reference.to_string()).ok();
        let details = match local {
            Some(d) if !self.req.pull => d,
            _ => {
                let creds = self
                    .req
                    .registry_auth
                    .get(reference.registry_host())
                    .or_else(|| self.req.registry_auth.get(reference.domain()))
                    .cloned()
                    .unwrap_or_default();
                let tag = reference
                    .tag()
                    .map(str::to_owned)
                    .unwrap_or_else(|| "latest".into());
                let path = reference.path().to_string();
                let emit = self.emit;
                let progress = move |e: PullEvent| {
                    emit(BuildEvent::Pull {
                        event: e,
                        tag: tag.clone(),
                        path: path.clone(),
                    })
                };
                let plat = platform.clone().or_else(|| self.req.platform.clone());
                self.images()
                    .pull(&reference, plat.as_deref(), creds, &progress)
                    .await?;
                self.images().inspect(&reference.to_string())?
            }
        };
        self.cur = Some(details.id.to_string());
        let cfg: ImageConfig = details
            .config
            .clone()
            .and_then(|c| serde_json::from_value(c).ok())
            .unwrap_or_default();
        Ok(Some(cfg))
    }

    /// Any step after FROM: from the cache, or executed.
    async fn step(&mut self, step: &Step) -> Result<(), BuildFailure> {
        // COPY/ADD: resolve sources first, their checksum is part of the key.
        let mut copy_plan = None;
        if let Action::Copy {
            from, sources, add, ..
        } = &step.action
        {
            let instr = if *add { "ADD" } else { "COPY" };
            let (root, guard) = match from {
                None => (self.context.clone(), None),
                Some(f) => {
                    let image = match f {
                        CopyFrom::Stage(s) => self.stage_images.get(s).cloned().flatten(),
                        CopyFrom::Image(name) => Some(self.ensure_image(name).await?),
                    };
                    let (root, guard) = self.mount_ro(image.as_deref())?;
                    (root, Some(guard))
                }
            };
            let srcs = {
                let root = root.clone();
                let sources = sources.clone();
                let ctx = from.is_none();
                blocking(move || copy::resolve_sources(&root, &sources, ctx, instr)).await?
            };
            let hash = {
                let s = srcs.clone();
                blocking(move || copy::content_hash(&s)).await?
            };
            copy_plan = Some((srcs, hash, guard));
        }
        let content = copy_plan.as_ref().map(|(_, h, _)| h.clone());
        let parent = self.cur.clone().unwrap_or_default();
        let key = berth_builder::cache_key(&parent, step, content.as_deref());
        if !self.req.nocache {
            let hit = self.svc.cache().hit(&key, &crate::api::now_rfc3339());
            if let Some(image) = hit {
                if self.images().inspect(&image).is_ok() {
                    self.stream(" ---> Using cache\n".into());
                    self.cur = Some(image);
                    return Ok(());
                }
                self.svc.cache().forget(&key);
            }
        }
        let created_by = match &copy_plan {
            Some((_, h, _)) => step.copy_created_by(h),
            None => step.created_by.clone(),
        };
        let (image, size) = match &step.action {
            Action::Run { argv, env } => self.run(step, argv, env, &created_by).await?,
            Action::Copy {
                dest,
                chown,
                chmod,
                add,
                ..
            } => {
                let (srcs, _, _guard) = copy_plan.take().expect("planned");
                let instr = if *add { "ADD" } else { "COPY" };
                let dest = dest.clone();
                let chown = chown.clone();
                let chmod = *chmod;
                let add = *add;
                self.layer_step(step, &created_by, move |root| {
                    let (uid, gid) = match chown.as_deref().filter(|c| !c.is_empty()) {
                        Some(c) => copy::resolve_chown(root, c)?,
                        None => (0, 0),
                    };
                    let attrs = Attrs { uid, gid, chmod };
                    copy::copy_into(root, &srcs, &dest, attrs, add, instr)
                })
                .await?
            }
            Action::Workdir { path } => {
                let path = path.clone();
                let probe = self.probe_container(&created_by).await;
                let done = self
                    .layer_step(step, &created_by, move |root| {
                        let rel = copy::clean_rel(&path).unwrap_or_default();
                        copy::mkdir_all(
                            root,
                            &rel,
                            Attrs {
                                uid: 0,
                                gid: 0,
                                chmod: None,
                            },
                        )
                    })
                    .await;
                if let Some(cid) = probe {
                    if done.is_ok() {
                        self.stream(format!(
                            "Removing intermediate container {}\n",
                            short_id(&cid)
                        ));
                    }
                    self.remove_container(&self.svc.inner.containers.clone(), &cid, true)
                        .await;
                }
                done?
            }
            _ => {
                let probe = self.probe_container(&created_by).await;
                let id = self
                    .commit(
                        self.cur.clone(),
                        step.config.clone(),
                        &created_by,
                        true,
                        None,
                        step.author.as_deref().unwrap_or(""),
                    )
                    .await?;
                if let Some(cid) = probe {
                    self.stream(format!(
                        "Removing intermediate container {}\n",
                        short_id(&cid)
                    ));
                    self.remove_container(&self.svc.inner.containers.clone(), &cid, true)
                        .await;
                }
                (id, 0)
            }
        };
        let now = crate::api::now_rfc3339();
        self.svc.cache().insert(
            key,
            CacheEntry {
                image: image.clone(),
                parent,
                description: step.display.clone(),
                size,
                created: now.clone(),
                last_used: now,
                usage_count: 0,
            },
        );
        self.cur = Some(image);
        Ok(())
    }

    /// An image by name, pulled when absent (COPY --from=<image>).
    async fn ensure_image(&self, name: &str) -> Result<String, BuildFailure> {
        let reference = ImageService::parse_reference(name)?;
        if let Ok(d) = self.images().inspect(&reference.to_string()) {
            return Ok(d.id.to_string());
        }
        let creds = self
            .req
            .registry_auth
            .get(reference.registry_host())
            .cloned()
            .unwrap_or_default();
        let tag = reference.tag().unwrap_or("latest").to_string();
        let path = reference.path().to_string();
        let emit = self.emit;
        let progress = move |e: PullEvent| {
            emit(BuildEvent::Pull {
                event: e,
                tag: tag.clone(),
                path: path.clone(),
            })
        };
        self.images()
            .pull(&reference, self.req.platform.as_deref(), creds, &progress)
            .await?;
        Ok(self
            .images()
            .inspect(&reference.to_string())?
            .id
            .to_string())
    }

    fn next_dir(&mut self, name: &str) -> Result<PathBuf, BuildFailure> {
        self.seq += 1;
        let d = self.work.join(format!("{name}{}", self.seq));
        std::fs::create_dir_all(&d).map_err(|e| failure(format!("create {}: {e}", d.display())))?;
        Ok(d)
    }

    /// The layer directories of `image`, bottom first.
    fn lowers(&self, image: Option<&str>) -> Result<Vec<PathBuf>, BuildFailure> {
        let Some(image) = image else {
            return Ok(Vec::new());
        };
        let details = self.images().inspect(image)?;
        let snaps = self.svc.inner.containers.runtime().snapshots();
        details
            .record
            .chain_ids()
            .iter()
            .map(|c| {
                snaps
                    .layer_dir(&c.to_string())
                    .map_err(|e| failure(e.to_string()))
            })
            .collect()
    }

    /// `image`'s root filesystem, read-only (COPY --from).
    fn mount_ro(&mut self, image: Option<&str>) -> Result<(PathBuf, MountGuard), BuildFailure> {
        let lowers = self.lowers(image)?;
        let dir = self.next_dir("from")?;
        match lowers.len() {
            0 => Ok((dir, MountGuard { target: None })),
            1 => Ok((lowers[0].clone(), MountGuard { target: None })),
            _ => {
                let target = dir.join("root");
                let lowerdir = lowers
                    .iter()
                    .rev()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":");
                let plan = berth_runtime::snapshot::MountPlan {
                    fstype: "overlay".into(),
                    source: "overlay".into(),
                    target: target.clone(),
                    options: format!("lowerdir={lowerdir}"),
                };
                use berth_runtime::snapshot::Mounter;
                berth_runtime::snapshot::SysMounter
                    .mount(&plan)
                    .map_err(|e| failure(format!("mount the --from image: {e}")))?;
                Ok((
                    target.clone(),
                    MountGuard {
                        target: Some(target),
                    },
                ))
            }
        }
    }

    /// A step that writes files into the parent's root (COPY, ADD, WORKDIR): mounts the
    /// parent's layers with a fresh upper dir, runs `write`, commits the upper as a layer.
    async fn layer_step(
        &mut self,
        step: &Step,
        created_by: &str,
        write: impl FnOnce(&Path) -> Result<(), ServiceError> + Send + 'static,
    ) -> Result<(String, u64), BuildFailure> {
        let lowers = self.lowers(self.cur.as_deref())?;
        let dir = self.next_dir("layer")?;
        let upper = dir.join("upper");
        let workd = dir.join("work");
        let merged = dir.join("merged");
        for d in [&upper, &workd, &merged] {
            std::fs::create_dir_all(d)
                .map_err(|e| failure(format!("create {}: {e}", d.display())))?;
        }
        let tar = dir.join("layer.tar");
        let size = {
            let lowers = lowers.clone();
            let tar = tar.clone();
            blocking(move || {
                {
                    let (root, _guard) = if lowers.is_empty() {
                        (upper.clone(), MountGuard { target: None })
                    } else {
                        let plan =
                            berth_runtime::snapshot::plan_overlay(&lowers, &upper, &workd, &merged);
                        use berth_runtime::snapshot::Mounter;
                        berth_runtime::snapshot::SysMounter
                            .mount(&plan)
                            .map_err(ServiceError::runtime)?;
                        (
                            merged.clone(),
                            MountGuard {
                                target: Some(merged.clone()),
                            },
                        )
                    };
                    write(&root)?;
                }
                let top_first: Vec<PathBuf> = lowers.iter().rev().cloned().collect();
                write_layer(&upper, &top_first, &tar)
            })
            .await?
        };
        let id = self
            .commit(
                self.cur.clone(),
                step.config.clone(),
                created_by,
                false,
                Some(tar),
                step.author.as_deref().unwrap_or(""),
            )
            .await?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok((id, size))
    }

    /// dockerd's classic builder creates (never starts) a container for each metadata
    /// step and commits it, printing " ---> Running in <id>"; berth creates the same
    /// container, so the output names a real one, and the caller removes it after the
    /// commit. `None` on scratch (no image to create it from) or when the create fails.
    async fn probe_container(&self, created_by: &str) -> Option<String> {
        let image = self.cur.clone()?;
        let body = json!({
            "Image": image,
            "Cmd": ["/bin/sh", "-c", created_by.trim_start_matches("/bin/sh -c ")],
            "Entrypoint": [""],
            "Healthcheck": {"Test": ["NONE"]},
            "HostConfig": {"NetworkMode": "none"},
        });
        let body: bollard_stubs::models::ContainerCreateBody = serde_json::from_value(body).ok()?;
        let c = self.svc.inner.containers.clone();
        match blocking(move || c.create_blocking(None, body)).await {
            Ok((id, _)) => {
                self.stream(format!(" ---> Running in {}\n", short_id(&id)));
                Some(id)
            }
            Err(e) => {
                tracing::warn!(error = %e, "creating a metadata step's container");
                None
            }
        }
    }

    /// RUN: a container of the current image runs `argv`; its changes become the layer.
    async fn run(
        &mut self,
        step: &Step,
        argv: &[String],
        env: &[String],
        created_by: &str,
    ) -> Result<(String, u64), BuildFailure> {
        let Some(image) = self.cur.clone() else {
            return Err(failure(
                "Please provide a source image with `from` prior to run".into(),
            ));
        };
        let cfg = &step.config;
        let mut host = json!({});
        if let Some(n) = self
            .req
            .network_mode
            .as_deref()
            .filter(|n| !n.is_empty() && *n != "default")
        {
            host["NetworkMode"] = json!(n);
        }
        if !self.req.extra_hosts.is_empty() {
            host["ExtraHosts"] = json!(self.req.extra_hosts);
        }
        if self.req.shm_size > 0 {
            host["ShmSize"] = json!(self.req.shm_size);
        }
        let body = json!({
            "Image": image,
            "Cmd": argv,
            "Entrypoint": [""],
            "Env": env,
            "User": cfg.user.clone().unwrap_or_default(),
            "WorkingDir": cfg.working_dir.clone().unwrap_or_default(),
            "Healthcheck": {"Test": ["NONE"]},
            "AttachStdout": true,
            "AttachStderr": true,
            "HostConfig": host,
        });
        let body: bollard_stubs::models::ContainerCreateBody =
            serde_json::from_value(body).map_err(|e| failure(e.to_string()))?;
        let containers = self.svc.inner.containers.clone();
        let id = {
            let c = containers.clone();
            blocking(move || c.create_blocking(None, body)).await?.0
        };
        self.stream(format!(" ---> Running in {}\n", short_id(&id)));
        let outcome = self.run_container(&containers, &id).await;
        let code = match outcome {
            Ok(code) => code,
            Err(e) => {
                self.remove_container(&containers, &id, true).await;
                return Err(e);
            }
        };
        if code != 0 {
            if self.req.forcerm {
                self.remove_container(&containers, &id, false).await;
            }
            return Err(BuildFailure {
                message: format!(
                    "The command '{}' returned a non-zero code: {code}",
                    argv.join(" ")
                ),
                code: Some(code),
            });
        }
        let dir = self.next_dir("run")?;
        let tar = dir.join("layer.tar");
        let size = {
            let c = containers.clone();
            let id = id.clone();
            let tar = tar.clone();
            blocking(move || {
                let (upper, lowers) = c.upper_and_lowers(&id)?;
                copy::scrub_mount_points(&upper, &lowers);
                write_layer(&upper, &lowers, &tar)
            })
            .await?
        };
        if self.req.rm || self.req.forcerm {
            self.stream(format!(
                "Removing intermediate container {}\n",
                short_id(&id)
            ));
            self.remove_container(&containers, &id, false).await;
        }
        let image = self
            .commit(
                self.cur.clone(),
                step.config.clone(),
                created_by,
                false,
                Some(tar),
                step.author.as_deref().unwrap_or(""),
            )
            .await?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok((image, size))
    }

    /// Starts container `id`, streams its output, returns its exit code.
    async fn run_container(
        &self,
        containers: &ContainerService,
        id: &str,
    ) -> Result<i64, BuildFailure> {
        {
            let c = containers.clone();
            let id = id.to_string();
            blocking(move || c.start_blocking(&id)).await?;
        }
        // Output as it comes: follow the log until the container exits.
        let rt = containers.runtime().clone();
        let lid = id.to_string();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let reader = tokio::task::spawn_blocking(move || {
            let opts = berth_runtime::logs::LogOptions {
                follow: true,
                ..berth_runtime::logs::LogOptions::all()
            };
            if let Ok(stream) = rt.logs(&lid, opts) {
                for r in stream.flatten() {
                    let text = String::from_utf8_lossy(&r.log).into_owned();
                    if tx.send(text).is_err() {
                        return;
                    }
                }
            }
        });
        while let Some(text) = rx.recv().await {
            self.stream(text);
        }
        let _ = reader.await;
        Ok(containers.wait(id, WaitCondition::NotRunning).await?)
    }

    async fn remove_container(&self, containers: &ContainerService, id: &str, force: bool) {
        let c = containers.clone();
        let id = id.to_string();
        if let Err(e) = blocking(move || c.remove_blocking(&id, force, true)).await {
            tracing::warn!(error = %e, "removing a build container");
        }
    }

    /// Stores an image: `parent` plus the layer at `layer` (if any), `config`, one more
    /// history entry. Returns its ID.
    async fn commit(
        &self,
        parent: Option<String>,
        config: ImageConfig,
        created_by: &str,
        empty_layer: bool,
        layer: Option<PathBuf>,
        author: &str,
    ) -> Result<String, BuildFailure> {
        let images = self.images().clone();
        let config = serde_json::to_value(&config).map_err(|e| failure(e.to_string()))?;
        let history = berth_registry_mirror::archive::HistoryEntry {
            created_by: created_by.to_string(),
            comment: None,
            author: (!author.is_empty()).then(|| author.to_string()),
            empty_layer,
        };
        let created = crate::api::now_rfc3339();
        let img = blocking(move || {
            images.commit_image(
                parent.as_deref(),
                config,
                history,
                layer.as_deref(),
                &created,
                &[],
            )
        })
        .await?;
        Ok(img.to_string())
    }
}

/// Writes the layer tar of `upper` over `lowers` (top first, overlayfs' order) to `tar`;
/// returns its size in bytes.
fn write_layer(upper: &Path, lowers: &[PathBuf], tar: &Path) -> Result<u64, ServiceError> {
    let f = std::fs::File::create(tar).map_err(io_at("create", tar))?;
    let mut w = std::io::BufWriter::new(f);
    let (_diff_id, size) = berth_runtime::changes::write_layer_tar(upper, lowers, &mut w)
        .map_err(ServiceError::runtime)?;
    use std::io::Write;
    w.flush().map_err(io_at("write", tar))?;
    Ok(size)
}
