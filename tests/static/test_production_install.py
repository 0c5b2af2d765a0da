"""A production install (the wheel, the container image) carries no development tools."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Runs the command line in a fresh interpreter where `service.devtools` cannot be imported, as in
# the wheel, which leaves the package out.
_WITHOUT_DEVTOOLS = """
import importlib.abc, sys

class NoDevtools(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "service.devtools" or name.startswith("service.devtools."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoDevtools())
from service.cli.main import main
main(["--help"])
"""


def test_the_wheel_leaves_the_development_tools_out() -> None:
    """The wheel's build configuration excludes service/devtools, and the image's context too."""
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    assert "service/devtools" in build["targets"]["wheel"]["exclude"]
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "service/devtools" in ignored


def test_without_devtools_the_command_line_offers_the_rest() -> None:
    """Where the development tools are absent, the command line starts and lists every other
    command, but neither `dev` nor `send`."""
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_DEVTOOLS],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    commands = {
        line.split()[0]
        for line in result.stdout.split("Commands:", 1)[1].splitlines()
        if line.strip()
    }
    assert {"serve", "worker", "migrate", "orders", "events"} <= commands
    assert not commands & {"dev", "send"}
