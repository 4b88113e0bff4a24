"""`qkd alice` / `qkd bob` refuse to start with a clear message (exit 2, no traceback) when
the lab engineer's set-up is wrong: an instrument role the lab file lacks, nothing listening at
an instrument's address, the channel's port already taken, a second node on the same key store.
Real files, real TCP ports on 127.0.0.1, the real driver and ZeroMQ sockets."""

from __future__ import annotations

import socket

import pytest
import zmq

from link.cli import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write(tmp_path, role="alice", instrument="pattern_generator", proto=None, awg_port=None):
    awg_port = awg_port or _free_port()        # nothing listens there
    (tmp_path / "lab.toml").write_text(
        '[lab]\nname = "t"\n\n[alice.pattern_generator]\ndriver = "keysight_33500"\n'
        f'resource = "127.0.0.1:{awg_port}"\ntimeout_s = 1.0\n')
    psk = str(tmp_path / f"{role}.psk")
    assert main(["psk", "--link-id", "L", "--out", psk, "--kib-per-stream", "1"]) == 0
    proto = proto or _free_port()
    p = tmp_path / f"{role}.toml"
    p.write_text(f"""
[node]
role = "{role}"
link_id = "L"
psk = "{role}.psk"
store = "{role}.db"
[channel]
proto = "tcp://127.0.0.1:{proto}"
ctrl = "tcp://127.0.0.1:{_free_port()}"
telemetry = "tcp://127.0.0.1:{_free_port()}"
[frontend]
lab = "lab.toml"
instrument = "{instrument}"
frame_slots = 4096
clock_hz = 1e9
dead_time_ns = 50.0
""")
    return p


def _run(capsys, p):
    rc = main(["alice", "--config", str(p)])
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    return rc, out.err


def test_unknown_instrument_role_names_the_key_and_the_roles_there(tmp_path, capsys):
    p = _write(tmp_path, instrument="awg")
    rc, err = _run(capsys, p)
    assert rc == 2
    assert str(p) in err and "frontend.instrument" in err and "alice.awg" in err
    assert "pattern_generator" in err, err


def test_nothing_listening_at_the_instrument_is_refused_naming_it(tmp_path, capsys):
    p = _write(tmp_path)
    rc, err = _run(capsys, p)
    assert rc == 2
    assert "cannot open alice.pattern_generator" in err and "lab.toml" in err, err
    assert "refused" in err.lower(), err


def test_channel_port_in_use_is_refused_naming_the_endpoint(tmp_path, capsys):
    ctx = zmq.Context()
    squatter = ctx.socket(zmq.ROUTER)
    squatter.setsockopt(zmq.LINGER, 0)
    port = squatter.bind_to_random_port("tcp://127.0.0.1")
    try:
        p = _write(tmp_path, proto=port)
        rc, err = _run(capsys, p)
        assert rc == 2
        assert "[channel]" in err and f"tcp://127.0.0.1:{port}" in err and "in use" in err, err
        # the store and its lock were released: the same node starts once the port is free
        # (it then fails on the instrument, which nothing serves: a clean exit 2 again)
        squatter.close(0)
        rc, err = _run(capsys, p)
        assert rc == 2 and "cannot open alice.pattern_generator" in err, err
    finally:
        squatter.close(0)
        ctx.term()


def test_a_second_node_on_the_same_store_is_refused(tmp_path, capsys):
    from link.commands import _lock_store

    p = _write(tmp_path)
    held = _lock_store(tmp_path / "alice.db")     # as a running `qkd alice` holds it
    assert isinstance(held, int)
    try:
        rc, err = _run(capsys, p)
        assert rc == 2 and "in use by another node process" in err and "alice.db" in err, err
    finally:
        import os
        os.close(held)
    rc, err = _run(capsys, p)                     # released: on to the (absent) instrument
    assert rc == 2 and "cannot open" in err, err


@pytest.mark.parametrize("role", ["alice"])
def test_missing_psk_names_the_file(tmp_path, capsys, role):
    p = _write(tmp_path, role=role)
    (tmp_path / f"{role}.psk").unlink()
    rc, err = _run(capsys, p)
    assert rc == 2 and f"{role}.psk" in err and "cannot read" in err, err


def test_monitor_with_a_bad_endpoint_names_it(capsys):
    assert main(["monitor", "--connect", "127.0.0.1:7110", "--count", "1"]) == 2
    err = capsys.readouterr().err
    assert "--connect 127.0.0.1:7110" in err and "tcp://HOST:PORT" in err and "Traceback" not in err, err
