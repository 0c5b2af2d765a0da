"""A private PostgreSQL cluster that a test may start, stop, shut down and put in standby.

The shared PostgreSQL server is never stopped or reconfigured; tests that need the server itself
to misbehave (starting up, shutting down, terminating sessions, gone) use one of these instead:
`initdb` once into a temporary directory, then `pg_ctl` for everything else. Debian's server
binaries live in /usr/lib/postgresql/<version>/bin, off the PATH.

The server refuses to run as root, so when we are root every command runs as the `postgres`
user (`runuser`), in a directory that user owns. It listens on 127.0.0.1 on a free port with its
unix socket inside that directory, trusts local connections and never fsyncs (nothing here must
survive a power cut).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from service.devtools.local_redis import LOOPBACK, free_port
from tests.support.waiting import wait_until

SERVER_USER: Final = "postgres"
SUPERUSER: Final = "postgres"
DATABASE: Final = "postgres"
# Upper bound on one pg_ctl start or stop (it waits for the server itself).
PG_CTL_TIMEOUT_S: Final = 30
COMMAND_TIMEOUT_S: Final = PG_CTL_TIMEOUT_S + 10
LOG_TAIL_LINES: Final = 20

StopMode = Literal["smart", "fast", "immediate"]

SERVER_SETTINGS: Final = {
    "listen_addresses": f"'{LOOPBACK}'",
    "max_connections": "40",
    "shared_buffers": "16MB",
    # Throw-away data: skip every flush to disk.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # A standby without a primary must keep rejecting connections (57P03) rather than serve reads.
    "hot_standby": "off",
    "logging_collector": "off",
}


class PostgresUnavailable(RuntimeError):
    """No private cluster can be run here; the message says why."""


def find_bin_dir() -> Path | None:
    """The newest Debian server binaries directory, else the one holding `initdb` on the PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).resolve().parent if on_path else None


@dataclass
class PrivatePostgres:
    """One cluster under `root` (data directory, socket directory, server log)."""

    bin_dir: Path
    root: Path
    port: int
    run_as: list[str] = field(default_factory=list)  # command prefix: runuser when we are root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def standby_signal(self) -> Path:
        return self.data_dir / "standby.signal"

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://{SUPERUSER}@{LOOPBACK}:{self.port}/{database}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections (or, in standby, until it
        reports itself as a standby: with hot_standby off that is as far as it ever gets)."""
        self._pg_ctl("start", "-w", "-l", str(self.log_path))
        if not self.standby_signal.exists():
            # `pg_ctl start -w` returns as soon as recovery has begun, and a former standby
            # runs crash recovery first, refusing connections meanwhile.
            wait_until(self.accepting_connections, timeout_s=PG_CTL_TIMEOUT_S)

    def accepting_connections(self) -> bool:
        command = [str(self.bin_dir / "pg_isready"), "-q", "-t", "1"]
        target = ["-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER]
        return self._run_as_server([*command, *target], check=False).returncode == 0

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server and wait until it is gone."""
        self._pg_ctl("stop", "-w", "-m", mode)

    def request_stop(self, mode: StopMode) -> None:
        """Ask the server to stop without waiting: a smart stop waits for every session to end."""
        self._pg_ctl("stop", "-W", "-m", mode)

    def wait_stopped(self) -> None:
        """Wait (bounded) until a requested stop has finished."""
        # The postmaster removes its pid file as it exits (as `pg_ctl stop -w` waits for): not
        # our child, it may linger as a zombie where nothing reaps orphans.
        pid_file = self.data_dir / "postmaster.pid"
        wait_until(lambda: not pid_file.exists(), timeout_s=PG_CTL_TIMEOUT_S)

    def running(self) -> bool:
        return self._pg_ctl("status", check=False).returncode == 0

    def postmaster_pid(self) -> int | None:
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except FileNotFoundError:
            return None
        return int(first_line)

    def enter_standby(self) -> None:
        """Restart as a standby with no primary and hot_standby off: every connection is refused
        with 57P03 "the database system is not accepting connections", for as long as it runs."""
        if self.running():
            self.stop()
        self._as_server_file(self.standby_signal, "")
        self.start()

    def leave_standby(self) -> None:
        """Restart as a primary (the standby was never promoted: its data is unchanged)."""
        if self.running():
            self.stop()
        self.standby_signal.unlink(missing_ok=True)
        self.start()

    def ensure_primary(self) -> None:
        """Running and accepting connections, whatever a previous test left behind."""
        if self.standby_signal.exists():
            self.leave_standby()
        elif not self.running():
            self.start()

    def destroy(self) -> None:
        """Stop the server (fast, else immediate, else SIGKILL; each bounded) and remove its
        directory."""
        try:
            for mode in ("fast", "immediate"):
                with contextlib.suppress(PostgresUnavailable, subprocess.SubprocessError):
                    if self.running():
                        self.stop(mode)
            pid = self.postmaster_pid()
            if pid is not None and self.running():
                # pg_ctl starts the postmaster as a process group leader: take its children too.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-t",
            str(PG_CTL_TIMEOUT_S),
            *args,
        ]
        result = self._run_as_server(command, check=False)
        if check and result.returncode != 0:
            raise PostgresUnavailable(
                f"pg_ctl {args[0]} failed ({result.returncode}): {result.stderr.strip()}\n"
                f"--- server log ---\n{self.log_tail()}"
            )
        return result

    def _run_as_server(
        self, command: list[str], *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.run_as, *command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=check,
            cwd=self.root,
        )

    def _as_server_file(self, path: Path, text: str) -> None:
        path.write_text(text)
        if self.run_as:
            shutil.chown(path, SERVER_USER, SERVER_USER)

    def initdb(self) -> None:
        """Create the cluster (once), configured as the module docstring says."""
        command = [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER]
        options = ["-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions"]
        result = self._run_as_server([*command, *options], check=False)
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"initdb failed ({result.returncode}): {result.stderr.strip()}"
            )
        settings = {
            **SERVER_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
        }
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())


def create_private_postgres() -> PrivatePostgres:
    """initdb a new cluster in a temporary directory and start it; raise PostgresUnavailable
    (saying why) when there are no server binaries or no user to run them as."""
    bin_dir = find_bin_dir()
    if bin_dir is None or not (bin_dir / "pg_ctl").is_file():
        raise PostgresUnavailable(
            "the PostgreSQL server binaries (initdb, pg_ctl) are not installed: "
            "apt-get install postgresql"
        )
    run_as = _server_user_prefix()
    # Not under pytest's tmp_path: that directory is private to root, and the server runs as
    # `postgres`, which must reach its data directory.
    root = Path(tempfile.mkdtemp(prefix="private-postgres-"))
    cluster = PrivatePostgres(bin_dir, root, free_port(), run_as)
    try:
        cluster.socket_dir.mkdir()
        if run_as:
            for path in (root, cluster.socket_dir):
                shutil.chown(path, SERVER_USER, SERVER_USER)
        cluster.initdb()
        cluster.start()
    except BaseException:
        cluster.destroy()
        raise
    return cluster


def _version(initdb: str) -> tuple[int, ...]:
    """(15,) for /usr/lib/postgresql/15/bin/initdb, (9, 6) for .../9.6/bin/initdb."""
    name = Path(initdb).parent.parent.name
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _server_user_prefix() -> list[str]:
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        runuser = None
    if runuser is None:
        raise PostgresUnavailable(
            f"running as root needs `runuser` and a `{SERVER_USER}` user to start PostgreSQL"
        )
    return [runuser, "-u", SERVER_USER, "--"]
