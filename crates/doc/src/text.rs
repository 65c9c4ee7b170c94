//! The rule every text field follows: a length bound and no characters that
//! could break a storage key, a log line or a file name.
//!
//! Nodes key what they store by `sender NUL document id` and the like, so one
//! NUL in a field that becomes part of a key makes keys ambiguous; the
//! same goes for line breaks in log lines and metric labels, and bidirectional
//! overrides in file names (`invoice\u{202E}fdp.exe` shows as `invoiceexe.pdf`).

/// What a text field may hold besides printable characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One line: no control characters at all, no line or paragraph
    /// separators, no bidirectional embedding, override or isolate marks.
    Line,
    /// Free text: tab, line feed and carriage return are allowed; other
    /// control characters are not.
    Multiline,
}

/// A text field's rule: its two violation codes, the most characters, and its kind.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rule {
    /// Code when the value is too long.
    pub(crate) length: &'static str,
    /// Code when the value holds a forbidden character.
    pub(crate) chars: &'static str,
    /// The most characters (Unicode scalar values).
    pub(crate) max: usize,
    /// What it may hold.
    pub(crate) kind: Kind,
}

/// The first character `kind` forbids in `s`, with its index in characters.
pub(crate) fn forbidden(s: &str, kind: Kind) -> Option<(usize, char)> {
    s.chars().enumerate().find(|&(_, c)| match kind {
        Kind::Line => forbidden_in_line(c),
        Kind::Multiline => c.is_control() && !matches!(c, '\t' | '\n' | '\r'),
    })
}

/// Whether `c` may not appear in a one-line field.
pub fn forbidden_in_line(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// What is wrong with `value` under `rule`: the code and the rule broken, or
/// None when it is fine. Only the length and the characters are checked (a
/// missing value is the caller's business).
pub(crate) fn check(rule: &Rule, field: &str, value: &str) -> Option<(&'static str, String)> {
    let n = value.chars().count();
    if n > rule.max {
        return Some((
            rule.length,
            format!("{field} is at most {} characters (has {n})", rule.max),
        ));
    }
    forbidden(value, rule.kind).map(|(i, c)| {
        (
            rule.chars,
            format!(
                "{field} must not contain control characters{} (has U+{:04X} at character {i})",
                if rule.kind == Kind::Line {
                    ", line breaks or bidirectional marks"
                } else {
                    " other than tab and line breaks"
                },
                u32::from(c)
            ),
        )
    })
}

/// `s` as quoted in an error message: Debug-escaped, cut after 64 characters.
pub(crate) fn shown(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Rule = Rule {
        length: "R.X.Length",
        chars: "R.X.Characters",
        max: 5,
        kind: Kind::Line,
    };

    #[test]
    fn lengths_count_characters() {
        assert_eq!(check(&RULE, "x", "Đặng"), None);
        assert_eq!(check(&RULE, "x", "ĐĐĐĐĐ"), None);
        assert_eq!(check(&RULE, "x", "ĐĐĐĐĐĐ").map(|v| v.0), Some("R.X.Length"));
    }

    #[test]
    fn lines_refuse_controls_separators_and_bidi_marks() {
        for bad in [
            "a\0b",
            "a\nb",
            "a\tb",
            "\u{7f}",
            "\u{85}",
            "a\u{2028}",
            "\u{202E}",
            "\u{2067}",
        ] {
            assert_eq!(
                check(&RULE, "x", bad).map(|v| v.0),
                Some("R.X.Characters"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn free_text_allows_tabs_and_line_breaks_only() {
        let rule = Rule {
            kind: Kind::Multiline,
            ..RULE
        };
        assert_eq!(check(&rule, "x", "a\r\n\tb"), None);
        assert_eq!(
            check(&rule, "x", "a\0").map(|v| v.0),
            Some("R.X.Characters")
        );
        assert_eq!(
            check(&rule, "x", "\u{1b}[2J").map(|v| v.0),
            Some("R.X.Characters")
        );
    }

    #[test]
    fn shown_values_are_short_and_escaped() {
        assert_eq!(shown("a\0"), "\"a\\0\"");
        let long = shown(&"x".repeat(100_000));
        assert!(long.len() < 100, "{long}");
        assert!(long.ends_with("(100000 bytes)"), "{long}");
    }
}
