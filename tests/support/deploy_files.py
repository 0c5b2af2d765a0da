"""Reading the deployment files under deploy/: compose, the Kubernetes manifests, and the
command lines they give the image, resolved against the real command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from service.cli.common import DEFAULT_PORT
from service.cli.main import DEFAULT_WORKER_METRICS_PORT, main

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
EXECUTABLE = "wooshpay-webhooks"

Document = dict[str, Any]


def documents(path: Path) -> list[Document]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def compose() -> Document:
    return documents(DEPLOY / "compose.yaml")[0]


def k8s() -> list[Document]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in documents(path)]


def k8s_kind(kind: str) -> list[Document]:
    return [doc for doc in k8s() if doc["kind"] == kind]


def k8s_named(kind: str, name: str) -> Document:
    (doc,) = [doc for doc in k8s_kind(kind) if doc["metadata"]["name"] == name]
    return doc


def pod_specs() -> list[tuple[str, Document]]:
    workloads = k8s_kind("Deployment") + k8s_kind("Job")
    return [(doc["metadata"]["name"], doc["spec"]["template"]["spec"]) for doc in workloads]


def app_containers() -> list[tuple[str, Document]]:
    return [
        (f"{name}/{container['name']}", container)
        for name, spec in pod_specs()
        for container in spec["containers"]
        if EXECUTABLE in container["image"]
    ]


def app_services() -> dict[str, Document]:
    """Compose services that run the project's image (built from deploy/Dockerfile)."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def resolve(args: list[str]) -> tuple[list[str], click.Command, list[str]]:
    """Walk the click groups: (subcommand path, the command, its remaining arguments)."""
    command: click.Command = main
    path: list[str] = []
    rest = list(args)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        assert rest[0] in command.commands, f"no subcommand {rest[0]!r} in {path or ['main']}"
        path.append(rest[0])
        command = command.commands[rest.pop(0)]
    return path, command, rest


def role(args: list[str]) -> str:
    """The top-level subcommand of a command line ("" for `--help` alone)."""
    path = resolve(args)[0]
    return path[0] if path else ""


def option_value(args: list[str], option: str, default: int) -> int:
    return int(args[args.index(option) + 1]) if option in args else default


def container_port(container: Document, port: int | str) -> int:
    """A probe's or Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def listening_port(args: list[str]) -> int:
    """The port the ingress (`serve`) or a worker's metrics server listens on."""
    if role(args) == "serve":
        return option_value(args, "--port", DEFAULT_PORT)
    assert role(args) == "worker"
    return option_value(args, "--metrics-port", DEFAULT_WORKER_METRICS_PORT)
