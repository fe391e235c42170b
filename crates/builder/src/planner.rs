//! The classic builder's evaluation of a Dockerfile into steps, as a pure state machine.
//!
//! Follows dockerd 20.10's `builder/dockerfile` (builder.go `dispatchDockerfileWithCancellation`,
//! evaluator.go `dispatch`, dispatchers.go, buildargs.go, internals.go): every stage up to
//! the target is built, in order (the classic builder does not prune unused stages); meta
//! ARGs are steps of their own; ONBUILD triggers of the base run right after FROM without
//! a "Step" line; `docker build --label` adds one `LABEL` step per label (sorted) at the end
//! of the last stage.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::gofmt;
use crate::parser::{
    parse_trigger, CmdLine, Dockerfile, HealthConfig, Instruction, InstructionKind,
};
use crate::shell::Lex;

/// Linux's default `PATH`, added to a stage's Env when its base has none (Docker's
/// `system.DefaultPathEnv`).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The proxy build args Docker accepts without an ARG (and leaves out of the history).
pub const BUILTIN_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The build's options (Engine API `POST /build` query: `buildargs`, `target`,
/// `platform`, `labels`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// `--build-arg`s; `None` is a name without a value (not used as an override).
    pub build_args: BTreeMap<String, Option<String>>,
    /// `--target` stage name.
    pub target: Option<String>,
    /// `--platform`, the default for FROM lines without `--platform`.
    pub platform: Option<String>,
    /// `--label`s, added to the final image as LABEL steps.
    pub labels: BTreeMap<String, String>,
}

/// A build that cannot go on (Docker's message, e.g. "failed to reach build target X in
/// Dockerfile"); the API answers it as a build error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    /// Docker's text.
    pub message: String,
}

impl BuildError {
    fn new(message: impl Into<String>) -> Self {
        BuildError {
            message: message.into(),
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BuildError {}

/// An empty JSON object (`{}`), the value type of `ExposedPorts` and `Volumes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// Docker's container config as stored in an image config (`"config"`), with Docker's JSON
/// field names. Fields berth does not interpret (Hostname, Image, OpenStdin, ...) are kept
/// in `other` and written back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `USER`.
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `K=V` list.
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// `CMD`.
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `ENTRYPOINT`.
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    /// `WORKDIR`, absolute.
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    /// `LABEL`s.
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// `EXPOSE`: `"80/tcp": {}`.
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    /// `VOLUME`: `"/data": {}`.
    #[serde(rename = "Volumes", default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Empty>>,
    /// `STOPSIGNAL`.
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
    /// `HEALTHCHECK`.
    #[serde(
        rename = "Healthcheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub healthcheck: Option<HealthConfig>,
    /// `ONBUILD` triggers.
    #[serde(rename = "OnBuild", default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// `SHELL`.
    #[serde(rename = "Shell", default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// Windows-only flag Docker keeps; always false for steps planned here.
    #[serde(
        rename = "ArgsEscaped",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub args_escaped: bool,
    /// Every other field of the config, as read.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl ImageConfig {
    /// The shell for shell-form commands: `Shell`, or `["/bin/sh", "-c"]`.
    pub fn shell_or_default(&self) -> Vec<String> {
        match &self.shell {
            Some(s) if !s.is_empty() => s.clone(),
            _ => vec!["/bin/sh".into(), "-c".into()],
        }
    }

    fn env_list(&self) -> Vec<String> {
        self.env.clone().unwrap_or_default()
    }

    /// Sets `key=value` in Env, replacing an existing key in place (Docker's order).
    pub fn set_env(&mut self, key: &str, value: &str) {
        let env = self.env.get_or_insert_with(Vec::new);
        let new = format!("{key}={value}");
        for e in env.iter_mut() {
            if e.split('=').next() == Some(key) {
                *e = new;
                return;
            }
        }
        env.push(new);
    }
}

/// Where COPY --from copies from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFrom {
    /// An earlier stage (index into `Dockerfile.stages`): its final image.
    Stage(usize),
    /// An image reference (pulled if absent).
    Image(String),
}

/// What the executor does for a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// An ARG before the first FROM: print the step line, nothing else.
    MetaArg,
    /// Start a stage from `image` (an image reference, or `"scratch"`), or from the final
    /// image of an earlier stage. After it, call [`Planner::base_resolved`] with the base
    /// image's config (required for images; for scratch and stages the planner knows it).
    From {
        /// The expanded reference, `"scratch"`, or the earlier stage's name.
        image: String,
        /// An earlier stage (index into `Dockerfile.stages`).
        stage: Option<usize>,
        /// `--platform` (expanded) or the build's platform.
        platform: Option<String>,
    },
    /// Run `argv` in a container of the current image (no entrypoint, no healthcheck,
    /// User and WorkingDir from `Step.config`, env `env`), commit its changes as a layer.
    /// Fails with "The command '<argv joined by space>' returned a non-zero code: N".
    Run {
        /// The process' argv (the stage's SHELL prepended for shell form).
        argv: Vec<String>,
        /// Config Env plus the build args in effect, `K=V`.
        env: Vec<String>,
    },
    /// COPY or ADD (`add`) the `sources` (context paths, globs; for ADD also URLs and
    /// local tars to unpack) to `dest`, then commit a layer. History via
    /// [`Step::copy_created_by`].
    Copy {
        /// `--from`.
        from: Option<CopyFrom>,
        /// Sources, expanded.
        sources: Vec<String>,
        /// Destination, absolute, WORKDIR applied (Docker's `normalizeDest`), a trailing
        /// `/` kept.
        dest: String,
        /// `--chown`, expanded (user[:group], names resolved in the image).
        chown: Option<String>,
        /// `--chmod`, octal mode bits.
        chmod: Option<u32>,
        /// ADD rather than COPY.
        add: bool,
    },
    /// WORKDIR: create `path` (root, 0755) if absent, commit (an empty layer when it
    /// existed), as dockerd 20.10 does.
    Workdir {
        /// Absolute path.
        path: String,
    },
    /// Metadata only (ENV, LABEL, CMD, ...): no layer, an `empty_layer` history entry.
    Config,
}

/// The two ends of a COPY/ADD history line around the source hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyHistory {
    /// `"/bin/sh -c #(nop) COPY "` (plus `--chown=X`, without a space, as Docker).
    pub prefix: String,
    /// `" in /dest "`.
    pub suffix: String,
}

/// One step of the build.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// 1-based, for "Step i/N" (ONBUILD triggers share their FROM's number).
    pub number: usize,
    /// Index into `Dockerfile.stages` (0 for meta ARGs).
    pub stage: usize,
    /// Docker's text after "Step i/N : ", e.g. "RUN echo hi".
    pub display: String,
    /// What to do.
    pub action: Action,
    /// The image config after this step (for a From step of an image base: empty until
    /// the executor reports the base's config).
    pub config: ImageConfig,
    /// History `created_by`: "/bin/sh -c echo hi", "/bin/sh -c #(nop)  ENV A=b", ... (for
    /// Copy, use [`Step::copy_created_by`]).
    pub created_by: String,
    /// Cache key material (Docker compares the parent and this container config), without
    /// content checksums.
    pub cache_text: String,
    /// Whether this is the last step of its stage (a From step of a stage without
    /// instructions says true even when base ONBUILD triggers follow; then the last
    /// trigger says true too: the stage's image is the one after its last step).
    pub is_last_of_stage: bool,
    /// MAINTAINER in effect (image and history Author).
    pub author: Option<String>,
    /// An ONBUILD trigger of the base: no "Step" line is printed for it.
    pub trigger: bool,
    /// A line to print before the step ("# Executing 2 build triggers").
    pub preface: Option<String>,
    /// For Copy steps: the history text around the source hash.
    pub copy_history: Option<CopyHistory>,
}

impl Step {
    /// The history `created_by` of a Copy step, given the hash of its sources as Docker
    /// forms it (`file:<sha256>`, `dir:<sha256>`, or [`source_hash`] of several):
    /// `"/bin/sh -c #(nop) COPY file:abc in /dst "`. For other steps, `created_by`.
    pub fn copy_created_by(&self, src_hash: &str) -> String {
        match &self.copy_history {
            Some(h) => format!("{}{}{}", h.prefix, src_hash, h.suffix),
            None => self.created_by.clone(),
        }
    }
}

/// Docker's hash of several copied sources: `multi:<sha256 of the hashes joined by ",">`,
/// or the one hash itself.
pub fn source_hash(hashes: &[String]) -> String {
    use sha2::Digest;
    if hashes.len() == 1 {
        return hashes[0].clone();
    }
    let d = sha2::Sha256::digest(hashes.join(",").as_bytes());
    format!("multi:{}", hex::encode(d))
}

// ---------------------------------------------------------------------------------------
// Build args (buildargs.go).

#[derive(Debug, Clone, Default)]
struct BuildArgs {
    from_options: BTreeMap<String, Option<String>>,
    allowed: BTreeMap<String, Option<String>>,
    meta: BTreeMap<String, Option<String>>,
    referenced: BTreeSet<String>,
}

fn is_builtin(k: &str) -> bool {
    BUILTIN_ARGS.contains(&k)
}

impl BuildArgs {
    fn get(&self, key: &str, source: &BTreeMap<String, Option<String>>) -> Option<String> {
        if let Some(Some(v)) = self.from_options.get(key) {
            return Some(v.clone());
        }
        match source.get(key) {
            Some(Some(d)) => Some(d.clone()),
            _ => match self.meta.get(key) {
                Some(Some(v)) => Some(v.clone()),
                _ => None,
            },
        }
    }

    fn get_all(&self, source: &BTreeMap<String, Option<String>>) -> BTreeMap<String, String> {
        let mut keys: BTreeSet<&str> = source.keys().map(String::as_str).collect();
        keys.extend(BUILTIN_ARGS);
        keys.into_iter()
            .filter_map(|k| self.get(k, source).map(|v| (k.to_string(), v)))
            .collect()
    }

    fn all_allowed(&self) -> BTreeMap<String, String> {
        self.get_all(&self.allowed)
    }

    fn all_meta(&self) -> BTreeMap<String, String> {
        self.get_all(&self.meta)
    }

    /// `FilterAllowed`: the allowed args not set in `env`, `K=V`, sorted.
    fn filter_allowed(&self, env: &[String]) -> Vec<String> {
        let keys: BTreeSet<&str> = env
            .iter()
            .map(|e| e.split('=').next().unwrap_or(""))
            .collect();
        self.all_allowed()
            .into_iter()
            .filter(|(k, _)| !keys.contains(k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    fn add_arg(&mut self, key: &str, value: Option<String>) {
        self.allowed.insert(key.to_string(), value);
        self.referenced.insert(key.to_string());
    }

    fn is_referenced_or_not_builtin(&self, key: &str) -> bool {
        self.allowed.contains_key(key) || !is_builtin(key)
    }
}

fn env_list(m: &BTreeMap<String, String>) -> Vec<String> {
    m.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct StageState {
    index: usize,
    config: ImageConfig,
    args: BuildArgs,
    maintainer: Option<String>,
    cmd_set: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Meta(usize),
    StageStart(usize),
    /// A From step of an image base was returned; waiting for `base_resolved`.
    AwaitBase,
    /// Base triggers, then the stage's instructions from this index.
    Instr(usize),
    Done,
}

/// Drives a build, one step at a time, pure: the executor feeds back what only it knows
/// (the base image's config after a From step).
///
/// ```
/// use berth_builder::{parse, Action, BuildOptions, Planner};
/// let df = parse("FROM scratch\nENV A=1\nCMD [\"sh\"]\n").unwrap();
/// let mut p = Planner::new(df, BuildOptions::default()).unwrap();
/// assert_eq!(p.total_steps(), 3);
/// let from = p.next_step().unwrap().unwrap();
/// assert!(matches!(from.action, Action::From { .. }));
/// let env = p.next_step().unwrap().unwrap();
/// assert_eq!(env.created_by, "/bin/sh -c #(nop)  ENV A=1");
/// let cmd = p.next_step().unwrap().unwrap();
/// assert_eq!(cmd.display, "CMD [\"sh\"]");
/// assert_eq!(cmd.config.cmd, Some(vec!["sh".to_string()]));
/// assert!(p.next_step().is_none());
/// ```
#[derive(Debug)]
pub struct Planner {
    df: Dockerfile,
    opts: BuildOptions,
    lex: Lex,
    total: usize,
    number: usize,
    global: BuildArgs,
    phase: Phase,
    /// Final configs of the completed stages, by stage index.
    done_configs: Vec<ImageConfig>,
    cur: Option<StageState>,
    triggers: VecDeque<Instruction>,
    trigger_total: usize,
    /// A trigger that could not be parsed: reported as the next step.
    trigger_error: Option<String>,
}

impl Planner {
    /// Plans the build of `df` with `opts`.
    ///
    /// Errors: an unknown `--target` ("failed to reach build target X in Dockerfile"), a
    /// Dockerfile with no stage ("No image was generated. Is your Dockerfile empty?").
    pub fn new(mut df: Dockerfile, opts: BuildOptions) -> Result<Planner, BuildError> {
        if let Some(t) = opts.target.as_deref().filter(|t| !t.is_empty()) {
            let Some(ix) = df
                .stages
                .iter()
                .position(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(t)))
            else {
                return Err(BuildError::new(format!(
                    "failed to reach build target {t} in Dockerfile"
                )));
            };
            df.stages.truncate(ix + 1);
        }
        let Some(last) = df.stages.last_mut() else {
            return Err(BuildError::new(
                "No image was generated. Is your Dockerfile empty?",
            ));
        };
        for (k, v) in &opts.labels {
            last.instructions.push(Instruction {
                line: 0,
                original: format!("LABEL {k}={v}"),
                kind: InstructionKind::Label {
                    labels: vec![(k.clone(), v.clone())],
                    no_expand: true,
                },
            });
        }
        let total = df.meta_arg_instructions.len()
            + df.stages
                .iter()
                .map(|s| 1 + s.instructions.len())
                .sum::<usize>();
        let global = BuildArgs {
            from_options: opts.build_args.clone(),
            ..Default::default()
        };
        Ok(Planner {
            lex: Lex::new(df.escape),
            df,
            opts,
            total,
            number: 0,
            global,
            phase: Phase::Meta(0),
            done_configs: Vec::new(),
            cur: None,
            triggers: VecDeque::new(),
            trigger_total: 0,
            trigger_error: None,
        })
    }

    /// N in Docker's "Step i/N": the meta ARGs plus, for every stage built, its FROM and
    /// its instructions (ONBUILD triggers are not counted, as in Docker).
    pub fn total_steps(&self) -> usize {
        self.total
    }

    /// The Dockerfile being built (stages after `--target`, option labels appended).
    pub fn dockerfile(&self) -> &Dockerfile {
        &self.df
    }

    /// The next step, or None when the build is done (or after an error).
    pub fn next_step(&mut self) -> Option<Result<Step, BuildError>> {
        let r = self.advance();
        match r {
            Some(Err(_)) => {
                self.phase = Phase::Done;
                r
            }
            _ => r,
        }
    }

    /// After an [`Action::From`] step: the base image's config (Env for substitution,
    /// OnBuild triggers, which become the next steps as Docker runs them). For a stage or
    /// scratch base it is optional (the planner knows the config) and replaces it.
    pub fn base_resolved(&mut self, config: ImageConfig) {
        let awaiting = self.phase == Phase::AwaitBase;
        let fresh =
            matches!(self.phase, Phase::Instr(0)) && self.triggers.len() == self.trigger_total;
        if awaiting || fresh {
            self.begin_stage(config);
        }
    }

    /// Warnings Docker prints at the end of a successful build, e.g.
    /// "[Warning] One or more build-args [FOO] were not consumed".
    pub fn warnings(&self) -> Vec<String> {
        let mut left: Vec<&str> = self
            .global
            .from_options
            .keys()
            .filter(|k| !self.global.referenced.contains(*k) && !is_builtin(k))
            .map(String::as_str)
            .collect();
        left.sort();
        if left.is_empty() {
            Vec::new()
        } else {
            vec![format!(
                "[Warning] One or more build-args [{}] were not consumed",
                left.join(" ")
            )]
        }
    }

    fn advance(&mut self) -> Option<Result<Step, BuildError>> {
        loop {
            match self.phase {
                Phase::Done => return None,
                Phase::Meta(i) => {
                    if i >= self.df.meta_arg_instructions.len() {
                        self.phase = Phase::StageStart(0);
                        continue;
                    }
                    self.phase = Phase::Meta(i + 1);
                    return Some(self.meta_arg(i));
                }
                Phase::StageStart(s) => {
                    if s >= self.df.stages.len() {
                        self.phase = Phase::Done;
                        return None;
                    }
                    return Some(self.start_stage(s));
                }
                Phase::AwaitBase => {
                    return Some(Err(BuildError::new(
                        "internal error: the base image's config was not given (base_resolved) after the FROM step",
                    )))
                }
                Phase::Instr(i) => {
                    if let Some(e) = self.trigger_error.take() {
                        return Some(Err(BuildError::new(e)));
                    }
                    let stage = self.cur.as_ref().map(|c| c.index).unwrap_or(0);
                    if let Some(t) = self.triggers.pop_front() {
                        let first = self.triggers.len() + 1 == self.trigger_total;
                        let last = self.triggers.is_empty()
                            && self.df.stages[stage].instructions.is_empty();
                        let n = self.trigger_total;
                        let r = self.dispatch(&t).map(|mut st| {
                            st.trigger = true;
                            st.is_last_of_stage = last;
                            if first {
                                st.preface = Some(format!(
                                    "# Executing {n} build {}",
                                    if n == 1 { "trigger" } else { "triggers" }
                                ));
                            }
                            st
                        });
                        if self.triggers.is_empty() && last {
                            self.finish_stage();
                        }
                        return Some(r);
                    }
                    let len = self.df.stages[stage].instructions.len();
                    if i >= len {
                        self.finish_stage();
                        continue;
                    }
                    let ins = self.df.stages[stage].instructions[i].clone();
                    self.number += 1;
                    self.phase = Phase::Instr(i + 1);
                    let r = self.dispatch(&ins).map(|mut st| {
                        st.is_last_of_stage = i + 1 == len;
                        st
                    });
                    if i + 1 == len && r.is_ok() {
                        self.finish_stage();
                    }
                    return Some(r);
                }
            }
        }
    }

    fn finish_stage(&mut self) {
        if let Some(cur) = self.cur.take() {
            self.global
                .referenced
                .extend(cur.args.referenced.iter().cloned());
            self.done_configs.push(cur.config);
            self.phase = Phase::StageStart(cur.index + 1);
        }
    }

    fn meta_arg(&mut self, i: usize) -> Result<Step, BuildError> {
        self.number += 1;
        let ins = self.df.meta_arg_instructions[i].clone();
        let InstructionKind::Arg(pairs) = &ins.kind else {
            return Err(BuildError::new(
                "internal error: a meta arg that is not ARG",
            ));
        };
        let envs = env_list(&self.global.all_allowed());
        for (k, v) in pairs {
            let k = self.lex.process_word(k, &envs).map_err(BuildError::new)?;
            let v = match v {
                Some(v) => Some(self.lex.process_word(v, &envs).map_err(BuildError::new)?),
                None => None,
            };
            self.global.add_arg(&k, v.clone());
            self.global.meta.insert(k, v);
        }
        Ok(Step {
            number: self.number,
            stage: 0,
            display: ins.original.clone(),
            action: Action::MetaArg,
            config: ImageConfig::default(),
            created_by: String::new(),
            cache_text: String::new(),
            is_last_of_stage: false,
            author: None,
            trigger: false,
            preface: None,
            copy_history: None,
        })
    }

    fn start_stage(&mut self, s: usize) -> Result<Step, BuildError> {
        self.number += 1;
        let stage = self.df.stages[s].clone();
        if let Some(name) = &stage.name {
            if self.df.stages[..s]
                .iter()
                .any(|p| p.name.as_deref() == Some(name.as_str()))
            {
                return Err(BuildError::new(format!("{name} stage name already used")));
            }
        }
        let mut args = self.global.clone();
        args.allowed.clear();
        let meta_env = env_list(&args.all_meta());
        let platform = match &stage.platform {
            Some(p) => Some(
                self.lex
                    .process_word(p, &meta_env)
                    .map_err(BuildError::new)?,
            ),
            None => self.opts.platform.clone(),
        };
        let name = self
            .lex
            .process_word(&stage.base, &meta_env)
            .map_err(BuildError::new)?;
        if name.is_empty() {
            return Err(BuildError::new(format!(
                "base name ({}) should not be blank",
                stage.base
            )));
        }
        let lname = name.to_lowercase();
        let from_stage = self.df.stages[..s]
            .iter()
            .position(|p| p.name.as_deref() == Some(lname.as_str()));
        self.cur = Some(StageState {
            index: s,
            config: ImageConfig::default(),
            args,
            maintainer: None,
            cmd_set: false,
        });
        self.triggers.clear();
        self.trigger_total = 0;
        self.trigger_error = None;
        let known = match from_stage {
            Some(k) => Some(self.done_configs.get(k).cloned().unwrap_or_default()),
            None if name == "scratch" => Some(ImageConfig::default()),
            None => None,
        };
        let mut is_last = stage.instructions.is_empty();
        let config = match known {
            Some(c) => {
                self.begin_stage(c);
                if is_last && self.trigger_total == 0 {
                    self.finish_stage();
                } else if self.trigger_total > 0 {
                    is_last = false;
                }
                self.config_of(s)
            }
            None => {
                self.phase = Phase::AwaitBase;
                ImageConfig::default()
            }
        };
        Ok(Step {
            number: self.number,
            stage: s,
            display: stage.original.clone(),
            action: Action::From {
                image: name,
                stage: from_stage,
                platform,
            },
            config,
            created_by: String::new(),
            cache_text: String::new(),
            is_last_of_stage: is_last,
            author: None,
            trigger: false,
            preface: None,
            copy_history: None,
        })
    }

    fn config_of(&self, s: usize) -> ImageConfig {
        match &self.cur {
            Some(c) if c.index == s => c.config.clone(),
            _ => self.done_configs.get(s).cloned().unwrap_or_default(),
        }
    }

    /// Docker's `beginStage` + the ONBUILD triggers of `initializeStage`.
    fn begin_stage(&mut self, mut config: ImageConfig) {
        let Some(cur) = self.cur.as_mut() else {
            return;
        };
        for k in ["OpenStdin", "StdinOnce"] {
            if config.other.contains_key(k) {
                config
                    .other
                    .insert(k.into(), serde_json::Value::Bool(false));
            }
        }
        let has_path = config
            .env
            .as_ref()
            .is_some_and(|e| e.iter().any(|v| v.split('=').next() == Some("PATH")));
        if !has_path {
            config
                .env
                .get_or_insert_with(Vec::new)
                .push(format!("PATH={DEFAULT_PATH}"));
        }
        let triggers = config.on_build.take().unwrap_or_default();
        if !triggers.is_empty() {
            config.on_build = None;
        }
        cur.config = config;
        self.triggers.clear();
        self.trigger_error = None;
        for t in &triggers {
            match parse_trigger(t) {
                Ok(ins) => self.triggers.push_back(ins),
                Err(e) => {
                    self.trigger_error = Some(e);
                    break;
                }
            }
        }
        self.trigger_total = self.triggers.len();
        self.phase = Phase::Instr(0);
    }

    /// Docker's `dispatch` of one command in the current stage.
    fn dispatch(&mut self, ins: &Instruction) -> Result<Step, BuildError> {
        let lex = self.lex;
        let number = self.number;
        let completed = self.done_configs.len();
        let stage_names: Vec<Option<String>> = self.df.stages
            [..completed.min(self.df.stages.len())]
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let Some(cur) = self.cur.as_mut() else {
            return Err(BuildError::new("no build stage in current context"));
        };
        let env_now = cur.config.env_list();
        let mut envs = env_now.clone();
        envs.extend(cur.args.filter_allowed(&env_now));
        let expand = |w: &str| lex.process_word(w, &envs).map_err(BuildError::new);

        let mut action = Action::Config;
        let mut copy_history = None;
        // The comment Docker commits: (message, double space after "#(nop)").
        let mut comment: Option<(String, bool)> = None;
        let mut run_probe_cmd: Option<Vec<String>> = None;
        let cfg = &mut cur.config;
        match &ins.kind {
            InstructionKind::Env(pairs) => {
                let mut expanded = Vec::new();
                for (k, v) in pairs {
                    expanded.push((expand(k)?, expand(v)?));
                }
                let mut msg = String::from("ENV");
                for (k, v) in &expanded {
                    msg.push_str(&format!(" {k}={v}"));
                    cfg.set_env(k, v);
                }
                comment = Some((msg, true));
            }
            InstructionKind::Maintainer(m) => {
                cur.maintainer = Some(m.clone());
                comment = Some((format!("MAINTAINER {m}"), true));
            }
            InstructionKind::Label { labels, no_expand } => {
                let mut msg = String::from("LABEL");
                for (k, v) in labels {
                    let (k, v) = if *no_expand {
                        (k.clone(), v.clone())
                    } else {
                        (expand(k)?, expand(v)?)
                    };
                    msg.push_str(&format!(" {k}={v}"));
                    cfg.labels.get_or_insert_with(BTreeMap::new).insert(k, v);
                }
                comment = Some((msg, true));
            }
            InstructionKind::Copy {
                sources_and_dest,
                from,
                chown,
                chmod,
            } => {
                let from = match from {
                    Some(f) => Some(resolve_copy_from(f, &stage_names).map_err(|e| {
                        BuildError::new(format!("invalid from flag value {f}: {e}"))
                    })?),
                    None => None,
                };
                let (a, h) = copy_action(
                    "COPY",
                    sources_and_dest,
                    chown,
                    chmod,
                    from,
                    false,
                    cfg,
                    &expand,
                )?;
                action = a;
                copy_history = Some(h);
            }
            InstructionKind::Add {
                sources_and_dest,
                chown,
                chmod,
            } => {
                let (a, h) = copy_action(
                    "ADD",
                    sources_and_dest,
                    chown,
                    chmod,
                    None,
                    true,
                    cfg,
                    &expand,
                )?;
                action = a;
                copy_history = Some(h);
            }
            InstructionKind::Workdir(p) => {
                let p = expand(p)?;
                let wd = normalize_workdir(cfg.working_dir.as_deref().unwrap_or(""), &p)?;
                cfg.working_dir = Some(wd.clone());
                comment = Some((format!("WORKDIR {wd}"), false));
                action = Action::Workdir { path: wd };
            }
            InstructionKind::User(u) => {
                let u = expand(u)?;
                comment = Some((format!("USER {u}"), true));
                cfg.user = Some(u);
            }
            InstructionKind::Volume(vols) => {
                let mut out = Vec::new();
                for v in vols {
                    let v = expand(v)?;
                    if v.is_empty() {
                        return Err(BuildError::new(
                            "VOLUME specified can not be an empty string",
                        ));
                    }
                    cfg.volumes
                        .get_or_insert_with(BTreeMap::new)
                        .insert(v.clone(), Empty {});
                    out.push(v);
                }
                comment = Some((format!("VOLUME {}", gofmt::list(&out)), true));
            }
            InstructionKind::StopSignal(s) => {
                let s = expand(s)?;
                parse_signal(&s).map_err(BuildError::new)?;
                comment = Some((format!("STOPSIGNAL {s}"), true));
                cfg.stop_signal = Some(s);
            }
            InstructionKind::Arg(pairs) => {
                let mut msg = String::from("ARG ");
                let mut expanded = Vec::new();
                for (k, v) in pairs {
                    let k = expand(k)?;
                    let v = match v {
                        Some(v) => Some(expand(v)?),
                        None => None,
                    };
                    expanded.push((k, v));
                }
                for (i, (k, v)) in expanded.into_iter().enumerate() {
                    if i > 0 {
                        msg.push(' ');
                    }
                    msg.push_str(&k);
                    if let Some(v) = &v {
                        msg.push('=');
                        msg.push_str(v);
                    }
                    cur.args.add_arg(&k, v);
                }
                comment = Some((msg, true));
            }
            InstructionKind::Expose(ports) => {
                let mut words = Vec::new();
                for p in ports {
                    words.extend(lex.process_words(p, &envs).map_err(BuildError::new)?);
                }
                for w in &words {
                    for key in parse_port_spec(w).map_err(BuildError::new)? {
                        cfg.exposed_ports
                            .get_or_insert_with(BTreeMap::new)
                            .insert(key, Empty {});
                    }
                }
                comment = Some((format!("EXPOSE {}", words.join(" ")), true));
            }
            InstructionKind::Run(cl) => {
                if let Some(f) = cl.buildkit_flags.first() {
                    return Err(BuildError::new(format!(
                        "the --{f} option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ to learn how to build images with BuildKit enabled"
                    )));
                }
                let argv = resolve_cmd_line(cl, cfg);
                if argv.is_empty() {
                    return Err(BuildError::new("RUN requires at least one argument"));
                }
                let build_args = cur.args.filter_allowed(&env_now);
                let mut save = argv.clone();
                if !build_args.is_empty() {
                    let mut kept: Vec<String> = build_args
                        .iter()
                        .filter(|e| {
                            cur.args
                                .is_referenced_or_not_builtin(e.split('=').next().unwrap_or(""))
                        })
                        .cloned()
                        .collect();
                    kept.sort();
                    let mut c = vec![format!("|{}", kept.len())];
                    c.extend(kept);
                    c.extend(argv.clone());
                    save = c;
                }
                let mut env = env_now.clone();
                env.extend(build_args);
                run_probe_cmd = Some(save);
                action = Action::Run { argv, env };
            }
            InstructionKind::Cmd(cl) => {
                let cmd = resolve_cmd_line(cl, cfg);
                comment = Some((format!("CMD {}", gofmt::quote_list(&cmd)), true));
                cfg.cmd = Some(cmd);
                cfg.args_escaped = false;
                if !cl.args.is_empty() {
                    cur.cmd_set = true;
                }
            }
            InstructionKind::Entrypoint(cl) => {
                let ep = resolve_cmd_line(cl, cfg);
                comment = Some((format!("ENTRYPOINT {}", gofmt::quote_list(&ep)), true));
                cfg.entrypoint = Some(ep);
                cfg.args_escaped = false;
                if !cur.cmd_set {
                    cfg.cmd = None;
                }
            }
            InstructionKind::Shell(sh) => {
                cfg.shell = Some(sh.clone());
                comment = Some((format!("SHELL {}", gofmt::list(sh)), true));
            }
            InstructionKind::Healthcheck(h) => {
                comment = Some((
                    format!(
                        "HEALTHCHECK &{{{} {} {} {} {}}}",
                        gofmt::quote_list(&h.test),
                        gofmt::quote(&gofmt::duration_string(h.interval)),
                        gofmt::quote(&gofmt::duration_string(h.timeout)),
                        gofmt::quote(&gofmt::duration_string(h.start_period)),
                        gofmt::quote_rune(h.retries)
                    ),
                    true,
                ));
                cfg.healthcheck = Some(h.clone());
            }
            InstructionKind::Onbuild(expr) => {
                cfg.on_build.get_or_insert_with(Vec::new).push(expr.clone());
                comment = Some((format!("ONBUILD {expr}"), true));
            }
        }

        let config = cur.config.clone();
        let shell = config.shell_or_default();
        // The container config Docker commits and compares for the cache.
        let mut probe = config.clone();
        let created_by;
        if let Some(save) = run_probe_cmd {
            created_by = save.join(" ");
            if !save.is_empty() {
                probe.entrypoint = None;
            }
            probe.cmd = Some(save);
        } else if let Some(h) = &copy_history {
            created_by = format!("{}<src>{}", h.prefix, h.suffix);
            let mut c = shell.clone();
            let body = created_by
                .strip_prefix(&format!("{} ", shell.join(" ")))
                .unwrap_or(&created_by)
                .to_string();
            c.push(body);
            probe.cmd = Some(c);
        } else {
            let (msg, double) = comment.unwrap_or_default();
            let mut c = shell.clone();
            if double {
                c.push("#(nop) ".into());
                c.push(msg);
            } else {
                c.push(format!("#(nop) {msg}"));
            }
            created_by = c.join(" ");
            probe.cmd = Some(c);
        }
        let cache_text = serde_json::to_string(&probe).unwrap_or_default();
        Ok(Step {
            number,
            stage: cur.index,
            display: ins.original.clone(),
            action,
            config,
            created_by,
            cache_text,
            is_last_of_stage: false,
            author: cur.maintainer.clone(),
            trigger: false,
            preface: None,
            copy_history,
        })
    }
}

/// `resolveCmdLine` (Linux).
fn resolve_cmd_line(cl: &CmdLine, cfg: &ImageConfig) -> Vec<String> {
    if cl.args.is_empty() {
        return Vec::new();
    }
    if cl.prepend_shell {
        let mut v = cfg.shell_or_default();
        v.extend(cl.args.iter().cloned());
        v
    } else {
        cl.args.clone()
    }
}

#[allow(clippy::too_many_arguments)]
fn copy_action(
    name: &str,
    sources_and_dest: &[String],
    chown: &Option<String>,
    chmod: &Option<String>,
    from: Option<CopyFrom>,
    add: bool,
    cfg: &ImageConfig,
    expand: &dyn Fn(&str) -> Result<String, BuildError>,
) -> Result<(Action, CopyHistory), BuildError> {
    let mut words = Vec::new();
    for w in sources_and_dest {
        words.push(expand(w)?);
    }
    let chown = match chown {
        Some(c) => Some(expand(c)?).filter(|c| !c.is_empty()),
        None => None,
    };
    let chmod = match chmod {
        Some(m) => Some(
            u32::from_str_radix(m, 8)
                .map_err(|_| BuildError::new(format!("invalid chmod parameter: {m}")))?,
        ),
        None => None,
    };
    let raw_dest = words.pop().unwrap_or_default();
    let dest = normalize_dest(cfg.working_dir.as_deref().unwrap_or(""), &raw_dest);
    let shell = cfg.shell_or_default().join(" ");
    let chown_comment = chown
        .as_ref()
        .map(|c| format!("--chown={c}"))
        .unwrap_or_default();
    let history = CopyHistory {
        prefix: format!("{shell} #(nop) {name} {chown_comment}"),
        suffix: format!(" in {raw_dest} "),
    };
    Ok((
        Action::Copy {
            from,
            sources: words,
            dest,
            chown,
            chmod,
            add,
        },
        history,
    ))
}

/// Docker's `stagesBuildResults.get` for COPY --from: a completed stage by name, else by
/// index, else an image.
fn resolve_copy_from(from: &str, completed: &[Option<String>]) -> Result<CopyFrom, String> {
    let l = from.to_lowercase();
    if let Some(i) = completed
        .iter()
        .position(|n| n.as_deref() == Some(l.as_str()))
    {
        return Ok(CopyFrom::Stage(i));
    }
    let Ok(ix) = from.parse::<i64>() else {
        return Ok(CopyFrom::Image(from.to_string()));
    };
    if ix == completed.len() as i64 {
        return Err("refers to current build stage".into());
    }
    if ix < 0 || ix > completed.len() as i64 {
        return Err("index out of bounds".into());
    }
    Ok(CopyFrom::Stage(ix as usize))
}

/// Go `path.Clean`.
pub fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            x => out.push(x),
        }
    }
    let joined = out.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".into()
    } else {
        joined
    }
}

/// Docker's `normalizeWorkdir` (Linux): a relative path is joined to the current one and
/// cleaned; an absolute one is kept as written.
pub fn normalize_workdir(current: &str, requested: &str) -> Result<String, BuildError> {
    if requested.is_empty() {
        return Err(BuildError::new("cannot normalize nothing"));
    }
    if requested.starts_with('/') {
        return Ok(requested.to_string());
    }
    Ok(clean_path(&format!("/{current}/{requested}")))
}

/// Docker's `normalizeDest`: a relative destination is joined to WORKDIR, keeping a
/// trailing `/`; an absolute one is kept as written.
pub fn normalize_dest(workdir: &str, requested: &str) -> String {
    if requested.starts_with('/') {
        return requested.to_string();
    }
    let mut d = clean_path(&format!("/{workdir}/{requested}"));
    if requested.ends_with('/') && !d.ends_with('/') {
        d.push('/');
    }
    d
}

/// Linux signal names (without `SIG`) and numbers, as Docker's `signal.SignalMap`.
const SIGNALS: &[(&str, i32)] = &[
    ("ABRT", 6),
    ("ALRM", 14),
    ("BUS", 7),
    ("CHLD", 17),
    ("CLD", 17),
    ("CONT", 18),
    ("FPE", 8),
    ("HUP", 1),
    ("ILL", 4),
    ("INT", 2),
    ("IO", 29),
    ("IOT", 6),
    ("KILL", 9),
    ("PIPE", 13),
    ("POLL", 29),
    ("PROF", 27),
    ("PWR", 30),
    ("QUIT", 3),
    ("SEGV", 11),
    ("STKFLT", 16),
    ("STOP", 19),
    ("SYS", 31),
    ("TERM", 15),
    ("TRAP", 5),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("USR1", 10),
    ("USR2", 12),
    ("VTALRM", 26),
    ("WINCH", 28),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("RTMIN", 34),
    ("RTMAX", 64),
];

/// Docker's `signal.ParseSignal`: a number, or a name with or without `SIG`
/// (`RTMIN+n`, `RTMAX-n` too). Error: "Invalid signal: X".
pub fn parse_signal(s: &str) -> Result<i32, String> {
    let invalid = || format!("Invalid signal: {s}");
    if let Ok(n) = s.parse::<i32>() {
        if n == 0 {
            return Err(invalid());
        }
        return Ok(n);
    }
    let up = s.to_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some((_, n)) = SIGNALS.iter().find(|(k, _)| *k == name) {
        return Ok(*n);
    }
    if let Some(off) = name.strip_prefix("RTMIN+") {
        if let Ok(o) = off.parse::<i32>() {
            if (1..=15).contains(&o) {
                return Ok(34 + o);
            }
        }
    }
    if let Some(off) = name.strip_prefix("RTMAX-") {
        if let Ok(o) = off.parse::<i32>() {
            if (1..=14).contains(&o) {
                return Ok(64 - o);
            }
        }
    }
    Err(invalid())
}

/// Docker's `nat.ParsePortSpec` for EXPOSE: `[ip:][hostPort:]port[-end][/proto]` to the
/// `"port/proto"` keys of `ExposedPorts`.
pub fn parse_port_spec(raw: &str) -> Result<Vec<String>, String> {
    let parts: Vec<&str> = raw.split(':').collect();
    let container = parts[parts.len() - 1];
    let host = if parts.len() >= 2 {
        parts[parts.len() - 2]
    } else {
        ""
    };
    let (proto, port) = {
        let pp: Vec<&str> = container.split('/').collect();
        if container.is_empty() || pp[0].is_empty() {
            ("", "")
        } else if pp.len() == 1 {
            ("tcp", container)
        } else if pp[1].is_empty() {
            ("tcp", pp[0])
        } else {
            (pp[1], pp[0])
        }
    };
    if port.is_empty() {
        return Err(format!("No port specified: {container}<empty>"));
    }
    let (start, end) =
        parse_port_range(port).ok_or_else(|| format!("Invalid containerPort: {port}"))?;
    if !host.is_empty() && parse_port_range(host).is_none() {
        return Err(format!("Invalid hostPort: {host}"));
    }
    let proto = proto.to_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("Invalid proto: {proto}"));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

fn parse_port_range(s: &str) -> Option<(u32, u32)> {
    let parse = |x: &str| x.parse::<u16>().ok().map(u32::from);
    match s.split_once('-') {
        None => parse(s).map(|p| (p, p)),
        Some((a, b)) => {
            let (a, b) = (parse(a)?, parse(b)?);
            (b >= a).then_some((a, b))
        }
    }
}
