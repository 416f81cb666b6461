//! The admin endpoints, as a table like Envoy's `UrlHandler` list: path, whether it changes
//! server state (then only POST is accepted), and the handler. Bodies, status codes and
//! content types are Envoy 1.40's, observed on the real binary.

use std::fmt::Write as _;

use crate::backend::{ConfigDumpQuery, DrainRequest, LogChange, LogLevel};
use crate::http::{parse_params, Request, Response, TEXT_HTML, TEXT_PLAIN, TEXT_PLAIN_BARE};
use crate::json;
use crate::re2;
use crate::render;
use crate::{AdminState, State};

/// Envoy 1.40's `/help` text; `invalid path. ` + this is its 404 body.
const HELP: &str = include_str!("envoy_help.txt");

/// redvoy never hot-restarts (`--disable-hot-restart` is implied).
const HOT_RESTART_VERSION: &str = "disabled";

struct Route {
    path: &'static str,
    /// Envoy's `mutates_server_state`: any method but POST gets 405.
    mutates: bool,
    handler: fn(&Request, &AdminState) -> Response,
}

const fn get(path: &'static str, handler: fn(&Request, &AdminState) -> Response) -> Route {
    Route {
        path,
        mutates: false,
        handler,
    }
}

const fn post(path: &'static str, handler: fn(&Request, &AdminState) -> Response) -> Route {
    Route {
        path,
        mutates: true,
        handler,
    }
}

const ROUTES: &[Route] = &[
    get("/", home),
    post("/allocprofiler", alloc_profiler),
    get("/certs", certs),
    get("/clusters", clusters),
    get("/config_dump", config_dump),
    get("/contention", contention),
    post("/cpuprofiler", cpu_profiler),
    post("/drain_listeners", drain_listeners),
    post("/healthcheck/fail", healthcheck_fail),
    post("/healthcheck/ok", healthcheck_ok),
    get("/heap_dump", heap_dump),
    post("/heapprofiler", heap_profiler),
    get("/help", help),
    get("/hot_restart_version", hot_restart_version),
    get("/init_dump", init_dump),
    get("/listeners", listeners),
    post("/logging", logging),
    get("/memory", memory),
    get("/memory/tcmalloc", tcmalloc),
    get("/peak_heap_dump", heap_dump),
    post("/quitquitquit", quit),
    get("/ready", ready),
    post("/reopen_logs", ok),
    post("/reset_counters", reset_counters),
    get("/runtime", runtime),
    post("/runtime_modify", runtime_modify),
    get("/server_info", server_info),
    get("/stats", stats),
    get("/stats/prometheus", stats_prometheus),
    get("/stats/recentlookups", recent_lookups),
    post("/stats/recentlookups/clear", ok),
    post("/stats/recentlookups/disable", ok),
    post("/stats/recentlookups/enable", ok),
];

pub(crate) fn handle(req: &Request, state: &AdminState) -> Response {
    let Some(route) = ROUTES.iter().find(|r| r.path == req.path) else {
        return Response::text(404, format!("invalid path. {HELP}"));
    };
    if route.mutates && req.method != "POST" {
        tracing::error!(
            path = route.path,
            method = %req.method,
            "admin path mutates state, method is not POST"
        );
        return Response::text(
            405,
            format!("Method {} not allowed, POST required.", req.method),
        );
    }
    (route.handler)(req, state)
}

/// The first value of `key` when it is not empty. Envoy 1.40 treats `resource=`, `mask=`,
/// `filter=` and `name_regex=` like absent parameters (observed).
fn non_empty<'a>(req: &'a Request, key: &str) -> Option<&'a str> {
    req.param(key).filter(|v| !v.is_empty())
}

fn ok(_: &Request, _: &AdminState) -> Response {
    Response::text(200, "OK\n")
}

// === help and home ===

fn help(_: &Request, _: &AdminState) -> Response {
    Response::text(200, HELP)
}

/// Envoy serves an HTML page with a form per endpoint; this one is generated from the same
/// help table: a link for reads, a POST button for writes, an input per parameter.
fn home(_: &Request, _: &AdminState) -> Response {
    let mut page = String::from(
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n  <title>Envoy Admin</title>\n<style>\n\
         .home-table { font-family: sans-serif; font-size: medium; border-collapse: collapse; \
         border-spacing: 0; }\n.home-data { text-align: left; padding: 4px; }\n\
         .home-form { margin-bottom: 0; }\n.button-as-link { background: none!important; \
         border: none; padding: 0!important; font-family: sans-serif; font-size: medium; \
         color: #069; text-decoration: underline; cursor: pointer; }\n</style>\n</head>\n\
         <body>\n<table class='home-table'>\n<thead>\n  <tr>\n    \
         <th class='home-data'>Command</th>\n    <th class='home-data'>Description</th>\n  \
         </tr>\n</thead>\n<tbody>\n",
    );
    for entry in help_entries() {
        let method = if entry.post { "post" } else { "get" };
        let label = entry.path.trim_start_matches('/');
        if label.is_empty() {
            // The home page does not link to itself.
            continue;
        }
        let _ = write!(
            page,
            "<tr class='vert-space'>\n  <td class='home-data'>\
             <form action='{path}' method='{method}' class='home-form'>\
             <button class='button-as-link'>{label}</button>",
            // Relative links, as Envoy writes them (`action='clusters'`).
            path = html_escape(label),
            label = html_escape(label),
        );
        for (name, _) in &entry.params {
            let _ = write!(
                page,
                "<br><label>{name}</label> <input type='text' name='{name}'>",
                name = html_escape(name)
            );
        }
        let _ = write!(
            page,
            "</form></td>\n  <td class='home-data'>{}</td>\n</tr>\n",
            html_escape(entry.description)
        );
    }
    page.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    Response::typed(200, TEXT_HTML, page)
}

struct HelpEntry {
    path: &'static str,
    post: bool,
    description: &'static str,
    params: Vec<(&'static str, &'static str)>,
}

/// The help text as a table: `  /path (POST): description` lines, each followed by
/// `      param: description` lines.
fn help_entries() -> Vec<HelpEntry> {
    let mut entries: Vec<HelpEntry> = Vec::new();
    for line in HELP.lines().skip(1) {
        if let Some(param) = line.strip_prefix("      ") {
            let (name, description) = param.split_once(": ").unwrap_or((param, ""));
            if let Some(last) = entries.last_mut() {
                last.params.push((name, description));
            }
        } else if let Some(cmd) = line.strip_prefix("  ") {
            let (head, description) = cmd.split_once(": ").unwrap_or((cmd, ""));
            let (path, post) = match head.strip_suffix(" (POST)") {
                Some(p) => (p, true),
                None => (head, false),
            };
            entries.push(HelpEntry {
                path,
                post,
                description,
                params: Vec::new(),
            });
        }
    }
    entries
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&#39;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

// === lifecycle ===

fn quit(_: &Request, state: &AdminState) -> Response {
    tracing::info!("shutdown requested through /quitquitquit");
    // `send_replace` stores the value even when nobody is subscribed yet.
    state.shutdown.send_replace(true);
    Response::text(200, "OK\n")
}

/// `LIVE` with 200, otherwise the state's name with 503 (Envoy's `handlerReady`).
fn ready(_: &Request, state: &AdminState) -> Response {
    match state.server.state() {
        State::Live => Response::text(200, "LIVE\n"),
        other => Response::text(503, format!("{}\n", other.as_str())),
    }
}

fn set_healthcheck(state: &AdminState, fail: bool) -> Response {
    state.server.fail_healthcheck(fail);
    // Envoy moves `server.live` at once; `server.state` follows at the next stats flush.
    state.stats.gauge("server.live").set(u64::from(!fail));
    Response::text(200, "OK\n")
}

fn healthcheck_fail(_: &Request, state: &AdminState) -> Response {
    tracing::info!("health check failed through /healthcheck/fail");
    set_healthcheck(state, true)
}

fn healthcheck_ok(_: &Request, state: &AdminState) -> Response {
    tracing::info!("health check passing through /healthcheck/ok");
    set_healthcheck(state, false)
}

/// Parameters count by presence: pilot-agent sends `?inboundonly&graceful`.
fn drain_listeners(req: &Request, state: &AdminState) -> Response {
    let request = DrainRequest {
        inbound_only: req.param("inboundonly").is_some(),
        graceful: req.param("graceful").is_some(),
        skip_exit: req.param("skip_exit").is_some(),
    };
    tracing::info!(?request, "draining listeners through /drain_listeners");
    state.backend.drain_listeners(request);
    Response::text(200, "OK\n")
}

fn server_info(_: &Request, state: &AdminState) -> Response {
    let info = state.backend.server_info();
    match render::server_info_json(&info, state.server.state()) {
        Ok(body) => Response::json(body),
        Err(e) => Response::text(500, format!("node JSON: {e}")),
    }
}

fn hot_restart_version(_: &Request, _: &AdminState) -> Response {
    Response::text(200, HOT_RESTART_VERSION)
}

/// Envoy lists unready init targets; redvoy's initialization has none it can name, and once
/// initialized Envoy prints `{}` too.
fn init_dump(_: &Request, _: &AdminState) -> Response {
    Response::json("{}\n".to_owned())
}

// === /config_dump ===

fn config_dump(req: &Request, state: &AdminState) -> Response {
    // Checked here so the error carries RE2's wording, as Envoy's does.
    if let Some(pattern) = non_empty(req, "name_regex") {
        if let Err(reason) = re2::compile(pattern, true) {
            return Response::typed(
                400,
                TEXT_PLAIN,
                format!(
                    "INVALID_ARGUMENT: Error while parsing name_regex from {pattern}: {reason}"
                ),
            );
        }
    }
    let query = ConfigDumpQuery {
        resource: non_empty(req, "resource").map(str::to_owned),
        mask: non_empty(req, "mask").map(str::to_owned),
        name_regex: non_empty(req, "name_regex").map(str::to_owned),
        // Presence is enough: `?include_eds`, `?include_eds=`, even `?include_eds=false`.
        include_eds: req.param("include_eds").is_some(),
    };
    let raw = match state.backend.config_dump(&query) {
        Ok(raw) => raw,
        Err(e) => return Response::typed(e.status, TEXT_PLAIN_BARE, e.body),
    };
    // Re-printed so the bytes are Envoy's (one-space indent, `<`/`>` escaped).
    match json::parse(&raw) {
        Ok(dump) => Response::json(dump.pretty()),
        Err(e) => Response::typed(500, TEXT_PLAIN_BARE, format!("config dump: {e}")),
    }
}

// === /clusters, /listeners ===

fn clusters(req: &Request, state: &AdminState) -> Response {
    let filter = match non_empty(req, "filter") {
        None => None,
        Some(pattern) => match re2::compile(pattern, false) {
            Ok(re) => Some(re),
            // Envoy gives no reason here, unlike /stats.
            Err(_) => return Response::text(400, "Invalid re2 regex"),
        },
    };
    let mut all = state.backend.clusters();
    if let Some(re) = &filter {
        all.retain(|c| re.is_match(&c.name));
    }
    // Any other format, even an unknown one, is text.
    if req.param("format") == Some("json") {
        Response::json(render::clusters_json(&all))
    } else {
        Response::text(200, render::clusters_text(&all))
    }
}

fn listeners(req: &Request, state: &AdminState) -> Response {
    let all = state.backend.listeners();
    if req.param("format") == Some("json") {
        Response::json(render::listeners_json(&all))
    } else {
        Response::text(200, render::listeners_text(&all))
    }
}

// === /logging ===

const LOGGING_USAGE: &str = "usage: /logging?<name>=<level> (change single level)\n\
usage: /logging?paths=name1:level1,name2:level2,... (change multiple levels)\n\
usage: /logging?level=<level> (change all levels)\n\
usage: /logging?group=<group_name>:<level> (change group of loggers)\n\
levels: trace debug info warning error critical off \n";

/// Without parameters: the list. With one: a change, then the list. Parameters with an empty
/// value are ignored, and a repeated name counts once with its first value (observed).
fn logging(req: &Request, state: &AdminState) -> Response {
    let mut params: Vec<(&str, &str)> = Vec::new();
    for (k, v) in &req.query {
        if !v.is_empty() && !params.iter().any(|(seen, _)| seen == k) {
            params.push((k, v));
        }
    }
    let mut body = String::new();
    let mut status = 200;
    if !params.is_empty() {
        let loggers = state.backend.loggers();
        match log_change(&params, &loggers) {
            Ok(change) => {
                tracing::info!(?change, "log levels changed through /logging");
                state.backend.set_log_levels(change);
            }
            Err(reason) => {
                status = 400;
                let _ = write!(body, "error: {reason}\n\n{LOGGING_USAGE}");
            }
        }
    }
    render::loggers_text(&mut body, &state.backend.loggers());
    Response::text(status, body)
}

/// `LogsHandler::changeLogLevel`: levels are checked first, then names, all before any change.
fn log_change(
    params: &[(&str, &str)],
    loggers: &[(String, LogLevel)],
) -> Result<LogChange, &'static str> {
    let [(key, value)] = params else {
        return Err("invalid number of parameters");
    };
    let level = |s: &str| LogLevel::parse(s).ok_or("unknown logger level");
    let mut named: Vec<(String, LogLevel)> = Vec::new();
    let mut set = |name: &str, l: LogLevel| match named.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = l,
        None => named.push((name.to_owned(), l)),
    };
    match *key {
        "level" => return Ok(LogChange::All(level(value)?)),
        "group" => return Err("group parameter requires fine-grain logging to be enabled"),
        "paths" => {
            for pair in value.split(',').filter(|p| !p.trim().is_empty()) {
                // absl's SkipWhitespace drops an empty name before the colon, so `:debug`
                // and `redis:` both lack one of the two.
                let mut parts = pair.splitn(2, ':').filter(|p| !p.trim().is_empty());
                let (Some(name), Some(l)) = (parts.next(), parts.next()) else {
                    return Err("empty logger name or empty logger level");
                };
                set(name, level(l)?);
            }
        }
        name => set(name, level(value)?),
    }
    if named
        .iter()
        .any(|(n, _)| !loggers.iter().any(|(known, _)| known == n))
    {
        return Err("unknown logger name");
    }
    Ok(LogChange::Named(named))
}

// === /runtime, /memory, /certs and the rest ===

fn runtime(_: &Request, state: &AdminState) -> Response {
    Response::json(render::runtime_json(&state.backend.runtime()))
}

const RUNTIME_MODIFY_USAGE: &str = "usage: /runtime_modify?key1=value1&key2=value2&keyN=valueN\n       or send the parameters as form values\nuse an empty value to remove a previously added override";

/// Keys from the query, or else from a form body; a repeated key counts once with its first
/// value; an empty value removes the override.
fn runtime_modify(req: &Request, state: &AdminState) -> Response {
    let mut params = req.query.clone();
    if params.is_empty()
        && req
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
    {
        params = parse_params(&String::from_utf8_lossy(&req.body));
    }
    let mut changes: Vec<(String, String)> = Vec::with_capacity(params.len());
    for (k, v) in params {
        if !changes.iter().any(|(seen, _)| *seen == k) {
            changes.push((k, v));
        }
    }
    if changes.is_empty() {
        return Response::text(400, RUNTIME_MODIFY_USAGE);
    }
    match state.backend.runtime_modify(&changes) {
        Ok(()) => Response::text(200, "OK\n"),
        Err(e) => Response::text(e.status, e.body),
    }
}

fn memory(_: &Request, state: &AdminState) -> Response {
    Response::json(render::memory_json(&state.backend.memory()))
}

fn certs(_: &Request, state: &AdminState) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Response::json(render::certs_json(&state.backend.certificates(), now))
}

fn reset_counters(_: &Request, state: &AdminState) -> Response {
    state.stats.reset_counters();
    Response::text(200, "OK\n")
}

fn contention(_: &Request, _: &AdminState) -> Response {
    Response::text(
        200,
        "Mutex contention tracing is not enabled. To enable, run Envoy with flag --enable-mutex-tracing.",
    )
}

fn recent_lookups(_: &Request, _: &AdminState) -> Response {
    Response::text(
        200,
        "Lookup tracking is not enabled. Use /stats/recentlookups/enable to enable.\n\ntotal: 0\n",
    )
}

const PROFILER_USAGE: &str = "?enable=<y|n>\n";

/// Envoy's `/cpuprofiler` without gperftools: `y` fails to start, `n` is fine.
fn cpu_profiler(req: &Request, _: &AdminState) -> Response {
    match req.param("enable") {
        Some("y") => Response::text(500, "failure to start the profiler"),
        Some("n") => Response::text(200, "OK\n"),
        _ => Response::text(400, PROFILER_USAGE),
    }
}

/// `/allocprofiler`: not available in redvoy (Envoy's tcmalloc build answers `OK` and dumps a
/// profile on `n`).
fn alloc_profiler(req: &Request, _: &AdminState) -> Response {
    match req.param("enable") {
        Some("y" | "n") => Response::text(501, "The current build does not support alloc profiler"),
        _ => Response::text(400, PROFILER_USAGE),
    }
}

fn heap_profiler(_: &Request, _: &AdminState) -> Response {
    Response::text(501, "The current build does not support heap profiler")
}

/// Envoy's tcmalloc build returns a gzip profile; redvoy has none to give.
fn heap_dump(_: &Request, _: &AdminState) -> Response {
    Response::text(501, "The current build does not support heap dump")
}

fn tcmalloc(_: &Request, _: &AdminState) -> Response {
    Response::typed(501, TEXT_PLAIN_BARE, "TCMalloc is not used by this build")
}

// === /stats ===

const STATS_FORMAT_USAGE: &str = "usage: /stats?format=(html|active-html|json|prometheus|text)\n\n";
const STATS_BUCKETS_USAGE: &str =
    "usage: /stats?histogram_buckets=(cumulative|disjoint|detailed|summary|prometheusnative)\n";
const STATS_BUCKETS: &[&str] = &[
    "cumulative",
    "disjoint",
    "detailed",
    "summary",
    "prometheusnative",
];
/// The bucket modes `/stats/prometheus` renders; others are refused with
/// `PROMETHEUS_BUCKETS_UNSUPPORTED`.
const PROMETHEUS_BUCKETS: &[&str] = &["cumulative", "summary"];
const PROMETHEUS_BUCKETS_UNSUPPORTED: &str = "unsupported prometheus histogram bucket mode";
const INVERT_WITHOUT_FILTER: &str = "invert_filter can only be used if filter is also provided";
/// INTEGRATION: the store cannot invert its selection yet; only text output is post-filtered.
const INVERT_TEXT_ONLY: &str = "invert_filter is only supported with the text format\n";

/// The query of `/stats` and `/stats/prometheus`, validated in Envoy's order (`StatsParams`):
/// filter, type, histogram_buckets, format.
struct StatsQuery<'a> {
    used_only: bool,
    filter: Option<regex::Regex>,
    invert_filter: bool,
    stats_type: redvoy_stats::StatsType,
    histogram_buckets: Option<&'a str>,
    format: Option<&'a str>,
    text_readouts: bool,
}

fn stats_query<'a>(req: &'a Request) -> Result<StatsQuery<'a>, Response> {
    let invert_filter = req.param("invert_filter").is_some();
    let filter = match non_empty(req, "filter") {
        None if invert_filter => return Err(Response::text(400, INVERT_WITHOUT_FILTER)),
        None => None,
        Some(pattern) => Some(
            re2::compile(pattern, false)
                .map_err(|reason| Response::text(400, format!("Invalid re2 regex: {reason}")))?,
        ),
    };
    let stats_type = match req.param("type") {
        None => redvoy_stats::StatsType::All,
        Some(t) => t
            .parse()
            .map_err(|e: redvoy_stats::InvalidStatsType| Response::text(400, e.to_string()))?,
    };
    let histogram_buckets = req.param("histogram_buckets");
    if let Some(b) = histogram_buckets {
        if !STATS_BUCKETS.contains(&b) {
            return Err(Response::text(400, STATS_BUCKETS_USAGE));
        }
    }
    let format = req.param("format");
    if let Some(f) = format {
        if !["html", "active-html", "json", "prometheus", "text"].contains(&f) {
            return Err(Response::text(400, STATS_FORMAT_USAGE));
        }
    }
    Ok(StatsQuery {
        used_only: req.param("usedonly").is_some(),
        filter,
        invert_filter,
        stats_type,
        histogram_buckets,
        format,
        text_readouts: req.param("text_readouts").is_some(),
    })
}

impl StatsQuery<'_> {
    /// The store's selection; an inverted filter is applied to the rendered lines instead.
    fn store_query(&self) -> redvoy_stats::StatsQuery<'_> {
        redvoy_stats::StatsQuery {
            filter: if self.invert_filter {
                None
            } else {
                self.filter.as_ref()
            },
            used_only: self.used_only,
            stats_type: self.stats_type,
        }
    }

    /// `invert_filter` on the text form: drops every `name: …` line whose name matches.
    fn invert_text(&self, text: String) -> String {
        match (&self.filter, self.invert_filter) {
            (Some(re), true) => text
                .split_inclusive('\n')
                .filter(|line| !re.is_match(line.split(": ").next().unwrap_or(line)))
                .collect(),
            _ => text,
        }
    }
}

fn stats(req: &Request, state: &AdminState) -> Response {
    let q = match stats_query(req) {
        Ok(q) => q,
        Err(resp) => return resp,
    };
    match q.format {
        None | Some("text") => Response::text(
            200,
            q.invert_text(state.stats.render_text_query(&q.store_query())),
        ),
        Some("prometheus") => prometheus(&q, state),
        // INTEGRATION: invert_filter for json needs the store to invert its selection.
        Some(_) if q.invert_filter => Response::text(501, INVERT_TEXT_ONLY),
        Some("json") => Response::json(state.stats.render_json_query(&q.store_query())),
        // html and active-html: the text inside a page.
        Some(_) => {
            let text = state.stats.render_text_query(&q.store_query());
            Response::typed(
                200,
                TEXT_HTML,
                format!(
                    "<!DOCTYPE html>\n<html lang='en'>\n<head>\n  <title>Envoy Admin</title>\n</head>\n<body>\n<pre>{}</pre>\n</body>\n</html>\n",
                    html_escape(&text)
                ),
            )
        }
    }
}

/// `/stats/prometheus` renders Prometheus whatever `format=` says, and ignores `type=`
/// (observed).
fn stats_prometheus(req: &Request, state: &AdminState) -> Response {
    match stats_query(req) {
        Ok(q) => prometheus(&q, state),
        Err(resp) => resp,
    }
}

fn prometheus(q: &StatsQuery<'_>, state: &AdminState) -> Response {
    if q.histogram_buckets
        .is_some_and(|b| !PROMETHEUS_BUCKETS.contains(&b))
    {
        return Response::text(400, PROMETHEUS_BUCKETS_UNSUPPORTED);
    }
    // INTEGRATION: `summary` buckets and `invert_filter` need support in the store's
    // Prometheus renderer; until then they render cumulative buckets / are refused.
    if q.invert_filter {
        return Response::text(501, INVERT_TEXT_ONLY);
    }
    Response::text(
        200,
        state
            .stats
            .render_prometheus_with(q.used_only, q.filter.as_ref(), q.text_readouts),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loggers() -> Vec<(String, LogLevel)> {
        ["admin", "main", "redis"]
            .iter()
            .map(|n| ((*n).to_owned(), LogLevel::Info))
            .collect()
    }

    #[test]
    fn log_changes_follow_envoy() {
        let l = loggers();
        let named = |v: &[(&str, LogLevel)]| {
            Ok(LogChange::Named(
                v.iter().map(|(n, l)| ((*n).to_owned(), *l)).collect(),
            ))
        };
        assert_eq!(
            log_change(&[("level", "debug")], &l),
            Ok(LogChange::All(LogLevel::Debug))
        );
        assert_eq!(
            log_change(&[("level", "warn")], &l),
            Err("unknown logger level")
        );
        assert_eq!(
            log_change(&[("level", "INFO")], &l),
            Err("unknown logger level")
        );
        assert_eq!(
            log_change(&[("redis", "trace")], &l),
            named(&[("redis", LogLevel::Trace)])
        );
        assert_eq!(
            log_change(&[("bogus", "trace")], &l),
            Err("unknown logger name")
        );
        assert_eq!(
            log_change(&[("Redis", "debug")], &l),
            Err("unknown logger name")
        );
        assert_eq!(
            log_change(&[("redis", "bogus")], &l),
            Err("unknown logger level")
        );
        assert_eq!(
            log_change(&[("paths", "redis:warning,admin:error")], &l),
            named(&[("redis", LogLevel::Warning), ("admin", LogLevel::Error)])
        );
        assert_eq!(
            log_change(&[("paths", "redis:debug,,admin:info")], &l),
            named(&[("redis", LogLevel::Debug), ("admin", LogLevel::Info)])
        );
        assert_eq!(
            log_change(&[("paths", "redis:debug,redis:info")], &l),
            named(&[("redis", LogLevel::Info)])
        );
        for (paths, err) in [
            ("redis:bogus", "unknown logger level"),
            ("nope:info", "unknown logger name"),
            ("nope:bogus", "unknown logger level"),
            ("redis", "empty logger name or empty logger level"),
            (":debug", "empty logger name or empty logger level"),
            ("redis:", "empty logger name or empty logger level"),
            ("redis:info:x", "unknown logger level"),
            (" redis:info", "unknown logger name"),
            ("redis:debug,nope:info", "unknown logger name"),
        ] {
            assert_eq!(log_change(&[("paths", paths)], &l), Err(err), "{paths}");
        }
        assert_eq!(
            log_change(&[("group", "redis:info")], &l),
            Err("group parameter requires fine-grain logging to be enabled")
        );
        assert_eq!(
            log_change(&[("level", "info"), ("redis", "trace")], &l),
            Err("invalid number of parameters")
        );
    }

    #[test]
    fn help_table_parses() {
        let entries = help_entries();
        assert_eq!(entries.first().map(|e| e.path), Some("/"));
        let drain = entries
            .iter()
            .find(|e| e.path == "/drain_listeners")
            .unwrap();
        assert!(drain.post);
        assert_eq!(
            drain.params.iter().map(|p| p.0).collect::<Vec<_>>(),
            ["graceful", "skip_exit", "inboundonly"]
        );
        // Every endpoint in Envoy's help is routed, with the same method rule.
        for e in &entries {
            let route = ROUTES.iter().find(|r| r.path == e.path);
            assert_eq!(route.map(|r| r.mutates), Some(e.post), "{}", e.path);
        }
        assert_eq!(entries.len(), ROUTES.len());
    }
}
