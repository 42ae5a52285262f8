"""cistern.connect() finds the daemon the way the C++ client and the CLI do
(tests/integration/discovery_test.cc): an explicit address, else
$CISTERN_ADDRESS, else the live `cistern daemon start` session, else the
default socket."""

import json
import os
import shutil
import subprocess
import tempfile

import pytest

import cistern
from conftest import BUILD, Daemon


@pytest.fixture
def session(monkeypatch):
    """A `cistern daemon start` session in a temporary $CISTERN_HOME; yields
    its socket."""
    home = tempfile.mkdtemp(prefix="cistern-pydisc-")
    arena = f"/dev/shm/cistern-pydisc-{os.getpid()}-{os.path.basename(home)}.arena"
    env = dict(os.environ, CISTERN_HOME=home, CISTERN_ADDRESS="", CISTERN_SOCKET="")
    cli = os.path.join(BUILD, "src/cli/cistern")
    out = subprocess.run([cli, "--json", "daemon", "start", "--set", "tiers.0.size=64MiB",
                          "--set", f"tiers.0.path={arena}", "--set", "metrics_port=0"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    monkeypatch.setenv("CISTERN_HOME", home)
    monkeypatch.delenv("CISTERN_ADDRESS", raising=False)
    monkeypatch.delenv("CISTERN_SOCKET", raising=False)
    yield json.loads(out.stdout)["socket"]
    subprocess.run([cli, "daemon", "stop", "--grace", "5"], env=env, capture_output=True,
                   timeout=60)
    shutil.rmtree(home, ignore_errors=True)
    table = arena[: -len(".arena")] + ".leases"
    for path in (arena, table, table + ".index", table + ".fast"):
        if os.path.exists(path):
            os.unlink(path)


def test_connect_finds_the_session_the_cli_started(session):
    assert cistern.discover_socket() == session
    c = cistern.connect()
    c.put("from-python", b"bytes")
    assert c.stat("from-python")["size"] == 5
    assert c.address == session


def test_address_variable_and_explicit_address_win(session, monkeypatch):
    other = Daemon()
    try:
        monkeypatch.setenv("CISTERN_ADDRESS", other.socket)
        assert cistern.discover_socket() == other.socket
        assert cistern.connect().address == other.socket
        assert cistern.discover_socket(session) == session
        assert cistern.connect(session).address == session
    finally:
        other.stop()


def test_no_session_falls_back_to_the_default_socket(monkeypatch, tmp_path):
    monkeypatch.setenv("CISTERN_HOME", str(tmp_path))
    monkeypatch.delenv("CISTERN_ADDRESS", raising=False)
    monkeypatch.delenv("CISTERN_SOCKET", raising=False)
    default = str(tmp_path / "run" / "cisternd.sock")
    assert cistern.discover_socket() == default
    with pytest.raises(cistern.Error, match=default):
        cistern.connect()
