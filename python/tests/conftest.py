"""Starts a real cisternd (from the build tree in $CISTERN_BUILD_DIR) per test
module in a temporary directory with its own arena; stops it and removes
everything afterwards, even when a test fails."""

import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

BUILD = os.environ.get("CISTERN_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build/release"))


class Daemon:
    def __init__(self, extra_yaml: str = "", tier_bytes: int = 256 << 20):
        self.dir = tempfile.mkdtemp(prefix="cistern-py-")
        self.socket = os.path.join(self.dir, "cisternd.sock")
        self.arena = f"/dev/shm/cistern-pytest-{os.getpid()}-{os.path.basename(self.dir)}.arena"
        self.config = os.path.join(self.dir, "cisternd.yaml")
        with open(self.config, "w") as f:
            f.write(f"runtime_dir: {self.dir}\nsocket_path: {self.socket}\nmetrics_port: 0\n"
                    f"tiers:\n  - name: mem\n    path: {self.arena}\n    size: {tier_bytes}\n"
                    + extra_yaml)
        self.log = open(os.path.join(self.dir, "cisternd.log"), "w")
        self.proc = subprocess.Popen([os.path.join(BUILD, "src/daemon/cisternd"), "--config", self.config],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("cisternd did not start:\n" + open(self.log.name).read())
            time.sleep(0.02)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        if os.path.exists(self.arena):
            os.unlink(self.arena)


@pytest.fixture
def daemon():
    d = Daemon()
    yield d
    d.stop()


@pytest.fixture
def client(daemon):
    import cistern
    return cistern.connect(daemon.socket)
