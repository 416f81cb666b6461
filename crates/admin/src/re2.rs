//! Regexes given in admin queries (`/stats?filter=`, `/clusters?filter=`,
//! `/config_dump?name_regex=`). Envoy compiles them with RE2; the `regex` crate accepts the
//! same syntax for what operators send, and this module refuses what RE2 refuses with RE2's
//! error text (`missing ): a(b`), observed on Envoy 1.40.

use regex::Regex;
use regex_syntax::ast::{self, Ast, ErrorKind};

/// RE2's largest counted repetition (`{1001}` is refused).
const RE2_MAX_REPEAT: u32 = 1000;

/// Compiles `pattern`; `whole` anchors it for a whole-string match (RE2 `FullMatch`). The error
/// is RE2's message, e.g. `missing ): a(b`.
pub(crate) fn compile(pattern: &str, whole: bool) -> Result<Regex, String> {
    let parsed = ast::parse::Parser::new()
        .parse(pattern)
        .map_err(|e| syntax_error(pattern, &e))?;
    check_re2_limits(pattern, &parsed)?;
    let source = if whole {
        format!("^(?:{pattern})$")
    } else {
        pattern.to_owned()
    };
    // What parses but does not compile exceeds the size limit; RE2 words that this way.
    Regex::new(&source).map_err(|_| "pattern too large - compile failed".to_owned())
}

fn span_text<'a>(pattern: &'a str, span: &ast::Span) -> &'a str {
    pattern
        .get(span.start.offset..span.end.offset)
        .unwrap_or_default()
}

fn syntax_error(pattern: &str, e: &ast::Error) -> String {
    let span = e.span();
    let at = span_text(pattern, span);
    let from_start = pattern.get(span.start.offset..).unwrap_or_default();
    match e.kind() {
        ErrorKind::GroupUnclosed => format!("missing ): {pattern}"),
        ErrorKind::GroupUnopened => format!("unexpected ): {pattern}"),
        ErrorKind::ClassUnclosed => format!("missing ]: {from_start}"),
        ErrorKind::RepetitionMissing => {
            format!(
                "no argument for repetition operator: {}",
                operator_at(from_start)
            )
        }
        ErrorKind::RepetitionCountInvalid
        | ErrorKind::RepetitionCountUnclosed
        | ErrorKind::RepetitionCountDecimalEmpty => {
            format!("invalid repetition size: {at}")
        }
        ErrorKind::EscapeUnexpectedEof => "trailing \\".to_owned(),
        ErrorKind::EscapeUnrecognized
        | ErrorKind::UnsupportedBackreference
        | ErrorKind::EscapeHexEmpty
        | ErrorKind::EscapeHexInvalid
        | ErrorKind::EscapeHexInvalidDigit
        | ErrorKind::ClassEscapeInvalid => format!("invalid escape sequence: {at}"),
        ErrorKind::ClassRangeInvalid | ErrorKind::ClassRangeLiteral => {
            format!("invalid character class range: {at}")
        }
        ErrorKind::UnsupportedLookAround
        | ErrorKind::FlagUnexpectedEof
        | ErrorKind::FlagUnrecognized
        | ErrorKind::FlagDanglingNegation
        | ErrorKind::FlagRepeatedNegation { .. }
        | ErrorKind::FlagDuplicate { .. }
        | ErrorKind::GroupNameEmpty
        | ErrorKind::GroupNameInvalid
        | ErrorKind::GroupNameUnexpectedEof
        | ErrorKind::GroupNameDuplicate { .. } => {
            // RE2 quotes the group opener up to where it stopped understanding it.
            let head = pattern.get(..span.end.offset).unwrap_or(pattern);
            let open = head.rfind("(?").unwrap_or(span.start.offset);
            let text = pattern
                .get(open..span.end.offset.max(open + 3))
                .unwrap_or(at);
            format!("invalid perl operator: {text}")
        }
        ErrorKind::NestLimitExceeded(_) => format!("expression nests too deeply: {pattern}"),
        other => format!("{other}: {at}"),
    }
}

/// The repetition operator at the start of `s` (the error span is empty): `*`, `+?`, `{2,3}`.
fn operator_at(s: &str) -> &str {
    let end = if s.starts_with('{') {
        s.find('}').map_or(s.len(), |i| i + 1)
    } else {
        s.chars().next().map_or(0, char::len_utf8)
    };
    let end = if s.get(end..end + 1) == Some("?") {
        end + 1
    } else {
        end
    };
    s.get(..end).unwrap_or(s)
}

/// What `regex-syntax` accepts and RE2 does not: counts above 1000 and stacked repetition
/// operators (`a**`).
fn check_re2_limits(pattern: &str, node: &Ast) -> Result<(), String> {
    match node {
        Ast::Repetition(rep) => {
            if let ast::RepetitionKind::Range(range) = &rep.op.kind {
                let too_big = match range {
                    ast::RepetitionRange::Exactly(n) | ast::RepetitionRange::AtLeast(n) => {
                        *n > RE2_MAX_REPEAT
                    }
                    ast::RepetitionRange::Bounded(lo, hi) => {
                        *lo > RE2_MAX_REPEAT || *hi > RE2_MAX_REPEAT
                    }
                };
                if too_big {
                    return Err(format!(
                        "invalid repetition size: {}",
                        span_text(pattern, &rep.op.span)
                    ));
                }
            }
            if let Ast::Repetition(inner) = rep.ast.as_ref() {
                let text = pattern
                    .get(inner.op.span.start.offset..rep.op.span.end.offset)
                    .unwrap_or_default();
                return Err(format!("bad repetition operator: {text}"));
            }
            check_re2_limits(pattern, &rep.ast)
        }
        Ast::Group(g) => check_re2_limits(pattern, &g.ast),
        Ast::Alternation(a) => a.asts.iter().try_for_each(|n| check_re2_limits(pattern, n)),
        Ast::Concat(c) => c.asts.iter().try_for_each(|n| check_re2_limits(pattern, n)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_like_re2() {
        // Each pair observed on Envoy 1.40 (`/stats?filter=`).
        for (pattern, message) in [
            ("a(b", "missing ): a(b"),
            ("(", "missing ): ("),
            ("(?P<n>a", "missing ): (?P<n>a"),
            ("a)b", "unexpected ): a)b"),
            ("[a", "missing ]: [a"),
            ("*a", "no argument for repetition operator: *"),
            ("a**", "bad repetition operator: **"),
            ("a{2,1}", "invalid repetition size: {2,1}"),
            ("x{1001}", "invalid repetition size: {1001}"),
            ("\\", "trailing \\"),
            ("a\\q", "invalid escape sequence: \\q"),
            ("\\8", "invalid escape sequence: \\8"),
            ("a[z-a]", "invalid character class range: z-a"),
            ("(?=a)", "invalid perl operator: (?="),
            ("(?i", "invalid perl operator: (?i"),
        ] {
            assert_eq!(
                compile(pattern, false).err().as_deref(),
                Some(message),
                "{pattern}"
            );
        }
    }

    #[test]
    fn valid_patterns_compile_and_whole_anchors() {
        let re = compile(r"^(server\.state|listener_manager\.workers_started)", false).unwrap();
        assert!(re.is_match("server.state"));
        let re = compile("down", true).unwrap();
        assert!(!re.is_match("down_cluster"));
        let re = compile("down.*|x", true).unwrap();
        assert!(re.is_match("down_cluster") && re.is_match("x") && !re.is_match("ax"));
        assert!(compile("a{2,1000}", false).is_ok());
        assert!(compile("(a*)*", false).is_ok());
    }
}
