"""Celery workers for the queued job tests, started the way an operator starts them
(``celery -A piiguard.rotation.celery worker``), on a queue of the test's own.

The broker (RabbitMQ) and the result backend (Redis) are the servers on this machine;
under ``CI=true`` a missing one fails the test, elsewhere the test skips with the reason
(as ``tests/conftest.py`` does for the databases).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

BROKER = os.environ.get("PIIGUARD_TEST_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
BACKEND = os.environ.get("PIIGUARD_TEST_BACKEND", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(url: str, port: int) -> str | None:
    parsed = urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or port
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except OSError as exc:
        return f"{host}:{port} ({type(exc).__name__})"


def need_queue_servers() -> None:
    """Skip (locally) or fail (CI) unless the broker and the backend answer."""
    pytest.importorskip("celery", reason="celery is not installed (pip install "
                                         "'piiguard[celery]')")
    for name, url, port in (("RabbitMQ broker", BROKER, 5672),
                            ("Redis result backend", BACKEND, 6379)):
        missing = _reachable(url, port)
        if missing:
            msg = f"{name} not reachable at {missing}"
            if IN_CI:
                pytest.fail(msg + " (CI=true: a missing server is an error)")
            pytest.skip(msg)


class Workers:
    """``celery worker`` processes for one app, on a queue of their own."""

    def __init__(self, directory: Path, app_spec: str, *, queue: str | None = None) -> None:
        self.dir = directory
        self.app_spec = app_spec
        self.queue = queue or f"piiguard-test-{uuid.uuid4().hex[:8]}"
        self.procs: list[subprocess.Popen] = []
        self.env = dict(os.environ, PIIGUARD_APP=app_spec, PIIGUARD_CELERY_BROKER=BROKER,
                        PIIGUARD_CELERY_BACKEND=BACKEND, PIIGUARD_CELERY_QUEUE=self.queue,
                        PYTHONPATH=os.pathsep.join([str(directory), *sys.path]))

    def capp(self):
        from piiguard.rotation.celery import make_app

        return make_app(BROKER, BACKEND, self.queue)

    def start(self, concurrency: int = 1, name: str | None = None) -> subprocess.Popen:
        name = name or f"w{len(self.procs)}-{uuid.uuid4().hex[:6]}"
        log = open(self.dir / f"celery-{name}.log", "wb")  # noqa: SIM115 - kept by the proc
        p = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "piiguard.rotation.celery", "worker",
             "-Q", self.queue, "-n", f"{name}@%h", "--concurrency", str(concurrency),
             "--pool", "prefork", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-l", "WARNING"],
            cwd=self.dir, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def pool_children(self) -> list[int]:
        """The prefork pool processes (those that run tasks) of the live workers."""
        kids = []
        for p in self.procs:
            if p.poll() is not None:
                continue
            try:
                out = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True,
                                     text=True).stdout
            except FileNotFoundError:
                out = ""
            kids += [int(x) for x in out.split()]
        return kids

    def ready(self, processes: int, timeout: float = 60) -> None:
        """Wait until the workers' pool processes are up."""
        deadline = time.monotonic() + timeout
        while len(self.pool_children()) < processes:
            if time.monotonic() > deadline:
                raise TimeoutError("celery workers did not start:\n" + self.logs())
            time.sleep(0.2)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def logs(self) -> str:
        return "\n".join(f.read_text(errors="replace")[-3000:]
                         for f in sorted(self.dir.glob("celery-*.log")))
