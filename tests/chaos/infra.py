"""Infrastructure for the chaos harness: databases (a private PostgreSQL instance, a private
PgBouncer, SQLite files), worker processes and their side logs.

Nothing here touches the shared PostgreSQL server except through the DSN the caller passes
(the test suite's, with a schema of its own); everything destructive runs on a private
instance started here, on a free port of 127.0.0.1, and removed afterwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PY_WORKER = HERE / "worker.py"


class ChaosSetupError(RuntimeError):
    """The harness could not set something up (a missing program, a server that would not
    start); the message says what to do."""


def with_params(dsn: str, **params: str) -> str:
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def rust_worker_bin() -> Path:
    """The `pgqrs-chaos-worker` built by `make build` (cargo builds the whole workspace)."""
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    path = target / "release" / "pgqrs-chaos-worker"
    if not path.exists():
        raise ChaosSetupError(
            f"{path} is missing: run `make build` (or `cargo build --release -p pgqrs-bench`) "
            "with the same CARGO_TARGET_DIR"
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def find_pg_bin(name: str) -> str:
    """A PostgreSQL server program (initdb, pg_ctl, postgres): PATH, else the newest
    /usr/lib/postgresql/<version>/bin."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for d in reversed(versions):
        if (d / name).exists():
            return str(d / name)
    found = shutil.which(name)
    if found:
        return found
    raise ChaosSetupError(f"{name} not found: install the PostgreSQL server package")


def as_postgres(cmd: list[str]) -> list[str]:
    """initdb, postgres and PgBouncer refuse to run as root: run them as `postgres`."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


# --- Databases ------------------------------------------------------------------------------


@dataclasses.dataclass
class Db:
    """Where a scenario's data lives: a PostgreSQL schema or a SQLite file."""

    kind: str  # "postgres" or "sqlite"
    base: str  # PostgreSQL: a libpq URI without pgqrs parameters; SQLite: the file path
    schema: str = "public"

    def dsn(self, **params: str) -> str:
        """The pgqrs connection string, with pgqrs parameters."""
        if self.kind == "sqlite":
            return with_params(f"sqlite://{self.base}", **params)
        return with_params(self.base, schema=self.schema, **params)

    def t(self, table: str) -> str:
        return f'"{self.schema}".{table}' if self.kind == "postgres" else table

    def query(self, sql: str, timeout: float = 120) -> list[list[str]]:
        """Rows of a query, every value as text (NULL as '')."""
        if self.kind == "sqlite":
            con = sqlite3.connect(self.base, timeout=60)
            try:
                return [["" if v is None else str(v) for v in row] for row in con.execute(sql)]
            finally:
                con.close()
        out = subprocess.run(
            ["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d", self.base],
            input=sql,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"psql failed on {sql!r}: {out.stderr.strip()}")
        return [line.split("\t") for line in out.stdout.splitlines() if line]

    def drop(self) -> None:
        if self.kind == "postgres":
            self.query(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(self.base + suffix).unlink(missing_ok=True)


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on its own port, for restarts, backend kills, pinned
    snapshots and 300 idle connections. Never the shared server."""

    def __init__(self, max_connections: int = 500) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pgqrs-chaos-pg-"))
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = free_port()
        self.max_connections = max_connections
        self.base = f"postgresql://postgres@127.0.0.1:{self.port}/chaos"

    def start(self) -> None:
        initdb = find_pg_bin("initdb")
        run = subprocess.run(
            as_postgres([initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N"]),
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0:
            raise ChaosSetupError(f"initdb failed: {run.stderr.strip()}")
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            f"-c max_connections={self.max_connections} -c shared_buffers=256MB "
            "-c autovacuum_naptime=10s"
        )
        self._pg_ctl("start", "-o", opts)
        subprocess.run(
            ["psql", "-X", "-q", "-d", self.base.rsplit("/", 1)[0] + "/postgres"],
            input="CREATE DATABASE chaos;\n",
            capture_output=True,
            text=True,
            check=True,
        )

    def _pg_ctl(self, *args: str) -> float:
        """Run pg_ctl; returns the seconds it took."""
        t0 = time.monotonic()
        run = subprocess.run(
            as_postgres(
                [
                    find_pg_bin("pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.dir / "log"),
                    "-w",
                    *args,
                ]
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0:
            log = (self.dir / "log").read_text()[-2000:] if (self.dir / "log").exists() else ""
            raise ChaosSetupError(f"pg_ctl {' '.join(args)} failed: {run.stderr.strip()}\n{log}")
        return time.monotonic() - t0

    def restart(self, mode: str) -> float:
        return self._pg_ctl("-m", mode, "restart")

    def db(self, schema: str) -> Db:
        return Db("postgres", self.base, schema)

    def stop(self) -> None:
        try:
            self._pg_ctl("-m", "immediate", "stop")
        except ChaosSetupError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def pgbouncer_bin() -> str | None:
    found = shutil.which("pgbouncer")
    if found:
        return found
    return "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None


class PrivatePgBouncer:
    """A PgBouncer (session pooling) of our own in front of a PrivatePostgres."""

    def __init__(self, pg: PrivatePostgres) -> None:
        exe = pgbouncer_bin()
        if exe is None:
            raise ChaosSetupError("pgbouncer is not installed (`make chaos` installs it)")
        self.exe = exe
        self.pg = pg
        self.port = free_port()
        self.ini = pg.dir / "pgbouncer.ini"
        (pg.dir / "userlist.txt").write_text('"postgres" ""\n')
        self.ini.write_text(
            "[databases]\n"
            f"chaos = host=127.0.0.1 port={pg.port} dbname=chaos\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {pg.dir}/userlist.txt\npool_mode = session\n"
            "max_client_conn = 2000\ndefault_pool_size = 200\n"
            "ignore_startup_parameters = extra_float_digits\n"
            # Retry a failed server login after 1 s (default 15 s): recovery after a
            # PostgreSQL restart is then PostgreSQL's and pgqrs's, not this setting's.
            "server_login_retry = 1\n"
            f"logfile = {pg.dir}/pgbouncer.log\n"
        )
        for f in ("pgbouncer.ini", "userlist.txt"):
            if os.geteuid() == 0:
                shutil.chown(pg.dir / f, "postgres", "postgres")
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = f"postgresql://postgres@127.0.0.1:{self.port}/chaos"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            as_postgres([self.exe, str(self.ini)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise ChaosSetupError(f"pgbouncer did not listen on {self.port}: see {self.pg.dir}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # Our own process group (runuser and pgbouncer): SIGINT is PgBouncer's shutdown.
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def restart(self) -> float:
        t0 = time.monotonic()
        self.stop()
        self.start()
        return time.monotonic() - t0

    def db(self, schema: str) -> Db:
        return Db("postgres", self.base, schema)


# --- Worker processes -----------------------------------------------------------------------


@dataclasses.dataclass
class WorkerProc:
    kind: str  # "py" or "rust"
    mode: str  # "queue" or "workflow"
    popen: subprocess.Popen[bytes]
    out: Path
    started_ns: int

    @property
    def pid(self) -> int:
        return self.popen.pid

    def ready(self) -> bool:
        return self.out.exists() and self.out.read_bytes().startswith(b"ready")


@dataclasses.dataclass
class Kill:
    pid: int
    kind: str
    before_ns: int  # just before kill(2)
    after_ns: int  # kill(2) returned: the process is gone


class WorkerPool:
    """Worker processes of one scenario: starts them, kills them, replaces them, stops them."""

    def __init__(
        self,
        mode: str,
        dsn: str,
        queue: str,
        workdir: Path,
        *,
        concurrency: int = 8,
        heartbeat: float | None = None,
        handler_ms: int = 0,
        max_seconds: float = 3600,
    ) -> None:
        self.mode, self.dsn, self.queue, self.workdir = mode, dsn, queue, workdir
        self.concurrency, self.heartbeat = concurrency, heartbeat
        self.handler_ms, self.max_seconds = handler_ms, max_seconds
        self.live: list[WorkerProc] = []
        self.dead: list[WorkerProc] = []
        self.kills: list[Kill] = []
        self.unexpected_exits: list[tuple[int, str, int | None]] = []
        self.n = 0
        workdir.mkdir(parents=True, exist_ok=True)

    def log_files(self) -> list[Path]:
        return sorted(self.workdir.glob("*.log"))

    def spawn(self, kind: str) -> WorkerProc:
        self.n += 1
        name = f"{kind}-{self.n:05d}"
        log = self.workdir / f"{name}.log"
        out = self.workdir / f"{name}.out"
        common = ["--dsn", self.dsn, "--queue", self.queue, "--log", str(log)]
        common += ["--concurrency", str(self.concurrency), "--max-seconds", str(self.max_seconds)]
        common += ["--handler-ms", str(self.handler_ms)]
        if kind == "py":
            cmd = [sys.executable, str(PY_WORKER), self.mode, *common]
            # workflow_worker() has no heartbeat setting
            if self.mode == "queue" and self.heartbeat is not None:
                cmd += ["--heartbeat", str(self.heartbeat)]
        else:
            cmd = [str(rust_worker_bin()), self.mode, *common]
            if self.heartbeat is not None:
                cmd += ["--heartbeat-ms", str(int(self.heartbeat * 1000))]
        with open(out, "wb") as fout, open(self.workdir / f"{name}.err", "wb") as ferr:
            popen = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=fout, stderr=ferr)
        w = WorkerProc(kind, self.mode, popen, out, time.time_ns())
        self.live.append(w)
        return w

    async def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not all(w.ready() for w in self.live):
            self.check_exits()
            if time.monotonic() > deadline:
                raise ChaosSetupError(f"workers not ready after {timeout}s: see {self.workdir}")
            await asyncio.sleep(0.05)

    def check_exits(self) -> None:
        """Workers that exited by themselves (they should not): recorded, then replaced."""
        for w in list(self.live):
            rc = w.popen.poll()
            if rc is not None:
                self.live.remove(w)
                self.dead.append(w)
                err = (self.workdir / (w.out.stem + ".err")).read_text(errors="replace")
                self.unexpected_exits.append((w.pid, err[-500:], rc))
                if len(self.unexpected_exits) > 20:
                    raise ChaosSetupError(
                        f"more than 20 workers exited by themselves; the last said: {err[-500:]}"
                    )
                self.spawn(w.kind)

    def kill(self, w: WorkerProc) -> Kill:
        before = time.time_ns()
        os.kill(w.pid, signal.SIGKILL)
        after = time.time_ns()
        w.popen.wait()
        self.live.remove(w)
        self.dead.append(w)
        k = Kill(w.pid, w.kind, before, after)
        self.kills.append(k)
        return k

    async def stop(self, timeout: float = 60) -> None:
        """Graceful stop of every live worker: their standard input is closed."""
        for w in self.live:
            assert w.popen.stdin is not None
            try:
                w.popen.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        while any(w.popen.poll() is None for w in self.live):
            if time.monotonic() > deadline:
                for w in self.live:
                    if w.popen.poll() is None:
                        w.popen.kill()
                        w.popen.wait()
                        self.unexpected_exits.append((w.pid, "did not stop in time", None))
                break
            await asyncio.sleep(0.05)
        for w in self.live:
            rc = w.popen.returncode
            if rc not in (0, None):
                err = (self.workdir / (w.out.stem + ".err")).read_text(errors="replace")
                self.unexpected_exits.append((w.pid, err[-500:], rc))
        self.dead += self.live
        self.live = []

    def kill_all(self) -> None:
        for w in self.live:
            if w.popen.poll() is None:
                w.popen.kill()
                w.popen.wait()


def read_logs(files: list[Path]) -> tuple[list[list[str]], int]:
    """Every complete line of the side logs, split; and how many lines were torn."""
    rows: list[list[str]] = []
    torn = 0
    for f in files:
        data = f.read_bytes()
        for raw in data.split(b"\n"):
            if not raw:
                continue
            parts = raw.decode(errors="replace").split()
            if parts and parts[0] in ("J", "D") and len(parts) == 4:
                rows.append(parts)
            elif parts and parts[0] == "S" and len(parts) == 6:
                rows.append(parts)
            else:
                torn += 1
    return rows, torn


# --- Hostile neighbours -----------------------------------------------------------------------


async def idle_connection(port: int, db: str, app: str) -> asyncio.StreamWriter:
    """An authenticated PostgreSQL connection that then sits idle (trust auth)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    params = b"".join(
        k.encode() + b"\0" + v.encode() + b"\0"
        for k, v in (("user", "postgres"), ("database", db), ("application_name", app))
    )
    body = struct.pack("!i", 196608) + params + b"\0"
    writer.write(struct.pack("!i", len(body) + 4) + body)
    await writer.drain()
    while True:
        head = await reader.readexactly(5)
        kind, length = head[:1], struct.unpack("!i", head[1:])[0]
        payload = await reader.readexactly(length - 4)
        if kind == b"E":
            raise ChaosSetupError(f"idle connection refused: {payload!r}")
        if kind == b"Z":
            return writer


class PsqlSession:
    """A psql process fed statements through its standard input (a session we own)."""

    def __init__(self, base: str, out: Path) -> None:
        self.fout: IO[bytes] = open(out, "wb")
        self.proc = subprocess.Popen(
            ["psql", "-X", "-q", "-At", "-d", base],
            stdin=subprocess.PIPE,
            stdout=self.fout,
            stderr=subprocess.STDOUT,
        )

    def send(self, sql: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(sql.encode() + b"\n")
        self.proc.stdin.flush()

    def close(self, timeout: float = 30) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.fout.close()


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return dataclasses.asdict(x)
    return str(x)
