"""Regression tests for store defects found by a hostile test (issue 9, items
2 and 3), through the Python package. Each test opens with the bug."""

import numpy as np
import torch

import cistern


def test_views_held_across_a_daemon_kill_keep_their_bytes(daemon, client):
    """Numpy and torch views of 'k' held while cisternd was killed -9 and
    restarted showed another key's bytes after 'k' was put again and 'other'
    was put: the leases died with the daemon and the block was reused."""
    client.put("k", np.arange(1 << 18, dtype=np.float32))
    as_numpy = client.get("k")
    as_torch = client.get("k", as_="torch")
    daemon.kill()
    daemon.start()
    other = cistern.connect(daemon.socket)
    other.put("k", np.zeros(1 << 18, dtype=np.float32))
    for i in range(64):
        other.put(f"other{i}", np.full(1 << 18, 7, dtype=np.float32))
    assert np.array_equal(as_numpy, np.arange(1 << 18, dtype=np.float32))
    assert torch.equal(as_torch, torch.arange(1 << 18, dtype=torch.float32))
    # The first client goes on without reconnecting by hand.
    assert np.array_equal(client.get("k"), np.zeros(1 << 18, dtype=np.float32))


def test_a_write_through_a_writer_buffer_after_the_block_changes_nothing_shared(daemon, client):
    """An array over a writer's buffer stayed writable after the seal: readers
    saw the stray write, and at the next restart the default recovery policy
    refused to start, so every object on the host was unavailable."""
    with client.writer("w", 4096) as w:
        kept = np.frombuffer(w.buffer, dtype=np.uint8)
        kept[:] = 1
    kept[:] = 255  # the stray write
    assert np.array_equal(client.get("w", as_="numpy"), np.full(4096, 1, dtype=np.uint8))
    client.put("bystander", np.ones(16, dtype=np.float32))
    daemon.kill()
    daemon.start()
    c = cistern.connect(daemon.socket)
    assert np.array_equal(c.get("w"), np.full(4096, 1, dtype=np.uint8))
    assert np.array_equal(c.get("bystander"), np.ones(16, dtype=np.float32))
