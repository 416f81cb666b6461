//! The admin endpoints, as a table like Envoy's `UrlHandler` list: path, whether it changes
//! server state (then only POST is accepted), and the handler.

use std::sync::atomic::Ordering;

use regex::Regex;

use crate::http::{Request, Response};
use crate::AdminState;

/// Envoy 1.40's `/help` text; `invalid path. ` + this is its 404 body.
const HELP: &str = include_str!("envoy_help.txt");

struct Route {
    path: &'static str,
    /// Envoy's `mutates_server_state`: any method but POST gets 405.
    mutates: bool,
    handler: fn(&Request, &AdminState) -> Response,
}

const ROUTES: &[Route] = &[
    Route {
        path: "/",
        mutates: false,
        // Envoy serves an HTML home page here; the help text is the same information.
        handler: help,
    },
    Route {
        path: "/help",
        mutates: false,
        handler: help,
    },
    Route {
        path: "/quitquitquit",
        mutates: true,
        handler: quit,
    },
    Route {
        path: "/ready",
        mutates: false,
        handler: ready,
    },
    Route {
        path: "/stats",
        mutates: false,
        handler: stats,
    },
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

fn help(_: &Request, _: &AdminState) -> Response {
    Response::text(200, HELP)
}

fn quit(_: &Request, state: &AdminState) -> Response {
    tracing::info!("shutdown requested through /quitquitquit");
    // `send_replace` stores the value even when nobody is subscribed yet.
    state.shutdown.send_replace(true);
    Response::text(200, "OK\n")
}

/// `LIVE` with 200, otherwise the server state with 503 (Envoy's `handlerReady`).
fn ready(_: &Request, state: &AdminState) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        Response::text(200, "LIVE\n")
    } else {
        Response::text(503, "PRE_INITIALIZING\n")
    }
}

const STATS_USAGE: &str = "usage: /stats?format=(html|active-html|json|prometheus|text)\n\n";

fn stats(req: &Request, state: &AdminState) -> Response {
    let filter = match req.param("filter").filter(|f| !f.is_empty()) {
        None => None,
        Some(pattern) => match Regex::new(pattern) {
            Ok(re) => Some(re),
            Err(e) => {
                return Response::text(400, format!("Invalid re2 regex: {}", regex_reason(&e)))
            }
        },
    };
    let used_only = req.param("usedonly").is_some();
    match req.param("format") {
        None | Some("text") => {
            Response::text(200, state.stats.render_text(filter.as_ref(), used_only))
        }
        Some("json") => Response::json(state.stats.render_json(filter.as_ref(), used_only)),
        // html, active-html and prometheus are Envoy formats redvoy does not render yet.
        Some(_) => Response::text(400, STATS_USAGE),
    }
}

/// The one-line cause from a regex error (its Display spans several lines with a caret).
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or_else(|| text.lines().next().unwrap_or("invalid regex"))
        .to_owned()
}
