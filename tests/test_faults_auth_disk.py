"""A full disk under the authentication pool's state during a running link (issue 9, "Faults").

Bob runs in his own process (``bench.node_restart``); once keys flow his process
may no longer write past 64 KiB into any file (RLIMIT_FSIZE: the kernel answers
EFBIG, as a full file system would). The pool records the last accepted
sequence number of every message before acting on it, so it hits the full disk
first: Bob must stop with the ``key_store`` alarm naming his store file and
saying what could not be written (not ``internal_error`` or a bare "channel
failed"), Alice keeps running, and once Bob restarts with room the link resumes
with identical stores and no committed key lost.
"""

from __future__ import annotations

from bench.node_restart import disk_full_run


def test_full_disk_under_the_auth_pool_state_is_a_key_store_alarm_and_recovers(tmp_path):
    lines: list[str] = []
    r = disk_full_run(tmp_path, "bob", report=lines.append)
    log = "\n".join(lines)
    assert r["stopped"] and r["returncode"] == 0 and r["stop_s"] < 30, log   # stopped by itself, cleanly
    kinds = {a.split(":")[0] for a in r["alarms"]}
    assert kinds == {"key_store"}, log                      # no internal_error, no channel alarm
    first = r["alarms"][0]
    assert str(tmp_path / "bob.db") in first and "authentication state" in first, log
    assert r["peer_alive"], log
    assert r["resumed"] and r["clean_exit"] and r["identical"], log
    assert r["lost"] == [] and r["keys"]["alice"] > 0, log
