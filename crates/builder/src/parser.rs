//! The Dockerfile parser: lines, parser directives, continuations, then one typed
//! [`Instruction`] per logical line, grouped into [`Stage`]s.
//!
//! Follows Docker 20.10's classic builder, which uses BuildKit v0.8's
//! `frontend/dockerfile/parser` (line handling, per-instruction argument parsers) and
//! `frontend/dockerfile/instructions` (typed instructions, flags, argument counts and the
//! error texts). See the crate docs for the grammar and the known differences.

use std::collections::HashSet;
use std::fmt;

/// Where a parse error was found; decides Docker's wording around the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// While reading lines and splitting arguments (BuildKit's `parser.Parse`): a bad
    /// `# escape=`, `ENV` without a value, a non-string JSON array, "file with no
    /// instructions". dockerd 20.10 says `failed to parse Dockerfile: <message>`.
    Reading,
    /// In one instruction (BuildKit's `instructions.Parse`): `dockerfile parse error line
    /// N: <message>`.
    Instruction,
    /// In the order of instructions ("no build stage in current context"): the message
    /// alone.
    Structure,
}

/// A Dockerfile that cannot be parsed.
///
/// `Display` is dockerd 20.10's text (checked against it by `tests/dockerd_reference.rs`),
/// e.g. `dockerfile parse error line 2: unknown instruction: FOO`,
/// `failed to parse Dockerfile: file with no instructions`,
/// `no build stage in current context`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line where the instruction starts (for `Reading` errors, the line read).
    pub line: usize,
    /// Docker's message, without the wording around it.
    pub message: String,
    /// Where it was found.
    pub kind: ParseErrorKind,
}

impl ParseError {
    fn reading(line: usize, message: impl Into<String>) -> Self {
        ParseError {
            line,
            message: message.into(),
            kind: ParseErrorKind::Reading,
        }
    }
    fn at(line: usize, message: impl Into<String>) -> Self {
        ParseError {
            line,
            message: message.into(),
            kind: ParseErrorKind::Instruction,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ParseErrorKind::Reading => write!(f, "failed to parse Dockerfile: {}", self.message),
            ParseErrorKind::Instruction => write!(
                f,
                "dockerfile parse error line {}: {}",
                self.line, self.message
            ),
            ParseErrorKind::Structure => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ParseError {}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character (`\` or, with `# escape=``, a backtick).
    pub escape: char,
    /// The ARGs before the first FROM ("meta args", usable in FROM lines), name and
    /// default (unexpanded), in order, flattened over the ARG instructions.
    pub meta_args: Vec<(String, Option<String>)>,
    /// The ARG instructions before the first FROM, as written (each is one "Step i/N").
    pub meta_arg_instructions: Vec<Instruction>,
    /// The build stages, one per FROM, in order.
    pub stages: Vec<Stage>,
    /// Docker's parser warnings ("[WARNING]: Empty continuation line found in: ...").
    pub warnings: Vec<String>,
}

/// One build stage: a FROM line and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The `AS name`, lower-cased as Docker does.
    pub name: Option<String>,
    /// The base as written (meta args are substituted by the planner).
    pub base: String,
    /// `--platform=` as written.
    pub platform: Option<String>,
    /// The instructions after FROM.
    pub instructions: Vec<Instruction>,
    /// 1-based line of the FROM.
    pub line: usize,
    /// The FROM line as Docker prints it after "Step i/N : ".
    pub original: String,
}

/// One instruction (one logical line, continuations joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based first line.
    pub line: usize,
    /// The logical line, trimmed, as Docker prints it after "Step 2/7 : ".
    pub original: String,
    /// What it says.
    pub kind: InstructionKind,
}

/// A command line of RUN, CMD, ENTRYPOINT or HEALTHCHECK CMD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdLine {
    /// Exec form: the JSON array; shell form: one element, the text.
    pub args: Vec<String>,
    /// Shell form (the stage's SHELL is prepended).
    pub prepend_shell: bool,
    /// RUN flags dockerd 20.10 parses but refuses when the step runs ("the --mount option
    /// requires BuildKit. ..."), e.g. `["mount"]`.
    pub buildkit_flags: Vec<String>,
}

/// Docker's `HealthConfig` (Engine API `HealthConfig`), durations in nanoseconds, zero =
/// inherit/default.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    #[serde(rename = "Test", default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    /// `--interval`, ns.
    #[serde(rename = "Interval", default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    /// `--timeout`, ns.
    #[serde(rename = "Timeout", default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    /// `--start-period`, ns.
    #[serde(rename = "StartPeriod", default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    /// `--retries`.
    #[serde(rename = "Retries", default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The typed instructions. Words are as written (unexpanded): the planner substitutes
/// variables in the instructions Docker substitutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstructionKind {
    /// `ARG name[=default] ...`.
    Arg(Vec<(String, Option<String>)>),
    /// `RUN` (no flags: `--mount`, `--network`, `--security` are BuildKit's and refused).
    Run(CmdLine),
    /// `CMD`.
    Cmd(CmdLine),
    /// `ENTRYPOINT`.
    Entrypoint(CmdLine),
    /// `SHELL ["exe", "arg"...]` (JSON only).
    Shell(Vec<String>),
    /// `ENV k v` or `ENV k=v ...`, keys and values unexpanded.
    Env(Vec<(String, String)>),
    /// `LABEL k=v ...`; `no_expand` for labels added from the build options.
    Label {
        /// Pairs in order.
        labels: Vec<(String, String)>,
        /// Labels of `docker build --label` are not substituted.
        no_expand: bool,
    },
    /// `EXPOSE ports...` (sorted as text, as Docker's parser does).
    Expose(Vec<String>),
    /// `COPY [--from=] [--chown=] [--chmod=] src... dest`.
    Copy {
        /// Sources then the destination, unexpanded.
        sources_and_dest: Vec<String>,
        /// `--from=` (stage name, stage index or image), not substituted (as Docker).
        from: Option<String>,
        /// `--chown=`.
        chown: Option<String>,
        /// `--chmod=` (octal text).
        chmod: Option<String>,
    },
    /// `ADD [--chown=] [--chmod=] src... dest`.
    Add {
        /// Sources then the destination, unexpanded.
        sources_and_dest: Vec<String>,
        /// `--chown=`.
        chown: Option<String>,
        /// `--chmod=` (octal text).
        chmod: Option<String>,
    },
    /// `WORKDIR path`.
    Workdir(String),
    /// `USER user[:group]`.
    User(String),
    /// `VOLUME` paths.
    Volume(Vec<String>),
    /// `STOPSIGNAL sig`.
    StopSignal(String),
    /// `ONBUILD <instruction>`: the trigger text stored in the image config.
    Onbuild(String),
    /// `HEALTHCHECK NONE` or `HEALTHCHECK [opts] CMD ...`.
    Healthcheck(HealthConfig),
    /// `MAINTAINER name` (deprecated; sets the image's Author).
    Maintainer(String),
}

impl InstructionKind {
    /// Docker's upper-case instruction name.
    pub fn name(&self) -> &'static str {
        match self {
            InstructionKind::Arg(_) => "ARG",
            InstructionKind::Run(_) => "RUN",
            InstructionKind::Cmd(_) => "CMD",
            InstructionKind::Entrypoint(_) => "ENTRYPOINT",
            InstructionKind::Shell(_) => "SHELL",
            InstructionKind::Env(_) => "ENV",
            InstructionKind::Label { .. } => "LABEL",
            InstructionKind::Expose(_) => "EXPOSE",
            InstructionKind::Copy { .. } => "COPY",
            InstructionKind::Add { .. } => "ADD",
            InstructionKind::Workdir(_) => "WORKDIR",
            InstructionKind::User(_) => "USER",
            InstructionKind::Volume(_) => "VOLUME",
            InstructionKind::StopSignal(_) => "STOPSIGNAL",
            InstructionKind::Onbuild(_) => "ONBUILD",
            InstructionKind::Healthcheck(_) => "HEALTHCHECK",
            InstructionKind::Maintainer(_) => "MAINTAINER",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Lines and directives (BuildKit parser.go).

struct Directives {
    escape: char,
    done: bool,
    seen: HashSet<String>,
}

/// Go RE2 `\s`: `[\t\n\f\r ]`.
fn is_re_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ')
}

/// `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`
fn match_directive(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('#')?;
    let rest = rest.trim_start_matches(is_re_space);
    let name_len = rest
        .char_indices()
        .take_while(|(i, c)| {
            if *i == 0 {
                c.is_ascii_alphabetic()
            } else {
                c.is_ascii_alphanumeric()
            }
        })
        .count();
    if name_len == 0 {
        return None;
    }
    let (name, rest) = rest.split_at(name_len);
    let rest = rest.trim_start_matches(is_re_space);
    let rest = rest.strip_prefix('=')?;
    let value = rest.trim_matches(is_re_space);
    if value.is_empty() {
        return None;
    }
    Some((name.to_string(), value.to_string()))
}

impl Directives {
    fn new() -> Self {
        Directives {
            escape: '\\',
            done: false,
            seen: HashSet::new(),
        }
    }

    fn possible_directive(&mut self, line: &str) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        let Some((name, value)) = match_directive(line) else {
            self.done = true;
            return Ok(());
        };
        let k = name.to_lowercase();
        if k != "escape" && k != "syntax" {
            self.done = true;
            return Ok(());
        }
        if !self.seen.insert(k.clone()) {
            return Err(format!("only one {k} parser directive can be used"));
        }
        if k == "escape" {
            if value != "`" && value != "\\" {
                return Err(format!(
                    "invalid escape token '{value}' does not match ` or \\"
                ));
            }
            self.escape = value.chars().next().unwrap_or('\\');
        }
        Ok(())
    }

    /// Docker's line-continuation regex `([^E])E[ \t]*$|^E[ \t]*$` (E = escape), replaced
    /// by `$1`. Returns the line and whether it is the end of the logical line.
    fn trim_continuation(&self, line: &str) -> (String, bool) {
        let t = line.trim_end_matches([' ', '\t']);
        let Some(before) = t.strip_suffix(self.escape) else {
            return (line.to_string(), true);
        };
        if before.is_empty() {
            return (String::new(), false);
        }
        if before.ends_with(self.escape) {
            // An escaped escape char is not a continuation (Docker's regex cannot tell
            // "\\\" from "\\" either: both end the line).
            return (line.to_string(), true);
        }
        (before.to_string(), false)
    }
}

fn trim_left_space(s: &str) -> &str {
    s.trim_start_matches(char::is_whitespace)
}

fn is_comment(line: &str) -> bool {
    trim_left_space(line).starts_with('#')
}

/// `processLine`: optional left trim, `^#.*$` removed.
fn process_line<'a>(
    d: &mut Directives,
    line: &'a str,
    strip_left: bool,
) -> Result<&'a str, String> {
    let token = if strip_left {
        trim_left_space(line)
    } else {
        line
    };
    d.possible_directive(token)?;
    if token.starts_with('#') {
        Ok("")
    } else {
        Ok(token)
    }
}

/// Go's `bufio.ScanLines`: split on `\n`, drop one trailing `\r`.
fn scan_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    if text.ends_with('\n') || text.is_empty() {
        lines.pop();
    }
    lines
        .into_iter()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect()
}

/// A logical line.
struct RawLine {
    start: usize,
    text: String,
}

fn read_logical_lines(text: &str) -> Result<(Vec<RawLine>, char, Vec<String>, usize), ParseError> {
    let mut d = Directives::new();
    let lines = scan_lines(text);
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let mut current = 0usize;
    let mut i = 0usize;
    while i < lines.len() {
        let mut raw = lines[i];
        i += 1;
        if current == 0 {
            raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
        }
        let processed =
            process_line(&mut d, raw, true).map_err(|e| ParseError::reading(current, e))?;
        current += 1;
        let start = current;
        let (mut line, mut end) = d.trim_continuation(processed);
        if end && line.is_empty() {
            continue;
        }
        let mut empty_continuation = false;
        while !end && i < lines.len() {
            let raw = lines[i];
            i += 1;
            let processed =
                process_line(&mut d, raw, false).map_err(|e| ParseError::reading(current, e))?;
            current += 1;
            if is_comment(raw) {
                continue;
            }
            if trim_left_space(processed).is_empty() {
                empty_continuation = true;
                continue;
            }
            let (cont, e) = d.trim_continuation(processed);
            line.push_str(&cont);
            end = e;
        }
        if empty_continuation {
            warnings.push(format!(
                "[WARNING]: Empty continuation line found in:\n    {line}"
            ));
        }
        out.push(RawLine { start, text: line });
    }
    if !warnings.is_empty() {
        warnings.push(
            "[WARNING]: Empty continuation lines will become errors in a future release."
                .to_string(),
        );
    }
    Ok((out, d.escape, warnings, current))
}

// ---------------------------------------------------------------------------------------
// Splitting a line (split_command.go) and the per-instruction argument parsers
// (line_parsers.go).

/// `[\t\v\f\r ]+`
fn is_ws(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// Go `reWhitespace.Split(s, n)`.
fn split_ws(s: &str, n: Option<usize>) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if let Some(n) = n {
            if out.len() + 1 == n {
                out.push(rest.to_string());
                return out;
            }
        }
        match rest.find(is_ws) {
            Some(pos) => {
                out.push(rest[..pos].to_string());
                rest = rest[pos..].trim_start_matches(is_ws);
            }
            None => {
                out.push(rest.to_string());
                return out;
            }
        }
    }
}

fn is_go_space_byte(b: u8) -> bool {
    matches!(
        b,
        b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r' | b' ' | 0x85 | 0xa0
    )
}

/// `extractBuilderFlags`: the leading `--flag[=value]` words, and the rest.
fn extract_builder_flags(line: &str) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let b = line.as_bytes();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word: Vec<u8> = Vec::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut pos = 0usize;
    let to_s = |w: &Vec<u8>| String::from_utf8_lossy(w).into_owned();
    while pos <= b.len() {
        let ch = if pos < b.len() { b[pos] } else { 0 };
        if phase == Phase::Spaces {
            if pos == b.len() {
                break;
            }
            if is_go_space_byte(ch) {
                pos += 1;
                continue;
            }
            if ch != b'-' || pos + 1 == b.len() || b[pos + 1] != b'-' {
                return (line[pos..].to_string(), words);
            }
            phase = Phase::Word;
        }
        if (phase == Phase::Word || phase == Phase::Quote) && pos == b.len() {
            if word != b"--" && (blank_ok || !word.is_empty()) {
                words.push(to_s(&word));
            }
            break;
        }
        if phase == Phase::Word {
            if is_go_space_byte(ch) {
                phase = Phase::Spaces;
                if word == b"--" {
                    return (line[pos..].to_string(), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(to_s(&word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if c == b'\\' {
                if pos + 1 == b.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = b[pos];
            }
            word.push(c);
            pos += 1;
            continue;
        }
        if phase == Phase::Quote {
            if ch == quote {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if c == b'\\' {
                if pos + 1 == b.len() {
                    phase = Phase::Word;
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = b[pos];
            }
            word.push(c);
        }
        pos += 1;
    }
    (String::new(), words)
}

/// `parseWords`: words split on spaces, quotes and escapes kept (removed later by the
/// shell-word processing).
fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0usize;
    while pos <= chars.len() {
        let mut ch = if pos < chars.len() { chars[pos] } else { '\0' };
        if phase == Phase::Spaces {
            if pos == chars.len() {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if (phase == Phase::Word || phase == Phase::Quote) && pos == chars.len() {
            if blank_ok || !word.is_empty() {
                words.push(word.clone());
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                word.push(ch);
                pos += 1;
                ch = chars[pos];
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        if phase == Phase::Quote {
            if ch == quote {
                phase = Phase::Word;
            }
            if ch == escape && quote != '\'' {
                if pos + 1 == chars.len() {
                    phase = Phase::Word;
                    pos += 1;
                    continue;
                }
                pos += 1;
                word.push(ch);
                ch = chars[pos];
            }
            word.push(ch);
        }
        pos += 1;
    }
    words
}

const ERR_NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// `parseJSON`: `Ok(Some(args))` for a JSON array of strings, `Ok(None)` when the text is
/// not a JSON array, `Err` for an array with a non-string element. Like Go's
/// `json.Decoder.Decode`, text after the array is ignored.
fn parse_json(rest: &str) -> Result<Option<Vec<String>>, String> {
    let rest = trim_left_space(rest);
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
    let Some(Ok(serde_json::Value::Array(items))) = stream.next() else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            serde_json::Value::String(s) => out.push(s),
            _ => return Err(ERR_NOT_STRING_ARRAY.to_string()),
        }
    }
    Ok(Some(out))
}

/// A line split into the instruction's parts (the "node").
#[derive(Debug)]
struct Node {
    /// Lower-cased instruction word.
    cmd: String,
    original: String,
    flags: Vec<String>,
    args: Vec<String>,
    json: bool,
    /// ONBUILD's instruction.
    sub: Option<Box<Node>>,
}

fn node_from_line(line: &str, escape: char) -> Result<Node, String> {
    let trimmed = line.trim();
    let parts = split_ws(trimmed, Some(2));
    let cmd = parts[0].to_lowercase();
    let (args, flags) = if parts.len() == 2 {
        let (rest, flags) = extract_builder_flags(&parts[1]);
        (rest.trim().to_string(), flags)
    } else {
        (String::new(), Vec::new())
    };
    let mut node = Node {
        cmd: cmd.clone(),
        original: line.to_string(),
        flags,
        args: Vec::new(),
        json: false,
        sub: None,
    };
    let rest = args.as_str();
    match cmd.as_str() {
        "add" | "copy" | "volume" => {
            // parseMaybeJSONToList
            match parse_json(rest)? {
                Some(a) => {
                    node.args = a;
                    node.json = true;
                }
                None => node.args = whitespace_list(rest),
            }
        }
        "arg" => node.args = parse_words(rest, escape),
        // parseMaybeJSON
        "cmd" | "entrypoint" | "run" | "shell" if !rest.is_empty() => match parse_json(rest)? {
            Some(a) => {
                node.args = a;
                node.json = true;
            }
            None => node.args = vec![rest.to_string()],
        },
        "env" | "label" => {
            let key = if cmd == "env" { "ENV" } else { "LABEL" };
            node.args = parse_name_val(rest, key, escape)?;
        }
        "expose" | "from" => node.args = whitespace_list(rest),
        "healthcheck" => {
            let b = rest.as_bytes();
            let sep = b
                .iter()
                .position(|c| is_go_space_byte(*c))
                .unwrap_or(b.len());
            let next = b[sep..]
                .iter()
                .position(|c| !is_go_space_byte(*c))
                .map(|p| p + sep)
                .unwrap_or(b.len());
            if sep > 0 {
                node.args.push(rest[..sep].to_string());
                let cmdtext = &rest[next..];
                if !cmdtext.is_empty() {
                    match parse_json(cmdtext)? {
                        Some(a) => {
                            node.args.extend(a);
                            node.json = true;
                        }
                        None => node.args.push(cmdtext.to_string()),
                    }
                }
            }
        }
        "maintainer" | "stopsignal" | "user" | "workdir" if !rest.is_empty() => {
            node.args = vec![rest.to_string()];
        }
        "onbuild" if !rest.is_empty() => {
            let child = node_from_line(rest, escape)?;
            node.args.push(child.cmd.clone());
            node.args.extend(child.args.iter().cloned());
            node.sub = Some(Box::new(child));
        }
        _ => {}
    }
    Ok(node)
}

/// `parseStringsWhitespaceDelimited`.
fn whitespace_list(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    split_ws(rest, None)
}

/// `parseNameVal`: `[k1, v1, k2, v2, ...]`.
fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Vec<String>, String> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok(Vec::new());
    }
    if !words[0].contains('=') {
        let parts = split_ws(rest, Some(2));
        if parts.len() < 2 {
            return Err(format!("{key} must have two arguments"));
        }
        return Ok(parts);
    }
    let mut out = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                crate::gofmt::quote(&w)
            ));
        };
        out.push(k.to_string());
        out.push(v.to_string());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Typed instructions (instructions/parse.go, bflag.go).

/// BuildKit's `BFlags`: the flags an instruction accepts, all string-valued here.
struct Flags<'a> {
    args: &'a [String],
}

impl Flags<'_> {
    /// Parses the flags against the allowed names; returns the values by name.
    fn parse(&self, allowed: &[&str]) -> Result<Vec<Option<String>>, String> {
        let mut values: Vec<Option<String>> = vec![None; allowed.len()];
        for arg in self.args {
            let Some(a) = arg.strip_prefix("--") else {
                return Err(format!("Arg should start with -- : {arg}"));
            };
            if a.is_empty() {
                break;
            }
            let (name, value) = match a.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (a, None),
            };
            let Some(i) = allowed.iter().position(|f| *f == name) else {
                return Err(format!("Unknown flag: {name}"));
            };
            // `--mount` is BuildKit's repeatable (strings) flag.
            if values[i].is_some() && name != "mount" {
                return Err(format!("Duplicate flag specified: {name}"));
            }
            let Some(value) = value else {
                return Err(format!("Missing a value on flag: {name}"));
            };
            values[i] = Some(value.to_string());
        }
        Ok(values)
    }
}

fn err_at_least_one(cmd: &str) -> String {
    format!("{cmd} requires at least one argument")
}
fn err_exactly_one(cmd: &str) -> String {
    format!("{cmd} requires exactly one argument")
}
fn err_no_dest(cmd: &str) -> String {
    format!("{cmd} requires at least two arguments, but only one was provided. Destination could not be determined")
}

fn kvps(args: &[String], cmd: &str) -> Result<Vec<(String, String)>, String> {
    if args.is_empty() {
        return Err(err_at_least_one(cmd));
    }
    if args.len() % 2 != 0 {
        return Err(format!("Bad input to {cmd}, too many arguments"));
    }
    let mut out = Vec::new();
    for pair in args.chunks(2) {
        if pair[0].is_empty() {
            return Err(format!("{cmd} names can not be blank"));
        }
        out.push((pair[0].clone(), pair[1].clone()));
    }
    Ok(out)
}

fn cmd_line(node: &Node) -> CmdLine {
    let args = if node.json || node.args.is_empty() {
        node.args.clone()
    } else {
        vec![node.args.join(" ")]
    };
    CmdLine {
        args,
        prepend_shell: !node.json,
        buildkit_flags: Vec::new(),
    }
}

/// A stage start or a command.
enum Parsed {
    From {
        base: String,
        name: Option<String>,
        platform: Option<String>,
    },
    Command(InstructionKind),
}

fn parse_go_duration_flag(name: &str, v: &Option<String>) -> Result<i64, String> {
    let Some(s) = v.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(0);
    };
    let d = crate::gofmt::parse_duration(s)?;
    if d < 1_000_000 {
        return Err(format!(
            "Interval {} cannot be less than 1ms",
            crate::gofmt::quote(name)
        ));
    }
    Ok(d)
}

fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
}

fn parse_instruction(node: &Node) -> Result<Parsed, String> {
    let flags = Flags { args: &node.flags };
    let args = &node.args;
    let kind = match node.cmd.as_str() {
        "env" => {
            flags.parse(&[])?;
            InstructionKind::Env(kvps(args, "ENV")?)
        }
        "maintainer" => {
            if args.len() != 1 {
                return Err(err_exactly_one("MAINTAINER"));
            }
            flags.parse(&[])?;
            InstructionKind::Maintainer(args[0].clone())
        }
        "label" => {
            flags.parse(&[])?;
            InstructionKind::Label {
                labels: kvps(args, "LABEL")?,
                no_expand: false,
            }
        }
        "add" => {
            if args.len() < 2 {
                return Err(err_no_dest("ADD"));
            }
            let v = flags.parse(&["chown", "chmod"])?;
            InstructionKind::Add {
                sources_and_dest: args.clone(),
                chown: v[0].clone().filter(|s| !s.is_empty()),
                chmod: v[1].clone().filter(|s| !s.is_empty()),
            }
        }
        "copy" => {
            if args.len() < 2 {
                return Err(err_no_dest("COPY"));
            }
            let v = flags.parse(&["chown", "from", "chmod"])?;
            InstructionKind::Copy {
                sources_and_dest: args.clone(),
                chown: v[0].clone().filter(|s| !s.is_empty()),
                from: v[1].clone().filter(|s| !s.is_empty()),
                chmod: v[2].clone().filter(|s| !s.is_empty()),
            }
        }
        "from" => {
            let name = match args.len() {
                3 if args[1].eq_ignore_ascii_case("as") => {
                    let n = args[2].to_lowercase();
                    if !is_valid_stage_name(&n) {
                        return Err(format!(
                            "invalid name for build stage: {}, name can't start with a number or contain symbols",
                            crate::gofmt::quote(&args[2])
                        ));
                    }
                    Some(n)
                }
                1 => None,
                _ => return Err("FROM requires either one or three arguments".to_string()),
            };
            let v = flags.parse(&["platform"])?;
            return Ok(Parsed::From {
                base: args[0].clone(),
                name,
                platform: v[0].clone().filter(|s| !s.is_empty()),
            });
        }
        "onbuild" => {
            if args.is_empty() {
                return Err(err_at_least_one("ONBUILD"));
            }
            flags.parse(&[])?;
            let trigger = args[0].trim().to_uppercase();
            match trigger.as_str() {
                "ONBUILD" => {
                    return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into())
                }
                "MAINTAINER" | "FROM" => {
                    return Err(format!("{trigger} isn't allowed as an ONBUILD trigger"))
                }
                _ => {}
            }
            InstructionKind::Onbuild(strip_onbuild(&node.original))
        }
        "workdir" => {
            if args.len() != 1 {
                return Err(err_exactly_one("WORKDIR"));
            }
            flags.parse(&[])?;
            InstructionKind::Workdir(args[0].clone())
        }
        "run" => {
            // dockerd 20.10 registers BuildKit's `--mount` for RUN and refuses it when the
            // step runs; `--network` and `--security` are unknown flags.
            let v = flags.parse(&["mount"])?;
            let mut cl = cmd_line(node);
            if v[0].is_some() {
                cl.buildkit_flags.push("mount".into());
            }
            InstructionKind::Run(cl)
        }
        "cmd" => {
            flags.parse(&[])?;
            InstructionKind::Cmd(cmd_line(node))
        }
        "entrypoint" => {
            if args.is_empty() {
                return Err(err_at_least_one("ENTRYPOINT"));
            }
            flags.parse(&[])?;
            InstructionKind::Entrypoint(cmd_line(node))
        }
        "healthcheck" => {
            if args.is_empty() {
                return Err(err_at_least_one("HEALTHCHECK"));
            }
            let typ = args[0].to_uppercase();
            let rest = &args[1..];
            if typ == "NONE" {
                if !rest.is_empty() {
                    return Err("HEALTHCHECK NONE takes no arguments".into());
                }
                // Docker does not look at the flags of HEALTHCHECK NONE; berth refuses
                // them rather than ignore them.
                flags.parse(&[])?;
                InstructionKind::Healthcheck(HealthConfig {
                    test: vec!["NONE".into()],
                    ..Default::default()
                })
            } else {
                let v = flags.parse(&["interval", "timeout", "start-period", "retries"])?;
                if typ != "CMD" {
                    return Err(format!(
                        "Unknown type {} in HEALTHCHECK (try CMD)",
                        crate::gofmt::quote(&typ)
                    ));
                }
                let cmd: Vec<String> = if rest.is_empty() {
                    Vec::new()
                } else if node.json {
                    rest.to_vec()
                } else {
                    vec![rest.join(" ")]
                };
                if cmd.is_empty() {
                    return Err("Missing command after HEALTHCHECK CMD".into());
                }
                let mut test = vec![if node.json { "CMD" } else { "CMD-SHELL" }.to_string()];
                test.extend(cmd);
                let interval = parse_go_duration_flag("interval", &v[0])?;
                let timeout = parse_go_duration_flag("timeout", &v[1])?;
                let start_period = parse_go_duration_flag("start-period", &v[2])?;
                let retries = match v[3].as_deref().filter(|s| !s.is_empty()) {
                    None => 0,
                    Some(s) => {
                        let r: i64 = crate::gofmt::parse_int32(s)?;
                        if r < 1 {
                            return Err(format!("--retries must be at least 1 (not {r})"));
                        }
                        r
                    }
                };
                InstructionKind::Healthcheck(HealthConfig {
                    test,
                    interval,
                    timeout,
                    start_period,
                    retries,
                })
            }
        }
        "expose" => {
            if args.is_empty() {
                return Err(err_at_least_one("EXPOSE"));
            }
            flags.parse(&[])?;
            let mut ports = args.clone();
            ports.sort();
            InstructionKind::Expose(ports)
        }
        "user" => {
            if args.len() != 1 {
                return Err(err_exactly_one("USER"));
            }
            flags.parse(&[])?;
            InstructionKind::User(args[0].clone())
        }
        "volume" => {
            if args.is_empty() {
                return Err(err_at_least_one("VOLUME"));
            }
            flags.parse(&[])?;
            let mut vols = Vec::new();
            for v in args {
                let v = v.trim();
                if v.is_empty() {
                    return Err("VOLUME specified can not be an empty string".into());
                }
                vols.push(v.to_string());
            }
            InstructionKind::Volume(vols)
        }
        "stopsignal" => {
            if args.len() != 1 {
                return Err(err_exactly_one("STOPSIGNAL"));
            }
            // Docker never parses STOPSIGNAL's flags; berth refuses them.
            flags.parse(&[])?;
            InstructionKind::StopSignal(args[0].clone())
        }
        "arg" => {
            if args.is_empty() {
                return Err(err_at_least_one("ARG"));
            }
            // Docker never parses ARG's flags; berth refuses them.
            flags.parse(&[])?;
            let mut pairs = Vec::new();
            for a in args {
                match a.split_once('=') {
                    Some((k, v)) => {
                        if k.is_empty() {
                            return Err("ARG names can not be blank".into());
                        }
                        pairs.push((k.to_string(), Some(v.to_string())));
                    }
                    None => pairs.push((a.clone(), None)),
                }
            }
            InstructionKind::Arg(pairs)
        }
        "shell" => {
            flags.parse(&[])?;
            if args.is_empty() {
                return Err(err_at_least_one("SHELL"));
            }
            if !node.json {
                return Err("SHELL requires the arguments to be in JSON form".into());
            }
            InstructionKind::Shell(args.clone())
        }
        other => return Err(format!("unknown instruction: {}", other.to_uppercase())),
    };
    Ok(Parsed::Command(kind))
}

/// `(?i)^\s*ONBUILD\s*` removed.
fn strip_onbuild(original: &str) -> String {
    let t = original.trim_start_matches(is_re_space);
    if t.len() >= 7 && t[..7].eq_ignore_ascii_case("onbuild") {
        t[7..].trim_start_matches(is_re_space).to_string()
    } else {
        t.to_string()
    }
}

/// Parses a Dockerfile as Docker 20.10's classic builder does.
///
/// Errors are Docker's (see [`ParseError`]): e.g. `"dockerfile parse error line 3: unknown
/// instruction: FOO"`, `"dockerfile parse error line 1: FROM requires either one or three
/// arguments"`, `"file with no instructions"`, `"no build stage in current context"`.
///
/// ```
/// let df = berth_builder::parse("FROM busybox AS base\nRUN echo hi\n").unwrap();
/// assert_eq!(df.stages[0].name.as_deref(), Some("base"));
/// assert_eq!(df.stages[0].instructions[0].original, "RUN echo hi");
/// let err = berth_builder::parse("FROM busybox\nFOO bar\n").unwrap_err();
/// assert_eq!(err.to_string(), "dockerfile parse error line 2: unknown instruction: FOO");
/// ```
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let (lines, escape, warnings, last_line) = read_logical_lines(text)?;
    if lines.is_empty() {
        return Err(ParseError::reading(last_line, "file with no instructions"));
    }
    let mut df = Dockerfile {
        escape,
        meta_args: Vec::new(),
        meta_arg_instructions: Vec::new(),
        stages: Vec::new(),
        warnings,
    };
    for line in &lines {
        let node =
            node_from_line(&line.text, escape).map_err(|e| ParseError::reading(line.start, e))?;
        let parsed = parse_instruction(&node).map_err(|e| ParseError::at(line.start, e))?;
        let original = line.text.trim().to_string();
        match parsed {
            Parsed::From {
                base,
                name,
                platform,
            } => df.stages.push(Stage {
                name,
                base,
                platform,
                instructions: Vec::new(),
                line: line.start,
                original,
            }),
            Parsed::Command(kind) => {
                let ins = Instruction {
                    line: line.start,
                    original,
                    kind,
                };
                match df.stages.last_mut() {
                    Some(stage) => stage.instructions.push(ins),
                    None => {
                        if let InstructionKind::Arg(pairs) = &ins.kind {
                            df.meta_args.extend(pairs.iter().cloned());
                            df.meta_arg_instructions.push(ins);
                        } else {
                            return Err(ParseError {
                                line: line.start,
                                message: "no build stage in current context".into(),
                                kind: ParseErrorKind::Structure,
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(df)
}

/// Parses one ONBUILD trigger (as stored in an image config's `OnBuild`), as Docker's
/// `dispatchTriggeredOnBuild` does: one instruction, default escape, FROM refused.
pub fn parse_trigger(text: &str) -> Result<Instruction, String> {
    let (lines, _, _, _) = read_logical_lines(text).map_err(|e| e.message)?;
    if lines.len() != 1 {
        return Err("onbuild trigger should be a single expression".into());
    }
    let node = node_from_line(&lines[0].text, '\\')?;
    match parse_instruction(&node)? {
        Parsed::From { .. } => Err("*instructions.Stage is not a command type".into()),
        Parsed::Command(kind) => Ok(Instruction {
            line: 1,
            original: lines[0].text.trim().to_string(),
            kind,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_trailing_text_is_ignored_like_go() {
        assert_eq!(
            parse_json(r#"["a", "b"] trailing"#).unwrap(),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(parse_json(r#"["a""#).unwrap(), None);
        assert_eq!(parse_json("echo [x]").unwrap(), None);
        assert!(parse_json(r#"["a", 1]"#).is_err());
    }

    #[test]
    fn builder_flags_are_extracted() {
        let (rest, flags) = extract_builder_flags("--from=build --chown=1:2 a b");
        assert_eq!(rest, "a b");
        assert_eq!(flags, vec!["--from=build", "--chown=1:2"]);
        let (rest, flags) = extract_builder_flags("-- --x a");
        assert_eq!(rest, " --x a");
        assert!(flags.is_empty());
        let (rest, flags) = extract_builder_flags("--chown=\"a b\" x");
        assert_eq!(rest, "x");
        assert_eq!(flags, vec!["--chown=a b"]);
    }

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(
            parse_words(r#"a="x y" b=c\ d 'e f'"#, '\\'),
            vec![r#"a="x y""#, r"b=c\ d", "'e f'"]
        );
    }

    #[test]
    fn directive_matching() {
        assert_eq!(
            match_directive("# escape=`"),
            Some(("escape".into(), "`".into()))
        );
        assert_eq!(
            match_directive("#syntax = docker/dockerfile:1 "),
            Some(("syntax".into(), "docker/dockerfile:1".into()))
        );
        assert_eq!(match_directive("# just a comment"), None);
        assert_eq!(match_directive("# escape="), None);
    }
}
