//! Envoy's two regex dialects, mapped onto the Rust engines.
//!
//! Envoy compiles user tag regexes (`stats_tags[].regex`) with `std::regex` (ECMAScript) and
//! everything else (`safe_regex` in the stats matcher, its own default tag extractors) with RE2.
//! Both treat `\d`, `\w`, `\s` and `\b` as ASCII, while Rust's engines make them Unicode; both
//! are rewritten here into explicit ASCII classes so that a stat name with non-ASCII letters or
//! digits is split exactly as Envoy splits it. ECMAScript additionally allows a bare `[` inside
//! a bracket expression and the C++ class names `[:w:]`, `[:d:]`, `[:s:]`, which Rust spells
//! differently. Look-ahead and back-references are left to `fancy-regex`.

/// Rewrites an ECMAScript (`std::regex`) pattern for `fancy-regex`.
pub(crate) fn ecmascript(pattern: &str) -> String {
    rewrite(pattern, true)
}

/// Rewrites an RE2 pattern for the `regex` crate.
pub(crate) fn re2(pattern: &str) -> String {
    rewrite(pattern, false)
}

fn rewrite(pattern: &str, ecmascript: bool) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars().peekable();
    // Inside a bracket expression; `class_start` is true right after `[` or `[^`.
    let mut in_class = false;
    let mut class_start = false;
    while let Some(c) = chars.next() {
        let at_start = std::mem::replace(&mut class_start, false);
        match c {
            '\\' => {
                let Some(e) = chars.next() else {
                    // A trailing backslash is an error in every dialect; let the engine say so.
                    out.push('\\');
                    break;
                };
                let rep = if in_class {
                    class_escape(e)
                } else if ecmascript {
                    // fancy-regex cannot switch Unicode off in a group; spell the ASCII word
                    // boundary with look-around instead.
                    match e {
                        'b' => Some(ECMA_WORD_BOUNDARY),
                        'B' => Some(ECMA_NOT_WORD_BOUNDARY),
                        _ => perl_escape(e),
                    }
                } else {
                    perl_escape(e)
                };
                if let Some(rep) = rep {
                    out.push_str(rep);
                } else {
                    out.push('\\');
                    out.push(e);
                }
            }
            '[' if !in_class => {
                in_class = true;
                class_start = true;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    chars.next();
                    out.push('^');
                }
            }
            '[' => {
                if chars.peek() == Some(&':') {
                    // A POSIX class name, `[:digit:]`: copy it, renaming C++'s short names.
                    let rest: String = chars.clone().collect();
                    if let Some(end) = rest[1..].find(":]") {
                        let name = &rest[1..1 + end];
                        let (negated, bare) = match name.strip_prefix('^') {
                            Some(b) => ("^", b),
                            None => ("", name),
                        };
                        let bare = match bare {
                            "w" => "word",
                            "d" => "digit",
                            "s" => "space",
                            other => other,
                        };
                        out.push_str("[:");
                        out.push_str(negated);
                        out.push_str(bare);
                        out.push_str(":]");
                        for _ in 0..end + 3 {
                            chars.next();
                        }
                        continue;
                    }
                }
                // ECMAScript reads a bare `[` in a class as a literal; Rust would nest a class.
                out.push_str("\\[");
            }
            // RE2 reads `]` right after `[` or `[^` as a literal; ECMAScript ends the class there.
            ']' if in_class && (ecmascript || !at_start) => {
                in_class = false;
                out.push(']');
            }
            // Rust's class set operators (`&&`, `--`, `~~`) are plain characters elsewhere.
            '&' | '~' if in_class => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

const ECMA_WORD_BOUNDARY: &str =
    "(?:(?<=[0-9A-Za-z_])(?![0-9A-Za-z_])|(?<![0-9A-Za-z_])(?=[0-9A-Za-z_]))";
const ECMA_NOT_WORD_BOUNDARY: &str =
    "(?:(?<=[0-9A-Za-z_])(?=[0-9A-Za-z_])|(?<![0-9A-Za-z_])(?![0-9A-Za-z_]))";

/// `\d`-style escapes outside a class, as ASCII classes.
fn perl_escape(e: char) -> Option<&'static str> {
    Some(match e {
        'd' => "[0-9]",
        'D' => "[^0-9]",
        'w' => "[0-9A-Za-z_]",
        'W' => "[^0-9A-Za-z_]",
        's' => "[\\t\\n\\x0B\\x0C\\r ]",
        'S' => "[^\\t\\n\\x0B\\x0C\\r ]",
        'b' => "(?-u:\\b)",
        'B' => "(?-u:\\B)",
        _ => return None,
    })
}

/// `\d`-style escapes inside a class, as ASCII ranges or negated ASCII classes.
fn class_escape(e: char) -> Option<&'static str> {
    Some(match e {
        'd' => "0-9",
        'D' => "[:^digit:]",
        'w' => "0-9A-Za-z_",
        'W' => "[:^word:]",
        's' => "\\t\\n\\x0B\\x0C\\r ",
        'S' => "[:^space:]",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fancy(p: &str) -> fancy_regex::Regex {
        fancy_regex::Regex::new(&ecmascript(p)).unwrap()
    }

    #[test]
    fn perl_classes_become_ascii() {
        assert_eq!(ecmascript(r"_rq(_(\d{3}))$"), r"_rq(_([0-9]{3}))$");
        assert_eq!(ecmascript(r"[_.\w]"), r"[_.0-9A-Za-z_]");
        assert_eq!(ecmascript(r"[\W]"), r"[[:^word:]]");
        let re = fancy(r"^x\.(\w+)$");
        assert!(re.is_match("x.ab_9").unwrap());
        assert!(!re.is_match("x.é").unwrap(), "\\w is ASCII in std::regex");
        assert!(
            !fancy(r"\d").is_match("٣").unwrap(),
            "\\d is ASCII in std::regex"
        );
        assert!(regex::Regex::new(&re2(r"^\d+$")).unwrap().is_match("42"));
        assert!(!regex::Regex::new(&re2(r"^\d+$")).unwrap().is_match("٣"));
        assert!(fancy(r"\bget\b").is_match("command.get.total").unwrap());
        assert!(!fancy(r"\bget\b").is_match("command.getset").unwrap());
        assert!(fancy(r"t\Bo").is_match("total").unwrap());
        assert!(regex::Regex::new(&re2(r"\bget\b"))
            .unwrap()
            .is_match("a.get"));
    }

    #[test]
    fn posix_classes_and_bare_brackets() {
        assert_eq!(ecmascript("[[:d:]x]"), "[[:digit:]x]");
        assert_eq!(ecmascript("[a[b]"), r"[a\[b]");
        assert_eq!(ecmascript("[a&&b]"), r"[a\&\&b]");
        assert!(fancy("^[_.[:digit:]]*$").is_match("1.2_3").unwrap());
        assert!(fancy("^[a[b]+$").is_match("a[b").unwrap());
        assert!(fancy("^[[:^digit:]]$").is_match("x").unwrap());
        assert!(fancy(r"^[[:w:]]+$").is_match("a_1").unwrap());
    }

    #[test]
    fn escapes_that_are_not_classes_are_kept() {
        assert_eq!(ecmascript(r"\.\[\]\:"), r"\.\[\]\:");
        assert_eq!(ecmascript(r"[\[\]\:]"), r"[\[\]\:]");
        assert_eq!(ecmascript(r"(?=\.)"), r"(?=\.)");
    }
}
