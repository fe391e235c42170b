//! Docker's word processing for Dockerfile instructions (BuildKit's `shell.Lex`, as
//! vendored in dockerd 20.10): quote removal, the escape character, and `$VAR`,
//! `${VAR}`, `${VAR:-word}`, `${VAR:+word}`, `${VAR?msg}`, `${VAR:?msg}` expansion.
//! `${VAR-word}` and `${VAR+word}` (unset rather than empty) are accepted as later
//! BuildKit versions do; dockerd 20.10 answers "missing ':' in substitution" for them.
//! Pattern operators (`${VAR#p}`, `${VAR%p}`, `${VAR/p/r}`) are refused as dockerd 20.10
//! refuses them.

use std::collections::HashMap;

/// Docker's shell-word lexer (substitution, quotes, escapes), pure.
#[derive(Debug, Clone, Copy)]
pub struct Lex {
    escape: char,
}

/// Builds the variable map from `K=V` strings (last one wins, `K` alone is empty), as
/// BuildKit's `BuildEnvs`.
pub fn build_envs(env: &[String]) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for e in env {
        match e.split_once('=') {
            Some((k, v)) => m.insert(k.to_string(), v.to_string()),
            None => m.insert(e.clone(), String::new()),
        };
    }
    m
}

impl Lex {
    /// A lexer with the Dockerfile's escape character (`\` or a backtick).
    pub fn new(escape: char) -> Self {
        Lex { escape }
    }

    /// One word: variables substituted, quotes and escapes removed; spaces kept.
    /// Errors are Docker's: `failed to process "${a:-x": syntax error: missing '}'`.
    ///
    /// ```
    /// use berth_builder::shell::Lex;
    /// let env = vec!["A=1".to_string()];
    /// assert_eq!(Lex::new('\\').process_word("${A:-x}-${B:-y}-'$A'", &env).unwrap(), "1-y-$A");
    /// ```
    pub fn process_word(&self, word: &str, env: &[String]) -> Result<String, String> {
        self.process(word, &build_envs(env)).map(|(w, _)| w)
    }

    /// The word split on unquoted spaces after substitution (EXPOSE's expansion).
    pub fn process_words(&self, word: &str, env: &[String]) -> Result<Vec<String>, String> {
        self.process(word, &build_envs(env)).map(|(_, ws)| ws)
    }

    fn process(
        &self,
        word: &str,
        env: &HashMap<String, String>,
    ) -> Result<(String, Vec<String>), String> {
        let mut sw = ShellWord {
            chars: word.chars().collect(),
            pos: 0,
            env,
            escape: self.escape,
        };
        sw.process_stop_on(None)
            .map_err(|e| format!("failed to process {}: {e}", crate::gofmt::quote(word)))
    }
}

struct ShellWord<'a> {
    chars: Vec<char>,
    pos: usize,
    env: &'a HashMap<String, String>,
    escape: char,
}

#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() && self.in_word {
            if !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        for c in s.chars() {
            self.add_char(c);
        }
    }
    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }
    fn get_words(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn process_stop_on(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.get_words()));
            }
            match ch {
                '\'' | '"' | '$' => {
                    let tmp = match ch {
                        '\'' => self.process_single_quote()?,
                        '"' => self.process_double_quote()?,
                        _ => self.process_dollar()?,
                    };
                    result.push_str(&tmp);
                    if ch == '$' {
                        words.add_string(&tmp);
                    } else {
                        words.add_raw_string(&tmp);
                    }
                }
                _ => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.escape {
                        match self.next() {
                            None => break,
                            Some(c) => {
                                ch = c;
                                words.add_raw_char(ch);
                            }
                        }
                    } else {
                        words.add_char(ch);
                    }
                    result.push(ch);
                }
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.get_words()))
    }

    fn process_single_quote(&mut self) -> Result<String, String> {
        self.next();
        let mut result = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    )
                }
                Some('\'') => return Ok(result),
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, String> {
        self.next();
        let mut result = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    )
                }
                Some('"') => {
                    self.next();
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.escape {
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.escape => {
                                ch = c;
                                self.next();
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn get_env(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(String::as_str)
    }

    fn process_dollar(&mut self) -> Result<String, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.get_env(&name).unwrap_or_default().to_string());
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{') | Some('}') | Some(':') => {
                return Err("syntax error: bad substitution".into())
            }
            _ => {}
        }
        let name = self.process_name();
        let ch = self.next();
        match ch {
            Some('}') => Ok(self.get_env(&name).unwrap_or_default().to_string()),
            Some(op @ ('?' | '-' | '+')) => {
                let word = self.stop_on_brace()?;
                let value = self.get_env(&name).map(str::to_string);
                match (op, value) {
                    ('?', None) => Err(format!(
                        "{name}: {}",
                        if word.is_empty() {
                            "is not allowed to be unset"
                        } else {
                            &word
                        }
                    )),
                    ('?', Some(v)) => Ok(v),
                    ('-', None) => Ok(word),
                    ('-', Some(v)) => Ok(v),
                    ('+', None) => Ok(String::new()),
                    (_, Some(_)) => Ok(word),
                    _ => Ok(String::new()),
                }
            }
            Some(':') => {
                let modifier = self.next();
                let word = self.stop_on_brace()?;
                let found = self.get_env(&name).map(str::to_string);
                let value = found.clone().unwrap_or_default();
                match modifier {
                    Some('+') => Ok(if value.is_empty() { value } else { word }),
                    Some('-') => Ok(if value.is_empty() { word } else { value }),
                    Some('?') => {
                        if found.is_none() {
                            return Err(format!(
                                "{name}: {}",
                                if word.is_empty() {
                                    "is not allowed to be unset"
                                } else {
                                    &word
                                }
                            ));
                        }
                        if value.is_empty() {
                            return Err(format!(
                                "{name}: {}",
                                if word.is_empty() {
                                    "is not allowed to be empty"
                                } else {
                                    &word
                                }
                            ));
                        }
                        Ok(value)
                    }
                    Some(m) => Err(format!("unsupported modifier ({m}) in substitution")),
                    None => Err("unsupported modifier () in substitution".into()),
                }
            }
            _ => Err("missing ':' in substitution".into()),
        }
    }

    fn stop_on_brace(&mut self) -> Result<String, String> {
        match self.process_stop_on(Some('}')) {
            Ok((w, _)) => Ok(w),
            Err(e) => {
                if self.peek().is_none() {
                    Err("syntax error: missing '}'".into())
                } else {
                    Err(e)
                }
            }
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(c) = self.peek() {
                    if !c.is_ascii_digit() {
                        break;
                    }
                    name.push(c);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.next();
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<String> {
        vec![
            "A=1".into(),
            "EMPTY=".into(),
            "SP=a b".into(),
            "PATH=/bin".into(),
        ]
    }

    /// (escape, input, expected) — modelled on BuildKit's envVarTest table.
    #[test]
    fn substitution_table() {
        let cases: &[(char, &str, Result<&str, &str>)] = &[
            ('\\', "hello", Ok("hello")),
            ('\\', "$A", Ok("1")),
            ('\\', "${A}", Ok("1")),
            ('\\', "x${A}y", Ok("x1y")),
            ('\\', "$Ax", Ok("")),
            ('\\', "$NOPE", Ok("")),
            ('\\', "${NOPE:-def}", Ok("def")),
            ('\\', "${EMPTY:-def}", Ok("def")),
            ('\\', "${A:-def}", Ok("1")),
            ('\\', "${NOPE:+alt}", Ok("")),
            ('\\', "${EMPTY:+alt}", Ok("")),
            ('\\', "${A:+alt}", Ok("alt")),
            ('\\', "${NOPE-def}", Ok("def")),
            ('\\', "${EMPTY-def}", Ok("")),
            ('\\', "${NOPE+alt}", Ok("")),
            ('\\', "${EMPTY+alt}", Ok("alt")),
            ('\\', "${NOPE:-$A}", Ok("1")),
            ('\\', "${NOPE:-${A}x}", Ok("1x")),
            ('\\', "'$A'", Ok("$A")),
            ('\\', "\"$A\"", Ok("1")),
            ('\\', "\\$A", Ok("$A")),
            ('\\', "\"\\$A\"", Ok("$A")),
            ('\\', "\"a\\b\"", Ok("a\\b")),
            ('\\', "a\\ b", Ok("a b")),
            ('\\', "$", Ok("$")),
            ('\\', "a$", Ok("a$")),
            ('\\', "$1", Ok("")),
            ('\\', "end\\", Ok("end")),
            ('`', "`$A", Ok("$A")),
            ('`', "\\$A", Ok("\\1")),
            ('`', "\"`\"x\"", Ok("\"x")),
            // Go's lexer reads the name, then EOF: "missing ':'".
            ('\\', "${A", Err("failed to process \"${A\": missing ':' in substitution")),
            ('\\', "${A:-x", Err("failed to process \"${A:-x\": syntax error: missing '}'")),
            ('\\', "${}", Err("failed to process \"${}\": syntax error: bad substitution")),
            ('\\', "${:A}", Err("failed to process \"${:A}\": syntax error: bad substitution")),
            ('\\', "${A#x}", Err("failed to process \"${A#x}\": missing ':' in substitution")),
            ('\\', "${A:=x}", Err("failed to process \"${A:=x}\": unsupported modifier (=) in substitution")),
            ('\\', "${NOPE:?}", Err("failed to process \"${NOPE:?}\": NOPE: is not allowed to be unset")),
            ('\\', "${EMPTY:?must}", Err("failed to process \"${EMPTY:?must}\": EMPTY: must")),
            ('\\', "'abc", Err("failed to process \"'abc\": unexpected end of statement while looking for matching single-quote")),
            ('\\', "\"abc", Err("failed to process \"\\\"abc\": unexpected end of statement while looking for matching double-quote")),
        ];
        for (esc, input, want) in cases {
            let got = Lex::new(*esc).process_word(input, &env());
            match want {
                Ok(w) => assert_eq!(got.as_deref(), Ok(*w), "input {input:?}"),
                Err(e) => assert_eq!(got.unwrap_err(), *e, "input {input:?}"),
            }
        }
    }

    #[test]
    fn words_split_after_substitution() {
        let l = Lex::new('\\');
        assert_eq!(
            l.process_words("$SP c", &env()).unwrap(),
            vec!["a", "b", "c"]
        );
        assert_eq!(
            l.process_words("\"$SP\" c", &env()).unwrap(),
            vec!["a b", "c"]
        );
        assert_eq!(
            l.process_words("80 443/udp", &env()).unwrap(),
            vec!["80", "443/udp"]
        );
    }
}
