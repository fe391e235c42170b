//! The few Go formatting and parsing rules Docker's texts depend on: `%q` of strings and
//! integers (`strconv.Quote`, `strconv.QuoteRune`), `time.Duration.String`,
//! `time.ParseDuration`, `strconv.ParseInt(s, 10, 32)`.

/// Go `strconv.Quote`: a double-quoted string with Go escapes.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        escape_char(c, '"', &mut out);
    }
    out.push('"');
    out
}

fn escape_char(c: char, q: char, out: &mut String) {
    match c {
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        '\\' => out.push_str("\\\\"),
        c if c == q => {
            out.push('\\');
            out.push(c);
        }
        c if (c as u32) < 0x20 || c as u32 == 0x7f => {
            out.push_str(&format!("\\x{:02x}", c as u32));
        }
        c if c.is_control() => {
            if (c as u32) < 0x10000 {
                out.push_str(&format!("\\u{:04x}", c as u32));
            } else {
                out.push_str(&format!("\\U{:08x}", c as u32));
            }
        }
        c => out.push(c),
    }
}

/// Go `%q` of an integer: `strconv.QuoteRune` (`3` gives `'\x03'`, `65` gives `'A'`).
pub fn quote_rune(v: i64) -> String {
    let c = u32::try_from(v)
        .ok()
        .and_then(char::from_u32)
        .unwrap_or('\u{fffd}');
    let mut out = String::from("'");
    escape_char(c, '\'', &mut out);
    out.push('\'');
    out
}

/// `%q` of a string list (`["a" "b"]`), as Go prints a `[]string`.
pub fn quote_list(items: &[String]) -> String {
    let q: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", q.join(" "))
}

/// `%v` of a string list (`[a b]`).
pub fn list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go `time.Duration.String` of a duration in nanoseconds: `"0s"`, `"1.5s"`, `"5m0s"`,
/// `"1h0m0s"`, `"300ms"`.
pub fn duration_string(d: i64) -> String {
    if d == 0 {
        return "0s".into();
    }
    let neg = d < 0;
    let u = d.unsigned_abs();
    let mut s = if u < 1_000_000_000 {
        let (unit, div, prec) = if u < 1_000 {
            ("ns", 1u64, 0usize)
        } else if u < 1_000_000 {
            ("µs", 1_000, 3)
        } else {
            ("ms", 1_000_000, 6)
        };
        format!("{}{}", frac(u, div, prec), unit)
    } else {
        let secs = frac(u % 60_000_000_000, 1_000_000_000, 9);
        let mins = u / 60_000_000_000;
        if mins >= 60 {
            format!("{}h{}m{}s", mins / 60, mins % 60, secs)
        } else if mins > 0 {
            format!("{mins}m{secs}s")
        } else {
            format!("{secs}s")
        }
    };
    if neg {
        s.insert(0, '-');
    }
    s
}

fn frac(v: u64, div: u64, prec: usize) -> String {
    let int = v / div;
    let rem = v % div;
    if rem == 0 || prec == 0 {
        return int.to_string();
    }
    let digits = format!("{rem:0prec$}");
    format!("{int}.{}", digits.trim_end_matches('0'))
}

/// Go `time.ParseDuration`, in nanoseconds, with Go's error texts
/// (`time: invalid duration "x"`, `time: missing unit in duration "1"`,
/// `time: unknown unit "x" in duration "1x"`).
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let orig = s;
    let invalid = || format!("time: invalid duration {}", quote(orig));
    let mut s = s;
    let mut neg = false;
    if let Some(c) = s.chars().next() {
        if c == '-' || c == '+' {
            neg = c == '-';
            s = &s[1..];
        }
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &s[..int_len];
        s = &s[int_len..];
        let mut frac_part = "";
        let mut had_dot = false;
        if s.starts_with('.') {
            had_dot = true;
            s = &s[1..];
            let n = s.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &s[..n];
            s = &s[n..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let _ = had_dot;
        let unit_len = s
            .bytes()
            .take_while(|b| *b != b'.' && !b.is_ascii_digit())
            .count();
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {}", quote(orig)));
        }
        let unit = &s[..unit_len];
        s = &s[unit_len..];
        let mult: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    quote(unit),
                    quote(orig)
                ))
            }
        };
        let num: f64 = format!(
            "{}.{}",
            if int_part.is_empty() { "0" } else { int_part },
            if frac_part.is_empty() { "0" } else { frac_part }
        )
        .parse()
        .map_err(|_| invalid())?;
        total += num * mult;
        if total > i64::MAX as f64 {
            return Err(invalid());
        }
    }
    let v = total.round() as i64;
    Ok(if neg { -v } else { v })
}

/// Go `strconv.ParseInt(s, 10, 32)` with Go's error texts.
pub fn parse_int32(s: &str) -> Result<i64, String> {
    let syntax = || format!("strconv.ParseInt: parsing {}: invalid syntax", quote(s));
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax());
    }
    match s.parse::<i64>() {
        Ok(v) if v >= i32::MIN as i64 && v <= i32::MAX as i64 => Ok(v),
        _ => Err(format!(
            "strconv.ParseInt: parsing {}: value out of range",
            quote(s)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote() {
        assert_eq!(quote("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(quote("é"), "\"é\"");
        assert_eq!(quote_rune(3), r"'\x03'");
        assert_eq!(quote_rune(0), r"'\x00'");
        assert_eq!(quote_rune(65), "'A'");
        assert_eq!(
            quote_list(&["/bin/sh".into(), "-c".into(), "echo \"hi\"".into()]),
            r#"["/bin/sh" "-c" "echo \"hi\""]"#
        );
    }

    #[test]
    fn go_durations() {
        for (ns, s) in [
            (0i64, "0s"),
            (1_500_000_000, "1.5s"),
            (300_000_000_000, "5m0s"),
            (3_600_000_000_000, "1h0m0s"),
            (90_000_000_000, "1m30s"),
            (300_000_000, "300ms"),
            (1_500, "1.5µs"),
            (42, "42ns"),
            (30_000_000_000, "30s"),
        ] {
            assert_eq!(duration_string(ns), s);
        }
        assert_eq!(parse_duration("5m").unwrap(), 300_000_000_000);
        assert_eq!(parse_duration("1h2m3.5s").unwrap(), 3_723_500_000_000);
        assert_eq!(parse_duration("10ms").unwrap(), 10_000_000);
        assert_eq!(parse_duration("0").unwrap(), 0);
        assert_eq!(
            parse_duration("abc").unwrap_err(),
            r#"time: invalid duration "abc""#
        );
        assert_eq!(
            parse_duration("10").unwrap_err(),
            r#"time: missing unit in duration "10""#
        );
        assert_eq!(
            parse_duration("10x").unwrap_err(),
            r#"time: unknown unit "x" in duration "10x""#
        );
    }

    #[test]
    fn go_parse_int() {
        assert_eq!(parse_int32("3").unwrap(), 3);
        assert_eq!(
            parse_int32("x").unwrap_err(),
            r#"strconv.ParseInt: parsing "x": invalid syntax"#
        );
    }
}
