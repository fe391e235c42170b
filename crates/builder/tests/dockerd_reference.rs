//! Differential check of `berth-builder` (the pure Dockerfile parser and planner) against
//! the behaviour reference, Debian's dockerd 20.10 classic builder
//! ([`berth_testkit::dockerd::Dockerd`], `DOCKER_BUILDKIT=0`, the real docker CLI):
//! - parse errors: the daemon's message is [`berth_builder::ParseError`]'s text;
//! - metadata-only Dockerfiles on `scratch` (no image needed): the "Step i/N : ..." lines,
//!   the history `created_by` of every step, the final image config, the build-arg warning,
//!   `--target`, `--label`, ONBUILD triggers of a base built here.
//!
//! RUN and COPY need a base image and a context; their texts are covered by the unit tests
//! of berth-builder and by the `build` e2e tests of the node.

use std::io::Write;
use std::process::Stdio;

use berth_builder::{parse, Action, BuildOptions, ImageConfig, Planner, Step};
use berth_testkit::dockerd::Dockerd;

struct Built {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn build(d: &Dockerd, dockerfile: &str, args: &[&str]) -> Built {
    let mut all = vec!["build"];
    all.extend_from_slice(args);
    all.push("-");
    let mut cmd = d.docker_cmd(&all);
    cmd.env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn docker build");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dockerfile.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Built {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn docker_text(d: &Dockerd, args: &[&str]) -> String {
    let out = d.docker(args).unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// Plans a build; `bases` gives the config of image bases by name.
fn plan(text: &str, opts: BuildOptions, bases: &[(&str, ImageConfig)]) -> (Planner, Vec<Step>) {
    let mut p = Planner::new(parse(text).unwrap(), opts).unwrap();
    let mut steps = Vec::new();
    while let Some(s) = p.next_step() {
        let s = s.unwrap();
        if let Action::From {
            image, stage: None, ..
        } = &s.action
        {
            if image != "scratch" {
                let c = bases
                    .iter()
                    .find(|(n, _)| n == image)
                    .map(|(_, c)| c.clone())
                    .unwrap_or_else(|| panic!("no base config for {image}"));
                p.base_resolved(c);
            }
        }
        steps.push(s);
    }
    (p, steps)
}

/// The "Step i/N : text" lines and "# Executing" lines of a build's output.
fn step_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.starts_with("Step ") || l.starts_with("# Executing"))
        .map(str::to_string)
        .collect()
}

fn our_step_lines(p: &Planner, steps: &[Step]) -> Vec<String> {
    let mut out = Vec::new();
    for s in steps {
        if let Some(pre) = &s.preface {
            out.push(pre.clone());
        }
        if !s.trigger {
            out.push(format!(
                "Step {}/{} : {}",
                s.number,
                p.total_steps(),
                s.display
            ));
        }
    }
    out
}

/// The history of the final image (oldest first), as our steps of the last stage give it.
fn our_history(steps: &[Step]) -> Vec<String> {
    let last_stage = steps.last().unwrap().stage;
    steps
        .iter()
        .filter(|s| {
            s.stage == last_stage && !matches!(s.action, Action::From { .. } | Action::MetaArg)
        })
        .map(|s| s.created_by.clone())
        .collect()
}

fn their_history(d: &Dockerd, image: &str) -> Vec<String> {
    let mut h: Vec<String> = docker_text(
        d,
        &["history", "--no-trunc", "--format", "{{.CreatedBy}}", image],
    )
    .lines()
    .map(str::to_string)
    .collect();
    h.reverse();
    h
}

/// The config fields berth models, from `docker inspect` and from our last step.
fn config_fields(v: &serde_json::Value) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for k in [
        "User",
        "Env",
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "Labels",
        "ExposedPorts",
        "Volumes",
        "StopSignal",
        "Healthcheck",
        "OnBuild",
        "Shell",
    ] {
        let val = v.get(k).cloned().unwrap_or(serde_json::Value::Null);
        let empty = val.is_null()
            || val.as_str() == Some("")
            || val.as_array().is_some_and(|a| a.is_empty())
            || val.as_object().is_some_and(|o| o.is_empty());
        if !empty {
            out.insert(k.to_string(), val);
        }
    }
    serde_json::Value::Object(out)
}

fn their_config(d: &Dockerd, image: &str) -> serde_json::Value {
    serde_json::from_str(&docker_text(
        d,
        &["image", "inspect", "--format", "{{json .Config}}", image],
    ))
    .unwrap()
}

#[test]
fn parse_errors_match_dockerd() {
    let d = Dockerd::start(&[]).expect("start the reference dockerd");
    let cases = [
        "FROM scratch\nFOO bar\n",
        "FROM scratch\n\n  runn x\n",
        "FROM a b\n",
        "FROM a AS 1x\n",
        "RUN x\n",
        "# just a comment\n",
        "# escape=x\nFROM scratch\n",
        "# escape=`\n# escape=\\\nFROM scratch\n",
        "FROM scratch\nRUN --mount=type=cache,target=/x echo\n",
        "FROM scratch\nRUN --network=none echo\n",
        "FROM scratch\nCOPY --link a b\n",
        "FROM scratch\nCOPY a\n",
        "FROM scratch\nONBUILD ONBUILD RUN x\n",
        "FROM scratch\nONBUILD FROM x\n",
        "FROM scratch\nSHELL /bin/bash -c\n",
        "FROM scratch\nENV A\n",
        "FROM scratch\nENV A=1 B\n",
        "FROM scratch\nHEALTHCHECK --interval=1 CMD x\n",
        "FROM scratch\nHEALTHCHECK --interval=100us CMD x\n",
        "FROM scratch\nHEALTHCHECK FOO x\n",
        "FROM scratch\nHEALTHCHECK CMD\n",
        "FROM scratch\nHEALTHCHECK --retries=0 CMD x\n",
        "FROM scratch\nCMD [\"a\", 1]\n",
        "FROM scratch\nWORKDIR\n",
        "FROM scratch\nEXPOSE\n",
        "FROM scratch\nRUN <<EOF\necho hi\nEOF\n",
        // Refused when the step runs.
        "FROM scratch\nSTOPSIGNAL FOO\n",
        "FROM scratch\nEXPOSE abc\n",
        "FROM scratch\nEXPOSE 80/xyz\n",
        "FROM scratch\nENV X=${Y:-z\n",
        "FROM scratch\nENV X=${Y\n",
        "FROM scratch\nLABEL a='b\n",
        "FROM scratch\nCOPY --from=0 a b\n",
        "FROM scratch\nFROM scratch\nCOPY --from=5 a b\n",
        "FROM scratch AS x\nFROM scratch AS x\n",
        "ARG B\nFROM ${B}\n",
    ];
    let mut mismatches = Vec::new();
    for text in cases {
        // Most are parse errors; a few (RUN --mount) are refused when the step runs.
        let ours = match parse(text) {
            Err(e) => e.to_string(),
            Ok(df) => {
                let mut p = Planner::new(df, BuildOptions::default()).unwrap();
                let mut err = String::from("<no error>");
                while let Some(s) = p.next_step() {
                    if let Err(e) = s {
                        err = e.to_string();
                    }
                }
                err
            }
        };
        let b = build(&d, text, &[]);
        assert!(!b.ok, "dockerd accepted {text:?}");
        let theirs = b
            .stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim_start_matches("Error response from daemon: ")
            .to_string();
        if theirs != ours {
            mismatches.push(format!("{text:?}\n  dockerd: {theirs}\n  berth:   {ours}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn metadata_steps_history_and_config_match_dockerd() {
    let d = Dockerd::start(&[]).expect("start the reference dockerd");
    let suffix = std::process::id();
    let text = r#"ARG V=1
FROM scratch AS first
ENV FIRST=yes
FROM scratch
ARG V
ARG W=${V}x
ENV A=1 B="two words" C=$W
ENV OLD style value
LABEL "x y"="z" k=$A
WORKDIR /app
WORKDIR sub/../other
USER nobody:nogroup
EXPOSE 80 443/udp 8000-8001
VOLUME ["/data", "/logs"]
VOLUME /more
STOPSIGNAL SIGKILL
HEALTHCHECK --interval=5m --timeout=3s --retries=3 CMD curl -f http://localhost/ || exit 1
SHELL ["/bin/bash", "-c"]
CMD echo hi
ENTRYPOINT ["/bin/sh"]
ONBUILD RUN echo onbuild
MAINTAINER me <me@x>
"#;
    let tag = format!("berth-builder-ref-a-{suffix}");
    let b = build(
        &d,
        text,
        &[
            "-t",
            &tag,
            "--build-arg",
            "V=7",
            "--build-arg",
            "UNUSED=1",
            "--label",
            "z=9",
            "--label",
            "a=$x",
        ],
    );
    assert!(b.ok, "dockerd build failed: {}{}", b.stdout, b.stderr);
    let mut opts = BuildOptions::default();
    opts.build_args.insert("V".into(), Some("7".into()));
    opts.build_args.insert("UNUSED".into(), Some("1".into()));
    opts.labels.insert("z".into(), "9".into());
    opts.labels.insert("a".into(), "$x".into());
    let (p, steps) = plan(text, opts, &[]);
    assert_eq!(step_lines(&b.stdout), our_step_lines(&p, &steps));
    assert_eq!(their_history(&d, &tag), our_history(&steps));
    assert_eq!(
        config_fields(&their_config(&d, &tag)),
        config_fields(&serde_json::to_value(&steps.last().unwrap().config).unwrap())
    );
    for w in p.warnings() {
        assert!(b.stdout.contains(&w), "warning {w:?} not in {}", b.stdout);
    }

    // The escape directive, HEALTHCHECK NONE, ENTRYPOINT resetting CMD, --target.
    let text = "# escape=`\nFROM scratch AS one\nENV P=C:\\x `\n    Q=2\nHEALTHCHECK NONE\nCMD [\"a\"]\nFROM one AS two\nENTRYPOINT top -b\nFROM two\nLABEL never=built\n";
    let tag = format!("berth-builder-ref-b-{suffix}");
    let b = build(&d, text, &["-t", &tag, "--target", "two"]);
    assert!(b.ok, "dockerd build failed: {}{}", b.stdout, b.stderr);
    let opts = BuildOptions {
        target: Some("two".into()),
        ..Default::default()
    };
    let (p, steps) = plan(text, opts, &[]);
    assert_eq!(step_lines(&b.stdout), our_step_lines(&p, &steps));
    assert_eq!(
        config_fields(&their_config(&d, &tag)),
        config_fields(&serde_json::to_value(&steps.last().unwrap().config).unwrap())
    );

    // ONBUILD triggers of a base built here run right after FROM.
    let base = format!("berth-builder-ref-base-{suffix}");
    let b = build(
        &d,
        "FROM scratch\nENV T=1\nONBUILD ENV U=$T\nONBUILD LABEL l=$U\n",
        &["-t", &base],
    );
    assert!(b.ok, "dockerd build failed: {}{}", b.stdout, b.stderr);
    let base_config: ImageConfig = serde_json::from_value(their_config(&d, &base)).unwrap();
    let text = format!("FROM {base}\nUSER x\n");
    let tag = format!("berth-builder-ref-c-{suffix}");
    let b = build(&d, &text, &["-t", &tag]);
    assert!(b.ok, "dockerd build failed: {}{}", b.stdout, b.stderr);
    let (p, steps) = plan(&text, BuildOptions::default(), &[(&base, base_config)]);
    assert_eq!(step_lines(&b.stdout), our_step_lines(&p, &steps));
    let theirs = their_history(&d, &tag);
    let ours = our_history(&steps);
    assert_eq!(theirs[theirs.len() - ours.len()..], ours[..]);
    assert_eq!(
        config_fields(&their_config(&d, &tag)),
        config_fields(&serde_json::to_value(&steps.last().unwrap().config).unwrap())
    );
}

#[test]
fn substitution_and_copy_history_match_dockerd() {
    let d = Dockerd::start(&[]).expect("start the reference dockerd");
    let suffix = std::process::id();

    // Substitution, quotes and escapes in the instructions Docker substitutes.
    let text = r#"FROM scratch
ENV A=a\ b B='$A' C="$A" D=\$A E=${A:+set} F=${NOPE:-dflt} G=${A:-x}${A} I="q\"uote"
LABEL "q"="it's" 'r'="x\"y" s=multi\
word
ENV H $A and "more"
ARG P=8080
EXPOSE $P ${P}/udp
ENV PORTS="1 2"
EXPOSE $PORTS
USER ${A}
WORKDIR ./rel
WORKDIR ../up/$NOPE
VOLUME $A /v2
STOPSIGNAL ${NOPE:-SIGUSR1}
"#;
    let tag = format!("berth-builder-ref-s-{suffix}");
    let b = build(&d, text, &["-t", &tag]);
    assert!(b.ok, "dockerd build failed: {}{}", b.stdout, b.stderr);
    let (p, steps) = plan(text, BuildOptions::default(), &[]);
    assert_eq!(step_lines(&b.stdout), our_step_lines(&p, &steps));
    assert_eq!(their_history(&d, &tag), our_history(&steps));
    assert_eq!(
        config_fields(&their_config(&d, &tag)),
        config_fields(&serde_json::to_value(&steps.last().unwrap().config).unwrap())
    );

    // COPY and ADD: history around the source hash, --chown, --from (name and index).
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("a.txt"), "a\n").unwrap();
    std::fs::create_dir(ctx.path().join("dir")).unwrap();
    std::fs::write(ctx.path().join("dir/b.txt"), "b\n").unwrap();
    let text = r#"FROM scratch AS files
COPY a.txt /a.txt
FROM scratch
WORKDIR /app
COPY --chown=1000:1000 a.txt dir/ ./x/
COPY --from=files /a.txt /from-stage.txt
COPY --from=0 /a.txt rel.txt
ADD dir /added/
ENV F=a.txt
COPY $F /env-${F}
COPY ["a.txt", "/json dest"]
"#;
    std::fs::write(ctx.path().join("Dockerfile"), text).unwrap();
    let tag = format!("berth-builder-ref-copy-{suffix}");
    let out = d
        .docker_cmd(&["build", "-t", &tag, ctx.path().to_str().unwrap()])
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dockerd build failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (p, steps) = plan(text, BuildOptions::default(), &[]);
    assert_eq!(step_lines(&stdout), our_step_lines(&p, &steps));
    let theirs: Vec<String> = their_history(&d, &tag)
        .iter()
        .map(|h| without_hashes(h))
        .collect();
    let ours: Vec<String> = our_history(&steps)
        .iter()
        .map(|h| h.replace("<src>", "<hash>"))
        .collect();
    assert_eq!(theirs, ours);
}

/// Replaces Docker's source hashes (`file:`, `dir:`, `multi:` + 64 hex) by `<hash>`.
fn without_hashes(s: &str) -> String {
    let mut out = s.to_string();
    for prefix in ["file:", "dir:", "multi:"] {
        while let Some(i) = out.find(prefix) {
            let start = i + prefix.len();
            let hex_len = out[start..]
                .bytes()
                .take_while(u8::is_ascii_hexdigit)
                .count();
            if hex_len != 64 {
                break;
            }
            out.replace_range(i..start + 64, "<hash>");
        }
    }
    out
}
