"""Driver foundations: the Instrument lifecycle, SCPI error queue, validators and every transport
(raw TCP, pyvisa-py TCPIP SOCKET, pyserial on a real pty, ZeroMQ REQ) against the emulated-server
scaffolding, with faults (timeout, garbage, dropped connection, error queue) and recovery."""

from __future__ import annotations

import time

import numpy as np
import pytest

from drivers.base import Identity, ScpiInstrument, parse_scpi_error, ramp_values
from drivers.errors import (
    ConnectionLost,
    DriverError,
    DriverTimeout,
    DriverValueError,
    InstrumentError,
    MalformedReply,
    NotConnected,
    WrongModel,
)
from drivers.testing import FakeStreamTransport, expected_protocol
from drivers.transport import (
    SerialTransport,
    TcpTransport,
    VisaTransport,
    ZmqReqTransport,
    parse_host_port,
)
from hil.emulated.server import PtyLineServer, TcpLineServer, ZmqRepServer


class AcmeScpi:
    """A tiny SCPI instrument: *IDN?, VOLT <v>, VOLT?, SYST:ERR?."""

    idn = "ACME Instruments,PS100,SN42,1.0"

    def __init__(self):
        self.volt = 0.0

    def answer(self, server, line: str):
        cmd = line.strip().upper()
        if cmd == "*IDN?":
            return self.idn
        if cmd == "SYST:ERR?":
            return server.errors.pop_reply()
        if cmd.startswith("VOLT "):
            v = float(cmd.split()[1])
            if v > 10:
                server.push_error(-222, "Data out of range")
            else:
                self.volt = v
            return None
        if cmd == "VOLT?":
            return f"{self.volt:.3f}"
        server.push_error(-113, "Undefined header")
        return None


class AcmeTcp(TcpLineServer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.dev = AcmeScpi()

    def handle_line(self, line):
        return self.dev.answer(self, line)


class AcmePty(PtyLineServer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.dev = AcmeScpi()

    def handle_line(self, line):
        return self.dev.answer(self, line)


class PS100(ScpiInstrument):
    """Driver under test, written as a real one would be."""

    KIND = "PS100"
    MODELS = (r"PS1\d\d",)

    def __init__(self, resource, *, kind="tcp", **kw):
        super().__init__(resource, **kw)
        self.kind = kind

    def _make_transport(self):
        if not isinstance(self.resource, str):
            return self.resource
        if self.kind == "tcp":
            return TcpTransport.from_address(self.resource, timeout_s=self.timeout_s)
        if self.kind == "visa":
            return VisaTransport(self.resource, timeout_s=self.timeout_s)
        return SerialTransport(self.resource, baudrate=115200, timeout_s=self.timeout_s)

    def set_voltage_v(self, voltage_v: float) -> None:
        v = self._check_range("voltage_v", voltage_v, 0.0, 10.0, "V")
        self._write_checked(f"VOLT {v:.3f}")

    def voltage_v(self) -> float:
        ans = self._query("VOLT?")
        try:
            return float(ans)
        except ValueError:
            raise MalformedReply("not a number", reply=ans, instrument=self.name, command="VOLT?") from None


def test_error_texts_and_attach():
    e = DriverTimeout("no reply within 1 s")
    assert str(e) == "no reply within 1 s"
    e.attach("PS100@x", "VOLT?").attach("other", "other")
    assert str(e) == "PS100@x: 'VOLT?': no reply within 1 s" and isinstance(e, TimeoutError)
    assert "reply b'\\x00zz'" in str(MalformedReply("bad", reply=b"\x00zz"))
    assert isinstance(DriverValueError("x"), ValueError) and isinstance(ConnectionLost("x"), ConnectionError)


def test_small_helpers():
    assert parse_scpi_error('-113,"Undefined header"') == (-113, "Undefined header")
    assert parse_scpi_error("+0,\"No error\"") == (0, "No error")
    with pytest.raises(MalformedReply):
        parse_scpi_error("what")
    assert Identity.from_idn("A,B").model == "B"
    with pytest.raises(MalformedReply):
        Identity.from_idn("nonsense")
    np.testing.assert_allclose(ramp_values(0.0, 1.0, 0.3), [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(ramp_values(5.0, 4.0, 2.0), [4.0])
    assert ramp_values(1.0, 1.0, 0.1).size == 0
    with pytest.raises(DriverValueError):
        ramp_values(0, 1, 0)
    assert parse_host_port("tcp://10.0.0.2:5555") == ("10.0.0.2", 5555)
    assert parse_host_port("host", 5025) == ("host", 5025)
    with pytest.raises(DriverValueError, match="port"):
        parse_host_port("host:99999")


def test_protocol_fake_stream_exact_bytes():
    with expected_protocol(PS100, [("*IDN?", AcmeScpi.idn), ("VOLT 1.500", None),
                                   ("SYST:ERR?", '0,"No error"')], stream=True) as ps:
        ps.set_voltage_v(1.5)
    t = FakeStreamTransport([("*IDN?", AcmeScpi.idn), ("VOLT 1.000", None)])
    ps = PS100(t)
    ps.open()
    with pytest.raises(AssertionError, match=r"wrote b'VOLT 2.000\\n', script expects b'VOLT 1.000\\n'"):
        ps.set_voltage_v(2)
    with pytest.raises(DriverValueError, match=r"voltage_v=11 V is outside 0..10 V"):
        ps.set_voltage_v(11)  # nothing reached the (exhausted) script


def test_fake_stream_matches_bytes_across_write_boundaries():
    t = FakeStreamTransport([("*IDN?", "ACME,PS100,1,2"), (b"\x05\x00", b"\x06"), (None, b"chunk"),
                             ("A", None), ("B", "b-reply")])
    t.open()
    t.write(b"*ID")  # one command in two writes: the reply waits for the rest
    assert t._pending == b""
    t.write(b"N?\n")
    assert t.read_until(b"\n") == b"ACME,PS100,1,2"  # terminator stripped
    t.write(b"\x05\x00A\nB\n")  # three commands in one write; the unprompted chunk follows the binary one
    assert t.read_exact(1) == b"\x06" and t.read_exact(5) == b"chunk"
    assert t.read_until(b"\n") == b"b-reply"
    assert bytes(t.sent) == b"*IDN?\n\x05\x00A\nB\n"
    t.assert_done()
    with pytest.raises(AssertionError, match="the script has ended"):
        t.write(b"X")


def test_fake_stream_reports_first_difference_half_sent_and_unread():
    t = FakeStreamTransport([("VOLT 1", "ok"), ("OUTP ON", None)])
    t.open()
    t.write(b"VOLT 1\nOUT")
    with pytest.raises(AssertionError, match=r"half-sent b'OUT'.*unread b'ok\\n'"):
        t.assert_done()
    with pytest.raises(AssertionError, match=r"exchange 1: driver wrote b'OUTX'"):
        t.write(b"X")
    t2 = FakeStreamTransport([("Q?", None)])
    t2.open()
    t2.write(b"Q?\n")
    with pytest.raises(DriverTimeout):  # no scripted reply: the read times out, it does not hang
        t2.read_until(b"\n", timeout_s=0.03)


@pytest.mark.parametrize("kind", ["tcp", "visa", "serial"])
def test_instrument_lifecycle_and_faults(kind):
    server = AcmePty() if kind == "serial" else AcmeTcp()
    with server:
        if kind == "tcp":
            res = server.address
        elif kind == "visa":
            res = f"TCPIP::127.0.0.1::{server.port}::SOCKET"
        else:
            res = server.port
        ps = PS100(res, kind=kind, timeout_s=1.0)
        assert not ps.is_open  # no I/O in __init__
        with pytest.raises(NotConnected, match="not open"):
            ps.voltage_v()
        with ps:
            assert ps.identity.model == "PS100" and ps.identity.serial == "SN42"
            ps.set_voltage_v(2.5)
            assert ps.voltage_v() == 2.5
            # the instrument refuses a value our validator would allow: the error queue says so
            server.dev.volt = 0.0
            with pytest.raises(InstrumentError, match="-113") as ei:
                ps._write_checked("BOGUS")
            assert ei.value.command == "BOGUS" and ei.value.code == -113
            # a silent instrument: timeout, named, within the deadline
            server.faults.set(silence=1)
            t0 = time.monotonic()
            with pytest.raises(DriverTimeout) as ei:
                ps.voltage_v()
            assert time.monotonic() - t0 < 3.0 and "'VOLT?'" in str(ei.value)
            assert str(ei.value).startswith("PS100@")
            # garbage reply
            server.faults.set(garbage=1)
            with pytest.raises(MalformedReply):
                ps.voltage_v()
            # slow but within the deadline
            server.faults.set(delay_s=0.1)
            assert ps.voltage_v() == 0.0
            server.faults.clear()
            if kind != "serial":
                server.faults.set(drop=1)
                # pyvisa-py reports a peer that closed a SOCKET resource as a timeout
                with pytest.raises(ConnectionLost if kind == "tcp" else (ConnectionLost, DriverTimeout)):
                    ps.voltage_v()
                ps.reconnect()
            else:
                ps.reconnect()
            ps.set_voltage_v(3.0)
            assert ps.voltage_v() == 3.0
        assert not ps.is_open
        ps.close()  # twice is fine


def test_wrong_model_refused_and_connection_refused():
    with AcmeTcp() as server:
        server.dev.idn = "ACME Instruments,XY9,1,1"
        ps = PS100(server.address)
        with pytest.raises(WrongModel, match="XY9"):
            ps.open()
        assert not ps.is_open
        port = server.port
    with pytest.raises(ConnectionLost, match="cannot connect") as ei:
        PS100(f"127.0.0.1:{port}", timeout_s=0.5).open()
    assert "'<connect>'" in str(ei.value)


class Echo(ZmqRepServer):
    def handle(self, request):
        return b"echo:" + request


def test_zmq_req_timeout_resets_socket_and_recovers():
    with Echo() as server:
        t = ZmqReqTransport(server.endpoint, timeout_s=0.3)
        t.open()
        assert t.request(b"a") == b"echo:a"
        server.faults.set(silence=1)
        t0 = time.monotonic()
        with pytest.raises(DriverTimeout):
            t.request(b"b")
        assert time.monotonic() - t0 < 2.0
        assert t.request(b"c") == b"echo:c"  # lazy pirate: the REQ socket was rebuilt
        server.faults.set(garbage=1)
        with pytest.raises(MalformedReply):
            t.query("d")
        t.close()
        with pytest.raises(NotConnected):
            t.request(b"e")


def test_tcp_transport_binary_reads():
    with AcmeTcp() as server:
        t = TcpTransport("127.0.0.1", server.port, timeout_s=0.3)
        t.open()
        t.write_line("*IDN?")
        head = t.read_exact(5)
        assert head == b"ACME "
        assert t.read_until(b"\n").startswith(b"Instruments,PS100")
        assert t.read_some(10, timeout_s=0.1) == b""
        with pytest.raises(DriverTimeout):
            t.read_exact(1)
        t.close()
        assert not t.is_open


def test_driver_error_is_base_of_all():
    for cls in (DriverTimeout, MalformedReply, InstrumentError, WrongModel, NotConnected, ConnectionLost,
                DriverValueError):
        assert issubclass(cls, DriverError)


class LengthPrefixedPty(PtyLineServer):
    """A binary framing on a pty: 1 length byte + payload; replies with the payload reversed."""

    def next_request(self, buf):
        if not buf or len(buf) < 1 + buf[0]:
            return None
        n = buf[0]
        req = bytes(buf[1:1 + n])
        del buf[:1 + n]
        return req

    def handle_line(self, req):
        return bytes([len(req)]) + req[::-1]


def test_binary_framing_on_pty_server():
    with LengthPrefixedPty() as server:
        t = SerialTransport(server.port, baudrate=115200, timeout_s=1.0)
        t.open()
        t.write(b"\x03abc" + b"\x02xy")
        assert t.read_exact(4) == b"\x03cba" and t.read_exact(3) == b"\x02yx"
        assert list(server.requests) == [b"abc", b"xy"]
        t.close()


def test_emulator_request_log_is_bounded():
    # the rig's AWG uploads ~1 MB a frame: an emulator keeps only its latest requests (a soak
    # found the unbounded list growing the rig by ~37 MB/s)
    from hil.emulated.server import REQUEST_HISTORY
    with LengthPrefixedPty() as server:
        t = SerialTransport(server.port, baudrate=115200, timeout_s=2.0)
        t.open()
        n = REQUEST_HISTORY + 200
        reqs = [b"\x02" + i.to_bytes(2, "big") for i in range(n)]
        for k in range(0, n, 100):
            t.write(b"".join(reqs[k:k + 100]))
            for _ in reqs[k:k + 100]:
                t.read_exact(3)
        assert len(server.requests) == REQUEST_HISTORY
        assert server.requests[-1] == (n - 1).to_bytes(2, "big")
        assert server.requests[0] == (n - REQUEST_HISTORY).to_bytes(2, "big")
        t.close()
