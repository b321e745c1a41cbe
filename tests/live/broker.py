"""A private Mosquitto broker for tests: a free loopback port, a generated config, no service.

Tests that need it skip with a reason when the ``mosquitto`` binary is missing
(``scripts/setup-system.sh`` installs the Debian package).
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

SEARCH = "/usr/sbin:/usr/local/sbin:/usr/bin:/usr/local/bin"


def mosquitto_binary() -> str:
    """The broker's path, or skip the test naming the remedy."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path=SEARCH)
    if found is None:
        pytest.skip("mosquitto not installed: run scripts/setup-system.sh "
                    "(apt-get install mosquitto)")
    return found


_GIVEN: set[int] = set()


def free_port() -> int:
    """A loopback port free now and not handed out before in this process (a broker with
    several listeners asks for several: the kernel may offer a just-released port again)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


class Broker:
    """One mosquitto process on ``port``; :meth:`stop` and :meth:`start` keep the port."""

    def __init__(self, workdir: Path, users: dict[str, str] | None = None,
                 extra: Sequence[str] = ()) -> None:
        self.binary = mosquitto_binary()
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        # Persistence: a restarted broker keeps persistent sessions (the collector's) and
        # their queued QoS 1 messages, as a production broker would.
        lines = [f"listener {self.port} 127.0.0.1", "persistence true",
                 f"persistence_location {workdir}/", "autosave_interval 1",
                 # As root, mosquitto would switch to its own user, who cannot read our files.
                 f"user {getpass.getuser()}",
                 "log_dest stderr", "log_type error", "log_type warning"]
        if users:
            passwd = workdir / "passwd"
            tool = shutil.which("mosquitto_passwd") or shutil.which("mosquitto_passwd",
                                                                    path=SEARCH)
            if tool is None:
                pytest.skip("mosquitto_passwd not installed: run scripts/setup-system.sh")
            passwd.touch()
            for user, password in users.items():
                subprocess.run([tool, "-b", str(passwd), user, password], check=True,
                               capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        lines += extra  # more listeners (TLS), each followed by its own settings
        self.config = workdir / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.config)],
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log.read_text()}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Certs:
    """A test CA, a broker certificate it signed (for 127.0.0.1), a client certificate it
    signed, and a second CA that signed neither."""

    ca: Path
    server: Path
    server_key: Path
    client: Path
    client_key: Path
    other_ca: Path


def make_certs(where: Path) -> Certs:
    """Make the certificates with the ``openssl`` command line (EC keys: fast)."""
    tool = shutil.which("openssl")
    if tool is None:
        pytest.skip("openssl not installed (apt-get install openssl)")
    where.mkdir(parents=True, exist_ok=True)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([tool, *args], cwd=where, check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        run("req", "-x509", *key, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
            "-subj", f"/CN=tinytelem test {ca}")
    usage = {"server": "serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost",
             "client": "clientAuth"}
    for name, ext in usage.items():
        (where / f"{name}.ext").write_text(
            "basicConstraints=CA:FALSE\nauthorityKeyIdentifier=keyid,issuer\n"
            f"keyUsage=digitalSignature\nextendedKeyUsage={ext}\n")
        run("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj",
            f"/CN=tinytelem test {name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return Certs(where / "ca.pem", where / "server.pem", where / "server.key",
                 where / "client.pem", where / "client.key", where / "other-ca.pem")


def tls_listener(port: int, certs: Certs, *, require_certificate: bool = False) -> list[str]:
    """Config lines of a TLS listener on ``port`` (for ``Broker(extra=...)``)."""
    lines = [f"listener {port} 127.0.0.1", f"cafile {certs.ca}", f"certfile {certs.server}",
             f"keyfile {certs.server_key}"]
    return lines + (["require_certificate true"] if require_certificate else [])
