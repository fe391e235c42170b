//! `.dockerignore` (Docker's `dockerignore.ReadAll` + `fileutils.PatternMatcher`, the
//! rules moby/patternmatcher keeps) and Go's `path/filepath.Match` for COPY/ADD sources.

use crate::planner::clean_path;

/// One compiled `.dockerignore` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// `!pattern`: re-include.
    exclusion: bool,
    tokens: Vec<Tok>,
    /// Number of path components of the cleaned pattern.
    dirs: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`: any run of non-`/`.
    Star,
    /// `?`: one non-`/`.
    Quest,
    /// `**` (or `**/`) not at the end: `(.*/)?`.
    AnyDirs,
    /// `**` at the end: `.*`.
    AnyAll,
    /// `[...]`: the class text after `[` up to and including `]`.
    Class(Vec<char>),
}

/// A parsed `.dockerignore`.
///
/// Rules (Docker 20.10, moby/patternmatcher): a line starting with `#` is a comment;
/// lines are trimmed; `!` re-includes; patterns are `filepath.Clean`ed and a leading `/`
/// dropped; `*` and `?` do not cross `/`, `**` matches any number of directories, `[...]`
/// classes and `\` escapes as in Go's `filepath.Match`; a pattern that matches a parent
/// directory excludes everything below it; the last matching pattern decides.
///
/// The docker CLI (and docker-py) apply `.dockerignore` when they make the context tar and
/// always send the Dockerfile and `.dockerignore`; the daemon then removes those two from
/// the context when they are excluded, so `COPY . /` does not copy them (Docker's
/// `removeDockerfile`). [`DockerIgnore::is_excluded`] answers for any context path.
///
/// ```
/// use berth_builder::DockerIgnore;
/// let ig = DockerIgnore::parse("# comment\n*.log\n!keep.log\nbuild/\n**/tmp\n");
/// assert!(ig.is_excluded("a.log"));
/// assert!(!ig.is_excluded("keep.log"));
/// assert!(ig.is_excluded("build/out/x.o"));
/// assert!(ig.is_excluded("src/deep/tmp"));
/// assert!(!ig.is_excluded("src/a.log"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
    /// The patterns as Docker's `ReadAll` returns them (cleaned, `!` kept).
    pub lines: Vec<String>,
}

impl DockerIgnore {
    /// Parses `.dockerignore` text. Invalid patterns (a lone `!`) are skipped; use
    /// [`DockerIgnore::try_parse`] to get Docker's error.
    pub fn parse(text: &str) -> Self {
        Self::build(text, false).unwrap_or_default()
    }

    /// Like [`DockerIgnore::parse`], with Docker's error for a lone `!`
    /// (`illegal exclusion pattern: "!"`).
    pub fn try_parse(text: &str) -> Result<Self, String> {
        Self::build(text, true)
    }

    fn build(text: &str, strict: bool) -> Result<Self, String> {
        let mut lines = Vec::new();
        for (i, raw) in text.split('\n').enumerate() {
            let mut line = raw.strip_suffix('\r').unwrap_or(raw);
            if i == 0 {
                line = line.strip_prefix('\u{feff}').unwrap_or(line);
            }
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim().to_string();
            if pattern.is_empty() {
                continue;
            }
            let invert = pattern.starts_with('!');
            if invert {
                pattern = pattern[1..].trim().to_string();
            }
            if !pattern.is_empty() {
                pattern = clean_path(&pattern);
                if pattern.len() > 1 && pattern.starts_with('/') {
                    pattern = pattern[1..].to_string();
                }
            }
            if invert {
                pattern.insert(0, '!');
            }
            lines.push(pattern);
        }
        let mut patterns = Vec::new();
        for l in &lines {
            let mut p = l.trim().to_string();
            if p.is_empty() {
                continue;
            }
            p = clean_path(&p);
            let exclusion = p.starts_with('!');
            if exclusion {
                if p.len() == 1 {
                    if strict {
                        return Err("illegal exclusion pattern: \"!\"".into());
                    }
                    continue;
                }
                p = clean_path(&p[1..]);
            }
            patterns.push(Pattern {
                exclusion,
                dirs: p.split('/').count(),
                tokens: compile(&p),
            });
        }
        Ok(DockerIgnore { patterns, lines })
    }

    /// Whether a context path (relative, `/`-separated, e.g. `"src/main.rs"`) is
    /// excluded. A leading `./` or `/` is ignored.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let file = clean_path(rel_path.trim_start_matches('/'));
        let parent = match file.rfind('/') {
            Some(i) => file[..i].to_string(),
            None => ".".to_string(),
        };
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for p in &self.patterns {
            let mut m = matches_tokens(&p.tokens, &file.chars().collect::<Vec<_>>());
            if !m && parent != "." && p.dirs <= parent_dirs.len() {
                let prefix = parent_dirs[..p.dirs].join("/");
                m = matches_tokens(&p.tokens, &prefix.chars().collect::<Vec<_>>());
            }
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Whether there is no pattern.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

fn compile(p: &str) -> Vec<Tok> {
    let c: Vec<char> = p.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        i += 1;
        match ch {
            '*' => {
                if c.get(i) == Some(&'*') {
                    i += 1;
                    if c.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i >= c.len() {
                        out.push(Tok::AnyAll);
                    } else {
                        out.push(Tok::AnyDirs);
                    }
                } else {
                    out.push(Tok::Star);
                }
            }
            '?' => out.push(Tok::Quest),
            '\\' => match c.get(i) {
                Some(n) => {
                    out.push(Tok::Lit(*n));
                    i += 1;
                }
                None => out.push(Tok::Lit('\\')),
            },
            '[' => {
                // Up to the closing ']' (a ']' right after '[' or '[^' is literal, as in
                // a regexp class).
                let start = i;
                let mut j = i;
                if c.get(j) == Some(&'^') {
                    j += 1;
                }
                if c.get(j) == Some(&']') {
                    j += 1;
                }
                while j < c.len() && c[j] != ']' {
                    if c[j] == '\\' {
                        j += 1;
                    }
                    j += 1;
                }
                if j < c.len() {
                    out.push(Tok::Class(c[start..=j].to_vec()));
                    i = j + 1;
                } else {
                    out.push(Tok::Lit('['));
                }
            }
            ch => out.push(Tok::Lit(ch)),
        }
    }
    out
}

/// Matches a class body (after `[`, including the final `]`) against `ch`.
fn class_matches(body: &[char], ch: char) -> Option<bool> {
    let mut i = 0;
    let negated = body.first() == Some(&'^');
    if negated {
        i += 1;
    }
    let end = body.len().checked_sub(1)?;
    let mut matched = false;
    let mut first = true;
    while i < end {
        if body[i] == ']' && !first {
            break;
        }
        first = false;
        let mut lo = body[i];
        if lo == '\\' {
            i += 1;
            lo = *body.get(i)?;
        }
        i += 1;
        let mut hi = lo;
        if i + 1 < end + 1 && body.get(i) == Some(&'-') && i + 1 < end {
            i += 1;
            hi = body[i];
            if hi == '\\' {
                i += 1;
                hi = *body.get(i)?;
            }
            i += 1;
        }
        if lo <= ch && ch <= hi {
            matched = true;
        }
    }
    Some(matched != negated)
}

fn matches_tokens(toks: &[Tok], s: &[char]) -> bool {
    let Some((t, rest)) = toks.split_first() else {
        return s.is_empty();
    };
    match t {
        Tok::Lit(c) => s.first() == Some(c) && matches_tokens(rest, &s[1..]),
        Tok::Quest => s.first().is_some_and(|c| *c != '/') && matches_tokens(rest, &s[1..]),
        Tok::Class(body) => {
            s.first()
                .and_then(|c| class_matches(body, *c))
                .unwrap_or(false)
                && matches_tokens(rest, &s[1..])
        }
        Tok::Star => {
            for i in 0..=s.len() {
                if matches_tokens(rest, &s[i..]) {
                    return true;
                }
                if i < s.len() && s[i] == '/' {
                    return false;
                }
            }
            false
        }
        Tok::AnyAll => true,
        Tok::AnyDirs => {
            // (.*/)? : nothing, or anything ending with '/'.
            if matches_tokens(rest, s) {
                return true;
            }
            (0..s.len()).any(|i| s[i] == '/' && matches_tokens(rest, &s[i + 1..]))
        }
    }
}

/// Go `path/filepath.Match` (Linux): `*` any run of non-`/`, `?` one non-`/`, `[...]`
/// classes (`^` negates, `a-z` ranges), `\` escapes. A malformed pattern matches nothing
/// (Go returns `ErrBadPattern`).
///
/// ```
/// use berth_builder::glob_match;
/// assert!(glob_match("*.txt", "a.txt"));
/// assert!(!glob_match("*.txt", "dir/a.txt"));
/// assert!(glob_match("dir/?.[a-c]", "dir/x.b"));
/// ```
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = path.chars().collect();
    glob(&p, &s).unwrap_or(false)
}

/// Go's class parsing: returns (matched, pattern chars consumed after '[').
fn glob_class(p: &[char], ch: char) -> Option<(bool, usize)> {
    let mut i = 0;
    let negated = p.first() == Some(&'^');
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut n = 0;
    loop {
        if i < p.len() && p[i] == ']' && n > 0 {
            i += 1;
            break;
        }
        let (lo, used) = glob_esc(&p[i..])?;
        i += used;
        let mut hi = lo;
        if p.get(i) == Some(&'-') {
            let (h, used) = glob_esc(&p[i + 1..])?;
            hi = h;
            i += 1 + used;
        }
        if lo <= ch && ch <= hi {
            matched = true;
        }
        n += 1;
    }
    Some((matched != negated, i))
}

fn glob_esc(p: &[char]) -> Option<(char, usize)> {
    let c = *p.first()?;
    if c == '-' || c == ']' {
        return None;
    }
    if c == '\\' {
        return p.get(1).map(|c| (*c, 2));
    }
    Some((c, 1))
}

/// Results of `glob_at` by (pattern suffix, name suffix) lengths.
type Memo = std::collections::HashMap<(usize, usize), Option<bool>>;

/// Go's `filepath.Match` on char slices. Memoised on the (pattern, name) suffixes: plain
/// backtracking over `*` is exponential in the number of stars (a 60-star pattern hung
/// fuzz/dockerfile); with the memo each suffix pair is decided once.
fn glob(p: &[char], s: &[char]) -> Option<bool> {
    glob_at(p, s, &mut Memo::new())
}

fn glob_at(p: &[char], s: &[char], memo: &mut Memo) -> Option<bool> {
    if let Some(r) = memo.get(&(p.len(), s.len())) {
        return *r;
    }
    let r = glob_step(p, s, memo);
    memo.insert((p.len(), s.len()), r);
    r
}

fn glob_step(p: &[char], s: &[char], memo: &mut Memo) -> Option<bool> {
    let Some(&c) = p.first() else {
        return Some(s.is_empty());
    };
    match c {
        '*' => {
            let rest = &p[1..];
            for i in 0..=s.len() {
                if glob_at(rest, &s[i..], memo)? {
                    return Some(true);
                }
                if i < s.len() && s[i] == '/' {
                    break;
                }
            }
            // Go still reports a bad pattern in the rest.
            validate(rest)?;
            Some(false)
        }
        '?' => match s.first() {
            Some(ch) if *ch != '/' => glob_at(&p[1..], &s[1..], memo),
            _ => validate(&p[1..]).map(|_| false),
        },
        '[' => {
            let Some(&ch) = s.first() else {
                return validate(p).map(|_| false);
            };
            let (m, used) = glob_class(&p[1..], ch)?;
            if m {
                glob_at(&p[1 + used..], &s[1..], memo)
            } else {
                validate(&p[1 + used..]).map(|_| false)
            }
        }
        '\\' => {
            let lit = *p.get(1)?;
            if s.first() == Some(&lit) {
                glob_at(&p[2..], &s[1..], memo)
            } else {
                validate(&p[2..]).map(|_| false)
            }
        }
        lit => {
            if s.first() == Some(&lit) {
                glob_at(&p[1..], &s[1..], memo)
            } else {
                validate(&p[1..]).map(|_| false)
            }
        }
    }
}

/// Whether a pattern is well formed (`None` = Go's ErrBadPattern).
fn validate(p: &[char]) -> Option<()> {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                p.get(i + 1)?;
                i += 2;
            }
            '[' => {
                let (_, used) = glob_class(&p[i + 1..], '\0')?;
                i += 1 + used;
            }
            _ => i += 1,
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (fuzz/dockerfile, a timeout): many stars against a long name that does
    /// not match backtracked exponentially; it now answers at once (correctly: false).
    #[test]
    fn many_stars_do_not_backtrack_exponentially() {
        let pattern = format!("*?A{}R!ox*GRA", "*".repeat(60));
        let name = format!("xA{}", "B".repeat(60));
        assert!(!glob_match(&pattern, &name));
        assert!(glob_match(
            &format!("a{}b", "*".repeat(40)),
            &format!("a{}b", "c".repeat(40))
        ));
    }

    #[test]
    fn go_filepath_match_table() {
        // From Go's path/filepath match_test.go.
        let cases: &[(&str, &str, bool)] = &[
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ab/c", false),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("a[^a][^a][^a]b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "x", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[\\-x]", "x", true),
            ("[\\-x]", "-", true),
            ("[\\-x]", "a", false),
            ("[]a]", "]", false),
            ("[-]", "-", false),
            ("[x-]", "x", false),
            ("[x-]", "-", false),
            ("[x-]", "z", false),
            ("[-x]", "x", false),
            ("[-x]", "-", false),
            ("[-x]", "a", false),
            ("\\", "a", false),
            ("[a-b-c]", "a", false),
            ("[", "a", false),
            ("[^", "a", false),
            ("[^bc", "a", false),
            ("a[", "a", false),
            ("a[", "ab", false),
            ("*x", "xxx", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(glob_match(p, s), *want, "pattern {p:?} on {s:?}");
        }
    }

    #[test]
    fn dockerignore_table() {
        // (patterns, path, excluded) — after moby fileutils_test.go TestMatches.
        let cases: &[(&str, &str, bool)] = &[
            ("**", "file", true),
            ("**", "file/", true),
            ("**/", "file", true),
            ("**/", "file/", true),
            ("**", "/", true),
            ("**/", "/", true),
            ("**", "dir/file", true),
            ("**/", "dir/file", true),
            ("**", "dir/file/", true),
            ("**/", "dir/file/", true),
            ("**/**", "dir/file", true),
            ("**/**", "dir/file/", true),
            ("dir/**", "dir/file", true),
            ("dir/**", "dir/file/", true),
            ("dir/**", "dir/dir2/file", true),
            ("dir/**", "dir/dir2/file/", true),
            ("**/dir", "dir", true),
            // 20.10 only checks parents with at least as many components as the pattern.
            ("**/dir", "dir/file", false),
            ("**/dir2/*", "dir/dir2/file", true),
            ("**/dir2/*", "dir/dir2/file/", true),
            ("**/dir2/**", "dir/dir2/dir3/file", true),
            ("**/dir2/**", "dir/dir2/dir3/file/", true),
            ("**file", "file", true),
            ("**file", "dir/file", true),
            ("**/file", "dir/file", true),
            ("**file", "dir/dir/file", true),
            ("**/file", "dir/dir/file", true),
            ("**/file*", "dir/dir/file", true),
            ("**/file*", "dir/dir/file.txt", true),
            ("**/file*txt", "dir/dir/file.txt", true),
            ("**/file*.txt", "dir/dir/file.txt", true),
            ("**/file*.txt*", "dir/dir/file.txt", true),
            ("**/**/*.txt", "dir/dir/file.txt", true),
            ("**/**/*.txt2", "dir/dir/file.txt", false),
            ("**/*.txt", "file.txt", true),
            ("**/**/*.txt", "file.txt", true),
            ("a**/*.txt", "a/file.txt", true),
            ("a**/*.txt", "a/dir/file.txt", true),
            ("a**/*.txt", "a/dir/dir/file.txt", true),
            ("a/*.txt", "a/dir/file.txt", false),
            ("a/*.txt", "a/file.txt", true),
            ("a/*.txt**", "a/file.txt", true),
            ("a[b-d]e", "ae", false),
            ("a[b-d]e", "ace", true),
            ("a[b-d]e", "aae", false),
            ("a[^b-d]e", "aze", true),
            (".*", ".foo", true),
            (".*", "foo", false),
            ("abc.def", "abcdef", false),
            ("abc.def", "abc.def", true),
            ("abc.def", "abcZdef", false),
            ("abc?def", "abcZdef", true),
            ("abc?def", "abcdef", false),
            ("a\\\\", "a\\", true),
            ("**/foo/bar", "foo/bar", true),
            ("**/foo/bar", "dir/foo/bar", true),
            ("**/foo/bar", "dir/dir2/foo/bar", true),
            ("abc/**", "abc", false),
            ("abc/**", "abc/def", true),
            ("abc/**", "abc/def/ghi", true),
            ("**/.foo", ".foo", true),
            ("**/.foo", "bar.foo", false),
            ("a(b)c/def", "a(b)c/def", true),
            ("a(b)c/def", "a(b)c/xyz", false),
            ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
            // Parent directories.
            ("dir", "dir/sub/file", true),
            ("dir/sub", "dir/sub/file", true),
            ("/dir", "dir/file", true),
            ("./dir", "dir/file", true),
            ("dir/", "dir/file", true),
        ];
        for (p, path, want) in cases {
            // The last three rows of moby's table use regexp metachars literally; berth
            // treats every non-glob char literally, which agrees on these paths.
            let ig = DockerIgnore::parse(p);
            assert_eq!(ig.is_excluded(path), *want, "pattern {p:?} on {path:?}");
        }
    }

    #[test]
    fn dockerignore_exceptions_and_order() {
        let ig = DockerIgnore::parse("*\n!src\nsrc/*.tmp\n!src/keep.tmp\n");
        assert!(ig.is_excluded("README"));
        assert!(!ig.is_excluded("src/main.rs"));
        assert!(ig.is_excluded("src/x.tmp"));
        assert!(!ig.is_excluded("src/keep.tmp"));
        assert_eq!(ig.lines, vec!["*", "!src", "src/*.tmp", "!src/keep.tmp"]);
        assert!(DockerIgnore::try_parse("!\n").is_err());
        let ig = DockerIgnore::parse("  # not a comment (leading space)\n#c\n\n  a  \n");
        assert_eq!(ig.lines, vec!["# not a comment (leading space)", "a"]);
        assert!(ig.is_excluded("a"));
        assert!(!DockerIgnore::parse("").is_excluded("Dockerfile"));
        assert!(DockerIgnore::parse("Dockerfile\n.dockerignore").is_excluded(".dockerignore"));
    }
}
