"""The README's "Commands" table and the click command line describe the same commands.

Each table row documents one command: its first cell holds code spans that start with the
command's path (`orders add`; the empty path, the program itself, for `--version`) and name every
long option of it. The CLI is walked recursively from `service.cli.main`.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from service.cli.main import main

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Commands"
# Every command has it (context_settings), and the README says so once, above the table.
IMPLIED_OPTIONS = frozenset({"--help"})

CommandPath = tuple[str, ...]

_CODE_SPAN = re.compile(r"`([^`]*)`")
_LONG_OPTION = re.compile(r"(?<![\w-])--[a-z0-9][a-z0-9-]*")
_COMMAND_WORD = re.compile(r"[a-z][a-z0-9-]*")
_CELL_SEPARATOR = re.compile(r"(?<!\\)\|")
_SECTION = re.compile(rf"^{re.escape(SECTION)}\n(.*?)(?=^## |\Z)", re.MULTILINE | re.DOTALL)


def readme_table(text: str) -> dict[CommandPath, set[str]]:
    """Each documented command's path and the long options its row names."""
    section = _SECTION.search(text)
    assert section is not None, f"no {SECTION!r} section"
    rows = [line for line in section.group(1).splitlines() if line.startswith("|")]
    table: dict[CommandPath, set[str]] = {}
    for row in rows[2:]:  # after the header and the |---| line
        first_cell = _CELL_SEPARATOR.split(row)[1].replace("\\|", "|")
        paths = {_command_path(span) for span in _CODE_SPAN.findall(first_cell)}
        assert len(paths) == 1, f"a row must document exactly one command: {row}"
        path = paths.pop()
        assert path not in table, f"two rows document `{' '.join(path)}`"
        table[path] = set(_LONG_OPTION.findall(first_cell))
    return table


def _command_path(usage: str) -> CommandPath:
    """The leading command words of a usage line: `orders add ORDER_ID --json` -> (orders, add)."""
    words: list[str] = []
    for word in usage.split():
        if not _COMMAND_WORD.fullmatch(word):
            break
        words.append(word)
    return tuple(words)


def cli_table(command: click.Command = main, path: CommandPath = ()) -> dict[CommandPath, set[str]]:
    """Each command of the CLI that needs a row (every leaf, and a group with options of its
    own) and its long options, hidden ones left out."""
    table: dict[CommandPath, set[str]] = {}
    options = _long_options(command)
    is_group = isinstance(command, click.Group)
    if not is_group or options - IMPLIED_OPTIONS:
        table[path] = options
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            if not sub.hidden:
                table.update(cli_table(sub, (*path, name)))
    return table


def _long_options(command: click.Command) -> set[str]:
    # `command.params`, not get_params(Context(...)): click caches the help option on the
    # command for the first context it sees, and a bare Context would lose `-h` for later ones.
    return {
        name
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden
        for name in (*param.opts, *param.secondary_opts)
        if name.startswith("--")
    }


@pytest.fixture(scope="module")
def documented() -> dict[CommandPath, set[str]]:
    return readme_table(README.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def implemented() -> dict[CommandPath, set[str]]:
    return cli_table()


def _names(paths: set[CommandPath]) -> list[str]:
    return sorted(" ".join(path) or "(the program itself)" for path in paths)


def test_every_cli_command_has_a_readme_row(
    documented: dict[CommandPath, set[str]], implemented: dict[CommandPath, set[str]]
) -> None:
    """Every command of the CLI has its own row in the README's Commands table."""
    assert _names(set(implemented) - set(documented)) == []


def test_every_readme_row_is_a_cli_command(
    documented: dict[CommandPath, set[str]], implemented: dict[CommandPath, set[str]]
) -> None:
    """Every row of the README's Commands table names a command the CLI has."""
    assert _names(set(documented) - set(implemented)) == []


def test_every_cli_option_is_in_its_commands_row(
    documented: dict[CommandPath, set[str]], implemented: dict[CommandPath, set[str]]
) -> None:
    """Every long option of every command appears in that command's README row."""
    missing = {
        " ".join(path) or "(the program itself)": sorted(
            options - IMPLIED_OPTIONS - documented.get(path, set())
        )
        for path, options in implemented.items()
    }
    assert {command: names for command, names in missing.items() if names} == {}


def test_readme_rows_name_only_real_options(
    documented: dict[CommandPath, set[str]], implemented: dict[CommandPath, set[str]]
) -> None:
    """No README row names an option its command does not have."""
    invented = {
        " ".join(path) or "(the program itself)": sorted(options - implemented.get(path, set()))
        for path, options in documented.items()
    }
    assert {command: names for command, names in invented.items() if names} == {}


def test_the_table_reader_sees_commands_options_and_escaped_pipes() -> None:
    """The reader maps rows to command paths and options, including escaped `|` in a cell."""
    text = "\n".join(
        [
            "## Commands",
            "",
            "| command | does |",
            "|---|---|",
            "| `--version` | version |",
            "| `events replay (EVENT_ID... \\| --failed) [--type T]` | replays |",
            "| `send EVENT_TYPE --url U` / `send --file F --url U` | sends |",
            "",
            "## Next",
            "| `ignored --x` | not in the section |",
        ]
    )
    assert readme_table(text) == {
        (): {"--version"},
        ("events", "replay"): {"--failed", "--type"},
        ("send",): {"--url", "--file"},
    }


def test_the_cli_walk_finds_nested_commands_and_their_options() -> None:
    """The walk reaches subcommands of groups and reports each one's long options."""
    table = cli_table()
    assert table[("orders", "add")] >= {"--amount", "--currency", "--json"}
    assert table[()] >= {"--version"}
    assert ("orders",) not in table  # a group without options of its own needs no row
