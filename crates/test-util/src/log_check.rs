//! redvoy's log, checked at the end of every test (shotover's habit): a WARN or ERROR event,
//! or a panic, that the test did not declare fails it.
//!
//! A [`crate::Proxy`] running redvoy scans its captured stdout/stderr when it is dropped (after
//! stopping the process, so what redvoy logs while shutting down counts too). A test declares
//! the lines its scenario provokes, before or after start:
//!
//! ```ignore
//! proxy.expect_log(Level::Warn, "unknown cluster");      // must be logged at least once
//! proxy.allow_log(Level::Error, "connection refused");   // may be logged (timing-dependent)
//! ```
//!
//! or with [`crate::ProxyOptions::log`]. Envoy's log is never checked (it is the oracle).
//!
//! Events are read in the format of redvoy's `tracing_subscriber::fmt` layer (`src/logging.rs`,
//! `init`): `<RFC 3339 UTC timestamp> <LEVEL, right-aligned to 5> <spans/target>:
//! <message> <fields>`, without ANSI colours when stderr is a file (stripped anyway). A line
//! not starting with a timestamp continues the event before it (multi-line messages), except
//! a Rust panic message (`thread '<name>' panicked at`), which counts as an ERROR.

use std::fmt;

/// Lines of an event quoted in a failure message.
const QUOTE_LINES: usize = 4;
/// Events quoted in a failure message.
const QUOTE_EVENTS: usize = 30;

/// A log level redvoy's log is checked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Warn,
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        })
    }
}

/// A WARN or ERROR event a test declares: its level and a substring of its text (target,
/// message and fields as printed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogExpectation {
    pub level: Level,
    pub substring: String,
    /// True for [`LogExpectation::expect`] (the event must occur), false for
    /// [`LogExpectation::allow`] (it may).
    pub required: bool,
}

impl LogExpectation {
    /// An event the scenario provokes: the test also fails if it is never logged.
    pub fn expect(level: Level, substring: impl Into<String>) -> LogExpectation {
        LogExpectation {
            level,
            substring: substring.into(),
            required: true,
        }
    }

    /// An event the scenario may provoke (its occurrence depends on timing).
    pub fn allow(level: Level, substring: impl Into<String>) -> LogExpectation {
        LogExpectation {
            level,
            substring: substring.into(),
            required: false,
        }
    }

    fn matches(&self, event: &LogEvent) -> bool {
        self.level == event.level && event.text.contains(&self.substring)
    }
}

impl fmt::Display for LogExpectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} ({})",
            self.level,
            self.substring,
            if self.required { "expected" } else { "allowed" }
        )
    }
}

/// One WARN or ERROR event of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEvent {
    pub level: Level,
    /// 1-based line number of its first line.
    pub line: usize,
    /// Its lines, joined by `\n` (ANSI escapes removed).
    pub text: String,
}

/// The level of every event in `log` (ERROR and WARN events, and panics as ERROR); events at
/// other levels are skipped.
pub fn events(log: &str) -> Vec<LogEvent> {
    let mut out: Vec<LogEvent> = Vec::new();
    // Whether the event the current line continues is one of `out`'s (WARN/ERROR).
    let mut continuing = false;
    for (n, raw) in log.lines().enumerate() {
        let line = strip_ansi(raw);
        let start = match event_level(&line) {
            Some(level) => Some(level),
            None if is_panic(&line) => Some(Some(Level::Error)),
            None => None,
        };
        match start {
            Some(Some(level)) => {
                out.push(LogEvent {
                    level,
                    line: n + 1,
                    text: line,
                });
                continuing = true;
            }
            Some(None) => continuing = false,
            None => {
                if let Some(last) = out.last_mut().filter(|_| continuing) {
                    last.text.push('\n');
                    last.text.push_str(&line);
                }
            }
        }
    }
    out
}

/// Checks `log` against `expectations`: every WARN/ERROR event must match one of them, and
/// every required one must match some event. `Err` describes what did not.
pub fn check(log: &str, expectations: &[LogExpectation]) -> Result<(), String> {
    let events = events(log);
    let unexpected: Vec<&LogEvent> = events
        .iter()
        .filter(|e| !expectations.iter().any(|x| x.matches(e)))
        .collect();
    let missing: Vec<&LogExpectation> = expectations
        .iter()
        .filter(|x| x.required && !events.iter().any(|e| x.matches(e)))
        .collect();
    if unexpected.is_empty() && missing.is_empty() {
        return Ok(());
    }
    let mut msg = String::new();
    if !unexpected.is_empty() {
        msg.push_str(&format!(
            "{} WARN/ERROR event(s) the test did not declare (declare them with \
             expect_log/allow_log if the scenario provokes them):\n",
            unexpected.len()
        ));
        for e in unexpected.iter().take(QUOTE_EVENTS) {
            let quoted: Vec<&str> = e.text.lines().take(QUOTE_LINES).collect();
            msg.push_str(&format!("  line {}: {}\n", e.line, quoted.join("\n    ")));
        }
        if unexpected.len() > QUOTE_EVENTS {
            msg.push_str(&format!("  ... {} more\n", unexpected.len() - QUOTE_EVENTS));
        }
    }
    if !missing.is_empty() {
        msg.push_str("declared as expected but never logged:\n");
        for x in &missing {
            msg.push_str(&format!("  {x}\n"));
        }
    }
    if !expectations.is_empty() {
        msg.push_str("declared:\n");
        for x in expectations {
            msg.push_str(&format!("  {x}\n"));
        }
    }
    Err(msg)
}

/// `Some(Some(level))` for a WARN/ERROR event's first line, `Some(None)` for another event's,
/// `None` for a line that starts no event.
fn event_level(line: &str) -> Option<Option<Level>> {
    let (timestamp, rest) = line.split_once(' ')?;
    if !is_timestamp(timestamp) {
        return None;
    }
    let (word, _) = rest.trim_start_matches(' ').split_once(' ')?;
    match word {
        "WARN" => Some(Some(Level::Warn)),
        "ERROR" => Some(Some(Level::Error)),
        "INFO" | "DEBUG" | "TRACE" => Some(None),
        _ => None,
    }
}

/// `2026-12-07T05:55:15.066571Z` (fraction of any length, or none).
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[b.len() - 1] == b'Z'
        && (b.len() == 20 || (b[19] == b'.' && digits(20..b.len() - 1)))
}

/// `thread 'tokio-runtime-worker' panicked at src/x.rs:1:2:` (std's panic hook).
fn is_panic(line: &str) -> bool {
    line.starts_with("thread '") && line.contains("' panicked at ")
}

/// `line` without ANSI CSI sequences (`ESC [ ... <final byte>`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2026-12-07T05:55:15.042460Z DEBUG redvoy_upstream::cluster: host set updated cluster=c hosts=1
2026-12-07T05:55:15.066571Z  INFO redvoy::listener_manager: listener started listener=l
2026-12-07T05:55:15.067965Z  WARN redvoy_upstream::health: host unhealthy host=127.0.0.1:1
2026-12-07T05:55:15.069732Z ERROR conn{id=3}: redvoy_proxy::session: bad thing
  second line of the error
2026-12-07T05:55:17.706590Z  INFO redvoy: shutting down, WARN in the text
thread 'tokio-runtime-worker' panicked at crates/proxy/src/x.rs:1:2:
boom
";

    #[test]
    fn finds_warn_error_and_panic_events_only() {
        let events = events(LOG);
        let summary: Vec<(Level, usize)> = events.iter().map(|e| (e.level, e.line)).collect();
        assert_eq!(
            summary,
            vec![(Level::Warn, 3), (Level::Error, 4), (Level::Error, 7)]
        );
        assert!(events[1].text.ends_with("\n  second line of the error"));
        assert!(events[2].text.ends_with("\nboom"));
    }

    #[test]
    fn ansi_colours_are_ignored() {
        let line = "\u{1b}[2m2026-12-07T05:55:15.067965Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m \
                    \u{1b}[2mredvoy\u{1b}[0m\u{1b}[2m:\u{1b}[0m careful";
        let events = events(line);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].level, Level::Warn);
        assert!(events[0].text.ends_with("careful"));
    }

    #[test]
    fn declarations_allow_and_require() {
        assert!(check(LOG, &[]).is_err());
        let declared = [
            LogExpectation::expect(Level::Warn, "host unhealthy"),
            LogExpectation::allow(Level::Error, "bad thing"),
            LogExpectation::allow(Level::Error, "panicked at"),
        ];
        assert_eq!(check(LOG, &declared), Ok(()));
        // The level must match too.
        let wrong_level = [
            LogExpectation::allow(Level::Error, "host unhealthy"),
            LogExpectation::allow(Level::Error, "bad thing"),
            LogExpectation::allow(Level::Error, "panicked at"),
        ];
        assert!(check(LOG, &wrong_level).is_err());
        // A required event that is never logged fails; an allowed one does not.
        let quiet = "2026-12-07T05:55:15.066571Z  INFO redvoy: ready\n";
        assert!(check(quiet, &[LogExpectation::expect(Level::Warn, "x")]).is_err());
        assert_eq!(
            check(quiet, &[LogExpectation::allow(Level::Warn, "x")]),
            Ok(())
        );
    }
}
