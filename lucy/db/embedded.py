"""An embedded PostgreSQL for development, used when ``DATABASE_URL`` is not set.

Choice: the machine's own PostgreSQL server binaries (Debian's ``postgresql-NN`` package, or any
``pg_config --bindir``), started on a private Unix socket with its data in ``LUCY_DATA_DIR``.
They are the same server production runs, cost nothing to install on our machines, and restart
in about 0.1 s on an existing data directory. PostgreSQL refuses to run as root, so as root the
server runs as the ``postgres`` system user (or ``nobody``), which owns the data directory.
``pgserver`` (a PyPI wheel bundling PostgreSQL 16) is the fallback where no server binaries are
installed; it is x86_64-only and, as root, creates a user and loosens directory permissions,
which is why it is not the first choice.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lucy.errors import DatabaseError
from lucy.log import get_logger

log = get_logger("lucy.db.embedded")

DATABASE = "lucy"
_SOCKET_PATH_LIMIT = 100  # sun_path is 108 bytes; leave room for ".s.PGSQL.5432"


def find_bindir() -> Path | None:
    """The directory holding ``initdb``/``pg_ctl``, newest major version first."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major, reverse=True)
    for path in versions:
        if Path(path, "initdb").exists():
            return Path(path)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _major(path: str) -> int:
    try:
        return int(Path(path).parent.name)
    except ValueError:
        return 0


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server owned by this process (or found running from an earlier one)."""

    data_dir: Path
    bindir: Path | None = None
    _started_here: bool = field(default=False, init=False)
    _pgserver: object | None = field(default=None, init=False)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "log" / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        candidate = self.pgdata.resolve()
        if len(str(candidate)) < _SOCKET_PATH_LIMIT:
            return candidate
        digest = hashlib.sha1(str(candidate).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"lucy-pg-{digest}"

    def dsn(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port=5432"

    def start(self) -> str:
        """Start (initialising on first use) and return the DSN of the ``lucy`` database."""
        self.bindir = self.bindir or find_bindir()
        if self.bindir is None:
            return self._start_pgserver()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        runas = _unprivileged_user()
        if runas:
            self._check_reachable(runas)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(runas)
        if not self._running(runas):
            self._pg_ctl_start(runas)
            self._started_here = True
        self._create_database()
        log.info("using the embedded PostgreSQL", data_dir=str(self.pgdata), socket=str(self.socket_dir))
        return self.dsn()

    def stop(self) -> None:
        if self._pgserver is not None:
            return  # pgserver stops its own server at exit
        if self._started_here and self.bindir is not None:
            self._run(
                [str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"],
                _unprivileged_user(),
            )
            self._started_here = False

    # --- steps ---------------------------------------------------------------------------

    def _check_reachable(self, runas: str) -> None:
        # A root-only parent (e.g. mode 0700) would make initdb fail with a cryptic message.
        probe = subprocess.run(_as_user(["test", "-x", str(self.data_dir.resolve())], runas), check=False)
        if probe.returncode != 0:
            raise DatabaseError(
                f"user {runas} cannot enter {self.data_dir.resolve()}",
                user_message=(
                    f"The embedded PostgreSQL runs as the '{runas}' user, which cannot enter "
                    f"{self.data_dir.resolve()}. Set LUCY_DATA_DIR to a directory it can reach, or set DATABASE_URL."
                ),
            )

    def _initdb(self, runas: str | None) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.pgdata.chmod(0o700)
        if runas:
            _chown_tree(self.pgdata, runas)
        assert self.bindir is not None
        self._run(
            [
                str(self.bindir / "initdb"), "-D", str(self.pgdata), "-U", "postgres", "-A", "trust",
                "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions",
            ],
            runas,
        )

    def _pg_ctl_start(self, runas: str | None) -> None:
        assert self.bindir is not None
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if runas:
            shutil.chown(self.socket_dir, runas)
        # The server writes its log itself, so the log directory must belong to the server's user.
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if runas:
            shutil.chown(self.log_file.parent, runas)
        options = f"-p 5432 -k {self.socket_dir} -c listen_addresses='' -c max_connections=60"
        self._run(
            [
                str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.log_file),
                "-w", "-t", "60", "-o", options, "start",
            ],
            runas,
        )

    def _running(self, runas: str | None) -> bool:
        assert self.bindir is not None
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "status"]
        result = subprocess.run(_as_user(cmd, runas), capture_output=True, text=True, check=False)
        return result.returncode == 0

    def _create_database(self) -> None:
        assert self.bindir is not None
        psql = self.bindir / "psql"
        if not psql.exists():
            psql = Path(shutil.which("psql") or "psql")
        check = subprocess.run(
            [str(psql), "-h", str(self.socket_dir), "-U", "postgres", "-d", "postgres", "-tAc",
             f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"],
            capture_output=True, text=True, check=False,
        )
        if check.returncode != 0:
            raise DatabaseError(f"embedded PostgreSQL is not answering: {check.stderr.strip()}")
        if check.stdout.strip() != "1":
            self._run(
                [str(psql), "-h", str(self.socket_dir), "-U", "postgres", "-d", "postgres", "-c",
                 f"CREATE DATABASE {DATABASE}"],
                None,
            )

    def _run(self, cmd: list[str], runas: str | None) -> None:
        result = subprocess.run(_as_user(cmd, runas), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()
            raise DatabaseError(
                f"embedded PostgreSQL: {' '.join(cmd[:1])} failed: {detail}",
                user_message=(
                    f"The embedded PostgreSQL could not start ({detail.splitlines()[-1] if detail else 'no output'}). "
                    f"See {self.log_file}, or set DATABASE_URL to a PostgreSQL server."
                ),
            )

    def _start_pgserver(self) -> str:
        try:
            import pgserver
        except ImportError as exc:
            raise DatabaseError(
                "no PostgreSQL server binaries and no pgserver",
                user_message=(
                    "DATABASE_URL is not set and no PostgreSQL server is installed for the embedded database. "
                    "Install one (apt-get install postgresql) or set DATABASE_URL."
                ),
            ) from exc
        server = pgserver.get_server(str(self.pgdata), cleanup_mode="stop")  # type: ignore[attr-defined]
        self._pgserver = server
        server.psql("SELECT 1")  # fail early if it is not answering
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")
        if "1" not in str(exists):
            server.psql(f"CREATE DATABASE {DATABASE}")
        uri = str(server.get_uri())
        log.info("using the embedded PostgreSQL (pgserver)", data_dir=str(self.pgdata))
        return uri.replace("/postgres?", f"/{DATABASE}?")


def _unprivileged_user() -> str | None:
    """The user to run the server as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise DatabaseError(
        "running as root and neither a postgres nor a nobody user exists",
        user_message="PostgreSQL cannot run as root and there is no 'postgres' user. Set DATABASE_URL.",
    )


def _as_user(cmd: list[str], runas: str | None) -> list[str]:
    if runas is None:
        return cmd
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", runas, "--", *cmd]
    return ["su", runas, "-s", "/bin/sh", "-c", " ".join(_quote(c) for c in cmd)]


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _chown_tree(path: Path, user: str) -> None:
    shutil.chown(path, user)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            shutil.chown(os.path.join(root, name), user)
