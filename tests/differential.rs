//! Differential test: the same docker CLI commands against Debian's dockerd 20.10 (the
//! behaviour reference, [`berth_testkit::dockerd::Dockerd`]) and against berthd, comparing
//! exit code, stdout and stderr of every step after per-case normalisation.
//!
//! The cases are data ([`CASES`]). A case whose outputs differ today is marked with
//! `expect_divergence` naming the known fault (issue #13's wording); the test fails when an
//! unmarked case diverges and when a marked case matches (remove the mark once fixed). All
//! cases run, sequentially, on one dockerd and one berthd; state is reset between cases.
//! At the end the test prints one table of every case and one of every mismatch.
//!
//! While working on a fault: `BERTH_DIFFTEST_CASES=<regex>` runs only the cases whose name
//! matches, `BERTH_DIFFTEST_VERBOSE=1` prints every step's outcome on both daemons (run
//! with `--no-capture` to see the tables of a passing run).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use berth_testkit::daemon::{docker_cli, DockerEnv};
use berth_testkit::dockerd::Dockerd;
use berth_testkit::Fixture;

/// A normalisation rule: a regular expression and its replacement (`regex` syntax, `$1`
/// for groups), applied to stdout and stderr of every step of a case, on both daemons.
type Norm = (&'static str, &'static str);

/// Full and short container (or exec, network) IDs: they differ run by run.
const IDS: Norm = (r"\b[0-9a-f]{64}\b|\b[0-9a-f]{12}\b", "<id>");

/// The runtime's own words around why a process could not be started: runc's
/// `failed to create shim: OCI runtime create failed: runc create failed: unable to start
/// container process: ` (or `OCI runtime exec failed: exec failed: ...` for exec) vs
/// berth's. Kept are the shape (an HTTP error, or exec's message on stdout) and the cause
/// as runc words it (`exec: "x": executable file not found in $PATH`, `chdir to cwd ...`,
/// `stat /bin/x: no such file or directory`).
const RUNTIME_PREFIX: Norm = (
    r#"(Error response from daemon: |OCI runtime exec failed: )[^\n]*?(exec: "|chdir to cwd|stat /)"#,
    "$1<runtime>: $2",
);

/// containerd's gRPC status code that dockerd appends to a runtime error (`...: unknown`):
/// containerd's transport, not the cause; berth has no containerd between it and the
/// runtime. The docker CLI maps exit codes (127/126) from the cause, not from this suffix.
const GRPC_UNKNOWN: Norm = (r": unknown(\r?\n)", "$1");

/// dockerd 20.10 capitalises `Container ID is not running`; Docker 23 and later (and berth)
/// do not.
const NOT_RUNNING_V20: Norm = (
    r"Container (<id>) is not running",
    "container $1 is not running",
);

/// dockerd 20.10's `rm` of a running container; Docker 25 and later (and berth) say
/// `cannot remove container "/NAME": container is running: stop the container before
/// removing or force remove` (the cases that use this name their container `c1`).
const RM_RUNNING_V20: Norm = (
    r"You cannot remove a running container <id>\. Stop the container before attempting removal or force remove",
    r#"cannot remove container "/c1": container is running: stop the container before removing or force remove"#,
);

/// dockerd 20.10 repeats itself for `image inspect` of a missing image
/// (`no such image: REF: No such image: REF`); later versions say it once.
const NO_SUCH_IMAGE_V20: Norm = (r"no such image: (\S+): No such image: ", "No such image: ");

/// What a step reads on stdin.
#[derive(Debug, Clone, Copy)]
enum Input {
    /// Nothing (stdin is /dev/null).
    Null,
    /// These bytes, then EOF.
    Bytes(&'static [u8]),
    /// This many zero bytes, then EOF.
    Zeros(usize),
}

/// One differential case: `steps` are docker CLI argument lists run one after another on
/// each daemon; every step's exit code, stdout and stderr are compared. Placeholders in
/// arguments: `{busybox}`, `{web}` (fixture references), `{registry}` (its address),
/// `{corrupt}` (a file that is not an image archive), `{nomkdir}` (a seccomp profile that
/// allows everything but mkdir, mkdirat and unshare).
#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    steps: &'static [&'static [&'static str]],
    /// stdin of the last step.
    stdin: Input,
    /// The last step runs this many times; each run is compared (for faults that show in
    /// some runs only, so the case stays deterministic for a correct daemon).
    repeat: u32,
    /// Applied to stdout and stderr of every step, in order.
    norm: &'static [Norm],
    /// The known fault that makes berth differ today, in issue #13's words.
    expect_divergence: Option<&'static str>,
    /// Longest any step may take; a step still running then is killed and its result is
    /// "timeout" (a hang is a result too).
    timeout: Duration,
}

const C: Case = Case {
    name: "",
    steps: &[],
    stdin: Input::Null,
    repeat: 1,
    norm: &[IDS],
    expect_divergence: None,
    timeout: Duration::from_secs(10),
};

/// Images present at the start of every case (pulled again after a case removed them).
const BASE_IMAGES: &[&str] = &["busybox:latest", "web:latest"];

const CASES: &[Case] = &[
    // --- run: exit codes and failed starts
    Case {
        name: "run_exit_0",
        steps: &[&["run", "--rm", "--network", "none", "{busybox}", "true"]],
        ..C
    },
    Case {
        name: "run_exit_3",
        steps: &[&["run", "--rm", "--network", "none", "{busybox}", "sh", "-c", "exit 3"]],
        ..C
    },
    Case {
        name: "run_missing_command_127",
        steps: &[&["run", "--rm", "--network", "none", "{busybox}", "nosuchcmd"]],
        norm: &[IDS, RUNTIME_PREFIX, GRPC_UNKNOWN],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "run_directory_126",
        steps: &[&["run", "--rm", "--network", "none", "{busybox}", "/etc"]],
        norm: &[IDS, RUNTIME_PREFIX, GRPC_UNKNOWN],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "run_d_missing_command_state",
        steps: &[
            &["run", "-d", "--network", "none", "--name", "c1", "{busybox}", "/bin/topsy"],
            &["inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", "c1"],
        ],
        norm: &[IDS, RUNTIME_PREFIX, GRPC_UNKNOWN],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "run_missing_image",
        steps: &[&["run", "--rm", "--network", "none", "{registry}/nosuch:latest", "true"]],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "run_name_conflict",
        steps: &[
            &["create", "--name", "c1", "{busybox}"],
            &["run", "--rm", "--network", "none", "--name", "c1", "{busybox}", "true"],
        ],
        ..C
    },
    // --- streams
    Case {
        name: "stdout_byte_exact",
        steps: &[&["run", "--rm", "--network", "none", "{busybox}", "sh", "-c", r#"printf "\000\001\377""#]],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "stdin_4mib_wc",
        steps: &[&["run", "--rm", "-i", "--network", "none", "{busybox}", "wc", "-c"]],
        stdin: Input::Zeros(4 * 1024 * 1024),
        expect_divergence: None,
        ..C
    },
    Case {
        name: "stdin_cat",
        steps: &[&["run", "--rm", "-i", "--network", "none", "{busybox}", "cat"]],
        stdin: Input::Bytes(b"hello\nworld\n"),
        ..C
    },
    Case {
        name: "stdout_and_stderr_split",
        steps: &[&["run", "--rm", "--network", "none", "{busybox}", "sh", "-c", "echo out; echo err >&2"]],
        ..C
    },
    Case {
        name: "tty_output_10_runs",
        steps: &[&["run", "--rm", "-t", "--network", "none", "{busybox}", "sh", "-c", "echo out"]],
        repeat: 10,
        expect_divergence: None,
        ..C
    },
    Case {
        name: "logs_stdout_stderr",
        steps: &[
            &["run", "--network", "none", "--name", "c1", "{busybox}", "sh", "-c", "echo out; echo err >&2"],
            &["logs", "c1"],
        ],
        ..C
    },
    Case {
        name: "logs_tail",
        steps: &[
            &["run", "--network", "none", "--name", "c1", "{busybox}", "sh", "-c", "echo a; echo b; echo c"],
            &["logs", "--tail", "1", "c1"],
        ],
        ..C
    },
    // --- create fields: effect and inspect
    Case {
        name: "env_unset_in_client_is_absent",
        steps: &[&["run", "--rm", "--network", "none", "-e", "FOO", "{busybox}", "sh", "-c", "echo ${FOO-absent}"]],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "env_set",
        steps: &[&["run", "--rm", "--network", "none", "-e", "FOO=bar", "{busybox}", "sh", "-c", "echo $FOO"]],
        ..C
    },
    Case {
        name: "workdir_created",
        steps: &[&["run", "--rm", "--network", "none", "-w", "/does/not/exist", "{busybox}", "sh", "-c", "pwd; stat -c '%U %a' ."]],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "tmpfs_on_read_only",
        steps: &[&["run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", "{busybox}", "sh", "-c", "touch /tmp/x && echo ok"]],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "read_only_rootfs",
        steps: &[&["run", "--rm", "--network", "none", "--read-only", "{busybox}", "sh", "-c", "touch /x 2>/dev/null || echo refused"]],
        ..C
    },
    Case {
        name: "add_host",
        steps: &[&["run", "--rm", "--network", "none", "--add-host", "foo:1.2.3.4", "{busybox}", "grep", "foo", "/etc/hosts"]],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "dns",
        steps: &[&["run", "--rm", "--network", "none", "--dns", "9.9.9.9", "{busybox}", "grep", "nameserver", "/etc/resolv.conf"]],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "init_is_not_the_command",
        steps: &[&["run", "--rm", "--network", "none", "--init", "{busybox}", "sh", "-c", "test $$ -ne 1 && echo not-pid-1"]],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "init_stop_exit_143",
        steps: &[
            &["run", "-d", "--network", "none", "--init", "--name", "c1", "{busybox}", "sleep", "100"],
            // SIGTERM only once the command runs (not while the init is still starting it).
            &["exec", "c1", "sh", "-c", "until pidof sleep >/dev/null; do sleep 0.05; done"],
            // Without an init the command (PID 1) ignores SIGTERM: SIGKILL after 2 s, 137.
            &["stop", "-t", "2", "c1"],
            &["inspect", "--format", "{{.State.ExitCode}} {{.HostConfig.Init}}", "c1"],
        ],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "stop_timeout_kill_137",
        steps: &[
            &["run", "-d", "--network", "none", "--name", "c1", "{busybox}", "sleep", "100"],
            &["stop", "-t", "1", "c1"],
            &["inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", "c1"],
        ],
        ..C
    },
    Case {
        name: "inspect_created_hostconfig_fields",
        steps: &[
            &["create", "--name", "c1", "--init", "--tmpfs", "/run:size=1m", "--add-host", "foo:1.2.3.4", "--dns", "9.9.9.9", "{busybox}"],
            &["inspect", "--format", "{{.HostConfig.Init}} {{json .HostConfig.Tmpfs}} {{json .HostConfig.ExtraHosts}} {{json .HostConfig.Dns}}", "c1"],
        ],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "inspect_resources_and_restart",
        steps: &[
            &["create", "--name", "c1", "--memory", "64m", "--cpu-shares", "512", "--cpus", "0.5", "--restart", "on-failure:3", "--cap-add", "NET_ADMIN", "--cap-drop", "MKNOD", "{busybox}"],
            &["inspect", "--format", "{{.HostConfig.Memory}} {{.HostConfig.CpuShares}} {{.HostConfig.NanoCpus}} {{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}} {{.HostConfig.CapAdd}} {{.HostConfig.CapDrop}}", "c1"],
        ],
        ..C
    },
    Case {
        name: "inspect_ports_ulimits_shm",
        steps: &[
            &["create", "--name", "c1", "-p", "127.0.0.1:8080:80/tcp", "--ulimit", "nofile=1024:2048", "--shm-size", "8m", "{busybox}"],
            &["inspect", "--format", "{{json .HostConfig.PortBindings}} {{json .HostConfig.Ulimits}} {{.HostConfig.ShmSize}} {{json .Config.ExposedPorts}}", "c1"],
        ],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "inspect_config_fields",
        steps: &[
            &["create", "--name", "c1", "-e", "A=1", "--label", "l=v", "--user", "1:2", "--hostname", "hn", "--entrypoint", "/bin/sh", "{busybox}", "-c", "true"],
            &["inspect", "--format", "{{json .Config.Env}} {{json .Config.Labels}} {{.Config.User}} {{.Config.Hostname}} {{json .Config.Entrypoint}} {{json .Config.Cmd}} {{.Config.Image}}", "c1"],
        ],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "inspect_state_created",
        steps: &[
            &["create", "--name", "c1", "{busybox}"],
            &["inspect", "--format", "{{.State.Status}} {{.State.Running}} {{.State.ExitCode}} {{.State.Pid}} {{.State.Error}}|{{.Name}} {{.RestartCount}} {{.Path}} {{json .Args}}", "c1"],
        ],
        ..C
    },
    Case {
        name: "inspect_state_exited",
        steps: &[
            &["run", "--network", "none", "--name", "c1", "{busybox}", "sh", "-c", "exit 5"],
            &["inspect", "--format", "{{.State.Status}} {{.State.Running}} {{.State.ExitCode}} {{.State.OOMKilled}} {{.State.Dead}}", "c1"],
        ],
        ..C
    },
    Case {
        name: "inspect_volume_mount",
        steps: &[
            &["create", "--name", "c1", "-v", "data1:/data:ro", "{busybox}"],
            &["inspect", "--format", "{{range .Mounts}}{{.Type}} {{.Name}} {{.Destination}} {{.Mode}} {{.RW}}{{end}}", "c1"],
        ],
        ..C
    },
    Case {
        name: "ps_format_created",
        steps: &[
            &["create", "--name", "c1", "{busybox}"],
            &["ps", "-a", "--format", "{{.Names}}|{{.Status}}|{{.Command}}|{{.Image}}|{{.Ports}}"],
        ],
        ..C
    },
    // --- log options and drivers
    Case {
        name: "log_opts_in_inspect",
        steps: &[
            &["create", "--name", "c1", "--log-opt", "max-size=10k", "--log-opt", "max-file=2", "{busybox}"],
            &["inspect", "--format", "{{json .HostConfig.LogConfig}}", "c1"],
        ],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "log_driver_none_logs",
        steps: &[
            &["run", "--network", "none", "--log-driver", "none", "--name", "c1", "{busybox}", "echo", "hi"],
            &["logs", "c1"],
        ],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "log_driver_unknown",
        steps: &[&["create", "--log-driver", "nosuchdriver", "{busybox}"]],
        expect_divergence: None,
        // dockerd looks for a logging plugin of that name for about 15 s before it fails.
        timeout: Duration::from_secs(60),
        ..C
    },
    // --- health checks
    Case {
        name: "health_config_in_inspect",
        steps: &[
            &["create", "--name", "c1", "--health-cmd", "exit 0", "--health-interval", "1h", "--health-retries", "2", "--health-start-period", "5s", "{busybox}"],
            &["inspect", "--format", "{{json .Config.Healthcheck}}", "c1"],
        ],
        ..C
    },
    Case {
        name: "health_starting_state_and_filter",
        steps: &[
            // The first probe is an hour away: the state stays `starting` throughout.
            &["run", "-d", "--network", "none", "--name", "c1", "--health-cmd", "exit 0", "--health-interval", "1h", "{busybox}", "sleep", "100"],
            &["inspect", "--format", "{{.State.Health.Status}} {{.State.Health.FailingStreak}} {{len .State.Health.Log}}", "c1"],
            &["ps", "--filter", "health=starting", "--format", "{{.Names}}"],
        ],
        ..C
    },
    Case {
        name: "web_image_runs",
        steps: &[&["run", "--rm", "--network", "none", "{web}", "sh", "-c", "pwd; cat /www/index.html"]],
        ..C
    },
    // --- ps filters
    Case {
        name: "ps_filter_name_regex",
        steps: &[
            &["create", "--name", "us1", "{busybox}"],
            &["create", "--name", "us10", "{busybox}"],
            &["ps", "-a", "--filter", "name=^us1$", "--format", "{{.Names}}"],
        ],
        ..C
    },
    Case {
        name: "ps_filter_two_names",
        steps: &[
            &["create", "--name", "us1", "{busybox}"],
            &["create", "--name", "us10", "{busybox}"],
            &["create", "--name", "other", "{busybox}"],
            &["ps", "-a", "--filter", "name=us1", "--filter", "name=other", "--format", "{{.Names}}"],
        ],
        ..C
    },
    Case {
        name: "ps_filter_status",
        steps: &[
            &["run", "--network", "none", "--name", "c1", "{busybox}", "true"],
            &["create", "--name", "c2", "{busybox}"],
            &["ps", "-a", "--filter", "status=exited", "--format", "{{.Names}} {{.State}}"],
            &["ps", "-a", "--filter", "status=created", "--format", "{{.Names}} {{.State}}"],
        ],
        ..C
    },
    // --- exec
    Case {
        name: "exec_exit_code",
        steps: &[
            &["run", "-d", "--network", "none", "--name", "c1", "{busybox}", "sleep", "100"],
            &["exec", "c1", "sh", "-c", "exit 7"],
        ],
        ..C
    },
    Case {
        name: "exec_missing_command_126",
        steps: &[
            &["run", "-d", "--network", "none", "--name", "c1", "{busybox}", "sleep", "100"],
            &["exec", "c1", "nosuchcmd"],
        ],
        norm: &[IDS, RUNTIME_PREFIX, GRPC_UNKNOWN],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "exec_missing_workdir",
        steps: &[
            &["run", "-d", "--network", "none", "--name", "c1", "{busybox}", "sleep", "100"],
            &["exec", "-w", "/nope", "c1", "pwd"],
        ],
        norm: &[IDS, RUNTIME_PREFIX, GRPC_UNKNOWN],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "exec_unknown_user",
        steps: &[
            &["run", "-d", "--network", "none", "--name", "c1", "{busybox}", "sleep", "100"],
            &["exec", "-u", "nosuchuser", "c1", "id"],
        ],
        norm: &[IDS, RUNTIME_PREFIX, GRPC_UNKNOWN],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "exec_workdir_and_user",
        steps: &[
            &["run", "-d", "--network", "none", "--name", "c1", "{busybox}", "sleep", "100"],
            &["exec", "-w", "/tmp", "-u", "1:2", "c1", "sh", "-c", "pwd; id -u; id -g"],
        ],
        ..C
    },
    Case {
        name: "exec_short_output_10_runs",
        steps: &[
            &["run", "-d", "--network", "none", "--name", "c1", "{busybox}", "sleep", "100"],
            &["exec", "c1", "echo", "hi"],
        ],
        repeat: 10,
        ..C
    },
    Case {
        name: "exec_not_running",
        steps: &[
            &["create", "--name", "c1", "{busybox}"],
            &["exec", "c1", "true"],
        ],
        norm: &[IDS, NOT_RUNNING_V20],
        ..C
    },
    // --- lifecycle
    Case {
        name: "wait_exit_code",
        steps: &[
            &["run", "-d", "--network", "none", "--name", "c1", "{busybox}", "sh", "-c", "exit 4"],
            &["wait", "c1"],
        ],
        ..C
    },
    Case {
        name: "kill_signal",
        steps: &[
            &["run", "-d", "--network", "none", "--name", "c1", "{busybox}", "sh", "-c", "trap 'exit 9' USR1; touch /trapped; while true; do sleep 0.1; done"],
            // The signal must not come before the trap is set (PID 1 ignores it then).
            &["exec", "c1", "sh", "-c", "until [ -e /trapped ]; do sleep 0.05; done"],
            &["kill", "-s", "USR1", "c1"],
            &["wait", "c1"],
        ],
        ..C
    },
    Case {
        name: "kill_not_running",
        steps: &[
            &["create", "--name", "c1", "{busybox}"],
            &["kill", "c1"],
        ],
        norm: &[IDS, NOT_RUNNING_V20],
        ..C
    },
    Case {
        name: "start_attach",
        steps: &[
            &["create", "--network", "none", "--name", "c1", "{busybox}", "sh", "-c", "echo hi; exit 2"],
            &["start", "-a", "c1"],
        ],
        ..C
    },
    Case {
        name: "rename",
        steps: &[
            &["create", "--name", "c1", "{busybox}"],
            &["rename", "c1", "c2"],
            &["ps", "-a", "--format", "{{.Names}}"],
            &["rename", "c1", "c3"],
        ],
        ..C
    },
    Case {
        name: "rename_conflict",
        steps: &[
            &["create", "--name", "c1", "{busybox}"],
            &["create", "--name", "c2", "{busybox}"],
            &["rename", "c1", "c2"],
        ],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "rm_running",
        steps: &[
            &["run", "-d", "--network", "none", "--name", "c1", "{busybox}", "sleep", "100"],
            &["rm", "c1"],
            &["rm", "-f", "c1"],
        ],
        norm: &[IDS, RM_RUNNING_V20],
        ..C
    },
    // --- missing objects
    Case {
        name: "missing_container",
        steps: &[
            &["inspect", "nosuch"],
            &["container", "inspect", "nosuch"],
            &["rm", "nosuch"],
            &["stop", "nosuch"],
            &["logs", "nosuch"],
            &["exec", "nosuch", "true"],
        ],
        ..C
    },
    Case {
        name: "missing_image",
        steps: &[
            &["image", "inspect", "nosuch:latest"],
            &["rmi", "nosuch"],
            &["history", "nosuch"],
            &["tag", "nosuch", "other"],
        ],
        norm: &[IDS, NO_SUCH_IMAGE_V20],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "missing_network_and_volume",
        steps: &[
            &["network", "inspect", "nosuch"],
            &["network", "rm", "nosuch"],
            &["volume", "inspect", "nosuch"],
            &["volume", "rm", "nosuch"],
        ],
        ..C
    },
    // --- networks
    Case {
        name: "network_lifecycle",
        steps: &[
            &["network", "create", "--label", "a=b", "net1"],
            &["network", "inspect", "--format", "{{.Name}} {{.Driver}} {{.Scope}} {{json .Labels}} {{.Internal}} {{.Attachable}} {{.EnableIPv6}}", "net1"],
            &["network", "ls", "--filter", "name=net1", "--format", "{{.Name}} {{.Driver}} {{.Scope}}"],
            &["network", "rm", "net1"],
        ],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "network_subnet_and_options",
        steps: &[
            &["network", "create", "--subnet", "10.99.0.0/24", "--gateway", "10.99.0.1", "net1"],
            &["network", "inspect", "--format", "{{json .IPAM.Config}} {{json .Options}}", "net1"],
        ],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "network_created_time",
        steps: &[
            &["network", "create", "net1"],
            &["network", "inspect", "--format", "{{.Created.IsZero}}", "net1"],
        ],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "network_create_duplicate",
        steps: &[
            &["network", "create", "net1"],
            &["network", "create", "net1"],
        ],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "network_ls_builtin",
        steps: &[&["network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}"]],
        ..C
    },
    // --- volumes
    Case {
        name: "volume_lifecycle",
        steps: &[
            &["volume", "create", "--label", "a=b", "v1"],
            &["volume", "inspect", "--format", "{{.Name}} {{.Driver}} {{json .Labels}} {{.Scope}} {{json .Options}}", "v1"],
            &["volume", "ls", "--format", "{{.Name}} {{.Driver}}"],
            &["volume", "rm", "v1"],
            &["volume", "ls", "-q"],
        ],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "volume_rm_in_use",
        steps: &[
            &["create", "--name", "c1", "-v", "v1:/data", "{busybox}"],
            &["volume", "rm", "v1"],
        ],
        ..C
    },
    Case {
        name: "volume_create_twice",
        steps: &[
            &["volume", "create", "v1"],
            &["volume", "create", "v1"],
            &["volume", "ls", "-q"],
        ],
        ..C
    },
    // --- images
    Case {
        name: "image_inspect_fields",
        steps: &[&["image", "inspect", "--format", "{{.Id}} {{.Os}} {{.Architecture}} {{json .Config.Cmd}} {{json .Config.Env}} {{json .RootFS.Layers}} {{json .RepoTags}}", "{busybox}"]],
        ..C
    },
    Case {
        name: "image_tag_and_rmi",
        steps: &[
            &["tag", "{busybox}", "{registry}/mytag:1"],
            &["images", "--format", "{{.Repository}}:{{.Tag}}", "{registry}/mytag"],
            &["rmi", "{registry}/mytag:1"],
            &["images", "-q", "{registry}/mytag"],
        ],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "image_history",
        steps: &[&["history", "--no-trunc", "--format", "{{.ID}}|{{.CreatedBy}}|{{.Size}}|{{.Comment}}", "{web}"]],
        expect_divergence: Some("image history/size: a layer's Size is its tar stream's length (2.56kB for a 57-byte file; dockerd: the unpacked content, 57B)"),
        ..C
    },
    Case {
        name: "rmi_image_in_use",
        steps: &[
            &["create", "--name", "c1", "{busybox}"],
            &["rmi", "{busybox}"],
        ],
        expect_divergence: None,
        ..C
    },
    Case {
        name: "image_prune_all",
        steps: &[
            &["create", "--name", "c1", "{busybox}"],
            &["image", "prune", "-af"],
            &["images", "--format", "{{.Repository}}:{{.Tag}}"],
        ],
        expect_divergence: Some("`docker image prune -a`: berth lists only the image id as deleted, not each layer, and reclaims the layer tar size (2.56kB) where dockerd counts unpacked content (57B)"),
        ..C
    },
    Case {
        name: "load_corrupt_archive",
        steps: &[&["load", "-i", "{corrupt}"]],
        expect_divergence: Some("a corrupt `docker load` archive: berth answers 400 with the tar error (issue #13 asks for a 4xx); dockerd 20.10 answers 200 and reports `Error processing tar file(exit status 1): ...` inside the load stream"),
        ..C
    },
    Case {
        name: "load_corrupt_stdin",
        steps: &[&["load"]],
        stdin: Input::Bytes(b"not a tar archive, not gzip either\n"),
        expect_divergence: Some("a corrupt `docker load` archive: berth answers 400 with the tar error (issue #13 asks for a 4xx); dockerd 20.10 answers 200 and reports `Error processing tar file(exit status 1): ...` inside the load stream"),
        ..C
    },
    Case {
        name: "image_name_with_underscore",
        steps: &[
            &["tag", "{busybox}", "{registry}/dockerpytest_7c8b:1"],
            &["image", "inspect", "--format", "{{.Id}}", "{registry}/dockerpytest_7c8b:1"],
            &["rmi", "{registry}/dockerpytest_7c8b:1"],
        ],
        ..C
    },
    // Issue #19: seccomp, --privileged and security options.
    Case {
        name: "seccomp_default_refuses_unshare_dmesg_personality",
        steps: &[
            &["run", "--rm", "--network", "none", "{busybox}", "unshare", "-U", "true"],
            &["run", "--rm", "--network", "none", "--security-opt", "seccomp=unconfined", "{busybox}", "unshare", "-U", "true"],
            &["run", "--rm", "--network", "none", "{busybox}", "dmesg"],
            &["run", "--rm", "--network", "none", "{busybox}", "linux32", "uname", "-m"],
            &["run", "--rm", "--network", "none", "--cap-add", "SYS_ADMIN", "{busybox}", "unshare", "-U", "true"],
        ],
        timeout: Duration::from_secs(30),
        ..C
    },
    Case {
        name: "seccomp_custom_profile_denies_mkdir",
        steps: &[
            &["run", "--rm", "--network", "none", "--security-opt", "seccomp={nomkdir}", "{busybox}", "mkdir", "/tmp/d"],
            &["run", "--rm", "--network", "none", "--security-opt", "seccomp={nomkdir}", "{busybox}", "sh", "-c", "echo hi > /tmp/f && cat /tmp/f && unshare -U true"],
        ],
        timeout: Duration::from_secs(30),
        ..C
    },
    Case {
        name: "privileged_mounts_tmpfs_and_writes_sys",
        steps: &[
            &["run", "--rm", "--network", "none", "--privileged", "{busybox}", "sh", "-c", "mkdir /tmp/m && mount -t tmpfs t /tmp/m && grep -c ' /tmp/m ' /proc/mounts && grep ' /sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1 && unshare -U true && echo ok"],
            &["run", "--rm", "--network", "none", "{busybox}", "sh", "-c", "mkdir /tmp/m && mount -t tmpfs t /tmp/m"],
            &["create", "--name", "c1", "--privileged", "{busybox}"],
            &["inspect", "--format", "{{.HostConfig.Privileged}}", "c1"],
        ],
        timeout: Duration::from_secs(30),
        expect_divergence: Some("`--privileged` on this host: dockerd 20.10 (runc) asks for every capability the kernel knows, CAP_SYS_RESOURCE included, which this sandbox's bounding set lacks, and fails `unable to apply caps: operation not permitted`; berth gives every capability the daemon holds and the container runs"),
        ..C
    },
    Case {
        name: "security_opt_label_and_no_new_privileges",
        steps: &[
            &["create", "--name", "c1", "--security-opt", "label=disable", "--security-opt", "no-new-privileges", "--security-opt", "apparmor=unconfined", "{busybox}"],
            &["inspect", "--format", "{{json .HostConfig.SecurityOpt}}", "c1"],
            &["run", "--rm", "--network", "none", "--security-opt", "no-new-privileges", "{busybox}", "grep", "NoNewPrivs", "/proc/self/status"],
        ],
        timeout: Duration::from_secs(30),
        ..C
    },
    Case {
        name: "security_opt_apparmor_profile_without_apparmor",
        steps: &[&["create", "--security-opt", "apparmor=docker-default", "{busybox}"]],
        expect_divergence: Some("`--security-opt apparmor=NAME` on a host without AppArmor: berth refuses it (400, issue #19 asks for a clear error); dockerd 20.10 accepts it and runs the container without AppArmor"),
        ..C
    },
];

/// A daemon the cases run against.
struct Target<'a> {
    name: &'static str,
    host: String,
    config: &'a Path,
}

/// What one step gave on one daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    /// None: killed after the step timeout, or by a signal.
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Target<'_> {
    fn command(&self, args: &[String]) -> Command {
        let mut c = Command::new(docker_cli());
        c.args(args)
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", self.config)
            .env_remove("DOCKER_CONTEXT")
            .env_remove("FOO");
        c
    }

    /// Runs the CLI with `input` on stdin; kills it (by its PID) after `timeout`.
    fn run(&self, args: &[String], input: Input, timeout: Duration) -> Result<Outcome> {
        let mut child = self
            .command(args)
            .stdin(match input {
                Input::Null => Stdio::null(),
                _ => Stdio::piped(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn docker {}", args.join(" ")))?;
        let writer = child.stdin.take().map(|mut stdin| {
            std::thread::spawn(move || {
                let _ = match input {
                    Input::Null => Ok(()),
                    Input::Bytes(b) => stdin.write_all(b),
                    Input::Zeros(n) => stdin.write_all(&vec![0u8; n]),
                };
            })
        });
        let mut out = child.stdout.take().context("stdout")?;
        let mut err = child.stderr.take().context("stderr")?;
        let out_t = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            v
        });
        let err_t = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = err.read_to_end(&mut v);
            v
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break Some(s);
            }
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(w) = writer {
            let _ = w.join();
        }
        Ok(Outcome {
            code: status.and_then(|s| s.code()),
            stdout: out_t.join().unwrap_or_default(),
            stderr: err_t.join().unwrap_or_default(),
        })
    }

    fn ok(&self, args: &[&str], timeout: Duration) -> Result<String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let o = self.run(&args, Input::Null, timeout)?;
        anyhow::ensure!(
            o.code == Some(0),
            "{}: docker {} failed ({:?}): {}",
            self.name,
            args.join(" "),
            o.code,
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Back to the state every case starts from: no containers, networks, volumes or
    /// images but the built-in networks and [`BASE_IMAGES`].
    fn reset(&self, fx: &Fixture) -> Result<()> {
        let t = Duration::from_secs(60);
        let ids = self.ok(&["ps", "-aq"], t)?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            self.ok(&[&["rm", "-f"][..], &ids].concat(), t)?;
        }
        let nets = self.ok(&["network", "ls", "--format", "{{.Name}}"], t)?;
        let nets: Vec<&str> = nets
            .split_whitespace()
            .filter(|n| !matches!(*n, "bridge" | "host" | "none"))
            .collect();
        if !nets.is_empty() {
            self.ok(&[&["network", "rm"][..], &nets].concat(), t)?;
        }
        let vols = self.ok(&["volume", "ls", "-q"], t)?;
        let vols: Vec<&str> = vols.split_whitespace().collect();
        if !vols.is_empty() {
            self.ok(&[&["volume", "rm", "-f"][..], &vols].concat(), t)?;
        }
        let base: Vec<String> = BASE_IMAGES.iter().map(|i| fx.reference(i)).collect();
        let refs = self.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"], t)?;
        let extra: Vec<&str> = refs
            .split_whitespace()
            .filter(|r| !base.iter().any(|b| b == r) && !r.contains("<none>"))
            .collect();
        if !extra.is_empty() {
            self.ok(&[&["rmi", "-f"][..], &extra].concat(), t)?;
        }
        for b in &base {
            let args = vec!["image".to_string(), "inspect".into(), b.clone()];
            if self.run(&args, Input::Null, t)?.code != Some(0) {
                self.ok(&["pull", "-q", b], t)?;
            }
        }
        Ok(())
    }
}

/// The case's arguments with placeholders filled in.
fn expand(args: &[&str], fx: &Fixture, corrupt: &Path) -> Vec<String> {
    args.iter()
        .map(|a| {
            a.replace("{busybox}", &fx.reference("busybox:latest"))
                .replace("{web}", &fx.reference("web:latest"))
                .replace("{registry}", &fx.registry)
                .replace("{corrupt}", &corrupt.display().to_string())
                .replace(
                    "{nomkdir}",
                    &corrupt.with_file_name("nomkdir.json").display().to_string(),
                )
        })
        .collect()
}

/// Applies the case's rules to one output (bytes that are not UTF-8 are kept as they are
/// outside the rules' reach: `regex::bytes`).
fn normalise(rules: &[regex::bytes::Regex], reps: &[&str], data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    for (re, rep) in rules.iter().zip(reps) {
        v = re.replace_all(&v, rep.as_bytes()).into_owned();
    }
    v
}

/// Bytes shown readably: printable text as is, everything else escaped (`\n`, `\xff`).
fn show(data: &[u8]) -> String {
    let mut s = String::new();
    for chunk in data.utf8_chunks() {
        for c in chunk.valid().chars() {
            s.extend(c.escape_debug());
        }
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    const MAX: usize = 300;
    if s.chars().count() > MAX {
        let cut: String = s.chars().take(MAX).collect();
        return format!("{cut}... ({} bytes)", data.len());
    }
    s
}

fn show_code(c: Option<i32>) -> String {
    c.map_or("timeout/killed".to_string(), |c| c.to_string())
}

/// One field of one step that differs.
struct Mismatch {
    case: &'static str,
    field: String,
    dockerd: String,
    berthd: String,
}

/// Runs one case on one daemon: every step's normalised outcome, labelled.
fn run_case(
    t: &Target<'_>,
    case: &Case,
    fx: &Fixture,
    corrupt: &Path,
    rules: &[regex::bytes::Regex],
    reps: &[&str],
) -> Result<Vec<(String, Outcome)>> {
    let mut res = Vec::new();
    for (i, step) in case.steps.iter().enumerate() {
        let last = i + 1 == case.steps.len();
        let (input, times) = if last {
            (case.stdin, case.repeat)
        } else {
            (Input::Null, 1)
        };
        let args = expand(step, fx, corrupt);
        for run in 0..times {
            let mut o = t.run(&args, input, case.timeout)?;
            o.stdout = normalise(rules, reps, &o.stdout);
            o.stderr = normalise(rules, reps, &o.stderr);
            let mut label = format!("step {} `docker {}`", i + 1, step.join(" "));
            if times > 1 {
                label.push_str(&format!(" (run {})", run + 1));
            }
            res.push((label, o));
        }
    }
    Ok(res)
}

#[test]
fn docker_cli_against_dockerd_and_berthd() -> Result<()> {
    assert!(CASES.len() >= 40, "at least 40 cases");
    let mut names: Vec<&str> = CASES.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), CASES.len(), "case names are unique");

    let fx = Fixture::from_env()?;
    let scratch = tempfile::Builder::new()
        .prefix("berth-difftest-")
        .tempdir()?;
    let corrupt = scratch.path().join("corrupt.tar");
    std::fs::write(&corrupt, b"this is not an image archive\n".repeat(64))?;
    std::fs::write(
        corrupt.with_file_name("nomkdir.json"),
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1},{"names":["unshare"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )?;
    let dockerd_config = scratch.path().join("dockerd-cli");
    let berthd_config = scratch.path().join("berthd-cli");

    let reference = Dockerd::start(&[])?;
    // DockerEnv removes every container on drop, also when a case left one behind.
    let berth = DockerEnv::new()?;
    let targets = [
        Target {
            name: "dockerd",
            host: reference.host(),
            config: &dockerd_config,
        },
        Target {
            name: "berthd",
            host: berth.d.host(),
            config: &berthd_config,
        },
    ];

    let only = std::env::var("BERTH_DIFFTEST_CASES")
        .ok()
        .map(|re| regex::Regex::new(&re))
        .transpose()
        .context("BERTH_DIFFTEST_CASES is not a regular expression")?;
    let verbose = std::env::var_os("BERTH_DIFFTEST_VERBOSE").is_some();

    let mut table = Vec::new();
    let mut mismatches = Vec::new();
    let mut failures = 0;
    for case in CASES
        .iter()
        .filter(|c| only.as_ref().is_none_or(|re| re.is_match(c.name)))
    {
        let rules = case
            .norm
            .iter()
            .map(|(re, _)| regex::bytes::Regex::new(re))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("case {}: bad normalisation rule", case.name))?;
        let reps: Vec<&str> = case.norm.iter().map(|(_, r)| *r).collect();
        let mut results = Vec::new();
        let mut secs = Vec::new();
        for t in &targets {
            t.reset(&fx)
                .with_context(|| format!("reset {} before {}", t.name, case.name))?;
            let start = Instant::now();
            results.push(run_case(t, case, &fx, &corrupt, &rules, &reps)?);
            secs.push(start.elapsed().as_secs_f64());
        }
        let (want, got) = (&results[0], &results[1]);
        if verbose {
            for ((label, w), (_, g)) in want.iter().zip(got) {
                println!("{} | {label}", case.name);
                for (t, o) in [("dockerd", w), ("berthd", g)] {
                    println!(
                        "    {t:<8} exit {} | stdout {} | stderr {}",
                        show_code(o.code),
                        show(&o.stdout),
                        show(&o.stderr)
                    );
                }
            }
        }
        let mut diffs = Vec::new();
        for ((label, w), (_, g)) in want.iter().zip(got) {
            if w.code != g.code {
                diffs.push((
                    format!("{label} exit code"),
                    show_code(w.code),
                    show_code(g.code),
                ));
            }
            if w.stdout != g.stdout {
                diffs.push((format!("{label} stdout"), show(&w.stdout), show(&g.stdout)));
            }
            if w.stderr != g.stderr {
                diffs.push((format!("{label} stderr"), show(&w.stderr), show(&g.stderr)));
            }
        }
        let status = match (diffs.is_empty(), case.expect_divergence) {
            (true, None) => "match".to_string(),
            (false, Some(_)) => "diverges (known)".to_string(),
            (false, None) => {
                failures += 1;
                "DIVERGES (unmarked: fix berth or mark the case)".to_string()
            }
            (true, Some(_)) => {
                failures += 1;
                "MATCHES (marked divergent: remove the mark)".to_string()
            }
        };
        let time = format!("{:.1}s/{:.1}s", secs[0], secs[1]);
        table.push((
            case.name,
            time,
            status,
            case.expect_divergence.unwrap_or(""),
        ));
        for (field, dockerd, berthd) in diffs {
            mismatches.push(Mismatch {
                case: case.name,
                field,
                dockerd,
                berthd,
            });
        }
    }
    for t in &targets {
        t.reset(&fx)?;
    }

    println!("\n=== differential cases: docker CLI against dockerd 20.10 and berthd ===");
    println!("{:<36} {:<12} result", "case", "dockerd/berthd");
    for (name, time, status, known) in &table {
        if known.is_empty() {
            println!("{name:<36} {time:<14} {status}");
        } else {
            println!("{name:<36} {time:<14} {status}  [{known}]");
        }
    }
    println!("\n=== mismatches (case | field | dockerd | berthd) ===");
    for m in &mismatches {
        println!(
            "{} | {}\n    dockerd: {}\n    berthd:  {}",
            m.case, m.field, m.dockerd, m.berthd
        );
    }
    println!(
        "\n{} cases, {} matching, {} diverging, {} wrong marks",
        table.len(),
        table.iter().filter(|t| t.2 == "match").count(),
        table.iter().filter(|t| t.2 != "match").count(),
        failures
    );
    anyhow::ensure!(
        failures == 0,
        "{failures} case(s) disagree with their expect_divergence mark (see the tables above)"
    );
    Ok(())
}

/// Checks the reference daemon alone: private dirs, nothing left after drop. Two of them
/// at once do not clash (own netns, dirs, containerd and cgroup parent each).
#[test]
fn dockerd_reference_is_private_and_leaves_nothing() -> Result<()> {
    let fx = Fixture::from_env()?;
    let (a, b) = (Dockerd::start(&[])?, Dockerd::start(&[])?);
    let img = fx.reference("busybox:latest");
    let mut leftovers = Vec::new();
    for d in [&a, &b] {
        let out = d.docker(&["run", "-d", "--network", "none", &img, "sleep", "100"])?;
        assert!(
            out.status.success(),
            "run on the reference dockerd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let root = d
            .docker(&["info", "--format", "{{.DockerRootDir}}"])?
            .stdout;
        assert_eq!(
            String::from_utf8_lossy(&root).trim(),
            d.data_root().display().to_string()
        );
        assert!(
            d.exec_root().join("containerd/containerd.sock").exists(),
            "dockerd runs its own containerd under its exec root"
        );
        assert!(!d.leftover_pids().is_empty(), "its processes are found");
        let bridge = Command::new("ip")
            .args(["-n", d.netns_name(), "link", "show", "docker0"])
            .output()?;
        assert!(
            bridge.status.success(),
            "dockerd's bridge is in its own netns"
        );
        assert!(
            !d.leftover_cgroups().is_empty(),
            "its cgroup parent is used"
        );
        leftovers.push((
            d.root().to_path_buf(),
            d.exec_root(),
            d.netns_name().to_string(),
            d.cgroup_parent().to_string(),
        ));
    }
    drop(a);
    drop(b);
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let netns = String::from_utf8(Command::new("ip").args(["netns", "list"]).output()?.stdout)?;
    for (root, exec_root, ns, cgroup) in leftovers {
        assert!(!root.exists() && !exec_root.exists(), "dirs removed");
        let (root, exec_root) = (root.display().to_string(), exec_root.display().to_string());
        assert!(
            !mounts.contains(&root) && !mounts.contains(&exec_root),
            "nothing mounted under {root} or {exec_root}"
        );
        assert!(
            !netns.split_whitespace().any(|n| n == ns),
            "netns {ns} removed"
        );
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            assert!(
                !cmdline.contains(&root) && !cmdline.contains(&exec_root),
                "process {:?} left: {cmdline}",
                entry.file_name()
            );
        }
        for h in ["memory", "pids", "cpu", "unified"] {
            let p = PathBuf::from("/sys/fs/cgroup").join(h).join(&cgroup);
            assert!(!p.exists(), "{} removed", p.display());
        }
    }
    Ok(())
}
