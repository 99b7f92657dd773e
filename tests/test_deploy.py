"""Checks of deploy/: the manifests, the alert rules and the Dockerfile, with the tools users run.

Deployment files break silently: nothing imports them, and a typo'd field or a forgotten Secret
key only shows up in a cluster at 2 a.m. So the overlays are rendered with the real `kubectl
kustomize`, validated with `kubernetes-validate --strict` against the Kubernetes schemas, the
alert rules are checked and unit-tested with the real `promtool`, and the config in the ConfigMap
goes through the app's own loader. The cross-file facts that no single tool sees (every ${NAME}
in the config is provided to every container, the alert interval matches reconcile_every, the
PrometheusRule matches the plain rule file, the Dockerfile copies every package folder) are
asserted here. Outside CI a missing kubectl/promtool skips; with $CI set it fails.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from numsync.config import parse_config

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
OVERLAYS = ("daemon-postgres", "cron-sqlite")
RECONCILE_NOW = K8S / "jobs" / "reconcile-now.yaml"
RULES = DEPLOY / "prometheus" / "numsync-rules.yaml"
RULES_TEST = DEPLOY / "prometheus" / "numsync-rules.test.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
# The oldest Kubernetes the manifests claim (CronJob timeZone, podFailurePolicy) and the kubectl here.
K8S_VERSIONS = ("1.29.0", "1.32.0")
UID = 10001
SECRET_NAME = "numsync-secrets"
CONFIG_PATH = "/etc/numsync/numsync.yaml"
REPORTS_DIR = "/var/lib/numsync/reports"
SQLITE_URL = "sqlite:////var/lib/numsync/data/numsync.db"
SECRETISH = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|WEBHOOK|DATABASE_URL")
FAKE_ENV = {
    "NUMSYNC_DATABASE_URL": "postgresql+psycopg://numsync:fake-db-password@db:5432/numsync",
    "VAPI_API_KEY": "fake-vapi-key",
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_AUTH_TOKEN": "fake-twilio-token",
    "TELNYX_API_KEY": "fake-telnyx-key",
    "VONAGE_API_KEY": "fake-vonage-key",
    "VONAGE_API_SECRET": "fake-vonage-secret",
    "SLACK_WEBHOOK_URL": "https://hooks.example.invalid/fake",
}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def _missing(what: str) -> NoReturn:
    """A skip on a developer machine without the tool, a failure in CI (which installs it)."""
    (pytest.fail if _in_ci() else pytest.skip)(f"{what} is not installed (the CI script installs it)")


def _need_tool(name: str, fallback: str | None = None) -> str:
    found = shutil.which(name) or (fallback if fallback and Path(fallback).is_file() else None)
    return found or _missing(name)


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **kwargs)


@cache
def _render(overlay: str) -> tuple[str, tuple[dict[str, Any], ...]]:
    kubectl = _need_tool("kubectl", "/usr/bin/kubectl")
    proc = _run([kubectl, "kustomize", str(K8S / "overlays" / overlay)])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _docs(overlay: str) -> list[dict[str, Any]]:
    return copy.deepcopy(list(_render(overlay)[1]))


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"].get("name") == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _reconcile_now() -> dict[str, Any]:
    return yaml.safe_load(RECONCILE_NOW.read_text(encoding="utf-8"))


def _pod_specs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    kind, spec = doc["kind"], doc.get("spec", {})
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        yield spec["template"]["spec"]
    elif kind == "CronJob":
        yield spec["jobTemplate"]["spec"]["template"]["spec"]
    elif kind == "Pod":
        yield spec


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _main_container(doc: dict[str, Any]) -> dict[str, Any]:
    (pod,) = _pod_specs(doc)
    return pod["containers"][0]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _security_problems(doc: dict[str, Any]) -> list[str]:
    """Pod Security 'restricted' plus our own rules, as a list of readable problems."""
    problems: list[str] = []
    name = f"{doc['kind']}/{doc['metadata'].get('name') or doc['metadata'].get('generateName')}"
    for pod in _pod_specs(doc):
        psc = pod.get("securityContext", {})
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: automountServiceAccountToken is not false")
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(flag):
                problems.append(f"{name}: {flag}")
        volumes = {v["name"] for v in pod.get("volumes", [])}
        if any("secret" in v for v in pod.get("volumes", [])):
            problems.append(f"{name}: mounts a Secret volume; secrets come in as secretKeyRef env only")
        for c in _containers(pod):
            where = f"{name}/{c['name']}"
            sc = c.get("securityContext", {})

            def eff(key: str, sc: dict[str, Any] = sc, psc: dict[str, Any] = psc) -> Any:
                return sc.get(key, psc.get(key))

            if eff("runAsNonRoot") is not True:
                problems.append(f"{where}: runAsNonRoot is not true")
            if not isinstance(eff("runAsUser"), int) or eff("runAsUser") == 0:
                problems.append(f"{where}: runAsUser is not a non-zero number")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            caps = sc.get("capabilities", {})
            if "ALL" not in caps.get("drop", []) or caps.get("add"):
                problems.append(f"{where}: capabilities must drop ALL and add none")
            if (eff("seccompProfile") or {}).get("type") != "RuntimeDefault":
                problems.append(f"{where}: seccompProfile is not RuntimeDefault")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(part, {})):
                    problems.append(f"{where}: resources.{part} needs cpu and memory")
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            if any(m not in volumes for m in mounts.values()):
                problems.append(f"{where}: mounts a volume the pod does not declare")
            if "/tmp" not in mounts:
                problems.append(f"{where}: read-only root filesystem without a /tmp volume")
            if c.get("envFrom"):
                problems.append(f"{where}: envFrom imports unnamed keys; list them as env")
            for var in c.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None and ref.get("name") != SECRET_NAME:
                    problems.append(f"{where}: {var['name']} reads Secret {ref.get('name')}")
                literal = var.get("value")
                sqlite_url = var["name"] == "NUMSYNC_DATABASE_URL" and str(literal).startswith("sqlite:")
                if literal is not None and SECRETISH.search(var["name"]) and not sqlite_url:
                    problems.append(f"{where}: {var['name']} is a literal value, not a secretKeyRef")
    return problems


# ---- rendering and schema validation --------------------------------------------------------


def test_overlays_render_and_validate_strictly(overlay: str, tmp_path: Path) -> None:
    if importlib.util.find_spec("kubernetes_validate") is None:
        _missing("kubernetes-validate")
    text, docs = _render(overlay)
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(text, encoding="utf-8")
    argv = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
    for version in K8S_VERSIONS:
        argv += ["-k", version]
    proc = _run([*argv, str(rendered), str(RECONCILE_NOW)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ERROR" not in proc.stdout
    # A WARN means "no schema for this kind": fine for the Prometheus Operator CRDs, but for
    # anything else it means a typo'd apiVersion that validated nothing.
    warned = [line for line in proc.stdout.splitlines() if line.startswith("WARN")]
    assert all("monitoring.coreos.com/v1" in line for line in warned), warned
    assert {d["kind"] for d in docs} >= {"ServiceAccount", "ConfigMap"}


def test_every_resource_carries_the_common_labels(overlay: str) -> None:
    for doc in [*_docs(overlay), _reconcile_now()]:
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "numsync", doc["kind"]
        assert labels.get("app.kubernetes.io/part-of") == "numsync", doc["kind"]
        for pod_labels in (
            doc.get("spec", {}).get("template", {}).get("metadata", {}).get("labels"),
            doc.get("spec", {}).get("jobTemplate", {}).get("spec", {}).get("template", {})
            .get("metadata", {}).get("labels"),
        ):
            if pod_labels is not None:
                assert pod_labels.get("app.kubernetes.io/name") == "numsync"


# ---- security -------------------------------------------------------------------------------


def test_workloads_are_restricted_and_take_secrets_only_by_reference(overlay: str) -> None:
    docs = _docs(overlay)
    workloads = [d for d in docs if list(_pod_specs(d))]
    assert workloads, "no workload rendered"
    problems = [p for d in [*workloads, _reconcile_now()] for p in _security_problems(d)]
    assert problems == []
    assert [d for d in docs if d["kind"] == "Secret"] == [], "secret values must not live in manifests"
    sa = _one(docs, "ServiceAccount", "numsync")
    assert sa["automountServiceAccountToken"] is False
    for doc in workloads:
        for pod in _pod_specs(doc):
            assert pod["serviceAccountName"] == "numsync"
            assert pod["securityContext"]["runAsUser"] == UID


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("securityContext", "readOnlyRootFilesystem"), False, "readOnlyRootFilesystem"),
        (("securityContext", "allowPrivilegeEscalation"), True, "allowPrivilegeEscalation"),
        (("securityContext", "capabilities"), {"drop": ["NET_RAW"]}, "drop ALL"),
        (("resources",), {}, "resources.requests"),
        (("env",), [{"name": "VAPI_API_KEY", "value": "sk-live"}], "literal value"),
    ],
)
def test_the_security_check_catches_a_weakened_container(
    path: tuple[str, ...], value: Any, expected: str
) -> None:
    """The check above must not pass vacuously: weaken one field and it has to notice."""
    job = _reconcile_now()
    target = _main_container(job)
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert any(expected in p for p in _security_problems(job))


# ---- the config in the ConfigMap ------------------------------------------------------------


def _config_text(overlay: str) -> str:
    return _one(_docs(overlay), "ConfigMap", "numsync-config")["data"]["numsync.yaml"]


def test_configmap_config_is_accepted_by_the_app_loader(overlay: str) -> None:
    cfg = parse_config(_config_text(overlay), origin="numsync-config", env=FAKE_ENV)
    assert cfg.database_url == FAKE_ENV["NUMSYNC_DATABASE_URL"]
    assert cfg.vapi.api_key.get_secret_value() == FAKE_ENV["VAPI_API_KEY"]
    assert str(cfg.reports.dir) == REPORTS_DIR
    assert cfg.server.port == 8080
    assert cfg.sources, "the example config should show at least one source"


def test_config_secrets_are_environment_references(overlay: str) -> None:
    raw = yaml.safe_load(_config_text(overlay))
    secret_keys = {"api_key", "auth_token", "api_secret", "webhook_url", "database_url", "account_sid"}
    seen: list[str] = []

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif key in secret_keys:
            seen.append(key)
            assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*\}", str(node)), f"{key} must be a ${{NAME}} reference"

    walk(raw)
    assert "api_key" in seen


def test_every_config_variable_reaches_every_container_that_reads_the_config(overlay: str) -> None:
    # Commented-out sources count too: uncommenting one must not need a manifest change.
    names = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", _config_text(overlay)))
    assert {"VAPI_API_KEY", "NUMSYNC_DATABASE_URL"} <= names
    readers = [
        c
        for doc in [*_docs(overlay), _reconcile_now()]
        for pod in _pod_specs(doc)
        for c in pod["containers"]
        if any(m["mountPath"] == "/etc/numsync" for m in c.get("volumeMounts", []))
    ]
    assert readers
    for c in readers:
        env = _env(c)
        assert env["NUMSYNC_CONFIG"]["value"] == CONFIG_PATH
        assert names <= set(env), f"{c['name']} lacks {sorted(names - set(env))}"
        # Only the two keys every install has are required; carrier keys are optional.
        for name, var in env.items():
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert ref.get("optional", False) is (name not in {"VAPI_API_KEY", "NUMSYNC_DATABASE_URL"})


# ---- the daemon overlay ---------------------------------------------------------------------


def test_daemon_deployment_probes_ports_and_shutdown() -> None:
    docs = _docs("daemon-postgres")
    dep = _one(docs, "Deployment", "numsync")
    pod = dep["spec"]["template"]["spec"]
    c = _main_container(dep)
    assert dep["spec"]["replicas"] == 2
    assert c["args"] == ["daemon"]
    assert pod["terminationGracePeriodSeconds"] == 45
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz", "startup must not wait for the database"
    (port,) = c["ports"]
    assert (port["name"], port["containerPort"]) == ("http-metrics", 8080)
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] in {"http-metrics", 8080}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert "emptyDir" in volumes[mounts[REPORTS_DIR]]
    assert volumes[mounts["/etc/numsync"]]["configMap"]["name"] == "numsync-config"
    assert _env(c)["NUMSYNC_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "database-url"
    assert _env(c)["VAPI_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "vapi-api-key"


def test_daemon_service_monitor_and_pdb_select_the_daemon_pods() -> None:
    docs = _docs("daemon-postgres")
    pod_labels = _one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    svc = _one(docs, "Service", "numsync-metrics")
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    (port,) = svc["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("http-metrics", 8080, "http-metrics")
    mon = _one(docs, "ServiceMonitor")
    assert mon["apiVersion"] == "monitoring.coreos.com/v1"
    assert mon["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert [e["port"] for e in mon["spec"]["endpoints"]] == ["http-metrics"]
    assert mon["spec"]["endpoints"][0]["path"] == "/metrics"
    pdb = _one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] == 1
    # The one-shot pods must not be scraped as if they were replicas.
    for job in (_one(docs, "Job", "numsync-db-upgrade"), _reconcile_now()):
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert not svc["spec"]["selector"].items() <= labels.items()


def test_daemon_migration_job() -> None:
    job = _one(_docs("daemon-postgres"), "Job", "numsync-db-upgrade")
    assert _main_container(job)["args"] == ["db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert 0 < job["spec"]["backoffLimit"] <= 10
    assert job["spec"]["ttlSecondsAfterFinished"] > 0


def test_prometheus_rule_matches_the_plain_rule_file() -> None:
    rule = _one(_docs("daemon-postgres"), "PrometheusRule")
    plain = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert rule["spec"]["groups"] == plain["groups"]


# ---- the SQLite CronJob overlay -------------------------------------------------------------


def test_cron_overlay_runs_a_nightly_reconcile_on_a_persistent_sqlite_file() -> None:
    docs = _docs("cron-sqlite")
    assert not [d for d in docs if d["kind"] in {"Deployment", "Service", "ServiceMonitor"}]
    cron = _one(docs, "CronJob", "numsync-nightly")
    spec = cron["spec"]
    assert spec["schedule"] == "0 2 * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    (pod,) = _pod_specs(cron)
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["fsGroup"] == UID
    c = _main_container(cron)
    assert c["args"][0] == "reconcile"
    assert c["args"][c["args"].index("--report-dir") + 1] == REPORTS_DIR
    assert c["args"][c["args"].index("--config") + 1] == CONFIG_PATH
    assert _env(c)["NUMSYNC_DATABASE_URL"]["value"] == SQLITE_URL
    volumes = {v["name"]: v for v in pod["volumes"]}
    db_file = SQLITE_URL.removeprefix("sqlite:///")
    for path in (db_file, REPORTS_DIR + "/report.json"):
        mount = max((m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/")),
                    key=lambda m: len(m["mountPath"]))
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == "numsync-data", path
    pvc = _one(docs, "PersistentVolumeClaim", "numsync-data")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    # Exit 2 (drift remains) must not be retried into more imports past the policy's cap.
    rules = spec["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    assert any(r["action"] == "FailJob" and 2 in r.get("onExitCodes", {}).get("values", []) for r in rules)


def test_on_demand_job_is_created_not_applied() -> None:
    job = _reconcile_now()
    assert job["kind"] == "Job"
    assert "name" not in job["metadata"]
    assert job["metadata"]["generateName"].endswith("-")
    c = _main_container(job)
    assert c["args"][0] == "reconcile"
    # Created outside kustomize: it must name the image the overlays deploy.
    for overlay_name in OVERLAYS:
        images = {c2["image"] for d in _docs(overlay_name) for p in _pod_specs(d) for c2 in _containers(p)}
        assert images == {c["image"]}
    assert not c["image"].endswith(":latest")


# ---- alert rules ----------------------------------------------------------------------------


def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    promtool = _need_tool("promtool")
    check = _run([promtool, "check", "rules", str(RULES)])
    assert check.returncode == 0, check.stdout + check.stderr
    test = _run([promtool, "test", "rules", str(RULES_TEST)])
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout + test.stderr


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    alerts = [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    required = {"NumsyncNoSuccessfulRun", "NumsyncNoLeader", "NumsyncTwoLeaders", "NumsyncFindings"}
    assert required <= set(alerts)
    cases = [c for t in yaml.safe_load(RULES_TEST.read_text())["tests"] for c in t["alert_rule_test"]]
    for alert in alerts:
        mine = [c for c in cases if c["alertname"] == alert]
        assert any(c.get("exp_alerts") for c in mine), f"{alert} is never shown firing"
        assert any(not c.get("exp_alerts") for c in mine), f"{alert} is never shown silent"


def test_no_success_alert_matches_the_reconcile_interval() -> None:
    rules = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    rule = rules["NumsyncNoSuccessfulRun"]
    match = re.search(r"numsync_last_success_timestamp_seconds\)\s*>\s*2\s*\*\s*(\d+)", rule["expr"])
    assert match, rule["expr"]
    cfg = parse_config(_config_text("daemon-postgres"), env=FAKE_ENV)
    assert int(match.group(1)) == cfg.schedule.reconcile_every.total_seconds()
    assert rules["NumsyncNoLeader"]["expr"].replace(" ", "") == "sum(numsync_leader)<1"
    assert rules["NumsyncTwoLeaders"]["expr"].replace(" ", "") == "sum(numsync_leader)>1"


# ---- Dockerfile -----------------------------------------------------------------------------


def _dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    logical, buf = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    stages: list[list[tuple[str, str]]] = [[]]
    for entry in logical:
        instr, _, args = entry.strip().partition(" ")
        if instr.upper() == "FROM" and stages[-1] and any(i == "FROM" for i, _ in stages[-1]):
            stages.append([])
        stages[-1].append((instr.upper(), args.strip()))
    return stages


def test_dockerfile_final_stage_is_slim_non_root_and_exec_form() -> None:
    stages = _dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: build tools stay in the builder"
    text = DOCKERFILE.read_text(encoding="utf-8")
    final = stages[-1]
    from_arg = next(a for i, a in final if i == "FROM")
    default = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.MULTILINE)
    image = default.group(1) if default and "${PYTHON_IMAGE}" in from_arg else from_arg
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", image), image
    instrs = dict(final)
    users = [a for i, a in final if i == "USER"]
    assert users, "no USER: the image would run as root"
    assert re.fullmatch(rf"{UID}(:{UID})?", users[-1]), "USER must be numeric (runAsNonRoot)"
    assert yaml.safe_load(instrs["ENTRYPOINT"]) == ["numsync"], "ENTRYPOINT must be exec form"
    assert yaml.safe_load(instrs["CMD"]) == ["daemon"]
    assert "8080" in instrs["EXPOSE"].split()
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", " ".join(a for i, a in final if i == "ENV"))
    runs = " ".join(a for i, a in final if i == "RUN")
    assert not re.search(r"build-essential|\bgcc\b|\bg\+\+|\bmake\b|-dev\b", runs), runs
    for instr, args in (x for s in stages for x in s):
        if instr in {"ENV", "ARG"}:
            assert not re.search(r"(API_KEY|TOKEN|SECRET|PASSWORD)\w*=", args), f"{instr} {args}"


def test_dockerfile_builder_copies_every_package_folder() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    roots = {p.split("/")[0] for p in pyproject["tool"]["setuptools"]["package-dir"].values()}
    needed = {*roots, "pyproject.toml", pyproject["project"]["readme"]}
    builder = _dockerfile_stages()[0]
    copied = {
        src.rstrip("/").removeprefix("./")
        for instr, args in builder
        if instr == "COPY" and not args.startswith("--from")
        for src in args.split()[:-1]
    }
    assert needed <= copied, f"builder does not COPY {sorted(needed - copied)}"
    allowed = {
        line[1:].rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    }
    assert needed <= allowed, f"Dockerfile.dockerignore excludes {sorted(needed - allowed)}"


# ---- the commands the manifests run exist ---------------------------------------------------


def test_manifest_command_lines_are_accepted_by_the_cli() -> None:
    numsync = Path(sys.executable).with_name("numsync")
    probe = _run([str(numsync), "--help"])
    if "Usage" not in probe.stdout:
        if _in_ci():
            pytest.fail(f"`numsync --help` shows no usage: {probe.stdout[:200]!r}")
        pytest.skip("the numsync CLI is not built yet")
    lines = {tuple(_main_container(_reconcile_now())["args"])}
    for overlay_name in OVERLAYS:
        for doc in _docs(overlay_name):
            for pod in _pod_specs(doc):
                lines.add(tuple(pod["containers"][0]["args"]))
    assert ("daemon",) in lines
    assert ("db", "upgrade") in lines
    for args in sorted(lines):
        proc = _run([str(numsync), *args, "--help"], env={**os.environ, "NUMSYNC_CONFIG": "/nonexistent"})
        assert proc.returncode == 0, f"numsync {' '.join(args)}: {proc.stderr}"
        assert "Usage" in proc.stdout
