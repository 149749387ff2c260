"""PostgreSQL for the store's tests: a database of our own on the shared server (created and
dropped per test), and a private server (initdb + pg_ctl in a temp folder, on a free port) for
the tests that stop it: the shared server is never stopped."""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

SHARED_ADMIN_URL = os.environ.get("AIE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def shared_server_reason() -> str | None:
    """None when the shared PostgreSQL answers; else why not."""
    try:
        with psycopg.connect(SHARED_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.Error as error:
        return f"no PostgreSQL at {SHARED_ADMIN_URL} ({' '.join(str(error).split())[:120]})"


def _with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


class OwnDatabase:
    """`aie_i13_<random>` on a server: created on enter, dropped (connections closed) on exit."""

    def __init__(self, admin_url: str = SHARED_ADMIN_URL) -> None:
        self.admin_url = admin_url
        self.name = "aie_i13_" + secrets.token_hex(4)
        self.url = _with_database(admin_url, self.name)

    def __enter__(self) -> OwnDatabase:
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{self.name}"')
        return self

    def __exit__(self, *_: object) -> None:
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(self.admin_url, autocommit=True, connect_timeout=3) as connection,
        ):
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivatePostgres:
    """A PostgreSQL server of the test's own, which the test may stop and start again.

    initdb refuses to run as root: as root, the server runs as the `postgres` user (runuser)."""

    def __init__(self) -> None:
        binaries = postgres_bin()
        if binaries is None:
            raise RuntimeError("initdb and pg_ctl are not installed")
        self.bin = binaries
        # not under pytest's tmp_path: the `postgres` user could not reach into root's 0700 folder
        self.root = Path(tempfile.mkdtemp(prefix="aie-i13-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def init(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def close(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
