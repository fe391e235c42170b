//! Health checks as dockerd runs them: the configuration (`Config.Healthcheck`, merged with
//! the image's), the state machine (probe results in; status, failing streak and the last
//! results out; time passed in) and the monitor that runs probes as execs in the container.
//! It does not own the container's lifecycle: the container service starts a monitor when
//! the container starts and stops it when the container stops, exits or goes away.
//!
//! ```text
//!  start_blocking / restart policy / recover --> start_health_monitor (one thread)
//!      every interval: probe = exec in the container (runtime.exec + exec_attach), killed
//!      after Timeout --> Health::record (pure) --> State.Health, health_status event
//!  stop / exit / remove --> stop_health_monitor --> Health::monitor_stopped (unhealthy)
//! ```

use std::io::Read;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth_runtime::protocol::FrameDecoder;
use berth_runtime::{AttachOptions, ExecOptions};
use bollard_stubs::models::HealthConfig;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::ContainerService;
use crate::error::ServiceError;
use crate::service::volumes::random_hex64;

/// Results kept in `State.Health.Log` (dockerd's `maxLogEntries`).
pub const MAX_LOG_ENTRIES: usize = 5;
/// Bytes of a probe's output kept (dockerd's `maxOutputLen`); more is cut and `...` added.
pub const MAX_OUTPUT_LEN: usize = 4096;
/// Defaults dockerd applies when a duration or the retries is 0.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_START_PERIOD: Duration = Duration::ZERO;
pub const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_RETRIES: u32 = 3;
/// The shortest duration dockerd accepts (other than 0, "inherit").
const MINIMUM_NS: i64 = 1_000_000;

/// A container's healthcheck as configured: Docker's `HealthConfig`. Durations are in
/// nanoseconds; 0 means "inherit from the image, else dockerd's default".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    /// `[]` inherit, `["NONE"]` disabled, `["CMD", arg...]`, `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    pub interval_ns: i64,
    pub timeout_ns: i64,
    pub start_period_ns: i64,
    pub start_interval_ns: i64,
    /// Consecutive failures that make the container unhealthy (0: inherit/default).
    pub retries: i64,
}

fn duration_or(ns: i64, default: Duration) -> Duration {
    if ns <= 0 {
        default
    } else {
        Duration::from_nanos(ns as u64)
    }
}

impl Healthcheck {
    /// From the create request's `Config.Healthcheck`. Errors (400) with dockerd's messages
    /// for durations under 1 ms or negative retries, and for a test of an unknown kind or
    /// without a command (dockerd would accept those and never probe).
    pub fn from_api(h: &HealthConfig) -> Result<Self, ServiceError> {
        let hc = Healthcheck {
            test: h.test.clone().unwrap_or_default(),
            interval_ns: h.interval.unwrap_or(0),
            timeout_ns: h.timeout.unwrap_or(0),
            start_period_ns: h.start_period.unwrap_or(0),
            start_interval_ns: h.start_interval.unwrap_or(0),
            retries: h.retries.unwrap_or(0),
        };
        hc.validate()?;
        Ok(hc)
    }

    fn validate(&self) -> Result<(), ServiceError> {
        for (name, ns) in [
            ("Interval", self.interval_ns),
            ("Timeout", self.timeout_ns),
            ("StartPeriod", self.start_period_ns),
            ("StartInterval", self.start_interval_ns),
        ] {
            if ns != 0 && ns < MINIMUM_NS {
                return Err(ServiceError::invalid(format!(
                    "{name} in Healthcheck cannot be less than 1ms"
                )));
            }
        }
        if self.retries < 0 {
            return Err(ServiceError::invalid(
                "Retries in Healthcheck cannot be negative",
            ));
        }
        match self.test.first().map(String::as_str) {
            None | Some("NONE") => Ok(()),
            Some("CMD") | Some("CMD-SHELL") if self.test.len() > 1 => Ok(()),
            Some(kind @ ("CMD" | "CMD-SHELL")) => Err(ServiceError::invalid(format!(
                "Healthcheck test {kind} needs a command"
            ))),
            Some(other) => Err(ServiceError::invalid(format!(
                "Unknown healthcheck type '{other}' (expected CMD, CMD-SHELL or NONE)"
            ))),
        }
    }

    /// From an image config's `Healthcheck` (the JSON of `docker image inspect`'s
    /// `Config.Healthcheck`); `None` if absent or malformed.
    pub fn from_image_config(config: Option<&Value>) -> Option<Self> {
        let h = config?.get("Healthcheck")?;
        if h.is_null() {
            return None;
        }
        let hc: HealthConfig = serde_json::from_value(h.clone()).ok()?;
        Self::from_api(&hc).ok()
    }

    /// dockerd's merge of the container's healthcheck with the image's: the container's
    /// fields win; a field left empty or 0 comes from the image.
    pub fn merged(user: Option<Self>, image: Option<Self>) -> Option<Self> {
        match (user, image) {
            (None, image) => image,
            (Some(u), None) => Some(u),
            (Some(mut u), Some(i)) => {
                if u.test.is_empty() {
                    u.test = i.test;
                }
                let inherit = |a: &mut i64, b: i64| {
                    if *a == 0 {
                        *a = b;
                    }
                };
                inherit(&mut u.interval_ns, i.interval_ns);
                inherit(&mut u.timeout_ns, i.timeout_ns);
                inherit(&mut u.start_period_ns, i.start_period_ns);
                inherit(&mut u.start_interval_ns, i.start_interval_ns);
                inherit(&mut u.retries, i.retries);
                Some(u)
            }
        }
    }

    /// Whether probes run (a test other than empty or `NONE`). Without one the container
    /// has no `State.Health`, as with dockerd.
    pub fn enabled(&self) -> bool {
        matches!(
            self.test.first().map(String::as_str),
            Some("CMD" | "CMD-SHELL")
        ) && self.test.len() > 1
    }

    /// The probe's command line: `CMD` arguments as given, `CMD-SHELL` under `shell`
    /// (the container's `Shell`, `/bin/sh -c` when empty). `None` when disabled.
    pub fn probe_command(&self, shell: &[String]) -> Option<Vec<String>> {
        if !self.enabled() {
            return None;
        }
        let rest = self.test[1..].to_vec();
        if self.test[0] == "CMD-SHELL" {
            let mut cmd: Vec<String> = if shell.is_empty() {
                vec!["/bin/sh".into(), "-c".into()]
            } else {
                shell.to_vec()
            };
            cmd.extend(rest);
            Some(cmd)
        } else {
            Some(rest)
        }
    }

    pub fn interval(&self) -> Duration {
        duration_or(self.interval_ns, DEFAULT_INTERVAL)
    }

    pub fn timeout(&self) -> Duration {
        duration_or(self.timeout_ns, DEFAULT_TIMEOUT)
    }

    pub fn start_period(&self) -> Duration {
        duration_or(self.start_period_ns, DEFAULT_START_PERIOD)
    }

    pub fn start_interval(&self) -> Duration {
        duration_or(self.start_interval_ns, DEFAULT_START_INTERVAL)
    }

    pub fn retries(&self) -> u32 {
        if self.retries <= 0 {
            DEFAULT_RETRIES
        } else {
            self.retries.min(u32::MAX as i64) as u32
        }
    }

    /// `Config.Healthcheck` as inspect shows it (zero fields left out, as Go's omitempty).
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        if !self.test.is_empty() {
            m.insert("Test".into(), json!(self.test));
        }
        for (k, v) in [
            ("Interval", self.interval_ns),
            ("Timeout", self.timeout_ns),
            ("StartPeriod", self.start_period_ns),
            ("StartInterval", self.start_interval_ns),
            ("Retries", self.retries),
        ] {
            if v != 0 {
                m.insert(k.into(), json!(v));
            }
        }
        Value::Object(m)
    }
}

/// `State.Health.Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthStatus {
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One probe's result, an entry of `State.Health.Log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// 0 healthy; anything else a failure (-1: the probe could not run or timed out).
    pub exit_code: i64,
    /// stdout and stderr, at most [`MAX_OUTPUT_LEN`] bytes then `...`.
    pub output: String,
}

/// `State.Health`: what the probes found so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    pub failing_streak: u32,
    /// The last [`MAX_LOG_ENTRIES`] results, oldest first.
    pub log: Vec<ProbeResult>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            status: HealthStatus::Starting,
            failing_streak: 0,
            log: Vec::new(),
        }
    }
}

impl Health {
    /// On every container start: `starting` with no failures; earlier results stay in the
    /// log (as dockerd keeps them).
    pub fn restart(&mut self) {
        self.status = HealthStatus::Starting;
        self.failing_streak = 0;
    }

    /// Takes one probe result for a container started at `started_at`. Returns the new
    /// status if it changed (dockerd then emits `health_status: <status>`).
    ///
    /// A success makes it healthy. A failure counts toward `retries` unless the container
    /// is still `starting` and the probe began within the start period.
    pub fn record(
        &mut self,
        hc: &Healthcheck,
        started_at: DateTime<Utc>,
        result: ProbeResult,
    ) -> Option<HealthStatus> {
        let old = self.status;
        let ok = result.exit_code == 0;
        let since_start = (result.start - started_at)
            .to_std()
            .unwrap_or(Duration::ZERO);
        if self.log.len() >= MAX_LOG_ENTRIES {
            self.log.drain(..self.log.len() + 1 - MAX_LOG_ENTRIES);
        }
        self.log.push(result);
        if ok {
            self.failing_streak = 0;
            self.status = HealthStatus::Healthy;
        } else if !(self.status == HealthStatus::Starting && since_start < hc.start_period()) {
            self.failing_streak += 1;
            if self.failing_streak >= hc.retries() {
                self.status = HealthStatus::Unhealthy;
            }
        }
        (self.status != old).then_some(self.status)
    }

    /// The monitor stopped (the container stopped or exited): dockerd reports `unhealthy`
    /// from then on, without an event.
    pub fn monitor_stopped(&mut self) {
        self.status = HealthStatus::Unhealthy;
    }

    /// How long to wait before the next probe: the start interval while `starting` within
    /// the start period, the interval otherwise.
    pub fn next_delay(
        &self,
        hc: &Healthcheck,
        started_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Duration {
        let since_start = (now - started_at).to_std().unwrap_or(Duration::ZERO);
        if since_start < hc.start_period() && self.status == HealthStatus::Starting {
            hc.start_interval()
        } else {
            hc.interval()
        }
    }

    /// `State.Health` as inspect shows it.
    pub fn to_json(&self) -> Value {
        let ts = go_time;
        json!({
            "Status": self.status.as_str(),
            "FailingStreak": self.failing_streak,
            "Log": self.log.iter().map(|r| json!({
                "Start": ts(r.start), "End": ts(r.end),
                "ExitCode": r.exit_code, "Output": r.output,
            })).collect::<Vec<_>>(),
        })
    }

    /// The part of `docker ps`'s Status in parentheses: `health: starting`, `healthy`,
    /// `unhealthy`.
    pub fn ps_text(&self) -> &'static str {
        match self.status {
            HealthStatus::Starting => "health: starting",
            s => s.as_str(),
        }
    }
}

/// A probe's output as dockerd keeps it: the first [`MAX_OUTPUT_LEN`] bytes, `...` when
/// more came; invalid UTF-8 replaced.
#[derive(Debug, Default)]
pub struct ProbeOutput {
    buf: Vec<u8>,
    truncated: bool,
}

impl ProbeOutput {
    pub fn push(&mut self, data: &[u8]) {
        let keep = MAX_OUTPUT_LEN
            .saturating_sub(self.buf.len())
            .min(data.len());
        self.buf.extend_from_slice(&data[..keep]);
        self.truncated |= keep < data.len();
    }

    pub fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.buf).into_owned();
        if self.truncated {
            s.push_str("...");
        }
        s
    }
}

/// A time as Go's JSON encoding writes it (RFC 3339 with nanoseconds, trailing zeros of the
/// fraction dropped): `2026-11-30T22:04:31.16204133Z`.
pub fn go_time(t: DateTime<Utc>) -> String {
    let s = t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    match s.split_once('.') {
        Some((secs, frac)) => {
            let digits = frac.trim_end_matches('Z').trim_end_matches('0');
            if digits.is_empty() {
                format!("{secs}Z")
            } else {
                format!("{secs}.{digits}Z")
            }
        }
        None => s,
    }
}

/// Go's `time.Duration.String()`: `500ms`, `30s`, `1m0s`, `1h2m3.5s`.
pub fn go_duration(d: Duration) -> String {
    fn frac(v: u128, unit: u128) -> String {
        let (int, rem) = (v / unit, v % unit);
        if rem == 0 {
            return int.to_string();
        }
        let width = unit.to_string().len() - 1;
        let digits = format!("{rem:0width$}");
        format!("{int}.{}", digits.trim_end_matches('0'))
    }
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 1_000_000));
    }
    let (h, m) = (ns / 3_600_000_000_000, (ns / 60_000_000_000) % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{}s", frac(ns % 60_000_000_000, 1_000_000_000)));
    out
}

/// The stop handle of a running monitor, kept in the container table.
#[derive(Debug)]
pub(super) struct MonitorHandle {
    /// Tells the monitor apart from a later one of the same container.
    pub generation: u64,
    /// Dropped to stop the monitor (its receiver then sees a disconnect).
    _stop: mpsc::Sender<()>,
}

static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl ContainerService {
    /// Starts the health monitor of a container that just started (or that runs when the
    /// daemon starts); `reset`: its health resets to `starting`, as dockerd's does in both
    /// cases (not on unpause, which only resumes probing). No-op without an enabled check.
    pub(super) fn start_health_monitor(&self, id: &str, reset: bool) {
        let Some(rec) = self.table().records.get(id).cloned() else {
            return;
        };
        let Some(hc) = rec.healthcheck.clone().filter(Healthcheck::enabled) else {
            return;
        };
        let Some(cmd) = hc.probe_command(&rec.shell) else {
            return;
        };
        let (tx, rx) = mpsc::channel();
        let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut t = self.table();
            t.health_monitors.insert(
                id.to_string(),
                MonitorHandle {
                    generation,
                    _stop: tx,
                },
            );
        }
        self.update(id, |r| {
            let h = r.state.health.get_or_insert_with(Health::default);
            if reset {
                h.restart();
            }
        });
        let svc = self.clone();
        let id = id.to_string();
        std::thread::Builder::new()
            .name(format!("health-{}", &id[..12.min(id.len())]))
            .spawn(move || svc.health_monitor(&id, generation, rx, hc, cmd))
            .expect("spawn health monitor thread");
    }

    /// Stops a container's health monitor (stop, exit, removal); its health then reads
    /// `unhealthy`, as dockerd's does.
    pub(super) fn stop_health_monitor(&self, id: &str) {
        let changed = {
            let mut t = self.table();
            t.health_monitors.remove(id);
            match t.records.get_mut(id).and_then(|r| r.state.health.as_mut()) {
                Some(h) if h.status != HealthStatus::Unhealthy => {
                    h.monitor_stopped();
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.update(id, |_| {});
        }
    }

    fn health_monitor(
        &self,
        id: &str,
        generation: u64,
        stop: mpsc::Receiver<()>,
        hc: Healthcheck,
        cmd: Vec<String>,
    ) {
        let mut leftovers: Vec<String> = Vec::new();
        loop {
            let delay = {
                let t = self.table();
                let Some(r) = t.records.get(id) else { break };
                let started = DateTime::parse_from_rfc3339(&r.state.started_at)
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or_else(|_| Utc::now());
                r.state
                    .health
                    .as_ref()
                    .map_or(hc.interval(), |h| h.next_delay(&hc, started, Utc::now()))
            };
            match stop.recv_timeout(delay) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                _ => break,
            }
            let result = self.run_probe(id, &cmd, hc.timeout(), &mut leftovers);
            if !self.apply_probe_result(id, generation, &hc, result) {
                break;
            }
        }
        // Finished probes' exec records; a shim still draining is left for the runtime's
        // container removal.
        for rid in leftovers {
            let _ = self.inner.runtime.exec_remove(id, &rid);
        }
    }

    /// Records `result` if this monitor is still the container's; false when it is not
    /// (the monitor then ends).
    fn apply_probe_result(
        &self,
        id: &str,
        generation: u64,
        hc: &Healthcheck,
        result: ProbeResult,
    ) -> bool {
        let (rec, changed) = {
            let mut t = self.table();
            if t.health_monitors.get(id).map(|m| m.generation) != Some(generation) {
                return false;
            }
            let Some(r) = t.records.get_mut(id) else {
                return false;
            };
            let started = DateTime::parse_from_rfc3339(&r.state.started_at)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(result.start);
            let health = r.state.health.get_or_insert_with(Health::default);
            let changed = health.record(hc, started, result);
            (r.clone(), changed)
        };
        if let Err(e) = self.inner.store.put(crate::store::CONTAINERS, id, &rec) {
            tracing::error!(container = %id, error = %e, "persisting health state");
        }
        if let Some(s) = changed {
            self.event(&format!("health_status: {}", s.as_str()), &rec, &[]);
        }
        true
    }

    /// Runs one probe as an exec in the container, as dockerd does (with its
    /// `exec_create`/`exec_start`/`exec_die` events). A probe that outlives `timeout` is
    /// killed and counts as failed with dockerd's message.
    fn run_probe(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
        leftovers: &mut Vec<String>,
    ) -> ProbeResult {
        let start = Utc::now();
        let deadline = Instant::now() + timeout;
        let failed = |output: String| ProbeResult {
            start,
            end: Utc::now(),
            exit_code: -1,
            output,
        };
        let Ok(rec) = self.get(id) else {
            return failed(format!("No such container: {id}"));
        };
        let exec_id = random_hex64();
        let what = cmd.join(" ");
        let exec_attr = [("execID", exec_id.clone())];
        self.event(&format!("exec_create: {what}"), &rec, &exec_attr);
        let rt = &self.inner.runtime;
        let opts = ExecOptions {
            cmd: cmd.to_vec(),
            env: Vec::new(),
            working_dir: None,
            user: None,
            tty: false,
            open_stdin: false,
            detached: false,
        };
        let rid = match rt.exec(id, &opts) {
            Ok(r) => r,
            Err(e) => return failed(e.to_string()),
        };
        self.event(&format!("exec_start: {what}"), &rec, &exec_attr);
        let mut out = ProbeOutput::default();
        let mut in_time = true;
        if let Ok(mut s) = rt.exec_attach(
            id,
            &rid,
            AttachOptions {
                stdin: false,
                stdout: true,
                stderr: true,
            },
        ) {
            let mut dec = FrameDecoder::default();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    in_time = false;
                    break;
                }
                let _ = s.set_read_timeout(Some(left));
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        dec.push(&buf[..n]);
                        while let Ok(Some((_, payload))) = dec.next_frame() {
                            out.push(&payload);
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        in_time = false;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let exit = if in_time && !left.is_zero() {
            rt.exec_wait(id, &rid, Some(left)).ok().flatten()
        } else {
            None
        };
        let result = match exit {
            Some(e) => {
                self.event(
                    "exec_die",
                    &rec,
                    &[("execID", exec_id), ("exitCode", e.code.to_string())],
                );
                ProbeResult {
                    start,
                    end: Utc::now(),
                    exit_code: e.code as i64,
                    output: out.text(),
                }
            }
            None => {
                let result = failed(format!(
                    "Health check exceeded timeout ({})",
                    go_duration(timeout)
                ));
                let _ = rt.exec_kill(id, &rid, libc::SIGKILL);
                if let Ok(Some(e)) = rt.exec_wait(id, &rid, Some(Duration::from_secs(10))) {
                    self.event(
                        "exec_die",
                        &rec,
                        &[("execID", exec_id), ("exitCode", e.code.to_string())],
                    );
                }
                result
            }
        };
        leftovers.push(rid);
        leftovers.retain(|r| !matches!(rt.exec_remove(id, r), Ok(true)));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn probe(start: i64, code: i64) -> ProbeResult {
        ProbeResult {
            start: at(start),
            end: at(start),
            exit_code: code,
            output: String::new(),
        }
    }

    fn check(retries: i64, start_period_s: i64) -> Healthcheck {
        Healthcheck {
            test: vec!["CMD-SHELL".into(), "test -f /tmp/ok".into()],
            interval_ns: 1_000_000_000,
            retries,
            start_period_ns: start_period_s * 1_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn failures_make_it_unhealthy_after_retries_and_a_success_heals() {
        let hc = check(2, 0);
        let mut h = Health::default();
        assert_eq!(h.record(&hc, at(0), probe(1, 1)), None);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Starting, 1));
        assert_eq!(
            h.record(&hc, at(0), probe(2, 1)),
            Some(HealthStatus::Unhealthy)
        );
        assert_eq!(h.record(&hc, at(0), probe(3, 1)), None);
        assert_eq!(h.failing_streak, 3);
        assert_eq!(
            h.record(&hc, at(0), probe(4, 0)),
            Some(HealthStatus::Healthy)
        );
        assert_eq!(h.failing_streak, 0);
        assert_eq!(h.ps_text(), "healthy");
    }

    #[test]
    fn default_retries_are_three() {
        let hc = check(0, 0);
        let mut h = Health::default();
        h.record(&hc, at(0), probe(1, 2));
        h.record(&hc, at(0), probe(2, -1));
        assert_eq!(h.status, HealthStatus::Starting);
        assert_eq!(
            h.record(&hc, at(0), probe(3, 1)),
            Some(HealthStatus::Unhealthy)
        );
    }

    #[test]
    fn failures_in_the_start_period_do_not_count_until_a_success() {
        let hc = check(1, 10);
        let mut h = Health::default();
        assert_eq!(h.record(&hc, at(0), probe(5, 1)), None);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Starting, 0));
        // After the start period a failure counts.
        assert_eq!(
            h.record(&hc, at(0), probe(10, 1)),
            Some(HealthStatus::Unhealthy)
        );
        // Once healthy, failures count even within the start period.
        let mut h = Health::default();
        h.record(&hc, at(0), probe(1, 0));
        assert_eq!(
            h.record(&hc, at(0), probe(2, 1)),
            Some(HealthStatus::Unhealthy)
        );
    }

    #[test]
    fn the_log_keeps_the_last_five_results() {
        let hc = check(100, 0);
        let mut h = Health::default();
        for i in 0..8 {
            h.record(&hc, at(0), probe(i, 1));
        }
        assert_eq!(h.log.len(), MAX_LOG_ENTRIES);
        assert_eq!(h.log[0].start, at(3));
        assert_eq!(h.log[4].start, at(7));
        let j = h.to_json();
        assert_eq!(j["Log"].as_array().unwrap().len(), 5);
        assert_eq!(j["FailingStreak"], 8);
        assert_eq!(j["Status"], "starting");
        assert_eq!(j["Log"][0]["ExitCode"], 1);
    }

    #[test]
    fn restart_and_stop_transitions() {
        let hc = check(1, 0);
        let mut h = Health::default();
        h.record(&hc, at(0), probe(1, 1));
        h.restart();
        assert_eq!(
            (h.status, h.failing_streak, h.log.len()),
            (HealthStatus::Starting, 0, 1)
        );
        assert_eq!(h.ps_text(), "health: starting");
        h.monitor_stopped();
        assert_eq!(h.ps_text(), "unhealthy");
    }

    #[test]
    fn start_interval_applies_while_starting_within_the_start_period() {
        let mut hc = check(3, 60);
        hc.interval_ns = 30_000_000_000;
        let mut h = Health::default();
        assert_eq!(h.next_delay(&hc, at(0), at(1)), DEFAULT_START_INTERVAL);
        assert_eq!(h.next_delay(&hc, at(0), at(61)), Duration::from_secs(30));
        h.record(&hc, at(0), probe(2, 0));
        assert_eq!(h.next_delay(&hc, at(0), at(3)), Duration::from_secs(30));
        let no_period = check(3, 0);
        assert_eq!(
            Health::default().next_delay(&no_period, at(0), at(0)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn config_validates_merges_and_builds_the_probe() {
        let api = |test: &[&str], interval: i64, retries: i64| HealthConfig {
            test: Some(test.iter().map(|s| s.to_string()).collect()),
            interval: Some(interval),
            retries: Some(retries),
            ..Default::default()
        };
        let e = Healthcheck::from_api(&api(&["CMD", "true"], 5, 0)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Interval in Healthcheck cannot be less than 1ms"
        );
        let e = Healthcheck::from_api(&api(&["CMD", "true"], 0, -1)).unwrap_err();
        assert_eq!(e.to_string(), "Retries in Healthcheck cannot be negative");
        assert!(Healthcheck::from_api(&api(&["BOGUS", "x"], 0, 0)).is_err());
        assert!(Healthcheck::from_api(&api(&["CMD"], 0, 0)).is_err());

        let image = Healthcheck {
            test: vec!["CMD".into(), "true".into()],
            interval_ns: 2_000_000_000,
            retries: 7,
            ..Default::default()
        };
        let user = Healthcheck::from_api(&api(&[], 1_000_000_000, 0)).unwrap();
        let m = Healthcheck::merged(Some(user), Some(image.clone())).unwrap();
        assert_eq!(m.test, image.test);
        assert_eq!((m.interval_ns, m.retries), (1_000_000_000, 7));
        assert_eq!(m.probe_command(&[]), Some(vec!["true".to_string()]));
        let none = Healthcheck::from_api(&api(&["NONE"], 0, 0)).unwrap();
        let m = Healthcheck::merged(Some(none), Some(image.clone())).unwrap();
        assert!(!m.enabled());
        assert_eq!(m.probe_command(&[]), None);
        assert_eq!(Healthcheck::merged(None, Some(image.clone())), Some(image));

        let shell = check(0, 0);
        assert_eq!(
            shell.probe_command(&[]).unwrap(),
            ["/bin/sh", "-c", "test -f /tmp/ok"]
        );
        assert_eq!(
            shell.to_json(),
            json!({"Test": ["CMD-SHELL", "test -f /tmp/ok"], "Interval": 1_000_000_000})
        );
        let from_image = Healthcheck::from_image_config(Some(
            &json!({"Healthcheck": {"Test": ["CMD-SHELL", "true"], "Retries": 2}}),
        ))
        .unwrap();
        assert_eq!(from_image.retries(), 2);
        assert_eq!(from_image.timeout(), DEFAULT_TIMEOUT);
    }

    #[test]
    fn output_is_cut_as_dockerd_cuts_it() {
        let mut o = ProbeOutput::default();
        o.push(b"hi\n");
        assert_eq!(o.text(), "hi\n");
        o.push(&vec![b'x'; MAX_OUTPUT_LEN]);
        let t = o.text();
        assert_eq!(t.len(), MAX_OUTPUT_LEN + 3);
        assert!(t.ends_with("x..."));
    }

    #[test]
    fn times_print_as_go_prints_them() {
        let t = DateTime::from_timestamp(1_700_000_000, 162_041_330).unwrap();
        assert_eq!(go_time(t), "2023-11-14T22:13:20.16204133Z");
        assert_eq!(go_time(at(0)), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn durations_print_as_go_prints_them() {
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_secs(60)), "1m0s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_nanos(999)), "999ns");
    }
}
