//! Seccomp profiles in Docker's JSON format, turned into the OCI `linux.seccomp` of a container.
//!
//! The default profile is Docker's, kept as data: `crates/runtime/seccomp/default.json`
//! (moby/profiles seccomp v0.2.3, Apache-2.0; source commit and kernel coverage in
//! `crates/runtime/seccomp/README.md`). Its default action is `SCMP_ACT_ERRNO` with
//! `defaultErrnoRet` 1 (EPERM): an allow-list, with argument filters (`personality`,
//! `clone`, `socket`) and rules kept or dropped by the container's capabilities, the host's
//! architecture and the running kernel's version.
//!
//! [`Profile::parse`] reads a profile (the default one, or the content the docker CLI sends
//! for `--security-opt seccomp=PROFILE.json`) and refuses what is not Docker's format;
//! [`Profile::to_oci`] does what moby's `setupSeccomp` (profiles/seccomp/seccomp_linux.go)
//! does: the `archMap` entry of the host's architecture gives `architectures`, and a rule is
//! kept when its `includes` all hold (every listed cap in the bounding set, the host's arch
//! listed, kernel >= `minKernel`) and none of its `excludes` does.
//!
//! ```text
//!  default.json / custom JSON --Profile::parse--> Profile --to_oci(caps, Host)--> linux.seccomp
//! ```
//!
//! Pure: the caller passes the host's architecture and kernel version ([`Host`]).

use serde::Deserialize;
use serde_json::{json, Value};

/// Docker's default profile (moby/profiles seccomp v0.2.3), as shipped.
pub const DEFAULT_PROFILE_JSON: &str = include_str!("../seccomp/default.json");

/// The actions a profile may name (the OCI runtime spec's `LinuxSeccompAction`).
/// `SCMP_ACT_NOTIFY` needs a listener (`listenerPath`), which berth does not run: refused.
pub const ACTIONS: &[&str] = &[
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
];

/// The argument comparison operators (OCI `LinuxSeccompOperator`).
pub const OPERATORS: &[&str] = &[
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
];

/// The architectures a profile may name (OCI `Arch`).
pub const ARCHES: &[&str] = &[
    "SCMP_ARCH_NATIVE",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
];

/// The filter flags a profile may set (OCI `LinuxSeccompFilterFlag`).
pub const FLAGS: &[&str] = &[
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];

/// A profile that is not Docker's format, or that asks for what berth does not do; the
/// message is the one returned to the client (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProfileError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ProfileError> {
    Err(ProfileError(msg.into()))
}

/// A kernel version as profiles name it: `<kernel>.<major>` (`"4.8"`), compared on these
/// two numbers only, as moby does (`3.12.25-gentoo` equals `3.12`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion(pub u64, pub u64);

impl KernelVersion {
    /// The running kernel's release (`uname -r`, e.g. `6.18.44-fc`) as a version; `None`
    /// when it does not start with `<n>.<n>`.
    pub fn from_release(release: &str) -> Option<KernelVersion> {
        let mut it = release.split(|c: char| !c.is_ascii_digit());
        let k = it.next()?.parse().ok()?;
        let m = it.next()?.parse().ok()?;
        Some(KernelVersion(k, m))
    }

    /// moby's parser: exactly two dot-separated numbers below 256, not `0.0`.
    fn parse_profile(v: &str) -> Result<Option<KernelVersion>, ProfileError> {
        if v.is_empty() {
            return Ok(None);
        }
        let bad = |why: &str| {
            err(format!(
                "invalid kernel version: {v:?}, expected \"<kernel>.<major>\"{why}"
            ))
        };
        let parts: Vec<&str> = v.splitn(3, '.').collect();
        if parts.len() != 2 {
            return bad("");
        }
        let (Ok(k), Ok(m)) = (parts[0].parse::<u8>(), parts[1].parse::<u8>()) else {
            return bad("");
        };
        if k == 0 && m == 0 {
            return bad(": version cannot be 0.0");
        }
        Ok(Some(KernelVersion(k.into(), m.into())))
    }
}

/// What the profile's conditions are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The architecture in libseccomp's / Go's naming (`amd64`, `arm64`, `x86`...), as
    /// profiles name it in `includes.arches`.
    pub arch: String,
    /// The running kernel (`None`: unknown, every `minKernel` rule is then dropped from
    /// `includes` and kept by `excludes`).
    pub kernel: Option<KernelVersion>,
}

impl Host {
    /// The architecture berth was built for, and the given kernel.
    pub fn native(kernel: Option<KernelVersion>) -> Host {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "x86",
            "aarch64" => "arm64",
            "arm" => "arm",
            "riscv64" => "riscv64",
            "s390x" => "s390x",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "loongarch64" => "loong64",
            "mips64" if cfg!(target_endian = "little") => "mips64le",
            "mips64" => "mips64",
            other => other,
        };
        Host {
            arch: arch.to_string(),
            kernel,
        }
    }

    /// The `SCMP_ARCH_*` of the host, to find its `archMap` entry (moby's `nativeToSeccomp`).
    fn scmp_arch(&self) -> Option<&'static str> {
        Some(match self.arch.as_str() {
            "x86" => "SCMP_ARCH_X86",
            "amd64" => "SCMP_ARCH_X86_64",
            "arm" => "SCMP_ARCH_ARM",
            "arm64" => "SCMP_ARCH_AARCH64",
            "loong64" | "loongarch64" => "SCMP_ARCH_LOONGARCH64",
            "mips64" => "SCMP_ARCH_MIPS64",
            "mips64n32" => "SCMP_ARCH_MIPS64N32",
            "mipsel64" | "mips64le" => "SCMP_ARCH_MIPSEL64",
            "mips3l64n32" => "SCMP_ARCH_MIPSEL64N32",
            "mipsle" | "mipsel" => "SCMP_ARCH_MIPSEL",
            "ppc" => "SCMP_ARCH_PPC",
            "ppc64" => "SCMP_ARCH_PPC64",
            "ppc64le" => "SCMP_ARCH_PPC64LE",
            "riscv64" => "SCMP_ARCH_RISCV64",
            "s390" => "SCMP_ARCH_S390",
            "s390x" => "SCMP_ARCH_S390X",
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawProfile {
    #[serde(default)]
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    arch_map: Option<Vec<RawArch>>,
    #[serde(default)]
    flags: Option<Vec<String>>,
    #[serde(default)]
    listener_path: Option<String>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<RawSyscall>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawArch {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSyscall {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    names: Option<Vec<String>>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<RawArg>>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    includes: Option<RawFilter>,
    #[serde(default)]
    excludes: Option<RawFilter>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawArg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFilter {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// A condition of a rule: Docker's `Filter`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `CAP_*` names.
    pub caps: Vec<String>,
    /// Architectures in Go's naming (`amd64`, `s390x`...).
    pub arches: Vec<String>,
    pub min_kernel: Option<KernelVersion>,
}

/// One argument comparison of a rule (OCI `LinuxSeccompArg`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    /// Argument index, 0 to 5.
    pub index: u32,
    pub value: u64,
    /// The mask's comparand for `SCMP_CMP_MASKED_EQ`.
    pub value_two: u64,
    /// One of [`OPERATORS`].
    pub op: String,
}

/// One rule: the syscalls it names, its action, and when it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub names: Vec<String>,
    /// One of [`ACTIONS`].
    pub action: String,
    /// errno for `SCMP_ACT_ERRNO` / `SCMP_ACT_TRACE` (default EPERM).
    pub errno_ret: Option<u32>,
    pub args: Vec<Arg>,
    /// Kept only when all of these hold.
    pub includes: Filter,
    /// Dropped when any of these holds.
    pub excludes: Filter,
}

/// A seccomp profile in Docker's format, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Empty with no rules: the profile disables seccomp (as moby reads it).
    pub default_action: String,
    pub default_errno_ret: Option<u32>,
    /// Plain `architectures` list (exclusive with `arch_map`).
    pub architectures: Vec<String>,
    /// `archMap`: (architecture, sub-architectures).
    pub arch_map: Vec<(String, Vec<String>)>,
    pub flags: Vec<String>,
    pub rules: Vec<Rule>,
}

fn check_action(a: &str, what: &str) -> Result<(), ProfileError> {
    if a == "SCMP_ACT_NOTIFY" {
        return err(format!(
            "{what}: SCMP_ACT_NOTIFY is not supported by berth (it needs a seccomp agent listening on listenerPath)"
        ));
    }
    if !ACTIONS.contains(&a) {
        return err(format!(
            "{what}: unknown action {a:?} (expected one of {})",
            ACTIONS.join(", ")
        ));
    }
    Ok(())
}

fn check_arch(a: &str, what: &str) -> Result<(), ProfileError> {
    if !ARCHES.contains(&a) {
        return err(format!("{what}: unknown architecture {a:?}"));
    }
    Ok(())
}

fn filter(raw: Option<RawFilter>, what: &str) -> Result<Filter, ProfileError> {
    let Some(f) = raw else {
        return Ok(Filter::default());
    };
    let caps = f.caps.unwrap_or_default();
    for c in &caps {
        if !c.starts_with("CAP_") {
            return err(format!(
                "{what}.caps: {c:?} is not a capability name (CAP_...)"
            ));
        }
    }
    Ok(Filter {
        caps,
        arches: f.arches.unwrap_or_default(),
        min_kernel: match f.min_kernel {
            Some(v) => KernelVersion::parse_profile(&v)?,
            None => None,
        },
    })
}

impl Profile {
    /// Docker's default profile.
    pub fn docker_default() -> Profile {
        Profile::parse(DEFAULT_PROFILE_JSON).expect("the shipped default profile parses")
    }

    /// Reads a profile in Docker's JSON format. Errors name the part at fault: invalid JSON,
    /// unknown keys, both `name` and `names`, both `architectures` and `archMap`, unknown
    /// actions, operators, architectures or flags, an argument index above 5, a malformed
    /// `minKernel`, and `SCMP_ACT_NOTIFY` / `listenerPath` (no seccomp agent in berth).
    pub fn parse(text: &str) -> Result<Profile, ProfileError> {
        let raw: RawProfile = serde_json::from_str(text)
            .map_err(|e| ProfileError(format!("Decoding seccomp profile failed: {e}")))?;
        if raw.listener_path.as_deref().is_some_and(|p| !p.is_empty())
            || raw
                .listener_metadata
                .as_deref()
                .is_some_and(|p| !p.is_empty())
        {
            return err(
                "listenerPath: seccomp agents (SCMP_ACT_NOTIFY) are not supported by berth",
            );
        }
        if !raw.default_action.is_empty() {
            check_action(&raw.default_action, "defaultAction")?;
        }
        let architectures = raw.architectures.unwrap_or_default();
        let arch_map: Vec<(String, Vec<String>)> = raw
            .arch_map
            .unwrap_or_default()
            .into_iter()
            .map(|a| (a.architecture, a.sub_architectures.unwrap_or_default()))
            .collect();
        if !architectures.is_empty() && !arch_map.is_empty() {
            return err("both 'architectures' and 'archMap' are specified in the seccomp profile, use either 'architectures' or 'archMap'");
        }
        for a in &architectures {
            check_arch(a, "architectures")?;
        }
        for (a, subs) in &arch_map {
            check_arch(a, "archMap")?;
            for s in subs {
                check_arch(s, "archMap.subArchitectures")?;
            }
        }
        let flags = raw.flags.unwrap_or_default();
        for f in &flags {
            if !FLAGS.contains(&f.as_str()) {
                return err(format!("flags: unknown flag {f:?}"));
            }
        }
        let mut rules = Vec::new();
        for (i, s) in raw.syscalls.unwrap_or_default().into_iter().enumerate() {
            let what = format!("syscalls[{i}]");
            let mut names = s.names.unwrap_or_default();
            if let Some(n) = s.name.filter(|n| !n.is_empty()) {
                if !names.is_empty() {
                    return err("both 'name' and 'names' are specified in the seccomp profile, use either 'name' or 'names'");
                }
                names = vec![n];
            }
            check_action(&s.action, &format!("{what}.action"))?;
            let mut args = Vec::new();
            for a in s.args.unwrap_or_default() {
                if a.index > 5 {
                    return err(format!(
                        "{what}.args: index {} is out of range (0 to 5)",
                        a.index
                    ));
                }
                if !OPERATORS.contains(&a.op.as_str()) {
                    return err(format!("{what}.args: unknown operator {:?}", a.op));
                }
                args.push(Arg {
                    index: a.index,
                    value: a.value,
                    value_two: a.value_two,
                    op: a.op,
                });
            }
            let _ = s.comment;
            rules.push(Rule {
                names,
                action: s.action,
                errno_ret: s.errno_ret,
                args,
                includes: filter(s.includes, &format!("{what}.includes"))?,
                excludes: filter(s.excludes, &format!("{what}.excludes"))?,
            });
        }
        Ok(Profile {
            default_action: raw.default_action,
            default_errno_ret: raw.default_errno_ret,
            architectures,
            arch_map,
            flags,
            rules,
        })
    }

    /// Whether a rule applies to a container with bounding set `caps` on `host` (moby's
    /// `setupSeccomp` loop).
    pub fn rule_applies(rule: &Rule, caps: &[String], host: &Host) -> bool {
        let kernel_at_least = |v: KernelVersion| host.kernel.is_some_and(|k| k >= v);
        let ex = &rule.excludes;
        if ex.arches.contains(&host.arch)
            || ex.caps.iter().any(|c| caps.contains(c))
            || ex.min_kernel.is_some_and(kernel_at_least)
        {
            return false;
        }
        let inc = &rule.includes;
        if !inc.arches.is_empty() && !inc.arches.contains(&host.arch) {
            return false;
        }
        if !inc.caps.iter().all(|c| caps.contains(c)) {
            return false;
        }
        if let Some(v) = inc.min_kernel {
            if !kernel_at_least(v) {
                return false;
            }
        }
        true
    }

    /// The OCI `linux.seccomp` object for a container whose bounding set is `caps`, on
    /// `host`; `None` when the profile disables seccomp (no default action and no rules).
    pub fn to_oci(&self, caps: &[String], host: &Host) -> Option<Value> {
        if self.default_action.is_empty() && self.rules.is_empty() {
            return None;
        }
        let mut architectures = self.architectures.clone();
        if let Some(native) = host.scmp_arch() {
            if let Some((a, subs)) = self.arch_map.iter().find(|(a, _)| a == native) {
                architectures.push(a.clone());
                architectures.extend(subs.iter().cloned());
            }
        }
        let syscalls: Vec<Value> = self
            .rules
            .iter()
            .filter(|r| Profile::rule_applies(r, caps, host))
            .map(|r| {
                let mut v = json!({"names": r.names, "action": r.action});
                if let Some(e) = r.errno_ret {
                    v["errnoRet"] = json!(e);
                }
                if !r.args.is_empty() {
                    v["args"] = r
                        .args
                        .iter()
                        .map(|a| {
                            json!({"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op})
                        })
                        .collect();
                }
                v
            })
            .collect();
        let mut out = json!({
            // An empty default with rules: moby passes "" on and runc refuses it; ALLOW
            // is what an empty action means in libseccomp's profiles.
            "defaultAction": if self.default_action.is_empty() { "SCMP_ACT_ALLOW" } else { &self.default_action },
            "architectures": architectures,
            "syscalls": syscalls,
        });
        if let Some(e) = self.default_errno_ret {
            out["defaultErrnoRet"] = json!(e);
        }
        if !self.flags.is_empty() {
            out["flags"] = json!(self.flags);
        }
        Some(out)
    }
}

/// `linux.seccomp` as libcontainer 0.7 must be given it to mean what the OCI spec says.
///
/// The OCI runtime spec (and runc, and Docker's profiles) read `SCMP_CMP_MASKED_EQ` as
/// `(arg & value) == valueTwo`. libcontainer 0.7 (`seccomp/mod.rs`, `translate_op`) builds
/// libseccomp's comparison from `valueTwo` as the mask and `value` as the datum, i.e.
/// `(arg & valueTwo) == value`. Given Docker's clone rule as written (`value` 0x7E020000,
/// `valueTwo` 0), libseccomp masks the datum with the mask (0) and the rule matches every
/// clone: namespace flags pass. Swapping the two for `SCMP_CMP_MASKED_EQ` gives the spec's
/// meaning (tests/seccomp.rs checks that clone(CLONE_NEWUSER) is refused).
pub fn for_libcontainer(mut seccomp: Value) -> Value {
    if let Some(rules) = seccomp["syscalls"].as_array_mut() {
        for rule in rules {
            if let Some(args) = rule["args"].as_array_mut() {
                for a in args {
                    if a["op"] == "SCMP_CMP_MASKED_EQ" {
                        let value = a["value"].take();
                        let two = a["valueTwo"].take();
                        a["value"] = if two.is_null() { json!(0) } else { two };
                        a["valueTwo"] = value;
                    }
                }
            }
        }
    }
    seccomp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            arch: "amd64".into(),
            kernel: Some(KernelVersion(6, 1)),
        }
    }

    fn caps(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn rules_for<'a>(v: &'a Value, name: &str) -> Vec<&'a Value> {
        v["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == name))
            .collect()
    }

    #[test]
    fn the_default_profile_is_dockers_allow_list() {
        let p = Profile::docker_default();
        assert_eq!(p.default_action, "SCMP_ACT_ERRNO");
        assert_eq!(p.default_errno_ret, Some(1));
        let default_caps = caps(&crate::spec::DEFAULT_CAPS);
        let v = p.to_oci(&default_caps, &host()).unwrap();
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(v["defaultErrnoRet"], 1);
        assert_eq!(
            v["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        // Allowed outright.
        for s in ["read", "execve", "chroot", "arch_prctl", "modify_ldt"] {
            assert!(!rules_for(&v, s).is_empty(), "{s} should be allowed");
        }
        // Not in the allow-list for the default caps.
        for s in [
            "mount",
            "unshare",
            "setns",
            "syslog",
            "kcmp",
            "kexec_load",
            "add_key",
            "keyctl",
            "open_by_handle_at",
            "bpf",
            "perf_event_open",
            "clock_settime",
            "init_module",
            "reboot",
            "acct",
            "iopl",
            "mbind",
            "s390_runtime_instr",
            "userfaultfd",
        ] {
            assert!(rules_for(&v, s).is_empty(), "{s} should be denied");
        }
        // personality only for Docker's five values.
        let pers: Vec<u64> = rules_for(&v, "personality")
            .iter()
            .map(|r| {
                assert_eq!(r["args"][0]["op"], "SCMP_CMP_EQ");
                r["args"][0]["value"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(pers, [0, 8, 0x20000, 0x20008, 0xffff_ffff]);
        // clone without namespace flags; clone3 answers ENOSYS so libc falls back to clone.
        let clone = rules_for(&v, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0]["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone[0]["args"][0]["value"], 0x7E02_0000);
        let clone3 = rules_for(&v, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0]["action"], "SCMP_ACT_ERRNO");
        assert_eq!(clone3[0]["errnoRet"], 38);
        // socket: everything but AF_VSOCK (40).
        let sock: Vec<(String, u64)> = rules_for(&v, "socket")
            .iter()
            .map(|r| {
                (
                    r["args"][0]["op"].as_str().unwrap().to_string(),
                    r["args"][0]["value"].as_u64().unwrap(),
                )
            })
            .collect();
        let want = [
            ("SCMP_CMP_LT", 38),
            ("SCMP_CMP_EQ", 39),
            ("SCMP_CMP_GT", 40),
        ];
        let want: Vec<(String, u64)> = want.iter().map(|(o, n)| (o.to_string(), *n)).collect();
        assert_eq!(sock, want);
        // The whole result is a valid OCI seccomp object.
        let _: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(v).unwrap();
    }

    #[test]
    fn capabilities_open_their_syscalls() {
        let p = Profile::docker_default();
        let mut c = caps(&crate::spec::DEFAULT_CAPS);
        c.push("CAP_SYS_ADMIN".into());
        let v = p.to_oci(&c, &host()).unwrap();
        for s in ["mount", "unshare", "setns", "clone3", "bpf", "syslog"] {
            let r = rules_for(&v, s);
            assert!(
                r.iter().any(|r| r["action"] == "SCMP_ACT_ALLOW"),
                "{s} with CAP_SYS_ADMIN"
            );
        }
        // clone is allowed whole, and the ENOSYS rule for clone3 is gone.
        assert!(rules_for(&v, "clone").iter().all(|r| r["args"].is_null()));
        assert!(rules_for(&v, "clone3")
            .iter()
            .all(|r| r["action"] == "SCMP_ACT_ALLOW"));
        for (cap, call) in [
            ("CAP_SYS_PTRACE", "kcmp"),
            ("CAP_SYSLOG", "syslog"),
            ("CAP_SYS_MODULE", "init_module"),
            ("CAP_SYS_TIME", "clock_settime"),
            ("CAP_SYS_BOOT", "reboot"),
            ("CAP_SYS_NICE", "mbind"),
            ("CAP_SYS_RAWIO", "iopl"),
            ("CAP_SYS_PACCT", "acct"),
            ("CAP_BPF", "bpf"),
            ("CAP_PERFMON", "perf_event_open"),
            ("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
            ("CAP_SYS_TTY_CONFIG", "vhangup"),
        ] {
            let without = p
                .to_oci(&caps(&crate::spec::DEFAULT_CAPS), &host())
                .unwrap();
            assert!(rules_for(&without, call).is_empty(), "{call} without {cap}");
            let mut c = caps(&crate::spec::DEFAULT_CAPS);
            c.push(cap.into());
            let with = p.to_oci(&c, &host()).unwrap();
            assert!(!rules_for(&with, call).is_empty(), "{call} with {cap}");
        }
        // chroot follows CAP_SYS_CHROOT (a default cap).
        let none = p.to_oci(&[], &host()).unwrap();
        assert!(rules_for(&none, "chroot").is_empty());
    }

    #[test]
    fn masked_eq_is_swapped_for_libcontainer() {
        let p = Profile::docker_default();
        let v = p
            .to_oci(&caps(&crate::spec::DEFAULT_CAPS), &host())
            .unwrap();
        let v = for_libcontainer(v);
        let clone = rules_for(&v, "clone");
        assert_eq!(clone[0]["args"][0]["value"], 0);
        assert_eq!(clone[0]["args"][0]["valueTwo"], 0x7E02_0000);
        // Other operators are left alone.
        let pers = rules_for(&v, "personality");
        assert_eq!(pers[1]["args"][0]["value"], 8);
    }

    #[test]
    fn arch_and_kernel_conditions() {
        let p = Profile::docker_default();
        let old = Host {
            arch: "amd64".into(),
            kernel: Some(KernelVersion(4, 4)),
        };
        let c = caps(&crate::spec::DEFAULT_CAPS);
        // ptrace is in the allow-list from 4.8 on (seccomp bypass fixed), not before.
        assert!(!rules_for(&p.to_oci(&c, &host()).unwrap(), "ptrace").is_empty());
        assert!(rules_for(&p.to_oci(&c, &old).unwrap(), "ptrace").is_empty());
        let arm = Host {
            arch: "arm64".into(),
            kernel: Some(KernelVersion(6, 1)),
        };
        let v = p.to_oci(&c, &arm).unwrap();
        assert_eq!(
            v["architectures"],
            json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
        );
        assert!(rules_for(&v, "arch_prctl").is_empty());
        assert!(!rules_for(&v, "breakpoint").is_empty());
        let s390 = Host {
            arch: "s390x".into(),
            kernel: None,
        };
        let v = p.to_oci(&c, &s390).unwrap();
        assert_eq!(rules_for(&v, "clone")[0]["args"][0]["index"], 1);
        assert_eq!(
            KernelVersion::from_release("6.18.44-fc-v669"),
            Some(KernelVersion(6, 18))
        );
        assert_eq!(
            KernelVersion::from_release("3.12-1-amd64"),
            Some(KernelVersion(3, 12))
        );
    }

    #[test]
    fn custom_profiles_in_dockers_format() {
        let p = Profile::parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
                "syscalls":[{"name":"mkdir","action":"SCMP_ACT_ERRNO","args":[]},
                            {"names":["mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13,
                             "comment":"x","includes":{"minKernel":"3.0"},"excludes":{}}]}"#,
        )
        .unwrap();
        let v = p.to_oci(&[], &host()).unwrap();
        assert_eq!(v["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(v["architectures"], json!(["SCMP_ARCH_X86_64"]));
        assert_eq!(v["syscalls"][0]["names"], json!(["mkdir"]));
        assert_eq!(v["syscalls"][1]["errnoRet"], 13);
        // A profile with nothing in it disables seccomp.
        assert!(Profile::parse("{}").unwrap().to_oci(&[], &host()).is_none());
        for (bad, msg) in [
            ("{", "Decoding seccomp profile failed"),
            (r#"{"defaultAction":"SCMP_ACT_NOPE"}"#, "unknown action"),
            (r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#, "SCMP_ACT_NOTIFY"),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/x"}"#,
                "listenerPath",
            ),
            (r#"{"defaultaction":"SCMP_ACT_ALLOW"}"#, "unknown field"),
            (
                r#"{"architectures":["SCMP_ARCH_X86"],"archMap":[{"architecture":"SCMP_ARCH_X86"}]}"#,
                "both 'architectures' and 'archMap'",
            ),
            (r#"{"architectures":["x86"]}"#, "unknown architecture"),
            (
                r#"{"syscalls":[{"name":"a","names":["b"],"action":"SCMP_ACT_ALLOW"}]}"#,
                "both 'name' and 'names'",
            ),
            (
                r#"{"syscalls":[{"names":["a"],"action":"SCMP_ACT_ALLOW","args":[{"index":6,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#,
                "index 6",
            ),
            (
                r#"{"syscalls":[{"names":["a"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":0,"op":"EQ"}]}]}"#,
                "unknown operator",
            ),
            (
                r#"{"syscalls":[{"names":["a"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4"}}]}"#,
                "invalid kernel version",
            ),
            (
                r#"{"syscalls":[{"names":["a"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"0.0"}}]}"#,
                "cannot be 0.0",
            ),
            (r#"{"flags":["SECCOMP_FILTER_FLAG_X"]}"#, "unknown flag"),
        ] {
            let e = Profile::parse(bad).unwrap_err().0;
            assert!(e.contains(msg), "{bad}: {e}");
        }
    }
}
