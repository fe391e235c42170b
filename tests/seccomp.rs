//! Seccomp, capabilities and `--privileged` through the real docker CLI: Docker's default
//! profile (an allow-list, kept as data in crates/runtime/seccomp/default.json) against
//! `--security-opt seccomp=unconfined`, a custom profile, and `--privileged`.
//!
//! The table tests run a small static program (tests/fixtures/seccomp/probe.c, built here
//! with gcc and libseccomp.a, copied into a busybox image with `docker build`) that makes
//! syscalls inside the container and prints each answer. Expectations come from the
//! profile itself (berth_runtime::seccomp computes which rules apply for a capability
//! set): every syscall the profile names, class by class, plus the ones it leaves out.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use berth_runtime::seccomp::{Host, KernelVersion, Profile};
use berth_testkit::daemon::DockerEnv;

type Env = DockerEnv;

fn unique(prefix: &str) -> String {
    let n: u32 = std::process::id()
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0));
    format!("{prefix}{n:x}")
}

/// `docker run --rm --network none ARGS...`: (exit code, stdout, stderr).
fn run(e: &Env, args: &[&str]) -> Result<(i32, String, String)> {
    let mut a = vec!["run", "--rm", "--network", "none"];
    a.extend_from_slice(args);
    let out = e.d.docker(&a)?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Builds the probe image: busybox + /probe (static) + util-linux's `setarch` with the
/// two libraries it needs, so `setarch -R` is the real one.
fn probe_image(e: &Env) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/seccomp/probe.c");
    let st = Command::new("gcc")
        .args(["-static", "-O1", "-Wall", "-o"])
        .arg(dir.path().join("probe"))
        .arg(&src)
        .arg("-l:libseccomp.a")
        .status()
        .context("gcc (apt: gcc libseccomp-dev)")?;
    if !st.success() {
        bail!("gcc failed on {}", src.display());
    }
    for (from, to) in [
        ("/usr/bin/setarch", "setarch"),
        ("/lib/x86_64-linux-gnu/libc.so.6", "libc.so.6"),
        ("/lib64/ld-linux-x86-64.so.2", "ld-linux-x86-64.so.2"),
    ] {
        std::fs::copy(from, dir.path().join(to)).with_context(|| format!("copy {from}"))?;
    }
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {}\nCOPY probe /probe\nCOPY setarch /usr/bin/setarch\nCOPY libc.so.6 /lib/x86_64-linux-gnu/libc.so.6\nCOPY ld-linux-x86-64.so.2 /lib64/ld-linux-x86-64.so.2\nENV PROBE_IN_CONTAINER=1\n",
            e.img("busybox:latest")
        ),
    )?;
    let tag = format!("{}:1", unique("seccomp-probe"));
    let out =
        e.d.docker_cmd(&["build", "-q", "-t", &tag])
            .arg(dir.path())
            .env("DOCKER_BUILDKIT", "0")
            .output()?;
    if !out.status.success() {
        bail!(
            "docker build of the probe image: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(tag)
}

/// Parses the probe's `NAME RESULT` lines.
fn results(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, r)| (n.to_string(), r.to_string()))
        .collect()
}

fn probe(e: &Env, image: &str, flags: &[&str], args: &[&str]) -> Result<BTreeMap<String, String>> {
    let mut a: Vec<&str> = flags.to_vec();
    a.push(image);
    a.push("/probe");
    a.extend_from_slice(args);
    let (code, out, err) = run(e, &a)?;
    if code != 0 {
        bail!("probe {flags:?} exited {code}: {out}{err}");
    }
    Ok(results(&out))
}

#[test]
fn default_profile_refuses_what_unconfined_allows() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", "-q", &bb])?;
    let probe = probe_image(&e)?;
    let unconfined = ["--security-opt", "seccomp=unconfined"];

    // unshare -U: a user namespace needs no capability, only the filter stops it.
    let (code, _, err) = run(&e, &[&bb, "unshare", "-U", "true"])?;
    assert_ne!(code, 0);
    assert!(err.contains("Operation not permitted"), "{err}");
    let (code, _, err) = run(
        &e,
        &[unconfined[0], unconfined[1], &bb, "unshare", "-U", "true"],
    )?;
    assert_eq!(code, 0, "{err}");

    // setarch -R: personality(ADDR_NO_RANDOMIZE) is not one of Docker's five values;
    // linux32 (PER_LINUX32) is.
    let (code, _, err) = run(&e, &[&probe, "setarch", "x86_64", "-R", "true"])?;
    assert_ne!(code, 0);
    assert!(err.contains("Operation not permitted"), "{err}");
    let (code, _, err) = run(
        &e,
        &[
            unconfined[0],
            unconfined[1],
            &probe,
            "setarch",
            "x86_64",
            "-R",
            "true",
        ],
    )?;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&e, &[&bb, "linux32", "uname", "-m"])?;
    assert_eq!((code, out.trim()), (0, "i686"), "{err}");

    // dmesg: syslog(2) is for CAP_SYSLOG / CAP_SYS_ADMIN only.
    let (code, _, err) = run(&e, &[&bb, "dmesg"])?;
    assert_ne!(code, 0);
    assert!(err.contains("Operation not permitted"), "{err}");

    // nsenter into another namespace (this test's, the host's, seen through --pid host):
    // refused (opening it needs CAP_SYS_PTRACE, joining it CAP_SYS_ADMIN and the filter's
    // leave); the same with --privileged works.
    let me = std::process::id().to_string();
    let (code, _, err) = run(
        &e,
        &["--pid", "host", &bb, "nsenter", "-t", &me, "-u", "true"],
    )?;
    assert_ne!(code, 0, "nsenter into the host's UTS namespace was allowed");
    assert!(err.contains("Permission denied"), "{err}");
    // With CAP_SYS_PTRACE the namespace opens, and setns is the filter's EPERM.
    let (code, _, err) = run(
        &e,
        &[
            "--cap-add",
            "SYS_PTRACE",
            "--pid",
            "host",
            &bb,
            "nsenter",
            "-t",
            &me,
            "-u",
            "true",
        ],
    )?;
    assert_ne!(code, 0, "nsenter into the host's UTS namespace was allowed");
    assert!(
        err.contains("setns") && err.contains("Operation not permitted"),
        "{err}"
    );
    let (code, _, err) = run(
        &e,
        &[
            "--privileged",
            "--pid",
            "host",
            &bb,
            "nsenter",
            "-t",
            &me,
            "-u",
            "true",
        ],
    )?;
    assert_eq!(code, 0, "{err}");
    Ok(())
}

/// What one probe case must answer: with the default profile and default caps, unconfined
/// with default caps, and the default profile with `--cap-add ALL`.
struct Case {
    name: &'static str,
    default: &'static str,
    unconfined: &'static str,
    all_caps: &'static str,
}

const fn case(
    name: &'static str,
    default: &'static str,
    unconfined: &'static str,
    all_caps: &'static str,
) -> Case {
    Case {
        name,
        default,
        unconfined,
        all_caps,
    }
}

/// Class by class: allowed outright, argument filters (personality, socket, clone, clone3),
/// capability-gated rules (one call per capability), and calls Docker never allows.
/// Where "unconfined" is not EPERM, the default's EPERM is the filter's; where "all caps"
/// is not EPERM, the capability opened the rule. Answers like ENOSYS/EINVAL/EBADF come from
/// the kernel past the filter (harmless arguments on purpose).
const CASES: &[Case] = &[
    // allowed outright
    case("getpid", "OK", "OK", "OK"),
    case("mkdir", "OK", "OK", "OK"),
    case("chroot", "OK", "OK", "OK"),
    // personality: 0x0, 0x8, 0x20000, 0x20008, 0xffffffff only
    case("personality_query", "OK", "OK", "OK"),
    case("personality_linux", "OK", "OK", "OK"),
    case("personality_linux32", "OK", "OK", "OK"),
    case("personality_addr_no_randomize", "EPERM", "OK", "EPERM"),
    // socket: every family but 38 (AF_ALG) and 40 (AF_VSOCK)
    case("socket_inet", "OK", "OK", "OK"),
    case("socket_vsock", "EPERM", "OK", "EPERM"),
    case("socket_alg", "EPERM", "EAFNOSUPPORT", "EPERM"),
    // clone without namespace flags unless CAP_SYS_ADMIN; clone3 -> ENOSYS (libc falls back)
    case("clone_plain", "OK", "OK", "OK"),
    case("clone_newuser", "EPERM", "OK", "OK"),
    case("clone3", "ENOSYS", "OK", "OK"),
    // CAP_SYS_ADMIN
    case("unshare_user", "EPERM", "OK", "OK"),
    case("unshare_mount", "EPERM", "EPERM", "OK"),
    case("mount_tmpfs", "EPERM", "EPERM", "OK"),
    case("sethostname", "EPERM", "EPERM", "OK"),
    case("setns", "EPERM", "EINVAL", "EINVAL"),
    // CAP_SYS_PTRACE
    case("kcmp", "EPERM", "OK", "OK"),
    // CAP_SYSLOG (or CAP_SYS_ADMIN)
    case("syslog", "EPERM", "EPERM", "OK"),
    // CAP_SYS_TIME (CLOCK_MONOTONIC cannot be set: EINVAL, before the kernel's cap check)
    case("clock_settime", "EPERM", "EINVAL", "EINVAL"),
    // CAP_SYS_MODULE (this kernel has no module support: ENOSYS past the filter). Calls
    // the kernel answers ENOSYS/EINVAL/EFAULT unconfined show the filter's EPERM plainly.
    case("finit_module", "EPERM", "ENOSYS", "ENOSYS"),
    // CAP_SYS_BOOT (wrong magic: EINVAL past the filter)
    case("reboot_bad_magic", "EPERM", "EPERM", "EINVAL"),
    // CAP_SYS_PACCT
    case("acct", "EPERM", "EPERM", "ENOENT"),
    // CAP_SYS_RAWIO (iopl is not built into this kernel: ENOSYS past the filter)
    case("iopl", "EPERM", "ENOSYS", "ENOSYS"),
    // CAP_SYS_NICE
    case("get_mempolicy", "EPERM", "OK", "OK"),
    // CAP_SYS_TTY_CONFIG
    case("vhangup", "EPERM", "EPERM", "OK"),
    // CAP_DAC_READ_SEARCH
    case("open_by_handle_at", "EPERM", "EFAULT", "EFAULT"),
    // CAP_BPF / CAP_SYS_ADMIN
    case("bpf", "EPERM", "EINVAL", "EINVAL"),
    // CAP_PERFMON / CAP_SYS_ADMIN
    case("perf_event_open", "EPERM", "EFAULT", "EFAULT"),
    // never allowed
    case("keyctl", "EPERM", "OK", "EPERM"),
    case("add_key", "EPERM", "OK", "EPERM"),
    case("kexec_load", "EPERM", "ENOSYS", "EPERM"),
];

#[test]
fn syscall_classes_answer_as_the_profile_says() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", "-q", &bb])?;
    let probe_img = probe_image(&e)?;
    let default = probe(&e, &probe_img, &[], &["cases"])?;
    let unconfined = probe(
        &e,
        &probe_img,
        &["--security-opt", "seccomp=unconfined"],
        &["cases"],
    )?;
    let all_caps = probe(&e, &probe_img, &["--cap-add", "ALL"], &["cases"])?;
    let mut wrong = Vec::new();
    for c in CASES {
        let got = (
            default.get(c.name).map(String::as_str).unwrap_or("-"),
            unconfined.get(c.name).map(String::as_str).unwrap_or("-"),
            all_caps.get(c.name).map(String::as_str).unwrap_or("-"),
        );
        if got != (c.default, c.unconfined, c.all_caps) {
            wrong.push(format!(
                "{}: got {got:?}, want {:?}",
                c.name,
                (c.default, c.unconfined, c.all_caps)
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

/// Syscalls the sweep leaves out: the call would corrupt the forked child (vfork shares
/// its memory, rt_sigreturn pops a frame that is not there).
const SWEEP_SKIP: &[&str] = &["vfork", "rt_sigreturn", "sigreturn"];

/// Syscalls Docker's profile never names (the filter's default action answers them).
const NOT_IN_PROFILE: &[&str] = &[
    "add_key",
    "keyctl",
    "request_key",
    "kexec_load",
    "kexec_file_load",
    "userfaultfd",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "nfsservctl",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "lookup_dcookie",
    "pivot_root",
    "swapon",
    "swapoff",
    "name_to_handle_at",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "afs_syscall",
    "tuxcall",
    "security",
    "vserver",
    "putpmsg",
    "getpmsg",
];

/// Every syscall the profile names, called by number with invalid arguments, with the
/// default profile and without a filter, for the default capabilities and for all of
/// them: a syscall the profile allows (for those capabilities, on this arch and kernel)
/// answers as it does unconfined; one it does not allow answers EPERM.
#[test]
fn every_syscall_of_the_profile_class_by_class() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", "-q", &bb])?;
    let probe_img = probe_image(&e)?;
    let profile = Profile::docker_default();
    let mut names: Vec<String> = profile
        .rules
        .iter()
        .flat_map(|r| r.names.iter().cloned())
        .chain(NOT_IN_PROFILE.iter().map(|s| s.to_string()))
        .filter(|n| !SWEEP_SKIP.contains(&n.as_str()))
        .collect();
    names.sort();
    names.dedup();
    let name_refs: Vec<&str> = std::iter::once("sweep")
        .chain(names.iter().map(String::as_str))
        .collect();
    let uname = nix_release();
    let host = Host::native(KernelVersion::from_release(&uname));
    let default_caps: Vec<String> = berth_runtime::spec::DEFAULT_CAPS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let all_caps = bounding_set();
    let mut report = Vec::new();
    let mut wrong = Vec::new();
    for (label, caps, extra) in [
        ("default caps", &default_caps, &[][..]),
        ("all caps", &all_caps, &["--cap-add", "ALL"][..]),
    ] {
        let filtered = probe(&e, &probe_img, extra, &name_refs)?;
        let mut flags = extra.to_vec();
        flags.extend_from_slice(&["--security-opt", "seccomp=unconfined"]);
        let open = probe(&e, &probe_img, &flags, &name_refs)?;
        let oci = profile
            .to_oci(caps, &host)
            .expect("the default profile filters");
        // name -> (action, errno, has args) of every rule kept for these caps.
        let mut kept: BTreeMap<String, Vec<(String, Option<u64>, bool)>> = BTreeMap::new();
        for r in oci["syscalls"].as_array().unwrap() {
            for n in r["names"].as_array().unwrap() {
                kept.entry(n.as_str().unwrap().to_string())
                    .or_default()
                    .push((
                        r["action"].as_str().unwrap().to_string(),
                        r["errnoRet"].as_u64(),
                        !r["args"].is_null(),
                    ));
            }
        }
        let (mut allowed, mut denied, mut conditional, mut unknown) = (0, 0, 0, 0);
        for n in &names {
            let got = filtered.get(n).map(String::as_str).unwrap_or("-");
            let base = open.get(n).map(String::as_str).unwrap_or("-");
            if got == "UNKNOWN" {
                unknown += 1;
                continue;
            }
            match kept.get(n).map(Vec::as_slice) {
                None => {
                    denied += 1;
                    if got != "EPERM" {
                        wrong.push(format!(
                            "{label}: {n} is not allowed, got {got} (unconfined {base})"
                        ));
                    }
                }
                Some([(a, None, false)]) if a == "SCMP_ACT_ALLOW" => {
                    allowed += 1;
                    if got != base {
                        wrong.push(format!(
                            "{label}: {n} is allowed, got {got}, unconfined {base}"
                        ));
                    }
                }
                Some([(a, Some(errno), false)]) if a == "SCMP_ACT_ERRNO" => {
                    denied += 1;
                    let want = if *errno == 38 { "ENOSYS" } else { "E?" };
                    if got != want {
                        wrong.push(format!("{label}: {n} answers errno {errno}, got {got}"));
                    }
                }
                Some(_) => conditional += 1,
            }
        }
        report.push(format!(
            "{label}: {allowed} allowed, {denied} refused, {conditional} by argument (cases test), {unknown} unknown to libseccomp"
        ));
        assert!(
            allowed > 250,
            "{label}: only {allowed} allowed syscalls checked"
        );
    }
    eprintln!("{}", report.join("\n"));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

fn nix_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// This process's bounding set by name (berthd runs as the same user on the same host).
fn bounding_set() -> Vec<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(str::trim)
        .unwrap_or("0");
    let bits = u64::from_str_radix(hex, 16).unwrap_or(0);
    const NAMES: [&str; 41] = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_MKNOD",
        "CAP_LEASE",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
        "CAP_PERFMON",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
    ];
    NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

#[test]
fn a_custom_profile_denying_mkdir_leaves_the_rest_working() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", "-q", &bb])?;
    let dir = tempfile::tempdir()?;
    // Docker's default profile without mkdir and mkdirat in its allow-list.
    let mut p: serde_json::Value =
        serde_json::from_str(berth_runtime::seccomp::DEFAULT_PROFILE_JSON)?;
    for rule in p["syscalls"].as_array_mut().unwrap() {
        if let Some(names) = rule["names"].as_array_mut() {
            names.retain(|n| n != "mkdir" && n != "mkdirat");
        }
    }
    let path = dir.path().join("no-mkdir.json");
    std::fs::write(&path, serde_json::to_string_pretty(&p)?)?;
    let opt = format!("seccomp={}", path.display());
    let (code, _, err) = run(&e, &["--security-opt", &opt, &bb, "mkdir", "/tmp/d"])?;
    assert_ne!(code, 0);
    assert!(err.contains("Operation not permitted"), "{err}");
    let script = "echo hi > /tmp/f && cat /tmp/f && ls /tmp && rm /tmp/f && uname -s && id -u";
    let (code, out, err) = run(&e, &["--security-opt", &opt, &bb, "sh", "-c", script])?;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hi\nf\nLinux\n0\n");
    // The rest of Docker's rules still hold.
    let (code, _, err) = run(&e, &["--security-opt", &opt, &bb, "unshare", "-U", "true"])?;
    assert_ne!(code, 0);
    assert!(err.contains("Operation not permitted"), "{err}");
    // A profile in plain allow-by-default form, as the docs show it.
    let simple = dir.path().join("simple.json");
    std::fs::write(
        &simple,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )?;
    let opt2 = format!("seccomp={}", simple.display());
    let (code, _, err) = run(&e, &["--security-opt", &opt2, &bb, "mkdir", "/tmp/d"])?;
    assert_ne!(code, 0);
    assert!(err.contains("Permission denied"), "{err}");
    // Shown back by inspect as sent (the profile's content), as dockerd does.
    let name = unique("sc");
    e.ok(&["create", "--name", &name, "--security-opt", &opt2, &bb])?;
    let shown = e.inspect(&name, "{{json .HostConfig.SecurityOpt}}")?;
    assert!(shown.contains("SCMP_ACT_ERRNO"), "{shown}");
    // A profile that is not Docker's format: 400 with the reason.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"defaultAction":"SCMP_ACT_NOPE","syscalls":[]}"#)?;
    let out = e.d.docker(&[
        "create",
        "--security-opt",
        &format!("seccomp={}", bad.display()),
        &bb,
    ])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("invalid seccomp profile") && err.contains("SCMP_ACT_NOPE"),
        "{err}"
    );
    Ok(())
}

#[test]
fn privileged_gets_caps_devices_writable_sys_and_mounts_a_tmpfs() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", "-q", &bb])?;
    let script = "mkdir /tmp/m && mount -t tmpfs t /tmp/m && echo x > /tmp/m/f && grep ' /tmp/m ' /proc/mounts";
    let (code, out, err) = run(&e, &["--privileged", &bb, "sh", "-c", script])?;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("t /tmp/m tmpfs rw"), "{out}");
    let (code, _, err) = run(&e, &[&bb, "sh", "-c", script])?;
    assert_ne!(code, 0);
    assert!(err.contains("permission denied (are you root?)"), "{err}");
    // Every capability of the daemon, /sys writable, no masked paths, the host's devices.
    let host_bnd = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:").map(|s| s.trim().to_string()))
        .unwrap_or_default();
    let script = "grep CapEff /proc/self/status; grep ' /sys ' /proc/mounts; ls /dev/kmsg; grep -c . /proc/self/mountinfo >/dev/null; echo ok";
    let (code, out, err) = run(&e, &["--privileged", &bb, "sh", "-c", script])?;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("CapEff:\t{host_bnd}")),
        "{out} vs {host_bnd}"
    );
    assert!(out.contains("sysfs /sys sysfs rw"), "{out}");
    assert!(out.contains("/dev/kmsg"), "{out}");
    let (code, out, _) = run(
        &e,
        &[&bb, "sh", "-c", "grep ' /sys ' /proc/mounts; ls /dev/kmsg"],
    )?;
    assert_ne!(code, 0);
    assert!(out.contains("sysfs /sys sysfs ro"), "{out}");
    let name = unique("pv");
    e.ok(&["create", "--name", &name, "--privileged", &bb])?;
    assert_eq!(e.inspect(&name, "{{.HostConfig.Privileged}}")?, "true");
    Ok(())
}

#[test]
fn apparmor_label_and_no_new_privileges_options() -> Result<()> {
    let e = Env::new()?;
    let bb = e.img("busybox:latest");
    e.ok(&["pull", "-q", &bb])?;
    let apparmor = Path::new("/sys/kernel/security/apparmor").exists();
    let out =
        e.d.docker(&["create", "--security-opt", "apparmor=docker-default", &bb])?;
    let err = String::from_utf8_lossy(&out.stderr);
    if apparmor {
        assert!(out.status.success(), "{err}");
    } else {
        assert!(!out.status.success());
        assert!(
            err.contains("AppArmor is not enabled on this host"),
            "{err}"
        );
    }
    for ok in [
        "apparmor=unconfined",
        "label=disable",
        "label=type:svirt_apache_t",
        "no-new-privileges",
        "no-new-privileges=false",
        "seccomp=builtin",
    ] {
        let out = e.d.docker(&["create", "--security-opt", ok, &bb])?;
        assert!(
            out.status.success(),
            "{ok}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for bad in [
        "label=bogus",
        "no-new-privileges=maybe",
        "writable-cgroups=true",
    ] {
        let out = e.d.docker(&["create", "--security-opt", bad, &bb])?;
        assert!(!out.status.success(), "{bad} was accepted");
    }
    // no-new-privileges reaches the process.
    let (code, out, err) = run(
        &e,
        &[
            "--security-opt",
            "no-new-privileges",
            &bb,
            "grep",
            "NoNewPrivs",
            "/proc/self/status",
        ],
    )?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    Ok(())
}
