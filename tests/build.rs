//! `docker build` (the classic builder, `POST /build`) against a berthd this test starts,
//! with the real clients: the docker CLI (`DOCKER_BUILDKIT=0`), docker-py's
//! `images.build`, docker-compose's `build:`, and skopeo for a pushed result.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};
use berth_testkit::daemon::{Berthd, DockerEnv};

fn unique(prefix: &str) -> String {
    let n: u32 = std::process::id()
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0));
    format!("{prefix}{n:x}")
}

/// `DOCKER_BUILDKIT=0 docker build ARGS` against `d`, in `dir`.
fn build(d: &Berthd, dir: &Path, args: &[&str]) -> Result<Output> {
    let mut c = d.docker_cmd(&["build"]);
    c.args(args)
        .arg(dir)
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::null());
    c.output().context("run docker build")
}

fn build_ok(d: &Berthd, dir: &Path, args: &[&str]) -> Result<String> {
    let out = build(d, dir, args)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "docker build {} failed: {stdout}{}\nberthd log:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            d.log()
        );
    }
    Ok(stdout)
}

/// The ID "Successfully built <id>" names.
fn built_id(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("Successfully built "))
        .unwrap_or_else(|| panic!("no 'Successfully built' in:\n{out}"))
        .trim()
        .to_string()
}

fn write(dir: &Path, rel: &str, text: &str) -> Result<()> {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&p, text)?;
    Ok(())
}

/// A context whose multi-stage Dockerfile uses every instruction of the issue.
fn full_context(dir: &Path, base: &str) -> Result<()> {
    write(
        dir,
        "Dockerfile",
        &format!(
            r#"# escape=\
# a comment
ARG BASE={base}
FROM ${{BASE}} AS tools
ARG GREETING=hello
RUN echo "$GREETING from tools" > /greeting \
 && mkdir -p /out && echo built > /out/marker
SHELL ["/bin/sh", "-c"]
RUN ["/bin/sh", "-c", "echo exec-form > /out/exec"]

FROM tools AS parent
ONBUILD RUN echo onbuild-ran > /onbuild

FROM parent
ARG GREETING
ARG UNSET_ARG
ENV APP_HOME=/srv/app MODE=${{UNSET_ARG:-dflt}} PLUS=${{GREETING:+set}}
WORKDIR $APP_HOME
RUN echo "appuser:x:1234:1234::/home/appuser:/bin/sh" >> /etc/passwd && echo "appuser:x:1234:" >> /etc/group
COPY --from=tools /greeting /out/ ./
COPY --chown=appuser:appuser app/ ./app/
COPY --chmod=755 app/run.sh /usr/local/bin/
ADD files.tar /unpacked/
COPY *.conf conf/
LABEL org.test.stage=final "second label"=two
EXPOSE 8080/tcp 9090
VOLUME /data
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=5s --timeout=2s --retries=4 CMD true
USER appuser
ENTRYPOINT ["/usr/local/bin/run.sh"]
CMD ["arg1"]
"#
        ),
    )?;
    write(
        dir,
        "app/run.sh",
        "#!/bin/sh\necho \"run.sh $* as $(id -un) in $(pwd) mode=$MODE plus=$PLUS\"\ncat /srv/app/greeting /onbuild\n",
    )?;
    write(dir, "app/data.txt", "data v1\n")?;
    write(dir, "a.conf", "a\n")?;
    write(dir, "b.conf", "b\n")?;
    write(dir, "secret.key", "do not ship\n")?;
    write(dir, "logs/x.log", "noise\n")?;
    write(dir, ".dockerignore", "secret.key\nlogs\n*.md\n")?;
    write(dir, "README.md", "ignored\n")?;
    // files.tar: ADD unpacks it.
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(8);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    t.append_data(&mut h, "inner/file.txt", &b"in tar\n\n"[..])?;
    std::fs::write(dir.join("files.tar"), t.into_inner()?)?;
    Ok(())
}

#[test]
fn multistage_build_with_the_docker_cli_runs_caches_and_targets() -> Result<()> {
    let e = DockerEnv::new()?;
    let d = &e.d;
    let base = e.img("busybox:latest");
    let ctx = tempfile::tempdir()?;
    full_context(ctx.path(), &base)?;
    let name = unique("bt");
    let tag = format!("{name}:v1");

    let out = build_ok(d, ctx.path(), &["-t", &tag, "--build-arg", "GREETING=hi"])?;
    let steps = out.lines().filter(|l| l.starts_with("Step ")).count();
    assert!(out.contains("Step 1/"), "{out}");
    assert!(steps >= 25, "{steps} steps in:\n{out}");
    assert!(out.contains(" ---> Running in "), "{out}");
    assert!(out.contains("Removing intermediate container "), "{out}");
    assert!(out.contains(&format!("Successfully tagged {tag}")), "{out}");
    assert!(!out.contains("Using cache"), "{out}");
    let id = built_id(&out);

    // The image runs with what the Dockerfile said.
    let run = e.ok(&["run", "--rm", &tag])?;
    assert_eq!(
        run,
        "run.sh arg1 as appuser in /srv/app mode=dflt plus=set\nhi from tools\nonbuild-ran\n"
    );
    assert_eq!(e.inspect(&tag, "{{.Config.User}}")?, "appuser");
    assert_eq!(e.inspect(&tag, "{{.Config.WorkingDir}}")?, "/srv/app");
    assert_eq!(
        e.inspect(&tag, "{{json .Config.Entrypoint}} {{json .Config.Cmd}}")?,
        r#"["/usr/local/bin/run.sh"] ["arg1"]"#
    );
    let env = e.inspect(&tag, "{{json .Config.Env}}")?;
    assert!(
        env.contains("APP_HOME=/srv/app") && env.contains("MODE=dflt"),
        "{env}"
    );
    assert!(!env.contains("GREETING"), "build args are not env: {env}");
    assert_eq!(
        e.inspect(
            &tag,
            "{{index .Config.Labels \"org.test.stage\"}} {{index .Config.Labels \"second label\"}}"
        )?,
        "final two"
    );
    assert_eq!(
        e.inspect(&tag, "{{json .Config.ExposedPorts}}")?,
        r#"{"8080/tcp":{},"9090/tcp":{}}"#
    );
    assert_eq!(
        e.inspect(&tag, "{{json .Config.Volumes}}")?,
        r#"{"/data":{}}"#
    );
    assert_eq!(e.inspect(&tag, "{{.Config.StopSignal}}")?, "SIGUSR1");
    assert_eq!(
        e.inspect(&tag, "{{json .Config.Healthcheck}}")?,
        r#"{"Test":["CMD-SHELL","true"],"Interval":5000000000,"Timeout":2000000000,"Retries":4}"#
    );
    // Files: ownership, modes, ignored ones absent, the tar unpacked, globs.
    let ls = e.ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        &tag,
        "-c",
        "stat -c '%n %U %a' app/data.txt /usr/local/bin/run.sh; cat /unpacked/inner/file.txt conf/a.conf conf/b.conf marker exec; ls -a /srv/app",
    ])?;
    assert!(ls.contains("app/data.txt appuser 644"), "{ls}");
    assert!(ls.contains("/usr/local/bin/run.sh root 755"), "{ls}");
    assert!(ls.contains("in tar\n\na\nb\nbuilt\nexec-form\n"), "{ls}");
    assert!(
        !ls.contains("secret.key") && !ls.contains("README.md"),
        "{ls}"
    );
    // docker history: one entry per step.
    let hist = e.ok(&["history", "--no-trunc", "--format", "{{.CreatedBy}}", &tag])?;
    assert!(hist.contains("appuser:x:1234:1234"), "{hist}");
    assert!(hist.contains("#(nop)  USER appuser"), "{hist}");
    // Each step's image is named, as dockerd's intermediate images are, down to the base.
    let ids = e.ok(&["history", "-q", &tag])?;
    let named = ids.lines().take_while(|l| *l != "<missing>").count();
    assert!(named >= 20, "{ids}");

    // A rebuild: every step from the cache, the same image.
    let again = build_ok(d, ctx.path(), &["-t", &tag, "--build-arg", "GREETING=hi"])?;
    let runs = again.matches(" ---> Running in ").count();
    assert_eq!(runs, 0, "{again}");
    assert!(again.matches(" ---> Using cache").count() >= 20, "{again}");
    assert_eq!(built_id(&again), id);

    // system df shows the cache.
    let df = e.ok(&["system", "df", "--format", "{{.Type}} {{.TotalCount}}"])?;
    assert!(
        df.lines()
            .any(|l| l.starts_with("Build Cache ") && l != "Build Cache 0"),
        "{df}"
    );

    // Changing one copied file re-runs the steps from that COPY on, not those before.
    write(ctx.path(), "app/data.txt", "data v2\n")?;
    let changed = build_ok(d, ctx.path(), &["-t", &tag, "--build-arg", "GREETING=hi"])?;
    let before: String = changed
        .split("COPY --chown=appuser:appuser app/ ./app/")
        .next()
        .unwrap()
        .to_string();
    let after = &changed[before.len()..];
    assert!(!before.contains(" ---> Running in "), "{changed}");
    assert!(!after.contains("Using cache"), "{changed}");
    assert_ne!(built_id(&changed), id);
    assert_eq!(
        e.ok(&["run", "--rm", "--entrypoint", "cat", &tag, "app/data.txt"])?,
        "data v2\n"
    );

    // --target stops at a stage.
    let t_out = build_ok(
        d,
        ctx.path(),
        &["-t", &format!("{name}:tools"), "--target", "tools"],
    )?;
    assert!(!t_out.contains("ENTRYPOINT"), "{t_out}");
    assert_eq!(
        e.ok(&["run", "--rm", &format!("{name}:tools"), "cat", "/greeting"])?,
        "hello from tools\n"
    );

    // The cache survives a daemon restart; builder prune empties it.
    let mut e = e;
    e.d.restart()?;
    let after_restart = build_ok(
        &e.d,
        ctx.path(),
        &["-t", &tag, "--build-arg", "GREETING=hi"],
    )?;
    assert_eq!(
        after_restart.matches(" ---> Running in ").count(),
        0,
        "{after_restart}"
    );
    let pruned = e.ok(&["builder", "prune", "-f"])?;
    assert!(pruned.contains("Total reclaimed space"), "{pruned}");
    let cold = build_ok(
        &e.d,
        ctx.path(),
        &["-t", &tag, "--build-arg", "GREETING=hi"],
    )?;
    assert!(!cold.contains("Using cache"), "{cold}");
    Ok(())
}

#[test]
fn a_failing_run_fails_the_build_with_dockers_message() -> Result<()> {
    let e = DockerEnv::new()?;
    let ctx = tempfile::tempdir()?;
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "FROM {}\nRUN echo before\nRUN exit 3\nRUN echo never\n",
            e.img("busybox:latest")
        ),
    )?;
    let out = build(&e.d, ctx.path(), &[])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("The command '/bin/sh -c exit 3' returned a non-zero code: 3"),
        "{stdout}{stderr}"
    );
    assert!(stdout.contains("before\n"), "{stdout}");
    assert!(!stdout.contains("never"), "{stdout}");
    // A missing COPY source.
    write(
        ctx.path(),
        "Dockerfile",
        &format!("FROM {}\nCOPY nothere /x\n", e.img("busybox:latest")),
    )?;
    let out = build(&e.d, ctx.path(), &[])?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("file not found in build context"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A parameter berth cannot honour is refused by name.
    let out = build(&e.d, ctx.path(), &["--memory", "64m"])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("memory"));
    Ok(())
}

/// Runs a python3 script with docker-py against `d`; fails unless it exits 0.
fn python(d: &Berthd, script: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(d.socket())
        .args(args)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "python failed: {text}{}\nberthd log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            d.log()
        );
    }
    Ok(text)
}

#[test]
fn docker_py_builds_with_buildargs_labels_target_dockerfile_and_extra_hosts() -> Result<()> {
    let e = DockerEnv::new()?;
    let ctx = tempfile::tempdir()?;
    write(
        ctx.path(),
        "sub/Dockerfile.custom",
        &format!(
            "FROM {} AS first\nARG WHO\nRUN echo \"who=$WHO\" > /who && grep myhost /etc/hosts > /hosts\nFROM first AS second\nRUN echo second > /second\n",
            e.img("busybox:latest")
        ),
    )?;
    let tag = unique("py");
    let script = r#"
import sys, docker
c = docker.DockerClient(base_url="unix://" + sys.argv[1], version="auto")
img, logs = c.images.build(path=sys.argv[2], dockerfile="sub/Dockerfile.custom", tag=sys.argv[3],
    buildargs={"WHO": "py"}, labels={"built.by": "docker-py"}, target="first",
    extra_hosts={"myhost": "10.9.8.7"}, rm=True)
print(img.id)
print(img.labels["built.by"])
print(c.containers.run(sys.argv[3], "cat /who /hosts", remove=True).decode(), end="")
print("second" if any("second" in (l.get("stream") or "") for l in logs) else "first-only")
"#;
    let out = python(&e.d, script, &[&ctx.path().display().to_string(), &tag])?;
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("sha256:"), "{out}");
    assert_eq!(lines[1], "docker-py");
    assert_eq!(lines[2], "who=py");
    assert!(
        lines[3].contains("10.9.8.7") && lines[3].contains("myhost"),
        "{out}"
    );
    assert_eq!(lines[4], "first-only");
    Ok(())
}

#[test]
fn compose_build_section_builds_the_image() -> Result<()> {
    let e = DockerEnv::new()?;
    let dir = tempfile::tempdir()?;
    write(
        dir.path(),
        "svc/Dockerfile",
        &format!(
            "FROM {}\nARG FLAVOR\nRUN echo \"flavor $FLAVOR\" > /flavor\nCMD [\"cat\", \"/flavor\"]\n",
            e.img("busybox:latest")
        ),
    )?;
    let image = format!("{}:c1", unique("cmp"));
    write(
        dir.path(),
        "docker-compose.yml",
        &format!("version: '3.7'\nservices:\n  app:\n    image: {image}\n    build:\n      context: ./svc\n      args:\n        FLAVOR: mint\n"),
    )?;
    let project = unique("p");
    let out = Command::new("docker-compose")
        .args(["--no-ansi", "-p", &project, "build"])
        .current_dir(dir.path())
        .env("DOCKER_HOST", e.d.host())
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null())
        .output()
        .context("docker-compose (apt: docker-compose)")?;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(e.ok(&["run", "--rm", &image])?, "flavor mint\n");
    Ok(())
}

#[test]
fn a_built_image_is_pushed_pulled_by_a_fresh_berthd_and_read_by_skopeo() -> Result<()> {
    let e = DockerEnv::new()?;
    let ctx = tempfile::tempdir()?;
    write(ctx.path(), "msg.txt", "pushed and pulled\n")?;
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "FROM {}\nCOPY msg.txt /msg.txt\nRUN cat /msg.txt > /copy.txt\nCMD [\"cat\", \"/copy.txt\"]\n",
            e.img("busybox:latest")
        ),
    )?;
    let reference = format!("{}/{}:v1", e.fx.registry, unique("built"));
    build_ok(&e.d, ctx.path(), &["-t", &reference])?;
    e.ok(&["push", &reference])?;

    let fresh = Berthd::start(&[])?;
    fresh.docker_ok(&["pull", &reference])?;
    let out = fresh.docker_ok(&["run", "--rm", &reference])?;
    assert_eq!(out, "pushed and pulled\n");
    for id in fresh.docker_ok(&["ps", "-aq"])?.split_whitespace() {
        let _ = fresh.docker(&["rm", "-f", id]);
    }

    let sk = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()?;
    let text = String::from_utf8_lossy(&sk.stdout);
    assert!(
        sk.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&sk.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&text)?;
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["Layers"].as_array().map(Vec::len), Some(3), "{text}");
    Ok(())
}
