"""Starts a real cisternd (from the build tree in $CISTERN_BUILD_DIR) for each
test that asks for the `daemon` or `client` fixture, in a temporary directory
with its own arena; stops it and removes everything afterwards, even when the
test fails."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

BUILD = os.environ.get("CISTERN_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build/release"))


class Daemon:
    """A cisternd with its own runtime dir, state dir (registry database) and
    arena. ``kill()`` + ``start()`` restart it on the same arena and state,
    as after a crash."""

    def __init__(self, extra_yaml: str = "", tier_bytes: int = 256 << 20):
        self.dir = tempfile.mkdtemp(prefix="cistern-py-")
        self.socket = os.path.join(self.dir, "cisternd.sock")
        self.arena = f"/dev/shm/cistern-pytest-{os.getpid()}-{os.path.basename(self.dir)}.arena"
        self.config = os.path.join(self.dir, "cisternd.yaml")
        with open(self.config, "w") as f:
            f.write(f"runtime_dir: {self.dir}\nsocket_path: {self.socket}\nmetrics_port: 0\n"
                    f"state_dir: {self.dir}/state\n"
                    f"tiers:\n  - name: mem\n    path: {self.arena}\n    size: {tier_bytes}\n"
                    + extra_yaml)
        self.log = open(os.path.join(self.dir, "cisternd.log"), "w")
        self.proc = None
        self.start()

    def start(self):
        """Starts cisternd and waits until its socket answers."""
        self.proc = subprocess.Popen([os.path.join(BUILD, "src/daemon/cisternd"), "--config", self.config],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while not self._answers():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("cisternd did not start:\n" + open(self.log.name).read())
            time.sleep(0.02)

    def _answers(self) -> bool:
        if not os.path.exists(self.socket):
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.socket)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def kill(self):
        """SIGKILL, as a crash: the arena and the registry stay."""
        self.proc.kill()
        self.proc.wait()
        if os.path.exists(self.socket):
            os.unlink(self.socket)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        table = self.arena[: -len(".arena")] + ".leases"
        for path in (self.arena, table, table + ".index", table + ".fast"):
            if os.path.exists(path):
                os.unlink(path)


@pytest.fixture
def daemon():
    d = Daemon()
    yield d
    d.stop()


@pytest.fixture
def client(daemon):
    import cistern
    return cistern.connect(daemon.socket)
