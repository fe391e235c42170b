//! A container's logging configuration (`HostConfig.LogConfig`): which driver keeps its
//! output and how that driver rotates it. Pure: validation, Docker's defaults and units.
//!
//! Owns the drivers berth implements and the options each accepts, with dockerd 20.10's
//! messages for what it refuses; the merge of a container's request with the daemon-wide
//! default (`--log-driver`, `--log-opt`) as dockerd does it; and the [`LogPolicy`] the shim
//! writes by. Does not own the files (see `rotate`) nor the record format (see `logs`).
//!
//! ```text
//!  HostConfig.LogConfig {Type, Config} --LogConfig::resolve(daemon default)--> LogConfig
//!       (shown back by inspect as given)                                          |
//!                                               LogConfig::policy() --> shim: LogPolicy
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A logging driver berth implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LogDriver {
    /// Docker's default: one JSON object per line (`{"log","stream","time"}`), readable by
    /// `docker logs`; no rotation unless `max-size` is given.
    #[default]
    #[serde(rename = "json-file")]
    JsonFile,
    /// Docker's `local` driver: a compact binary format that keeps the output's bytes exactly,
    /// rotated by default (20 MB per file, 5 files, older files gzip-compressed).
    #[serde(rename = "local")]
    Local,
    /// Nothing is kept; `docker logs` is refused.
    #[serde(rename = "none")]
    None,
}

impl LogDriver {
    /// Docker's name of the driver (`HostConfig.LogConfig.Type`, `docker info`).
    pub fn name(&self) -> &'static str {
        match self {
            LogDriver::JsonFile => "json-file",
            LogDriver::Local => "local",
            LogDriver::None => "none",
        }
    }

    /// The driver of a Docker name. The error is dockerd's answer for an unknown driver
    /// (it looks for a logging plugin of that name).
    pub fn parse(name: &str) -> Result<Self, LogConfigError> {
        match name {
            "json-file" => Ok(LogDriver::JsonFile),
            "local" => Ok(LogDriver::Local),
            "none" => Ok(LogDriver::None),
            other => Err(LogConfigError::UnknownDriver {
                name: other.to_string(),
            }),
        }
    }
}

/// Why a logging configuration is refused. The messages are dockerd 20.10's where dockerd
/// refuses the same input (it refuses bad values only at start, with the prefix "failed to
/// initialize logging driver: "; berth refuses them at create already).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogConfigError {
    #[error("error looking up logging plugin {name}: plugin \"{name}\" not found")]
    UnknownDriver { name: String },
    #[error("unknown log opt '{key}' for json-file log driver")]
    UnknownJsonFileOption { key: String },
    #[error("unknown log opt '{key}' for log driver local")]
    UnknownLocalOption { key: String },
    /// An option Docker's driver has that berth does not implement (refused, not ignored).
    #[error("log opt '{key}' of the {driver} log driver is not supported by berth")]
    Unsupported { driver: &'static str, key: String },
    #[error("logger: logging mode not supported: {mode}")]
    UnsupportedMode { mode: String },
    #[error("failed to initialize logging driver: invalid size: '{value}'")]
    InvalidSize { value: String },
    #[error("failed to initialize logging driver: max-size must be a positive number")]
    SizeNotPositive,
    #[error(
        "failed to initialize logging driver: strconv.Atoi: parsing \"{value}\": invalid syntax"
    )]
    InvalidMaxFile { value: String },
    #[error("failed to initialize logging driver: max-file cannot be less than 1")]
    MaxFileTooSmall,
    #[error("failed to initialize logging driver: strconv.ParseBool: parsing \"{value}\": invalid syntax")]
    InvalidBool { value: String },
    #[error("failed to initialize logging driver: compress cannot be true when max-file is less than 2 or max-size is not set")]
    CompressWithoutRotation,
}

/// A container's validated logging configuration: the driver and its options exactly as
/// given (after the daemon default is merged in), which inspect shows back. Persisted in the
/// container record (absent in records older than log drivers: json-file, no options).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogConfig {
    pub driver: LogDriver,
    /// `--log-opt key=value`.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// The on-disk record format of a driver that keeps logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// One JSON object per line, Docker's json-file shape (the output as a string: invalid
    /// UTF-8 becomes U+FFFD, as with Docker).
    #[default]
    JsonLines,
    /// Length-delimited binary frames holding the output's exact bytes (see `logs`).
    Binary,
}

/// When and how the shim rotates a log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// Rotate before a write would make the file larger than this many bytes; `None`: the
    /// file grows without bound.
    pub max_size: Option<u64>,
    /// Files kept, the live one included (at least 1; 1 means the file is started afresh).
    pub max_file: u32,
    /// Gzip rotated files (`<log>.1.gz`, ...).
    pub compress: bool,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_size: None,
            max_file: 1,
            compress: false,
        }
    }
}

/// How the shim writes a container's log: format and rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogPolicy {
    pub format: LogFormat,
    pub rotation: Rotation,
}

/// Options dockerd handles for every driver before the driver's own check.
const BUILT_IN_OPTIONS: [&str; 2] = ["mode", "max-buffer-size"];
/// Options of Docker's json-file driver berth does not implement (they add `attrs` to
/// records or set a tag).
const JSON_FILE_UNSUPPORTED: [&str; 5] = ["labels", "labels-regex", "env", "env-regex", "tag"];

/// Docker's `local` defaults: 20 MiB per file, 5 files, compressed.
pub const LOCAL_DEFAULT_MAX_SIZE: u64 = 20 * 1024 * 1024;
/// Docker's `local` default number of files.
pub const LOCAL_DEFAULT_MAX_FILE: u32 = 5;

impl LogConfig {
    /// A driver with its options, validated as dockerd validates them (and the values as the
    /// driver would parse them at start).
    pub fn new(driver: &str, options: BTreeMap<String, String>) -> Result<Self, LogConfigError> {
        let cfg = LogConfig {
            driver: LogDriver::parse(driver)?,
            options,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// dockerd's merge of a container's request with the daemon default: an empty type takes
    /// the default driver; when the driver is the default one, default options the request
    /// does not set are added. Then validated.
    pub fn resolve(
        driver: Option<&str>,
        options: BTreeMap<String, String>,
        default: &LogConfig,
    ) -> Result<Self, LogConfigError> {
        let driver = match driver {
            None | Some("") => default.driver,
            Some(name) => LogDriver::parse(name)?,
        };
        let mut options = options;
        if driver == default.driver {
            for (k, v) in &default.options {
                options.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let cfg = LogConfig { driver, options };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), LogConfigError> {
        // dockerd accepts any option for `none` (nothing reads them).
        if self.driver == LogDriver::None {
            return Ok(());
        }
        match self.options.get("mode").map(String::as_str) {
            None | Some("") | Some("blocking") => {}
            Some("non-blocking") => {
                return Err(LogConfigError::Unsupported {
                    driver: self.driver.name(),
                    key: "mode=non-blocking".into(),
                })
            }
            Some(other) => {
                return Err(LogConfigError::UnsupportedMode {
                    mode: other.to_string(),
                })
            }
        }
        for key in self.options.keys() {
            let key = key.as_str();
            if key == "max-buffer-size" {
                return Err(LogConfigError::Unsupported {
                    driver: self.driver.name(),
                    key: key.into(),
                });
            }
            if BUILT_IN_OPTIONS.contains(&key)
                || ["max-size", "max-file", "compress"].contains(&key)
            {
                continue;
            }
            return Err(match self.driver {
                LogDriver::JsonFile if JSON_FILE_UNSUPPORTED.contains(&key) => {
                    LogConfigError::Unsupported {
                        driver: "json-file",
                        key: key.into(),
                    }
                }
                LogDriver::JsonFile => LogConfigError::UnknownJsonFileOption { key: key.into() },
                _ => LogConfigError::UnknownLocalOption { key: key.into() },
            });
        }
        self.rotation().map(|_| ())
    }

    /// The rotation the options ask for (Docker's rules and defaults per driver).
    fn rotation(&self) -> Result<Rotation, LogConfigError> {
        let local = self.driver == LogDriver::Local;
        let max_size = match self.options.get("max-size") {
            Some(v) => {
                let n = parse_human_size(v)?;
                if n == 0 {
                    return Err(LogConfigError::SizeNotPositive);
                }
                Some(n)
            }
            None if local => Some(LOCAL_DEFAULT_MAX_SIZE),
            None => None,
        };
        let max_file = match self.options.get("max-file") {
            Some(v) => {
                let n: i64 = v
                    .parse()
                    .map_err(|_| LogConfigError::InvalidMaxFile { value: v.clone() })?;
                if n < 1 {
                    return Err(LogConfigError::MaxFileTooSmall);
                }
                u32::try_from(n).unwrap_or(u32::MAX)
            }
            None if local => LOCAL_DEFAULT_MAX_FILE,
            None => 1,
        };
        let compress = match self.options.get("compress") {
            Some(v) => parse_go_bool(v)?,
            None => local,
        };
        // json-file refuses compress without rotation; local just has nothing to compress.
        if compress && !local && (max_file < 2 || max_size.is_none()) {
            return Err(LogConfigError::CompressWithoutRotation);
        }
        Ok(Rotation {
            max_size,
            max_file,
            compress: compress && max_file >= 2,
        })
    }

    /// How the shim writes this configuration's log; `None` when the driver keeps nothing.
    pub fn policy(&self) -> Option<LogPolicy> {
        let format = match self.driver {
            LogDriver::None => return None,
            LogDriver::JsonFile => LogFormat::JsonLines,
            LogDriver::Local => LogFormat::Binary,
        };
        // Validated at creation; a record edited by hand falls back to no rotation.
        let rotation = self.rotation().unwrap_or_default();
        Some(LogPolicy { format, rotation })
    }
}

/// Docker's `units.FromHumanSize`: a decimal number with an optional decimal unit (`k`, `m`,
/// `g`, `t`, `p`, any case, optionally followed by `i` and/or `b`: `10k`, `10KB`, `1.5m`,
/// `20MiB` are all powers of 1000), in bytes.
pub fn parse_human_size(s: &str) -> Result<u64, LogConfigError> {
    let bad = || LogConfigError::InvalidSize { value: s.into() };
    let mut rest = s;
    if let Some(r) = rest.strip_suffix(['b', 'B']) {
        rest = r;
    }
    if let Some(r) = rest.strip_suffix(['i', 'I']) {
        rest = r;
    }
    let mut mult = 1f64;
    if let Some(c) = rest.chars().last() {
        let m = match c.to_ascii_lowercase() {
            'k' => 1e3,
            'm' => 1e6,
            'g' => 1e9,
            't' => 1e12,
            'p' => 1e15,
            _ => 1.0,
        };
        if m > 1.0 {
            mult = m;
            rest = &rest[..rest.len() - 1];
        }
    }
    let rest = rest.strip_suffix(' ').unwrap_or(rest);
    let valid = !rest.is_empty()
        && rest.chars().next().is_some_and(|c| c.is_ascii_digit())
        && rest.chars().all(|c| c.is_ascii_digit() || c == '.')
        && rest.matches('.').count() <= 1
        && !rest.ends_with('.');
    if !valid {
        return Err(bad());
    }
    let n: f64 = rest.parse().map_err(|_| bad())?;
    Ok((n * mult) as u64)
}

/// Go's `strconv.ParseBool`, which dockerd uses for boolean driver options (logging,
/// network): `1 t T TRUE true True` and `0 f F FALSE false False`; anything else `None`.
pub fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn parse_go_bool(s: &str) -> Result<bool, LogConfigError> {
    go_parse_bool(s).ok_or_else(|| LogConfigError::InvalidBool { value: s.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sizes_are_docker_decimal_units() {
        assert_eq!(parse_human_size("10k").unwrap(), 10_000);
        assert_eq!(parse_human_size("10KB").unwrap(), 10_000);
        assert_eq!(parse_human_size("20MiB").unwrap(), 20_000_000);
        assert_eq!(parse_human_size("1.5m").unwrap(), 1_500_000);
        assert_eq!(parse_human_size("123").unwrap(), 123);
        assert_eq!(parse_human_size("7b").unwrap(), 7);
        assert_eq!(parse_human_size("2 g").unwrap(), 2_000_000_000);
        for bad in ["abc", "", "-1", "1.2.3", "k", "10x", "1."] {
            assert_eq!(
                parse_human_size(bad),
                Err(LogConfigError::InvalidSize { value: bad.into() }),
                "{bad}"
            );
        }
    }

    #[test]
    fn drivers_and_options_are_checked_with_dockerds_messages() {
        let e = LogConfig::new("nosuch", BTreeMap::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "error looking up logging plugin nosuch: plugin \"nosuch\" not found"
        );
        let e = LogConfig::new("json-file", opts(&[("bogus", "1")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown log opt 'bogus' for json-file log driver"
        );
        let e = LogConfig::new("local", opts(&[("bogus", "1")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown log opt 'bogus' for log driver local"
        );
        // none takes anything, as with dockerd.
        assert!(LogConfig::new("none", opts(&[("bogus", "1")])).is_ok());
        let e = LogConfig::new("json-file", opts(&[("max-size", "abc")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to initialize logging driver: invalid size: 'abc'"
        );
        let e = LogConfig::new("json-file", opts(&[("max-size", "1k"), ("max-file", "0")]))
            .unwrap_err();
        assert_eq!(e, LogConfigError::MaxFileTooSmall);
        let e = LogConfig::new(
            "json-file",
            opts(&[("compress", "true"), ("max-size", "1k")]),
        )
        .unwrap_err();
        assert_eq!(e, LogConfigError::CompressWithoutRotation);
        let e = LogConfig::new("json-file", opts(&[("mode", "weird")])).unwrap_err();
        assert_eq!(e.to_string(), "logger: logging mode not supported: weird");
        assert!(matches!(
            LogConfig::new("json-file", opts(&[("tag", "x")])),
            Err(LogConfigError::Unsupported { .. })
        ));
    }

    #[test]
    fn policies_follow_docker_defaults() {
        let j = LogConfig::new("json-file", BTreeMap::new()).unwrap();
        assert_eq!(j.policy().unwrap().rotation, Rotation::default());
        let j = LogConfig::new(
            "json-file",
            opts(&[("max-size", "10k"), ("max-file", "3"), ("compress", "true")]),
        )
        .unwrap();
        assert_eq!(
            j.policy().unwrap(),
            LogPolicy {
                format: LogFormat::JsonLines,
                rotation: Rotation {
                    max_size: Some(10_000),
                    max_file: 3,
                    compress: true
                }
            }
        );
        let l = LogConfig::new("local", BTreeMap::new()).unwrap();
        assert_eq!(
            l.policy().unwrap(),
            LogPolicy {
                format: LogFormat::Binary,
                rotation: Rotation {
                    max_size: Some(LOCAL_DEFAULT_MAX_SIZE),
                    max_file: 5,
                    compress: true
                }
            }
        );
        assert_eq!(
            LogConfig::new("none", BTreeMap::new()).unwrap().policy(),
            None
        );
    }

    #[test]
    fn resolve_merges_the_daemon_default_as_dockerd() {
        let default = LogConfig::new("json-file", opts(&[("max-size", "1m")])).unwrap();
        // No type: the default driver with its options.
        let c = LogConfig::resolve(None, BTreeMap::new(), &default).unwrap();
        assert_eq!(c, default);
        // Same driver: the request's options win, missing ones come from the default.
        let c = LogConfig::resolve(
            Some("json-file"),
            opts(&[("max-size", "2k"), ("max-file", "2")]),
            &default,
        )
        .unwrap();
        assert_eq!(c.options, opts(&[("max-size", "2k"), ("max-file", "2")]));
        let c = LogConfig::resolve(Some(""), opts(&[("max-file", "2")]), &default).unwrap();
        assert_eq!(c.options, opts(&[("max-size", "1m"), ("max-file", "2")]));
        // Another driver: the default's options do not apply.
        let c = LogConfig::resolve(Some("local"), BTreeMap::new(), &default).unwrap();
        assert_eq!(c.driver, LogDriver::Local);
        assert!(c.options.is_empty());
    }
}
