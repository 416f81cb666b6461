#!/usr/bin/env python3
"""Checks that a Grafana dashboard only queries metrics a proxy really exports.

    python3 deploy/check_dashboard.py DASHBOARD.json METRICS.txt
    python3 deploy/check_dashboard.py --self-test

METRICS.txt is a Prometheus text exposition (what /stats/prometheus serves; a file of only its
`# TYPE` lines works too). Every PromQL expression of the dashboard is read — panel targets,
panels nested in rows, query variables of the templating (label_values, query_result,
metrics) and annotations — and every metric it selects is resolved to a family of METRICS.txt:

- a bare name or `{__name__="..."}` must be a series name of the exposition: a counter or
  gauge family's own name, or a histogram family's `_bucket`/`_sum`/`_count` (a summary's own
  name, `_sum`, `_count`); a histogram's bare family name selects nothing and is reported;
- `{__name__=~"regex"}` must fully match at least one series name;
- a label matcher's label must be on at least one matched series in METRICS.txt, or be a label
  Prometheus adds when scraping (instance, job, pod, namespace, ...), so that a matcher on a tag
  the proxy does not produce (`cluster_name` for `envoy_cluster_name`) is caught;
- an identifier called like a function must be a PromQL function or aggregation;
- a range selector (`[5m]`) must not select several names: rate() and the other range
  functions drop `__name__`, and Prometheus then refuses the series that share a label set.

It also fails on a panel or target whose datasource is not the `${datasource}` variable (an
export with a hard-coded datasource uid) and on duplicate panel ids.
Exit 0 with a one-line summary, or 1 with one line per problem (panel title and metric).
Standard library only.
"""

import json
import re
import sys

AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "double_exponential_smoothing", "exp", "floor", "histogram_avg",
    "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev",
    "histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta", "increase", "info",
    "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2",
    "mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi",
    "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets",
    "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc",
    "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh",
    "time", "timestamp", "vector", "year",
}
# Keywords that are followed by a parenthesised label list.
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"}
# Labels that come from the scrape, not from the exposition.
SCRAPE_LABELS = {
    "instance", "job", "pod", "namespace", "container", "node", "service", "endpoint",
    "cluster", "app", "app_kubernetes_io_name", "app_kubernetes_io_component",
    "pod_template_hash", "kubernetes_namespace", "kubernetes_pod_name",
}
VARIABLE = re.compile(r"\$\{[^}]+\}|\$__[A-Za-z_]+|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[^\]]+\]\]")
VAR_TOKEN = "__grafana_variable__"

TOKEN = re.compile(r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?(?:\d+(?:ms|[smhdwy]))*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}\[\]@])
""", re.X)


class PromQLError(Exception):
    pass


def tokenize(expr):
    tokens, pos = [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise PromQLError(f"cannot read {expr[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind != "ws":
            tokens.append((kind, m.group(kind)))
    return tokens


def unquote(s):
    if s[0] == "`":
        return s[1:-1]
    return re.sub(r"\\(.)", r"\1", s[1:-1])


def is_range(tokens, i):
    """Whether tokens[i] opens a range `[5m]` (True) rather than a subquery `[5m:1m]` or nothing."""
    if i >= len(tokens) or tokens[i] != ("op", "["):
        return False
    j = i + 1
    while j < len(tokens) and tokens[j] != ("op", "]"):
        if tokens[j] == ("op", ":") or (tokens[j][0] == "ident" and ":" in tokens[j][1]):
            return False
        j += 1
    return True


def selectors(expr):
    """The vector selectors of a PromQL expression: (metric name or None, [(label, op, value)],
    whether it is a range selector). Raises PromQLError for an unknown function or an expression
    it cannot read."""
    # Grafana variables: inside strings they become `.*` (so a `__name__=~"...$var..."` regex
    # still matches), elsewhere a neutral identifier.
    parts = re.split(r'("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`)', expr)
    expr = "".join(VARIABLE.sub(".*", p) if i % 2 else VARIABLE.sub(VAR_TOKEN, p)
                   for i, p in enumerate(parts))
    tokens = tokenize(expr)
    out, i = [], 0
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else (None, None)
        if kind == "op" and text == "[":  # range or subquery: durations and variables only
            depth = 1
            i += 1
            while i < len(tokens) and depth:
                depth += {"[": 1, "]": -1}.get(tokens[i][1], 0) if tokens[i][0] == "op" else 0
                i += 1
            continue
        if kind == "op" and text == "{":  # a selector without a metric name
            matchers, i = read_matchers(tokens, i)
            out.append((None, matchers, is_range(tokens, i)))
            continue
        if kind != "ident":
            i += 1
            continue
        low = text.lower()
        if text == VAR_TOKEN:
            i += 1
            continue
        if low in LABEL_LIST_KEYWORDS:
            i += 1
            if i < len(tokens) and tokens[i] == ("op", "("):
                while i < len(tokens) and tokens[i] != ("op", ")"):
                    i += 1
                i += 1
            continue
        if low in KEYWORDS:
            i += 1
            continue
        if text in AGGREGATIONS or text in FUNCTIONS:
            i += 1
            continue
        if nxt == ("op", "("):
            raise PromQLError(f"unknown function {text}()")
        if i > 0 and tokens[i - 1] == ("op", "@"):  # `@ start()` handled above; `@ 123` is a number
            i += 1
            continue
        matchers = []
        i += 1
        if i < len(tokens) and tokens[i] == ("op", "{"):
            matchers, i = read_matchers(tokens, i)
        out.append((text, matchers, is_range(tokens, i)))
    return out


def read_matchers(tokens, i):
    """Reads `{l op "v", ...}` starting at tokens[i] == '{'; returns (matchers, index after '}')."""
    matchers = []
    i += 1
    while i < len(tokens) and tokens[i] != ("op", "}"):
        kind, text = tokens[i]
        if kind == "op" and text == ",":
            i += 1
            continue
        if kind == "string" and (i + 1 >= len(tokens) or tokens[i + 1][1] in (",", "}")):
            matchers.append(("__name__", "=", unquote(text)))  # Prometheus 3 `{"name"}`
            i += 1
            continue
        if i + 2 >= len(tokens) or tokens[i + 1][0] != "op" or tokens[i + 2][0] != "string":
            raise PromQLError(f"cannot read label matcher at {text!r}")
        label = unquote(text) if kind == "string" else text
        matchers.append((label, tokens[i + 1][1], unquote(tokens[i + 2][1])))
        i += 3
    return matchers, i + 1


# === the exposition ===

def read_metrics(path):
    """(families {name: type}, labels {series name: set of label names})."""
    families, labels = {}, {}
    sample = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s")
    label = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="(?:[^"\\]|\\.)*"')
    with open(path) as f:
        for line in f:
            if line.startswith("# TYPE "):
                parts = line.split()
                if len(parts) >= 4:
                    families[parts[2]] = parts[3]
                continue
            if line.startswith("#") or not line.strip():
                continue
            m = sample.match(line)
            if m:
                labels.setdefault(m.group(1), set()).update(label.findall(m.group(3) or ""))
    return families, labels


def series_names(families, labels):
    """Every name a selector can select, mapped to its family."""
    names = {}
    for fam, typ in families.items():
        if typ == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                names[fam + suffix] = fam
        elif typ == "summary":
            for suffix in ("", "_sum", "_count"):
                names[fam + suffix] = fam
        else:
            names[fam] = fam
    for name in labels:  # samples without a TYPE line (untyped)
        names.setdefault(name, name)
    return names


def check_selector(metric, matchers, names, families, labels, ranged=False):
    """Returns (families used, problems)."""
    problems = []
    exact = [v for (l, op, v) in matchers if l == "__name__" and op == "="]
    regexes = [v for (l, op, v) in matchers if l == "__name__" and op == "=~"]
    if metric is not None:
        exact.append(metric)
    matched = None
    for name in exact:
        if name in names:
            matched = {name} if matched is None else matched & {name}
        elif families.get(name) == "histogram":
            problems.append(f"{name}: a histogram family; select {name}_bucket, _sum or _count")
            return set(), problems
        else:
            problems.append(f"{name}: not exported (no such metric family in the metrics file)")
            return set(), problems
    for rx in regexes:
        try:
            pattern = re.compile(rx)
        except re.error as e:
            problems.append(f'__name__=~"{rx}": bad regex ({e})')
            return set(), problems
        hits = {n for n in names if pattern.fullmatch(n)}
        if not hits:
            problems.append(f'__name__=~"{rx}": matches no exported metric')
            return set(), problems
        matched = hits if matched is None else matched & hits
    if matched is None:
        problems.append(f"selector {matchers} names no metric")
        return set(), problems
    if not matched:
        problems.append(f"selector {matchers} matches no exported metric")
        return set(), problems
    if ranged and len(matched) > 1:
        problems.append(f"{sorted(matched)[0]} and {len(matched) - 1} other name(s) in one range "
                        "selector: rate() and the other range functions drop __name__, and Prometheus "
                        "refuses the series that then share a label set (\"vector cannot contain "
                        "metrics with the same labelset\"); label_replace the name into a label and "
                        "take the rate over a subquery")
    seen = set()
    for n in matched:
        seen |= labels.get(n, set())
    if seen:  # only when the file has samples (a TYPE-only file has no labels to check)
        for (l, _, _) in matchers:
            if l != "__name__" and l not in seen and l not in SCRAPE_LABELS:
                problems.append(f"{sorted(matched)[0]}: label {l!r} is not on any of its series "
                                f"(it has {sorted(seen) or 'none'})")
    return {names[n] for n in matched}, problems


# === the dashboard ===

def panel_exprs(panels, path=""):
    for p in panels or []:
        title = p.get("title") or f"panel {p.get('id')}"
        where = f"{path} / {title}" if path else title
        yield ("panel", where, p, None)
        for t in p.get("targets") or []:
            ds = t.get("datasource") or p.get("datasource")
            dstype = ds.get("type") if isinstance(ds, dict) else None
            if dstype not in (None, "prometheus"):
                continue
            if t.get("expr"):
                yield ("expr", f"{where} [{t.get('refId', '?')}]", p, t["expr"])
        yield from panel_exprs(p.get("panels"), where)


def template_exprs(dash):
    """(where, expr or None, label or None, name regex or None) of the query variables."""
    for v in (dash.get("templating") or {}).get("list") or []:
        if v.get("type") != "query":
            continue
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query") or q.get("expr") or ""
        q = (q or v.get("definition") or "").strip()
        where = f"variable ${v.get('name')}"
        m = re.fullmatch(r"label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)", q, re.S)
        if m:
            yield (where, m.group(1), m.group(2), None)
            continue
        m = re.fullmatch(r"label_values\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)", q)
        if m:
            yield (where, None, m.group(1), None)
            continue
        m = re.fullmatch(r"metrics\((.*)\)", q, re.S)
        if m:
            yield (where, None, None, m.group(1).strip())
            continue
        m = re.fullmatch(r"query_result\((.*)\)", q, re.S)
        if m:
            yield (where, m.group(1), None, None)
            continue
        if q.startswith("label_names("):
            continue
        yield (where, q, None, None)


def check(dashboard_path, metrics_path):
    dash = json.load(open(dashboard_path))
    families, labels = read_metrics(metrics_path)
    if not families and not labels:
        return [f"{metrics_path}: no metrics in it"], ""
    names = series_names(families, labels)
    problems, used, n_expr, n_panels, ids = [], set(), 0, 0, {}
    exact_names, patterns = set(), set()

    def run(where, expr, label=None):
        nonlocal n_expr
        n_expr += 1
        try:
            sels = selectors(expr)
        except PromQLError as e:
            problems.append(f"{where}: {e} in {expr!r}")
            return
        for metric, matchers, ranged in sels:
            exact_names.update([metric] if metric else [v for (l, op, v) in matchers if l == "__name__" and op == "="])
            patterns.update(v for (l, op, v) in matchers if l == "__name__" and op == "=~")
            fams, probs = check_selector(metric, matchers, names, families, labels, ranged)
            used.update(fams)
            problems.extend(f"{where}: {p}" for p in probs)
            if label and not probs and labels:
                have = set().union(*(labels.get(n, set()) for n in names if names[n] in fams))
                if label not in have and label not in SCRAPE_LABELS:
                    problems.append(f"{where}: label {label!r} is not on {metric or matchers}")

    for kind, where, panel, expr in panel_exprs(dash.get("panels")):
        if kind == "panel":
            n_panels += 1
            pid = panel.get("id")
            if pid is not None:
                if pid in ids:
                    problems.append(f"{where}: panel id {pid} also used by {ids[pid]}")
                ids[pid] = where
            for t in [panel] + list(panel.get("targets") or []):
                ds = t.get("datasource")
                if isinstance(ds, dict) and ds.get("type") == "prometheus" and ds.get("uid") != "${datasource}":
                    problems.append(f"{where}: datasource uid {ds.get('uid')!r}, not ${{datasource}}")
            continue
        run(where, expr)
    for where, expr, label, name_rx in template_exprs(dash):
        if name_rx is not None:
            n_expr += 1
            pattern = re.compile(name_rx)
            hits = {names[n] for n in names if pattern.search(n)}
            if not hits:
                problems.append(f"{where}: metrics({name_rx}) matches no exported metric")
            used.update(hits)
        elif expr is not None:
            run(where, expr, label)
    for a in (dash.get("annotations") or {}).get("list") or []:
        if a.get("expr"):
            run(f"annotation {a.get('name')}", a["expr"])
    summary = (f"check_dashboard: OK: {n_panels} panels, {n_expr} expressions, {len(exact_names)} "
               f"metric names and {len(patterns)} __name__ patterns ({len(used)} families), all "
               f"exported in {metrics_path} ({len(families)} families)")
    return problems, summary


# === self-test ===

def self_test():
    cases = {
        'sum by (le) (rate(a_bucket{x="1"}[$__rate_interval]))': [("a_bucket", [("x", "=", "1")], True)],
        'histogram_quantile(0.99, sum by (command, le) (label_replace(rate({__name__=~"c_.+_bucket"}[5m]), "command", "$1", "__name__", "c_(.+)_bucket")))':
            [(None, [("__name__", "=~", "c_.+_bucket")], True)],
        'rate(label_replace({__name__=~"c_.+"}, "c", "$1", "__name__", "c_(.+)")[5m:$step])':
            [(None, [("__name__", "=~", "c_.+")], False)],
        "a / on(instance) group_left(pod) b offset 5m > bool 0": [("a", [], False), ("b", [], False)],
        "max_over_time(up[1h:5m]) and ignoring(job) absent(x)": [("up", [], False), ("x", [], False)],
        'sum without (l) (m{instance=~"$instance", p="${prefix}"}) * 1e3': [("m", [("instance", "=~", ".*"), ("p", "=", ".*")], False)],
        'topk(5, y) unless z @ end()': [("y", [], False), ("z", [], False)],
        '{"utf8.name", a="b"}': [(None, [("__name__", "=", "utf8.name"), ("a", "=", "b")], False)],
    }
    for expr, want in cases.items():
        got = selectors(expr)
        assert got == want, f"{expr}: got {got}, want {want}"
    try:
        selectors("notafunction(x)")
        raise AssertionError("unknown function accepted")
    except PromQLError:
        pass
    fam = {"h": "histogram", "c": "counter"}
    lab = {"h_bucket": {"le", "t"}, "c": {"t"}}
    names = series_names(fam, lab)
    assert check_selector("h_bucket", [("t", "=", "x")], names, fam, lab)[1] == []
    assert check_selector("h", [], names, fam, lab)[1]
    assert check_selector("c", [("other", "=", "x")], names, fam, lab)[1]
    assert check_selector("c", [("pod", "=", "x")], names, fam, lab)[1] == []
    assert check_selector(None, [("__name__", "=~", "nothing_.*")], names, fam, lab)[1]
    assert check_selector(None, [("__name__", "=~", "h_.+")], names, fam, lab, ranged=True)[1]
    assert check_selector(None, [("__name__", "=~", "h_.+")], names, fam, lab, ranged=False)[1] == []
    print("check_dashboard: self-test passed")


def main(argv):
    if argv[1:] == ["--self-test"]:
        self_test()
        return 0
    if len(argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    problems, summary = check(argv[1], argv[2])
    if problems:
        print(f"check_dashboard: {len(problems)} problem(s) in {argv[1]}:")
        for p in problems:
            print(f"  {p}")
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
