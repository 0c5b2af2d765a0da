"""The deployment files under deploy/ checked against the code they run.

Nothing here builds, runs or starts anything: the files are parsed and every command line,
setting, probe, port, metric and log name they mention is looked up in the real CLI, Settings,
routes, metric registries and code. The checks that need a running ingress or worker (the
health-check script, the routes the probes hit) are in tests/integration/test_deploy_probes.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

import click
import pytest
from prometheus_client.metrics import MetricWrapperBase

from service.cli.common import DEFAULT_PORT
from service.cli.main import DEFAULT_WORKER_METRICS_PORT
from service.domain.events import IN_SCOPE_TYPES
from service.ingress.app import WEBHOOK_PATH
from service.metrics import IngressMetrics
from service.settings import Settings
from service.store.schema import EVENT_STATUSES
from service.timeouts import (
    JOB_COMPLETION_WAIT_S,
    JOB_TIMEOUT_S,
    PROBE_TIMEOUT_S,
    SHUTDOWN_TIMEOUT_S,
)
from service.wooshpay import signatures
from tests.support.deploy_files import (
    DEPLOY,
    EXECUTABLE,
    ROOT,
    app_containers,
    app_services,
    compose,
    container_port,
    documents,
    k8s,
    k8s_kind,
    k8s_named,
    listening_port,
    pod_specs,
    resolve,
    role,
)
from workers import apply
from workers.metrics import WorkerMetrics

DOCKERFILE = DEPLOY / "Dockerfile"
RUNBOOK = DEPLOY / "OPERATIONS.md"
DASHBOARD = DEPLOY / "grafana" / "wooshpay-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"

HELP_OPTIONS = frozenset({"--help", "-h"})
# Settings that are secrets (or carry passwords): only ever from a Secret or deploy/.env.
SENSITIVE_SETTINGS = frozenset({"WOOSHPAY_WEBHOOK_SECRETS", "DATABASE_URL", "REDIS_URL"})
# Variables of compose.yaml itself (image tag, published port), documented in env.example.
COMPOSE_ONLY_VARIABLES = frozenset({"WOOSHPAY_IMAGE", "WOOSHPAY_HTTP_PORT"})
# Labels Prometheus adds to every scraped series (deploy/prometheus/*.yml).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod"})
JOBS = frozenset({"wooshpay-ingress", "wooshpay-worker"})
PROMETHEUS_METRICS = frozenset({"up"})


# ---- loading ---------------------------------------------------------------------------------


def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _dockerfile(keyword: str) -> list[str]:
    return [rest for kw, rest in _dockerfile_instructions() if kw == keyword]


def _exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list), f"not exec (JSON) form: {arguments}"
    return [str(item) for item in value]


# ---- the command lines the image runs --------------------------------------------------------


def _command_lines() -> list[tuple[str, list[str]]]:
    """Every argument list given to the image's entrypoint, named by where it comes from."""
    (cmd,) = _dockerfile("CMD")
    lines = [("Dockerfile CMD", _exec_form(cmd))]
    for name, service in app_services().items():
        command = service["command"]
        assert isinstance(command, list), f"compose {name}: command must be a list"
        lines.append((f"compose {name}", [str(arg) for arg in command]))
    for name, container in app_containers():
        assert "command" not in container, f"{name}: must keep the image's entrypoint"
        lines.append((f"k8s {name}", [str(arg) for arg in container["args"]]))
    return lines


COMMAND_LINES = _command_lines()


def _option_names(command: click.Command) -> set[str]:
    return {
        name for param in command.params for name in (*param.opts, *param.secondary_opts)
    } | HELP_OPTIONS


@pytest.mark.parametrize(("source", "args"), COMMAND_LINES, ids=[s for s, _ in COMMAND_LINES])
def test_command_lines_use_existing_subcommands_and_options(source: str, args: list[str]) -> None:
    """Each command line names an existing subcommand, and click accepts its options and values."""
    path, command, rest = resolve(args)
    unknown = {arg.split("=")[0] for arg in rest if arg.startswith("-")} - _option_names(command)
    assert not unknown, f"{source}: {path} has no option {sorted(unknown)}"
    if not HELP_OPTIONS.intersection(rest):
        # Parses and converts every value (ports in range, flags) without running the command.
        command.make_context(" ".join([EXECUTABLE, *path]), rest)


def test_every_role_is_deployed() -> None:
    """Compose and Kubernetes run the ingress, the worker and the migration."""
    compose_roles = {role(args) for source, args in COMMAND_LINES if "compose" in source}
    k8s_roles = {role(args) for source, args in COMMAND_LINES if "k8s" in source}
    assert {"serve", "worker", "migrate"} <= compose_roles
    assert {"serve", "worker", "migrate"} == k8s_roles


@pytest.mark.parametrize(
    "args",
    sorted({tuple(args) for _, args in COMMAND_LINES}),
    ids=lambda args: " ".join(args),
)
def test_command_lines_run_through_the_console_script(args: tuple[str, ...]) -> None:
    """The installed `wooshpay-webhooks` script accepts each command line (with --help)."""
    script = Path(sys.executable).parent / EXECUTABLE
    assert script.exists(), f"console script {script} is not installed"
    result = subprocess.run(
        [str(script), *args, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage:")


# ---- the Dockerfile --------------------------------------------------------------------------


def test_dockerfile_entrypoint_is_the_console_script() -> None:
    """ENTRYPOINT is the project's console script and CMD defaults to `serve`."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    (entrypoint,) = _dockerfile("ENTRYPOINT")
    (cmd,) = _dockerfile("CMD")
    assert _exec_form(entrypoint) == [EXECUTABLE]
    assert scripts[EXECUTABLE] == "service.cli.main:main"
    assert _exec_form(cmd) == ["serve"]


def test_dockerfile_builds_from_the_lock_without_dev_dependencies() -> None:
    """The build stage installs with `uv sync --frozen --no-dev` from a python:3.11-slim base."""
    runs = " ".join(_dockerfile("RUN"))
    assert "uv sync --frozen --no-dev" in runs
    assert "--no-editable" in runs
    assert any("python:3.11-slim" in arg for arg in _dockerfile("ARG") + _dockerfile("FROM"))
    assert len(_dockerfile("FROM")) >= 2, "multi-stage: the runtime stage has no build tools"


def test_dockerfile_copies_only_files_that_exist() -> None:
    """Every COPY source (outside --from stages) exists relative to the repository root."""
    for arguments in _dockerfile("COPY"):
        if arguments.startswith("--from"):
            continue
        *sources, _destination = arguments.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the build context"


def test_dockerfile_runs_as_non_root_without_baked_secrets() -> None:
    """USER is a numeric non-root id, PYTHONUNBUFFERED is set, no setting is baked in."""
    (user,) = _dockerfile("USER")
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    env_text = " ".join(_dockerfile("ENV") + _dockerfile("ARG"))
    assert "PYTHONUNBUFFERED=1" in env_text
    baked = {name for name in _settings_variables() if re.search(rf"\b{name}\b", env_text)}
    assert not baked, f"settings baked into the image: {sorted(baked)}"
    for _, spec in pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert str(spec["securityContext"]["runAsUser"]) == uid


def test_dockerfile_exposes_and_health_checks_the_role_ports() -> None:
    """EXPOSE and HEALTHCHECK use the CLI's default ports and the copied health-check script."""
    exposed = {int(port) for arguments in _dockerfile("EXPOSE") for port in arguments.split()}
    assert exposed == {DEFAULT_PORT, DEFAULT_WORKER_METRICS_PORT}
    (healthcheck,) = _dockerfile("HEALTHCHECK")
    command = _exec_form(healthcheck.split(" CMD ", 1)[1])
    assert command[0] == "python"
    copies = {a.split()[-1]: a.split()[0] for a in _dockerfile("COPY") if "--from" not in a}
    assert copies[command[1]] == "deploy/healthcheck.py"
    assert {int(port) for port in command[2:]} == exposed


# ---- settings --------------------------------------------------------------------------------


class _RecordingEnv(Mapping[str, str]):
    """An empty environment that remembers every variable it was asked for."""

    def __init__(self) -> None:
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _settings_variables() -> frozenset[str]:
    env = _RecordingEnv()
    Settings.from_env(env, require_secrets=False)
    return frozenset(env.read)


def _env_example() -> dict[str, str]:
    """Variables named in env.example, set or commented out (`# NAME=default`)."""
    text = (DEPLOY / "env.example").read_text()
    return dict(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", text, flags=re.MULTILINE))


def test_settings_are_read_from_the_expected_variables() -> None:
    """The recorded Settings variables include the documented ones (the recorder works)."""
    assert {"WOOSHPAY_WEBHOOK_SECRETS", "DATABASE_URL", "REDIS_URL", "LOG_LEVEL"} <= (
        _settings_variables()
    )


def test_compose_sets_only_settings_the_service_reads() -> None:
    """App services get only Settings variables; the ingress gets the secret, others not."""
    settings = _settings_variables()
    services = app_services()
    for name, service in services.items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"compose {name}: use the mapping form"
        assert set(environment) <= settings, f"compose {name}: {set(environment) - settings}"
        has_secret = "WOOSHPAY_WEBHOOK_SECRETS" in environment
        assert has_secret == (role(service["command"]) == "serve"), name
    others = {k: v for k, v in compose()["services"].items() if k not in services}
    for name, service in others.items():
        for variable in service.get("environment", {}):
            assert variable.startswith(("POSTGRES_", "GF_")), f"compose {name}: {variable}"


def test_compose_variables_are_known_and_documented() -> None:
    """Every ${VAR} in compose.yaml is a setting or a compose variable listed in env.example."""
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (DEPLOY / "compose.yaml").read_text()))
    allowed = _settings_variables() | COMPOSE_ONLY_VARIABLES | {"POSTGRES_PASSWORD"}
    assert used <= allowed, f"unknown: {used - allowed}"
    assert used <= set(_env_example()), f"not in env.example: {used - set(_env_example())}"


def test_env_example_names_only_known_variables() -> None:
    """env.example holds settings, POSTGRES_* and compose variables, and no real secret."""
    example = _env_example()
    settings = _settings_variables()
    for name in example:
        assert name in settings or name in COMPOSE_ONLY_VARIABLES or name.startswith("POSTGRES_")
    assert "replace_me" in example["WOOSHPAY_WEBHOOK_SECRETS"]


def test_k8s_settings_come_from_the_configmap_and_the_secret() -> None:
    """ConfigMap keys are non-secret settings; secrets come only from the Secret's keys."""
    settings = _settings_variables()
    (configmap,) = k8s_kind("ConfigMap")
    (secret,) = k8s_kind("Secret")
    secret_keys = set(secret["stringData"])
    assert set(configmap["data"]) <= settings - SENSITIVE_SETTINGS
    assert secret_keys == SENSITIVE_SETTINGS
    for name, container in app_containers():
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] == configmap["metadata"]["name"], name
        for variable in container.get("env", []):
            assert variable["name"] in settings, f"{name}: {variable['name']}"
            if variable["name"] in SENSITIVE_SETTINGS:
                ref = variable["valueFrom"]["secretKeyRef"]
                assert ref["name"] == secret["metadata"]["name"], name
                assert ref["key"] in secret_keys, name


def test_k8s_ingress_gets_the_webhook_secret_and_workers_do_not() -> None:
    """`serve` requires WOOSHPAY_WEBHOOK_SECRETS; the other roles are not given it."""
    for name, container in app_containers():
        names = {variable["name"] for variable in container.get("env", [])}
        needs_secret = role(container["args"]) == "serve"
        assert ("WOOSHPAY_WEBHOOK_SECRETS" in names) == needs_secret, name
        assert {"DATABASE_URL"} <= names, name


# ---- probes, ports, grace periods ------------------------------------------------------------


def test_compose_health_checks_probe_each_role_port() -> None:
    """Compose health checks run the image's script on the port the service listens on."""
    for name, service in app_services().items():
        if role(service["command"]) not in ("serve", "worker"):
            assert service["healthcheck"] == {"disable": True}, name
            continue
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "/opt/wooshpay/healthcheck.py"], name
        assert [int(port) for port in test[3:]] == [listening_port(service["command"])], name


def test_compose_start_order_is_health_gated() -> None:
    """The ingress and workers wait for healthy stores and a successful migration."""
    services = compose()["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("ingress", "worker"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["deploy"]["replicas"] >= 2
    assert services["proxy"]["depends_on"]["ingress"]["condition"] == "service_healthy"
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["redis"]["image"].startswith("redis:7")
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]


def test_front_door_and_scrape_targets_use_the_ingress_and_worker_ports() -> None:
    """nginx and the compose Prometheus reach the services on the ports they listen on."""
    services = compose()["services"]
    ingress_port = listening_port(services["ingress"]["command"])
    worker_port = listening_port(services["worker"]["command"])
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert re.search(rf"http://ingress:{ingress_port}\b", nginx)
    (prometheus,) = documents(DEPLOY / "prometheus" / "prometheus.yml")
    jobs = {job["job_name"]: job["dns_sd_configs"][0] for job in prometheus["scrape_configs"]}
    assert jobs["wooshpay-ingress"] == {**jobs["wooshpay-ingress"], "names": ["ingress"]}
    assert jobs["wooshpay-ingress"]["port"] == ingress_port
    assert jobs["wooshpay-worker"]["names"] == ["worker"]
    assert jobs["wooshpay-worker"]["port"] == worker_port


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"use seconds: {duration}"
    return int(match.group(1))


def test_grace_periods_cover_the_shutdown_timeouts() -> None:
    """Pods and containers are killed only after the ingress and workers could drain."""
    worker = k8s_named("Deployment", "wooshpay-worker")["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] > JOB_TIMEOUT_S + JOB_COMPLETION_WAIT_S
    ingress = k8s_named("Deployment", "wooshpay-ingress")["spec"]["template"]["spec"]
    pre_stop = ingress["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert ingress["terminationGracePeriodSeconds"] > int(pre_stop[1]) + SHUTDOWN_TIMEOUT_S
    services = compose()["services"]
    assert _seconds(services["ingress"]["stop_grace_period"]) > SHUTDOWN_TIMEOUT_S
    assert _seconds(services["worker"]["stop_grace_period"]) > JOB_COMPLETION_WAIT_S


def test_readiness_probe_waits_longer_than_each_dependency_check() -> None:
    """The kubelet waits longer for /readyz than the ingress waits for one dependency, so a
    Redis that does not answer is reported (and leaves the pod ready) before the probe times out."""
    ingress = k8s_named("Deployment", "wooshpay-ingress")["spec"]["template"]["spec"]
    readiness = ingress["containers"][0]["readinessProbe"]
    assert readiness["timeoutSeconds"] > PROBE_TIMEOUT_S


def _matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_k8s_objects_select_the_right_pods() -> None:
    """Service, PDBs and HPA point at existing Deployments and their pod labels."""
    namespace = k8s_kind("Namespace")[0]["metadata"]["name"]
    deployments = {doc["metadata"]["name"]: doc for doc in k8s_kind("Deployment")}
    pod_labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}
    for doc in k8s():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["metadata"]["name"]
    for name, deployment in deployments.items():
        assert _matches(deployment["spec"]["selector"]["matchLabels"], pod_labels[name])
    (service,) = k8s_kind("Service")
    selected = [
        n for n, labels in pod_labels.items() if _matches(service["spec"]["selector"], labels)
    ]
    assert selected == ["wooshpay-ingress"]
    ingress = deployments["wooshpay-ingress"]["spec"]["template"]["spec"]["containers"][0]
    for port in service["spec"]["ports"]:
        assert container_port(ingress, port["targetPort"]) == listening_port(ingress["args"])
    budgets = k8s_kind("PodDisruptionBudget")
    covered = {
        n
        for pdb in budgets
        for n, labels in pod_labels.items()
        if _matches(pdb["spec"]["selector"]["matchLabels"], labels)
    }
    assert covered == set(deployments)
    (hpa,) = k8s_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "wooshpay-ingress",
    }
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_k8s_containers_have_resources() -> None:
    """Every container requests CPU and memory and has a memory limit."""
    for name, container in app_containers():
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), name
        assert "memory" in resources["limits"], name


# ---- Redis -----------------------------------------------------------------------------------


def test_redis_persists_and_never_evicts_jobs() -> None:
    """redis.conf keeps an append-only file and refuses writes rather than evicting keys."""
    directives: dict[str, list[str]] = {}
    for line in (DEPLOY / "redis.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            directives.setdefault(key.lower(), []).append(value.strip())
    assert directives["appendonly"] == ["yes"]
    assert directives["appendfsync"] == ["everysec"]
    assert directives["maxmemory-policy"] == ["noeviction"]
    redis = compose()["services"]["redis"]
    assert "./redis.conf:/usr/local/etc/redis/redis.conf:ro" in redis["volumes"]
    assert redis["command"] == ["redis-server", "/usr/local/etc/redis/redis.conf"]


# ---- metrics in alerts and the dashboard -----------------------------------------------------


def _exposed_metrics() -> dict[str, frozenset[str]]:
    """Sample names each registry exposes, with their label names."""
    samples: dict[str, frozenset[str]] = {}
    for metrics in (IngressMetrics(), WorkerMetrics()):
        wrappers = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
        types = {family.name: family.type for family in metrics.registry.collect()}
        assert {wrapper._name for wrapper in wrappers} == set(types)
        for wrapper in wrappers:
            labels = frozenset(wrapper._labelnames)
            suffixes = {
                "counter": ("_total", "_created"),
                "gauge": ("",),
                "histogram": ("_bucket", "_count", "_sum", "_created"),
            }[types[wrapper._name]]
            for suffix in suffixes:
                extra = {"le"} if suffix == "_bucket" else set()
                samples[wrapper._name + suffix] = labels | extra
    return samples


def _alert_expressions() -> list[tuple[str, str]]:
    (document,) = documents(ALERTS)
    return [
        (rule["alert"], rule["expr"]) for group in document["groups"] for rule in group["rules"]
    ]


def _dashboard_expressions() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (f"{panel['title']}/{target['refId']}", target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


EXPRESSIONS = [(f"alert {n}", e) for n, e in _alert_expressions()] + [
    (f"panel {n}", e) for n, e in _dashboard_expressions()
]


def _rejection_codes() -> set[str]:
    http_source = (ROOT / "service" / "ingress" / "app.py").read_text()
    codes = {
        signatures.MISSING_SIGNATURE,
        signatures.MALFORMED_SIGNATURE,
        signatures.SIGNATURE_MISMATCH,
        signatures.TIMESTAMP_OUTSIDE_TOLERANCE,
    }
    return codes | set(re.findall(r'Rejected\(\s*\d+,\s*"[^"]*",\s*"(\w+)"', http_source))


def _check_label_value(label: str, value: str, operator: str) -> None:
    alternatives = value.split("|") if operator == "=~" else [value]
    if label == "status":
        assert set(alternatives) <= set(EVENT_STATUSES), value
    elif label == "reason":
        assert set(alternatives) <= _rejection_codes(), value
    elif label == "job" and operator == "=":
        assert value in JOBS, value


@pytest.mark.parametrize(("source", "expr"), EXPRESSIONS, ids=[s for s, _ in EXPRESSIONS])
def test_queries_use_metrics_and_labels_the_service_exposes(source: str, expr: str) -> None:
    """Every metric, label and label value in a rule or panel exists in the code."""
    exposed = _exposed_metrics()
    names = set(re.findall(r"\b(wooshpay_[a-z0-9_]+)\b", expr))
    assert names or re.search(r"\bup\{", expr), f"{source}: queries no metric"
    assert names <= set(exposed), f"{source}: unknown metrics {names - set(exposed)}"
    used_labels: set[str] = set()
    for metric, matchers in re.findall(r"\b([a-z_:][a-z0-9_:]*)\{([^}]*)\}", expr):
        assert metric in exposed or metric in PROMETHEUS_METRICS, f"{source}: {metric}"
        allowed = exposed.get(metric, frozenset()) | TARGET_LABELS
        for label, operator, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', matchers):
            assert label in allowed, f"{source}: {metric} has no label {label}"
            _check_label_value(label, value, operator)
    for grouping in re.findall(r"\bby\s*\(([^)]*)\)", expr):
        used_labels |= {label.strip() for label in grouping.split(",") if label.strip()}
    available = set(TARGET_LABELS).union(*(exposed[name] for name in names))
    assert used_labels <= available, f"{source}: grouped by unknown {used_labels - available}"


def test_alerts_cover_the_operational_failures() -> None:
    """The rules watch failed events, stale pending events, signatures, workers, 503s, Redis
    deferrals and the queue, and each names an existing runbook section."""
    (document,) = documents(ALERTS)
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    text = " ".join(rule["expr"] for rule in rules)
    for needle in (
        'wooshpay_events{status="failed"}',
        "wooshpay_oldest_pending_event_age_seconds",
        "signature_mismatch",
        'up{job="wooshpay-worker"}',
        "wooshpay_worker_last_heartbeat_timestamp_seconds",
        'reason="store_unavailable"',
        "wooshpay_webhooks_enqueue_deferred_total",
        "wooshpay_queue_depth",
    ):
        assert needle in text
    anchors = _runbook_anchors()
    for rule in rules:
        assert rule["labels"]["severity"] in ("page", "ticket")
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert page == "deploy/OPERATIONS.md"
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor}"


def test_dashboard_is_a_grafana_dashboard_with_the_key_panels() -> None:
    """The dashboard has unique panel ids, grid positions, datasources and the key queries."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"]
    assert dashboard["title"]
    assert dashboard["schemaVersion"] >= 30
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel.get("targets", []):
            assert target["refId"]
            assert target["datasource"] == panel["datasource"]
    text = " ".join(expr for _, expr in _dashboard_expressions())
    for needle in (
        "wooshpay_webhooks_received_total",
        "wooshpay_webhooks_accepted_total",
        "wooshpay_webhooks_duplicate_total",
        "wooshpay_webhooks_rejected_total",
        "histogram_quantile(0.99, sum by (le) (rate(wooshpay_webhook_request_duration_seconds",
        "sum by (outcome) (rate(wooshpay_reconcile_outcomes_total",
        "histogram_quantile(0.95, sum by (le) (rate(wooshpay_reconcile_latency_seconds_bucket",
        "wooshpay_queue_depth",
        "max by (status) (wooshpay_events)",
        "wooshpay_oldest_pending_event_age_seconds",
        "wooshpay_worker_last_heartbeat_timestamp_seconds",
    ):
        assert needle in text


# ---- the runbook -----------------------------------------------------------------------------


def _runbook_anchors() -> set[str]:
    """GitHub-style anchors of the runbook's headings."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-") for h in headings}


def _logged_event_names() -> set[str]:
    """Dotted log event names in the code, with every `reconcile.<outcome>` the worker logs."""
    sources = [p.read_text() for d in ("service", "workers") for p in (ROOT / d).rglob("*.py")]
    prefixes = "webhook|reconcile|sweep|worker|redis|ingress|inbox|metrics"
    names = {m for text in sources for m in re.findall(rf'"((?:{prefixes})\.[a-z_]+)"', text)}
    reconcile = (ROOT / "workers" / "reconcile.py").read_text()
    outcomes = set(re.findall(r'_finish\(\s*deps,\s*"(\w+)"', reconcile))
    outcomes |= {apply.APPLIED, apply.STALE, apply.DUPLICATE, apply.IGNORED, apply.MISSING}
    return names | {f"reconcile.{outcome}" for outcome in outcomes}


def test_runbook_lists_every_log_event() -> None:
    """Each log event name the code emits appears in the runbook's log table."""
    runbook = RUNBOOK.read_text()
    missing = {name for name in _logged_event_names() if f"`{name}`" not in runbook}
    assert not missing, f"add to deploy/OPERATIONS.md: {sorted(missing)}"


def test_runbook_registers_exactly_the_reconciled_event_types() -> None:
    """The endpoint body in the runbook enables the nine event types the workers reconcile."""
    match = re.search(r"```json\n(.*?)```", RUNBOOK.read_text(), flags=re.DOTALL)
    assert match, "no JSON endpoint body in the runbook"
    body = json.loads(match.group(1))
    assert sorted(body["enabled_events"]) == sorted(IN_SCOPE_TYPES)
    assert body["url"].startswith("https://")
    assert body["url"].endswith(WEBHOOK_PATH)
    assert body["api_version"]


def test_every_deploy_file_parses() -> None:
    """Every YAML file under deploy/ and the dashboard JSON parse."""
    files = _yaml_files()
    assert {p.relative_to(DEPLOY).as_posix() for p in files} >= {
        "compose.yaml",
        "prometheus/alerts.yaml",
        "prometheus/prometheus.yml",
        "k8s/ingress-deployment.yaml",
        "k8s/worker-deployment.yaml",
        "k8s/migrate-job.yaml",
    }
    for path in files:
        assert documents(path), f"{path} is empty"
    assert json.loads(DASHBOARD.read_text())["panels"]
