//! Tables of Dockerfiles and what Docker 20.10's classic builder makes of them.

use std::collections::BTreeMap;

use crate::*;

fn steps_of(text: &str, opts: BuildOptions, base: Option<ImageConfig>) -> Vec<Step> {
    let df = parse(text).unwrap();
    let mut p = Planner::new(df, opts).unwrap();
    let mut out = Vec::new();
    while let Some(s) = p.next_step() {
        let s = s.unwrap();
        if let Action::From {
            stage: None, image, ..
        } = &s.action
        {
            if image != "scratch" {
                p.base_resolved(base.clone().unwrap_or_default());
            }
        }
        out.push(s);
    }
    out
}

fn plan_err(text: &str, opts: BuildOptions) -> String {
    let df = parse(text).unwrap();
    let mut p = match Planner::new(df, opts) {
        Ok(p) => p,
        Err(e) => return e.to_string(),
    };
    while let Some(s) = p.next_step() {
        match s {
            Ok(s) => {
                if let Action::From {
                    stage: None, image, ..
                } = &s.action
                {
                    if image != "scratch" {
                        p.base_resolved(ImageConfig::default());
                    }
                }
            }
            Err(e) => return e.to_string(),
        }
    }
    panic!("no error for {text:?}");
}

fn busybox() -> ImageConfig {
    ImageConfig {
        env: Some(vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ]),
        cmd: Some(vec!["sh".into()]),
        ..Default::default()
    }
}

#[test]
fn parse_error_table() {
    let cases: &[(&str, &str)] = &[
        ("FROM busybox\nFOO bar\n", "dockerfile parse error line 2: unknown instruction: FOO"),
        ("FROM busybox\n\n  runn x\n", "dockerfile parse error line 3: unknown instruction: RUNN"),
        ("FROM a b\n", "dockerfile parse error line 1: FROM requires either one or three arguments"),
        ("FROM a AS\n", "dockerfile parse error line 1: FROM requires either one or three arguments"),
        ("FROM a AS 1x\n", "dockerfile parse error line 1: invalid name for build stage: \"1x\", name can't start with a number or contain symbols"),
        ("RUN x\n", "no build stage in current context"),
        ("", "failed to parse Dockerfile: file with no instructions"),
        ("# just a comment\n\n", "failed to parse Dockerfile: file with no instructions"),
        ("# escape=x\nFROM a\n", "failed to parse Dockerfile: invalid escape token 'x' does not match ` or \\"),
        ("# escape=`\n# escape=\\\nFROM a\n", "failed to parse Dockerfile: only one escape parser directive can be used"),
        ("FROM a\nRUN --network=none echo\n", "dockerfile parse error line 2: Unknown flag: network"),
        ("FROM a\nCOPY --link a b\n", "dockerfile parse error line 2: Unknown flag: link"),
        ("FROM a\nCOPY --from a b\n", "dockerfile parse error line 2: Missing a value on flag: from"),
        ("FROM a\nCOPY --chown=1 --chown=2 a b\n", "dockerfile parse error line 2: Duplicate flag specified: chown"),
        ("FROM a\nADD --from=x a b\n", "dockerfile parse error line 2: Unknown flag: from"),
        ("FROM a\nCOPY a\n", "dockerfile parse error line 2: COPY requires at least two arguments, but only one was provided. Destination could not be determined"),
        ("FROM a\nADD a\n", "dockerfile parse error line 2: ADD requires at least two arguments, but only one was provided. Destination could not be determined"),
        ("FROM a\nONBUILD ONBUILD RUN x\n", "dockerfile parse error line 2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
        ("FROM a\nONBUILD FROM x\n", "dockerfile parse error line 2: FROM isn't allowed as an ONBUILD trigger"),
        ("FROM a\nONBUILD maintainer x\n", "dockerfile parse error line 2: MAINTAINER isn't allowed as an ONBUILD trigger"),
        ("FROM a\nONBUILD\n", "dockerfile parse error line 2: ONBUILD requires at least one argument"),
        ("FROM a\nSHELL /bin/bash -c\n", "dockerfile parse error line 2: SHELL requires the arguments to be in JSON form"),
        ("FROM a\nSHELL []\n", "dockerfile parse error line 2: SHELL requires at least one argument"),
        ("FROM a\nENV A\n", "failed to parse Dockerfile: ENV must have two arguments"),
        ("FROM a\nLABEL A\n", "failed to parse Dockerfile: LABEL must have two arguments"),
        ("FROM a\nENV A=1 B\n", "failed to parse Dockerfile: Syntax error - can't find = in \"B\". Must be of the form: name=value"),
        ("FROM a\nENV\n", "dockerfile parse error line 2: ENV requires at least one argument"),
        ("FROM a\nLABEL =x\n", "dockerfile parse error line 2: LABEL names can not be blank"),
        ("FROM a\nARG =x\n", "dockerfile parse error line 2: ARG names can not be blank"),
        ("FROM a\nARG\n", "dockerfile parse error line 2: ARG requires at least one argument"),
        ("FROM a\nHEALTHCHECK --interval=1 CMD x\n", "dockerfile parse error line 2: time: missing unit in duration \"1\""),
        ("FROM a\nHEALTHCHECK --interval=100us CMD x\n", "dockerfile parse error line 2: Interval \"interval\" cannot be less than 1ms"),
        ("FROM a\nHEALTHCHECK FOO x\n", "dockerfile parse error line 2: Unknown type \"FOO\" in HEALTHCHECK (try CMD)"),
        ("FROM a\nHEALTHCHECK CMD\n", "dockerfile parse error line 2: Missing command after HEALTHCHECK CMD"),
        ("FROM a\nHEALTHCHECK --retries=0 CMD x\n", "dockerfile parse error line 2: --retries must be at least 1 (not 0)"),
        ("FROM a\nHEALTHCHECK --retries=x CMD x\n", "dockerfile parse error line 2: strconv.ParseInt: parsing \"x\": invalid syntax"),
        ("FROM a\nHEALTHCHECK NONE x\n", "dockerfile parse error line 2: HEALTHCHECK NONE takes no arguments"),
        ("FROM a\nHEALTHCHECK\n", "dockerfile parse error line 2: HEALTHCHECK requires at least one argument"),
        ("FROM a\nCMD [\"a\", 1]\n", "failed to parse Dockerfile: when using JSON array syntax, arrays must be comprised of strings only"),
        ("FROM a\nWORKDIR\n", "dockerfile parse error line 2: WORKDIR requires exactly one argument"),
        ("FROM a\nUSER\n", "dockerfile parse error line 2: USER requires exactly one argument"),
        ("FROM a\nEXPOSE\n", "dockerfile parse error line 2: EXPOSE requires at least one argument"),
        ("FROM a\nVOLUME\n", "dockerfile parse error line 2: VOLUME requires at least one argument"),
        ("FROM a\nVOLUME [\"\"]\n", "dockerfile parse error line 2: VOLUME specified can not be an empty string"),
        ("FROM a\nMAINTAINER\n", "dockerfile parse error line 2: MAINTAINER requires exactly one argument"),
        ("FROM a\nSTOPSIGNAL\n", "dockerfile parse error line 2: STOPSIGNAL requires exactly one argument"),
        ("FROM a\nENTRYPOINT\n", "dockerfile parse error line 2: ENTRYPOINT requires at least one argument"),
        ("FROM a\nENV --x=1 A=b\n", "dockerfile parse error line 2: Unknown flag: x"),
        ("FROM a\nRUN -- echo\nRUN --bad echo\n", "dockerfile parse error line 3: Unknown flag: bad"),
        // A heredoc body is not Dockerfile syntax for the classic builder.
        ("FROM a\nRUN <<EOF\necho hi\nEOF\n", "dockerfile parse error line 3: unknown instruction: ECHO"),
    ];
    for (text, want) in cases {
        let got = parse(text).map(|_| ()).unwrap_err().to_string();
        assert_eq!(got, *want, "dockerfile {text:?}");
    }
}

#[test]
fn lines_continuations_and_directives() {
    let df = parse(
        "# syntax=docker/dockerfile:1\n# escape=`\n\nFROM scratch\nRUN echo a `\n    b `\n  # a comment in the middle\n\n    c\nCOPY C:\\src C:\\dst\nRUN echo \\\n",
    )
    .unwrap();
    assert_eq!(df.escape, '`');
    let ins = &df.stages[0].instructions;
    assert_eq!(ins[0].original, "RUN echo a     b     c");
    assert_eq!(ins[0].line, 5);
    assert_eq!(
        ins[0].kind,
        InstructionKind::Run(CmdLine {
            args: vec!["echo a     b     c".into()],
            prepend_shell: true,
            buildkit_flags: vec![]
        })
    );
    assert_eq!(ins[1].line, 10);
    match &ins[1].kind {
        InstructionKind::Copy {
            sources_and_dest, ..
        } => assert_eq!(
            sources_and_dest,
            &vec!["C:\\src".to_string(), "C:\\dst".to_string()]
        ),
        k => panic!("{k:?}"),
    }
    // With the backtick escape, a trailing backslash is text.
    assert_eq!(ins[2].original, "RUN echo \\");
    assert_eq!(df.warnings.len(), 2);
    assert!(
        df.warnings[0].starts_with("[WARNING]: Empty continuation line found in:\n    RUN echo a")
    );

    // The escape directive after an instruction or a comment is a comment.
    let df = parse("FROM scratch\n# escape=`\nRUN a \\\n b\n").unwrap();
    assert_eq!(df.escape, '\\');
    assert_eq!(df.stages[0].instructions[0].original, "RUN a  b");
    let df = parse("# hello\n# escape=`\nFROM scratch\n").unwrap();
    assert_eq!(df.escape, '\\');
    // CRLF, BOM, case-insensitive words, a continuation line that only holds the escape.
    let df = parse("\u{feff}from scratch\r\nrun echo \\\r\n\\\r\n done\r\n").unwrap();
    assert_eq!(df.stages[0].original, "from scratch");
    assert_eq!(df.stages[0].instructions[0].original, "run echo  done");
    // An escaped escape at the end is not a continuation.
    let df = parse("FROM scratch\nRUN echo \\\\\nRUN x\n").unwrap();
    assert_eq!(df.stages[0].instructions.len(), 2);
    // A continuation at the end of the file.
    let df = parse("FROM scratch\nRUN echo \\").unwrap();
    assert_eq!(df.stages[0].instructions[0].original, "RUN echo");
}

#[test]
fn instruction_forms() {
    let df = parse(concat!(
        "ARG A=1 B\n",
        "FROM --platform=linux/amd64 busybox AS Build\n",
        "RUN [\"echo\", \"hi\"] trailing ignored\n",
        "RUN [not json\n",
        "CMD [\"a\"]\n",
        "ENV K V W\n",
        "ENV X=\"a b\" Y=c\\ d\n",
        "LABEL \"com.x\"=\"v\" b=c\n",
        "EXPOSE 8080 443/udp 80\n",
        "VOLUME /a /b\n",
        "VOLUME [\"/c\"]\n",
        "COPY --from=build --chown=1:2 --chmod=755 [\"a b\", \"/c/\"]\n",
        "ADD --chown=x http://x/y /z\n",
        "HEALTHCHECK --interval=5s --retries=2 CMD [\"true\"]\n",
        "HEALTHCHECK none\n",
        "ONBUILD   run   echo  x\n",
        "USER a b\n",
        "STOPSIGNAL 9\n",
        "MAINTAINER Jane <j@x>\n",
        "SHELL [\"/bin/bash\", \"-c\"]\n",
    ))
    .unwrap();
    assert_eq!(
        df.meta_args,
        vec![("A".into(), Some("1".into())), ("B".into(), None)]
    );
    assert_eq!(df.meta_arg_instructions[0].original, "ARG A=1 B");
    let st = &df.stages[0];
    assert_eq!(st.name.as_deref(), Some("build"));
    assert_eq!(st.platform.as_deref(), Some("linux/amd64"));
    assert_eq!(st.base, "busybox");
    let k: Vec<&InstructionKind> = st.instructions.iter().map(|i| &i.kind).collect();
    assert_eq!(
        k[0],
        &InstructionKind::Run(CmdLine {
            args: vec!["echo".into(), "hi".into()],
            prepend_shell: false,
            buildkit_flags: vec![]
        })
    );
    assert_eq!(
        k[1],
        &InstructionKind::Run(CmdLine {
            args: vec!["[not json".into()],
            prepend_shell: true,
            buildkit_flags: vec![]
        })
    );
    assert_eq!(
        k[3],
        &InstructionKind::Env(vec![("K".into(), "V W".into())])
    );
    assert_eq!(
        k[4],
        &InstructionKind::Env(vec![
            ("X".into(), "\"a b\"".into()),
            ("Y".into(), "c\\ d".into())
        ])
    );
    assert_eq!(
        k[6],
        &InstructionKind::Expose(vec!["443/udp".into(), "80".into(), "8080".into()])
    );
    assert_eq!(
        k[7],
        &InstructionKind::Volume(vec!["/a".into(), "/b".into()])
    );
    assert_eq!(
        k[9],
        &InstructionKind::Copy {
            sources_and_dest: vec!["a b".into(), "/c/".into()],
            from: Some("build".into()),
            chown: Some("1:2".into()),
            chmod: Some("755".into()),
        }
    );
    assert_eq!(
        k[11],
        &InstructionKind::Healthcheck(HealthConfig {
            test: vec!["CMD".into(), "true".into()],
            interval: 5_000_000_000,
            retries: 2,
            ..Default::default()
        })
    );
    assert_eq!(
        k[12],
        &InstructionKind::Healthcheck(HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        })
    );
    assert_eq!(k[13], &InstructionKind::Onbuild("run   echo  x".into()));
    assert_eq!(k[14], &InstructionKind::User("a b".into()));
    assert_eq!(k[16], &InstructionKind::Maintainer("Jane <j@x>".into()));
}

#[test]
fn full_stage_steps_configs_and_history() {
    let text = r#"ARG BASE=busybox
FROM ${BASE}:latest AS build
ARG BASE
ENV A=1 B="two words"
WORKDIR /app
WORKDIR sub
RUN echo $A
COPY --chown=1000:1000 src/ ./dst/
LABEL "x y"="z" k=$A
EXPOSE 80 443/udp 8000-8001
USER nobody
VOLUME ["/data"]
STOPSIGNAL SIGKILL
HEALTHCHECK --interval=5m --timeout=3s --retries=3 CMD curl -f http://localhost/ || exit 1
SHELL ["/bin/bash", "-c"]
CMD echo hi
ENTRYPOINT ["/bin/sh"]
ONBUILD RUN echo onbuild
MAINTAINER me
"#;
    let steps = steps_of(text, BuildOptions::default(), Some(busybox()));
    let df = parse(text).unwrap();
    let p = Planner::new(df, BuildOptions::default()).unwrap();
    assert_eq!(p.total_steps(), 19);
    assert_eq!(steps.len(), 19);
    let numbers: Vec<usize> = steps.iter().map(|s| s.number).collect();
    assert_eq!(numbers, (1..=19).collect::<Vec<_>>());
    assert_eq!(steps[0].action, Action::MetaArg);
    assert_eq!(steps[0].display, "ARG BASE=busybox");
    assert_eq!(
        steps[1].action,
        Action::From {
            image: "busybox:latest".into(),
            stage: None,
            platform: None
        }
    );
    assert_eq!(steps[1].display, "FROM ${BASE}:latest AS build");
    let cb: Vec<&str> = steps[2..].iter().map(|s| s.created_by.as_str()).collect();
    assert_eq!(
        cb,
        vec![
            "/bin/sh -c #(nop)  ARG BASE",
            "/bin/sh -c #(nop)  ENV A=1 B=two words",
            "/bin/sh -c #(nop) WORKDIR /app",
            "/bin/sh -c #(nop) WORKDIR /app/sub",
            "|1 BASE=busybox /bin/sh -c echo $A",
            "/bin/sh -c #(nop) COPY --chown=1000:1000<src> in ./dst/ ",
            "/bin/sh -c #(nop)  LABEL x y=z k=1",
            "/bin/sh -c #(nop)  EXPOSE 443/udp 80 8000-8001",
            "/bin/sh -c #(nop)  USER nobody",
            "/bin/sh -c #(nop)  VOLUME [/data]",
            "/bin/sh -c #(nop)  STOPSIGNAL SIGKILL",
            r#"/bin/sh -c #(nop)  HEALTHCHECK &{["CMD-SHELL" "curl -f http://localhost/ || exit 1"] "5m0s" "3s" "0s" '\x03'}"#,
            "/bin/bash -c #(nop)  SHELL [/bin/bash -c]",
            r#"/bin/bash -c #(nop)  CMD ["/bin/bash" "-c" "echo hi"]"#,
            r#"/bin/bash -c #(nop)  ENTRYPOINT ["/bin/sh"]"#,
            "/bin/bash -c #(nop)  ONBUILD RUN echo onbuild",
            "/bin/bash -c #(nop)  MAINTAINER me",
        ]
    );
    // Actions.
    assert_eq!(
        steps[4].action,
        Action::Workdir {
            path: "/app".into()
        }
    );
    assert_eq!(
        steps[6].action,
        Action::Run {
            argv: vec!["/bin/sh".into(), "-c".into(), "echo $A".into()],
            env: vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                "A=1".into(),
                "B=two words".into(),
                "BASE=busybox".into()
            ],
        }
    );
    assert_eq!(
        steps[7].action,
        Action::Copy {
            from: None,
            sources: vec!["src/".into()],
            dest: "/app/sub/dst/".into(),
            chown: Some("1000:1000".into()),
            chmod: None,
            add: false,
        }
    );
    assert_eq!(
        steps[7].copy_created_by("dir:abc"),
        "/bin/sh -c #(nop) COPY --chown=1000:1000dir:abc in ./dst/ "
    );
    // The final config.
    let c = &steps.last().unwrap().config;
    assert_eq!(
        c.env.as_deref().unwrap(),
        &[
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            "A=1".into(),
            "B=two words".into()
        ]
    );
    assert_eq!(c.working_dir.as_deref(), Some("/app/sub"));
    assert_eq!(c.user.as_deref(), Some("nobody"));
    assert_eq!(
        c.cmd,
        Some(vec!["/bin/bash".into(), "-c".into(), "echo hi".into()])
    );
    assert_eq!(c.entrypoint, Some(vec!["/bin/sh".into()]));
    assert_eq!(c.shell, Some(vec!["/bin/bash".into(), "-c".into()]));
    assert_eq!(c.stop_signal.as_deref(), Some("SIGKILL"));
    assert_eq!(c.on_build, Some(vec!["RUN echo onbuild".into()]));
    let labels = c.labels.as_ref().unwrap();
    assert_eq!(labels.get("x y").map(String::as_str), Some("z"));
    assert_eq!(labels.get("k").map(String::as_str), Some("1"));
    let ports: Vec<&String> = c.exposed_ports.as_ref().unwrap().keys().collect();
    assert_eq!(ports, vec!["443/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
    let hc = c.healthcheck.as_ref().unwrap();
    assert_eq!(hc.interval, 300_000_000_000);
    assert_eq!(hc.retries, 3);
    assert_eq!(steps.last().unwrap().author.as_deref(), Some("me"));
    assert_eq!(steps[17].author, None);
    assert!(steps.last().unwrap().is_last_of_stage);
    assert!(!steps[17].is_last_of_stage);
    // Docker's JSON names.
    let j = serde_json::to_value(c).unwrap();
    assert_eq!(j["ExposedPorts"]["80/tcp"], serde_json::json!({}));
    assert_eq!(j["Healthcheck"]["Interval"], 300_000_000_000i64);
    assert_eq!(j["Healthcheck"]["Test"][0], "CMD-SHELL");
    assert_eq!(j["WorkingDir"], "/app/sub");
    assert_eq!(j["OnBuild"][0], "RUN echo onbuild");
    // Metadata steps are Config.
    assert_eq!(steps[3].action, Action::Config);
}

#[test]
fn build_args_scoping_and_warnings() {
    let text = "ARG BASE=busybox\nARG V=1\nFROM $BASE\nENV E=$V\nARG V\nENV F=$V\nARG X=def\nRUN echo $X\n";
    let mut args = BTreeMap::new();
    args.insert("BASE".to_string(), Some("alpine".to_string()));
    args.insert("X".to_string(), Some("over".to_string()));
    args.insert("UNUSED".to_string(), Some("u".to_string()));
    args.insert("NOVALUE".to_string(), None);
    args.insert("HTTP_PROXY".to_string(), Some("http://proxy".to_string()));
    let opts = BuildOptions {
        build_args: args,
        ..Default::default()
    };
    let df = parse(text).unwrap();
    let mut p = Planner::new(df, opts).unwrap();
    let mut steps = Vec::new();
    while let Some(s) = p.next_step() {
        let s = s.unwrap();
        if matches!(s.action, Action::From { .. }) {
            p.base_resolved(busybox());
        }
        steps.push(s);
    }
    assert_eq!(
        steps[2].action,
        Action::From {
            image: "alpine".into(),
            stage: None,
            platform: None
        }
    );
    // A meta arg is not visible in a stage until re-declared.
    assert_eq!(steps[3].created_by, "/bin/sh -c #(nop)  ENV E=");
    assert_eq!(steps[5].created_by, "/bin/sh -c #(nop)  ENV F=1");
    // The build arg overrides the default; the proxy arg is in the env, not the history.
    let run = &steps[7];
    assert_eq!(run.created_by, "|2 V=1 X=over /bin/sh -c echo $X");
    match &run.action {
        Action::Run { env, .. } => {
            assert!(env.contains(&"HTTP_PROXY=http://proxy".to_string()));
            assert!(env.contains(&"X=over".to_string()));
            assert!(env.contains(&"V=1".to_string()));
        }
        a => panic!("{a:?}"),
    }
    assert_eq!(
        p.warnings(),
        vec!["[Warning] One or more build-args [NOVALUE UNUSED] were not consumed".to_string()]
    );
    // Only a proxy arg: "|0" as Docker writes it.
    let mut args = BTreeMap::new();
    args.insert("http_proxy".to_string(), Some("http://p".to_string()));
    let steps = steps_of(
        "FROM busybox\nRUN true\n",
        BuildOptions {
            build_args: args,
            ..Default::default()
        },
        Some(busybox()),
    );
    assert_eq!(steps[1].created_by, "|0 /bin/sh -c true");
    // Without build args, no prefix.
    let steps = steps_of(
        "FROM busybox\nRUN true\n",
        BuildOptions::default(),
        Some(busybox()),
    );
    assert_eq!(steps[1].created_by, "/bin/sh -c true");
    // An ENV of the same name hides the arg from RUN's prefix.
    let steps = steps_of(
        "FROM busybox\nARG A=1\nENV A=2\nRUN true\n",
        BuildOptions::default(),
        None,
    );
    assert_eq!(steps[3].created_by, "/bin/sh -c true");
}

#[test]
fn multi_stage_target_and_copy_from() {
    let text = "FROM busybox AS a\nRUN echo a > /a\nCMD [\"x\"]\nFROM a AS b\nCOPY --from=a /a /b\nCOPY --from=0 /a /c\nCOPY --from=alpine:3 /etc/os-release /d\nFROM scratch AS c\nCOPY --from=b /b /b\n";
    let steps = steps_of(text, BuildOptions::default(), Some(busybox()));
    assert_eq!(steps.len(), 9);
    assert_eq!(
        steps[3].action,
        Action::From {
            image: "a".into(),
            stage: Some(0),
            platform: None
        }
    );
    // A stage base carries the stage's config.
    assert_eq!(steps[3].config.cmd, Some(vec!["x".into()]));
    let froms: Vec<Option<CopyFrom>> = steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::Copy { from, .. } => Some(from.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        froms,
        vec![
            Some(CopyFrom::Stage(0)),
            Some(CopyFrom::Stage(0)),
            Some(CopyFrom::Image("alpine:3".into())),
            Some(CopyFrom::Stage(1)),
        ]
    );
    let lasts: Vec<bool> = steps.iter().map(|s| s.is_last_of_stage).collect();
    assert_eq!(
        lasts,
        vec![false, false, true, false, false, false, true, false, true]
    );
    let stages: Vec<usize> = steps.iter().map(|s| s.stage).collect();
    assert_eq!(stages, vec![0, 0, 0, 1, 1, 1, 1, 2, 2]);

    // --target: all stages up to it, in order (the classic builder does not prune).
    let opts = BuildOptions {
        target: Some("B".into()),
        ..Default::default()
    };
    let df = parse(text).unwrap();
    let p = Planner::new(df, opts.clone()).unwrap();
    assert_eq!(p.total_steps(), 7);
    let steps = steps_of(text, opts, Some(busybox()));
    assert_eq!(steps.len(), 7);
    assert!(steps.last().unwrap().is_last_of_stage);

    assert_eq!(
        plan_err(
            text,
            BuildOptions {
                target: Some("nope".into()),
                ..Default::default()
            }
        ),
        "failed to reach build target nope in Dockerfile"
    );
    assert_eq!(
        plan_err(
            "FROM busybox\nCOPY --from=0 /a /b\n",
            BuildOptions::default()
        ),
        "invalid from flag value 0: refers to current build stage"
    );
    assert_eq!(
        plan_err(
            "FROM busybox\nFROM busybox\nCOPY --from=5 /a /b\n",
            BuildOptions::default()
        ),
        "invalid from flag value 5: index out of bounds"
    );
    assert_eq!(
        plan_err(
            "FROM busybox AS x\nFROM busybox AS x\n",
            BuildOptions::default()
        ),
        "x stage name already used"
    );
    assert_eq!(
        plan_err("ARG B\nFROM ${B}\n", BuildOptions::default()),
        "base name (${B}) should not be blank"
    );
}

#[test]
fn onbuild_triggers_run_after_from() {
    let base = ImageConfig {
        on_build: Some(vec!["RUN echo t1".into(), "COPY . /x".into()]),
        ..busybox()
    };
    let steps = steps_of(
        "FROM base\nRUN echo mine\n",
        BuildOptions::default(),
        Some(base.clone()),
    );
    assert_eq!(steps.len(), 4);
    assert_eq!(steps[1].number, 1);
    assert!(steps[1].trigger && steps[2].trigger && !steps[3].trigger);
    assert_eq!(
        steps[1].preface.as_deref(),
        Some("# Executing 2 build triggers")
    );
    assert_eq!(steps[2].preface, None);
    assert_eq!(steps[1].display, "RUN echo t1");
    assert_eq!(steps[3].number, 2);
    assert_eq!(steps[3].config.on_build, None);
    assert!(matches!(steps[2].action, Action::Copy { .. }));
    // A stage with only a FROM: the last trigger ends it.
    let steps = steps_of("FROM base\n", BuildOptions::default(), Some(base));
    assert_eq!(steps.len(), 3);
    assert!(steps[2].is_last_of_stage);
    // A bad trigger is the build's error.
    let bad = ImageConfig {
        on_build: Some(vec!["FOO bar".into()]),
        ..busybox()
    };
    let df = parse("FROM base\n").unwrap();
    let mut p = Planner::new(df, BuildOptions::default()).unwrap();
    p.next_step().unwrap().unwrap();
    p.base_resolved(bad);
    assert_eq!(
        p.next_step().unwrap().unwrap_err().to_string(),
        "unknown instruction: FOO"
    );
    assert!(p.next_step().is_none());
}

#[test]
fn option_labels_and_entrypoint_cmd_reset() {
    let mut labels = BTreeMap::new();
    labels.insert("b".to_string(), "$NOT_EXPANDED".to_string());
    labels.insert("a".to_string(), "1".to_string());
    let opts = BuildOptions {
        labels,
        ..Default::default()
    };
    let steps = steps_of("FROM busybox\nENTRYPOINT top -b\n", opts, Some(busybox()));
    assert_eq!(steps.len(), 4);
    assert_eq!(steps[1].config.cmd, None);
    assert_eq!(
        steps[1].config.entrypoint,
        Some(vec!["/bin/sh".into(), "-c".into(), "top -b".into()])
    );
    assert_eq!(steps[2].display, "LABEL a=1");
    assert_eq!(steps[3].display, "LABEL b=$NOT_EXPANDED");
    assert_eq!(
        steps[3]
            .config
            .labels
            .as_ref()
            .unwrap()
            .get("b")
            .map(String::as_str),
        Some("$NOT_EXPANDED")
    );
    assert!(steps[3].is_last_of_stage && !steps[1].is_last_of_stage);
    // CMD before ENTRYPOINT in the same stage is kept.
    let steps = steps_of(
        "FROM busybox\nCMD [\"a\"]\nENTRYPOINT [\"e\"]\n",
        BuildOptions::default(),
        Some(busybox()),
    );
    assert_eq!(steps[2].config.cmd, Some(vec!["a".into()]));
}

#[test]
fn scratch_gets_default_path_and_no_base_call() {
    let df = parse("FROM scratch\nENV A=$PATH\n").unwrap();
    let mut p = Planner::new(df, BuildOptions::default()).unwrap();
    let from = p.next_step().unwrap().unwrap();
    assert_eq!(
        from.action,
        Action::From {
            image: "scratch".into(),
            stage: None,
            platform: None
        }
    );
    let env = p.next_step().unwrap().unwrap();
    assert_eq!(
        env.config.env.unwrap(),
        vec![format!("PATH={DEFAULT_PATH}"), format!("A={DEFAULT_PATH}")]
    );
    // An image base needs the executor's config.
    let df = parse("FROM busybox\nRUN x\n").unwrap();
    let mut p = Planner::new(df, BuildOptions::default()).unwrap();
    p.next_step().unwrap().unwrap();
    assert!(p.next_step().unwrap().is_err());
}

#[test]
fn dispatch_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "FROM scratch\nENV X=${Y:-z\n",
            "failed to process \"${Y:-z\": syntax error: missing '}'",
        ),
        ("FROM scratch\nSTOPSIGNAL FOO\n", "Invalid signal: FOO"),
        ("FROM scratch\nEXPOSE 80/xyz\n", "Invalid proto: xyz"),
        ("FROM scratch\nEXPOSE abc\n", "Invalid containerPort: abc"),
        (
            "FROM scratch\nCOPY --chmod=999 a b\n",
            "invalid chmod parameter: 999",
        ),
        ("FROM scratch\nRUN\n", "RUN requires at least one argument"),
        ("FROM scratch\nRUN --mount=type=cache,target=/x --mount=type=tmpfs,target=/y echo\n", "the --mount option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ to learn how to build images with BuildKit enabled"),
        (
            "FROM scratch\nARG E\nWORKDIR $E\n",
            "cannot normalize nothing",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(
            plan_err(text, BuildOptions::default()),
            *want,
            "dockerfile {text:?}"
        );
    }
}

#[test]
fn substitution_in_the_instructions_docker_substitutes() {
    let text = "FROM scratch\nENV D=/data P=8080 U=app S=TERM\nWORKDIR $D\nUSER ${U}:${U}\nVOLUME $D/v\nEXPOSE $P\nSTOPSIGNAL SIG$S\nCOPY ${D}/a ${D:-x}/b\nADD --chown=$U a.tar .\nRUN echo $D\nCMD echo $D\nLABEL l=$D\nONBUILD RUN $D\n";
    let steps = steps_of(text, BuildOptions::default(), None);
    let c = &steps.last().unwrap().config;
    assert_eq!(c.working_dir.as_deref(), Some("/data"));
    assert_eq!(c.user.as_deref(), Some("app:app"));
    assert!(c.volumes.as_ref().unwrap().contains_key("/data/v"));
    assert!(c.exposed_ports.as_ref().unwrap().contains_key("8080/tcp"));
    assert_eq!(c.stop_signal.as_deref(), Some("SIGTERM"));
    assert_eq!(
        c.cmd,
        Some(vec!["/bin/sh".into(), "-c".into(), "echo $D".into()])
    );
    assert_eq!(c.on_build, Some(vec!["RUN $D".into()]));
    assert_eq!(c.labels.as_ref().unwrap()["l"], "/data");
    match &steps[7].action {
        Action::Copy { sources, dest, .. } => {
            assert_eq!(sources, &vec!["/data/a".to_string()]);
            assert_eq!(dest, "/data/b");
        }
        a => panic!("{a:?}"),
    }
    match &steps[8].action {
        Action::Copy {
            chown, dest, add, ..
        } => {
            assert_eq!(chown.as_deref(), Some("app"));
            assert_eq!(dest, "/data");
            assert!(add);
        }
        a => panic!("{a:?}"),
    }
    assert_eq!(
        steps[9].action,
        Action::Run {
            argv: vec!["/bin/sh".into(), "-c".into(), "echo $D".into()],
            env: c.env.clone().unwrap()
        }
    );
}

#[test]
fn cache_text_and_keys() {
    let a = steps_of("FROM scratch\nENV A=1\n", BuildOptions::default(), None);
    let b = steps_of("FROM scratch\nENV A=1\n", BuildOptions::default(), None);
    let c = steps_of("FROM scratch\nENV A=2\n", BuildOptions::default(), None);
    assert_eq!(a[1].cache_text, b[1].cache_text);
    assert_ne!(a[1].cache_text, c[1].cache_text);
    assert_eq!(cache_key("p", &a[1], None), cache_key("p", &b[1], None));
    assert_ne!(cache_key("p", &a[1], None), cache_key("q", &a[1], None));
    // The same RUN with a different build arg value is a different step.
    let mut args = BTreeMap::new();
    args.insert("V".to_string(), Some("1".to_string()));
    let r1 = steps_of(
        "FROM scratch\nARG V\nRUN x\n",
        BuildOptions {
            build_args: args.clone(),
            ..Default::default()
        },
        None,
    );
    args.insert("V".to_string(), Some("2".to_string()));
    let r2 = steps_of(
        "FROM scratch\nARG V\nRUN x\n",
        BuildOptions {
            build_args: args,
            ..Default::default()
        },
        None,
    );
    assert_ne!(r1[2].cache_text, r2[2].cache_text);
    assert_eq!(
        source_hash(&["file:a".into(), "file:b".into()]),
        "multi:".to_string()
            + &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"file:a,file:b"))
    );
    assert_eq!(source_hash(&["file:a".into()]), "file:a");
}

#[test]
fn paths_signals_ports() {
    assert_eq!(normalize_workdir("", "app").unwrap(), "/app");
    assert_eq!(normalize_workdir("/a", "../b/./c").unwrap(), "/b/c");
    assert_eq!(normalize_workdir("/a", "/x//y/").unwrap(), "/x//y/");
    assert_eq!(normalize_dest("", "."), "/");
    assert_eq!(normalize_dest("/app", "."), "/app");
    assert_eq!(normalize_dest("/app", "x/"), "/app/x/");
    assert_eq!(normalize_dest("/app", "./"), "/app/");
    assert_eq!(normalize_dest("/app", "/abs/"), "/abs/");
    assert_eq!(parse_signal("SIGKILL").unwrap(), 9);
    assert_eq!(parse_signal("term").unwrap(), 15);
    assert_eq!(parse_signal("RTMIN+2").unwrap(), 36);
    assert_eq!(parse_signal("9").unwrap(), 9);
    assert!(parse_signal("0").is_err());
    assert_eq!(parse_port_spec("80").unwrap(), vec!["80/tcp"]);
    assert_eq!(parse_port_spec("53/UDP").unwrap(), vec!["53/udp"]);
    assert_eq!(
        parse_port_spec("1-2/sctp").unwrap(),
        vec!["1/sctp", "2/sctp"]
    );
    assert_eq!(
        parse_port_spec("127.0.0.1:8080:80").unwrap(),
        vec!["80/tcp"]
    );
}

#[test]
fn base_config_round_trips_unknown_fields() {
    let j = serde_json::json!({
        "Hostname": "", "User": "", "Env": ["PATH=/bin"], "Cmd": ["sh"], "Image": "sha256:x",
        "Volumes": null, "WorkingDir": "", "Entrypoint": null, "OnBuild": null, "Labels": null,
        "OpenStdin": true
    });
    let c: ImageConfig = serde_json::from_value(j).unwrap();
    assert_eq!(c.cmd, Some(vec!["sh".into()]));
    assert_eq!(c.other["Image"], "sha256:x");
    let steps = steps_of("FROM x\nUSER u\n", BuildOptions::default(), Some(c));
    let out = serde_json::to_value(&steps[1].config).unwrap();
    assert_eq!(out["Image"], "sha256:x");
    assert_eq!(out["OpenStdin"], false);
    assert_eq!(out["User"], "u");
    assert_eq!(out["Env"], serde_json::json!(["PATH=/bin"]));
}
