//! berth's Dockerfile core, pure (no I/O, no clock): the parser, Docker's word
//! substitution, the classic builder's step planner, `.dockerignore` and glob matching, and
//! cache keys. The node's executor (`POST /build`) drives a [`Planner`] and runs its steps.
//!
//! # Reference and choice
//!
//! The behaviour reference is dockerd 20.10's classic builder (what `DOCKER_BUILDKIT=0`,
//! docker-py and docker-compose use): moby `builder/dockerfile` with BuildKit v0.8's
//! `frontend/dockerfile/{parser,instructions,shell}` vendored. crates.io's
//! `dockerfile-parser` (a pest grammar) was considered and not used: it does not implement
//! the escape directive's effect on continuations, Docker's per-instruction argument
//! splitting (`parseWords`, `parseMaybeJSON` that ignores text after the JSON array), the
//! flag extraction, or Docker's error texts, and has no substitution; berth needs all of
//! them to print and fail as Docker does. So the parser is our own, a transcription of
//! those Go sources.
//!
//! # Grammar (as implemented)
//!
//! - Lines are split on `\n` (a trailing `\r` dropped, a UTF-8 BOM dropped). Parser
//!   directives (`# escape=\`` or `\\`, `# syntax=...` accepted and ignored) are only
//!   recognised before the first instruction, comment or blank line; a repeated directive
//!   is an error ("only one escape parser directive can be used").
//! - A line whose first non-blank char is `#` is a comment, also inside a continuation.
//! - A line ending in the escape char (trailing blanks allowed) continues on the next
//!   line; the escape char is removed, the text around it kept. Blank lines inside a
//!   continuation are skipped with Docker's warning ("Empty continuation line found in").
//! - An instruction is `WORD [--flag[=value]...] arguments`, the word case-insensitive.
//!   The flags are `--x=y` words before the arguments (quotes and `\` in them as Docker).
//! - Exec form: the arguments start with `[` and decode as a JSON array (text after it is
//!   ignored, like Go's `json.Decoder`); an array with a non-string is an error; anything
//!   else is shell form.
//! - RUN, CMD, ENTRYPOINT, SHELL: JSON or text (SHELL must be JSON). ADD, COPY, VOLUME:
//!   JSON or whitespace-separated. ENV, LABEL: `k v` (one pair, the rest of the line) or
//!   `k=v ...` (quoted words). ARG: `name[=default] ...`. FROM, EXPOSE: whitespace list.
//!   USER, WORKDIR, STOPSIGNAL, MAINTAINER: the rest of the line. HEALTHCHECK: `NONE` or
//!   `CMD ...` with `--interval/--timeout/--start-period/--retries`. ONBUILD: any
//!   instruction except ONBUILD, FROM, MAINTAINER.
//! - Flags per instruction: FROM `--platform`; COPY `--from --chown --chmod`; ADD
//!   `--chown --chmod`; HEALTHCHECK the four above; RUN `--mount`, accepted by the parser
//!   and refused when the step runs ("the --mount option requires BuildKit. ..."), as
//!   dockerd 20.10 does. Any other flag is Docker's error "Unknown flag: network" (so
//!   `RUN --network`, `COPY --link` are refused by name, as the classic builder does).
//!
//! # Checked against dockerd 20.10
//!
//! `tests/dockerd_reference.rs` runs Debian's dockerd 20.10 (berth-testkit) with the real
//! docker CLI and `DOCKER_BUILDKIT=0` and compares: parse and dispatch errors, the
//! "Step i/N : ..." lines, every history `created_by`, the final image config, `--target`,
//! `--label`, the unused build-arg warning, ONBUILD triggers, substitution/quoting, and
//! COPY/ADD history around the source hash. RUN needs a base image with a shell and is
//! covered by the unit tests and the node's build e2e tests.
//!
//! # Known differences from dockerd 20.10 (decisions)
//!
//! - `COPY/ADD --chmod` is honoured (the issue asks for it; BuildKit has it); dockerd
//!   20.10's classic builder refuses it ("the --chmod option requires BuildKit").
//! - `${VAR-word}` and `${VAR+word}` are substituted as current BuildKit does; 20.10
//!   answered "missing ':' in substitution".
//! - Heredocs (`RUN <<EOF`) are not a Dockerfile feature of the classic builder: the
//!   `<<EOF` stays shell text and the following lines are instructions, so a heredoc body
//!   fails as "unknown instruction", exactly as in 20.10.
//! - Flags on `ARG`, `STOPSIGNAL` and `HEALTHCHECK NONE`, which Docker silently ignores,
//!   are refused ("Unknown flag: x").
//! - `.dockerignore` patterns treat regexp metacharacters (`+ ( ) { } |`) literally;
//!   Docker passes them into a regexp by accident.
//! - Windows-only behaviour (ArgsEscaped, `\` paths, platform checks) is not modelled.

mod gofmt;
mod ignore;
mod parser;
mod planner;
pub mod shell;

use sha2::Digest;

pub use ignore::{glob_match, DockerIgnore};
pub use parser::{
    parse, parse_trigger, CmdLine, Dockerfile, HealthConfig, Instruction, InstructionKind,
    ParseError, ParseErrorKind, Stage,
};
pub use planner::{
    clean_path, normalize_dest, normalize_workdir, parse_port_spec, parse_signal, source_hash,
    Action, BuildError, BuildOptions, CopyFrom, CopyHistory, Empty, ImageConfig, Planner, Step,
    BUILTIN_ARGS, DEFAULT_PATH,
};

/// Docker's cache key of a step: sha256 over the parent image id, the step's `cache_text`
/// (Docker compares the parent and the container config of the step, whose Cmd is the
/// history text) and, for Copy steps, the content checksum of the copied files (Docker's
/// `file:<sha256>`/`multi:` source hash). Returns `"sha256:<hex>"`.
///
/// ```
/// # use berth_builder::*;
/// let df = parse("FROM scratch\nCOPY a /a\n").unwrap();
/// let mut p = Planner::new(df, BuildOptions::default()).unwrap();
/// p.next_step();
/// let copy = p.next_step().unwrap().unwrap();
/// let k1 = cache_key("sha256:parent", &copy, Some("file:1111"));
/// let k2 = cache_key("sha256:parent", &copy, Some("file:2222"));
/// assert_ne!(k1, k2);
/// assert!(k1.starts_with("sha256:"));
/// ```
pub fn cache_key(parent: &str, step: &Step, content: Option<&str>) -> String {
    let mut h = sha2::Sha256::new();
    h.update(b"berth-build-cache-v1\0");
    h.update(parent.as_bytes());
    h.update(b"\0");
    h.update(step.cache_text.as_bytes());
    h.update(b"\0");
    if let Some(c) = content {
        h.update(b"content:");
        h.update(c.as_bytes());
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}
#[cfg(test)]
mod tests;
