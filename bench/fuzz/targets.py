"""The fuzz targets: one function per parser, ``target(data: bytes) -> None``, plus seed inputs.

Each target feeds the bytes to the production parser and swallows only the exception types that
parser documents; any other exception propagates and is a finding (atheris reports it with the
input; ``tests/test_fuzz_regressions.py`` replays stored findings).  The functions are plain Python
so the regression test runs them without atheris.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

Target = Callable[[bytes], None]
TARGETS: dict[str, Target] = {}
SEEDS: dict[str, Callable[[], list[bytes]]] = {}


def target(name: str, seeds: Callable[[], list[bytes]]):
    def deco(fn: Target) -> Target:
        TARGETS[name] = fn
        SEEDS[name] = seeds
        return fn
    return deco


# -- link.payload ---------------------------------------------------------------------------

def _payload_seeds() -> list[bytes]:
    from link.payload import encode
    return [encode({"type": "sift", "block": 7}, {"slots": np.arange(5, dtype=np.uint64),
                                                   "basis": np.array([0, 1, 1], np.uint8)}),
            encode({}), encode({"x": [1, 2, {"y": None}]}, {"f": np.array([0.5, -1.0])})]


@target("payload", _payload_seeds)
def fuzz_payload(data: bytes) -> None:
    from link.payload import PayloadError, decode
    try:
        meta, arrays = decode(data)
    except PayloadError:
        return
    assert isinstance(meta, dict)
    for a in arrays.values():
        assert a.flags.writeable and a.ndim == 1


# -- drivers.picoquant: PTU header + T2 records -----------------------------------------------

def _ptu_seeds() -> list[bytes]:
    from drivers import picoquant as pq
    out = []
    for rt in (pq.RT_GENERIC_T2, pq.RT_HYDRAHARP_T2, pq.RT_PICOHARP300_T2):
        head = pq.encode_ptu_header([("HW_Type", -1, pq.TY_ANSISTRING, "MultiHarp 160"),
                                     ("MeasDesc_GlobalResolution", -1, pq.TY_FLOAT8, 5e-12),
                                     ("TTResultFormat_TTTRRecType", -1, pq.TY_INT8, rt),
                                     ("TTResult_NumberOfRecords", -1, pq.TY_INT8, 6),
                                     ("Some_Array", 2, pq.TY_FLOAT8ARRAY, np.array([1.0, 2.0])),
                                     ("Some_Wide", -1, pq.TY_WIDESTRING, "wide"),
                                     ("Some_Blob", -1, pq.TY_BINARYBLOB, b"\x01\x02\x03")])
        recs = np.array([0x02000010, 0x04000020, 0xFE000001, 0x02000005, 0x82000007, 0x7E000000],
                        "<u4")
        out.append(head + recs.tobytes())
    return out


@target("ptu", _ptu_seeds)
def fuzz_ptu(data: bytes) -> None:
    from drivers.errors import DriverError
    from drivers.picoquant import _decode_record_bytes, parse_ptu_header
    try:
        header = parse_ptu_header(data)
        rest = data[header.header_bytes:]
        for strict in (True, False):
            try:
                batch = _decode_record_bytes(header, rest, strict=strict, check_order=True, name="fuzz")
            except DriverError:
                continue
            assert batch.t_ps.dtype == np.int64 and batch.t_ps.size == batch.channel.size
        header.identity()
    except DriverError:  # PtuFormatError and MalformedReply
        return


# -- drivers.idq_id900.decode_timestamps ---------------------------------------------------------

def _id900_seeds() -> list[bytes]:
    t = np.array([10, 20, 20, 1 << 40], "<u8")
    pairs = np.array([[10, 0], [15, 0], [30, 1]], "<u8").reshape(-1)
    return [t.tobytes(), pairs.tobytes(), b""]


@target("id900", _id900_seeds)
def fuzz_id900(data: bytes) -> None:
    from drivers.errors import MalformedReply
    from drivers.idq_id900 import decode_timestamps
    for with_ref in (False, True):
        try:
            ts, ref = decode_timestamps(data, with_ref_index=with_ref)
        except MalformedReply:
            continue
        assert ts.dtype == np.int64 and (ts >= 0).all()
        if ts.size > 1 and not with_ref:
            assert (np.diff(ts) >= 0).all()


# -- reconciliation messages (postproc_c.make_side(...).feed) ------------------------------------

_KEYS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _keys(n: int) -> tuple[np.ndarray, np.ndarray]:
    if n not in _KEYS:
        rng = np.random.default_rng(n)
        a = rng.integers(0, 2, n).astype(np.uint8)
        _KEYS[n] = (a, a ^ (rng.random(n) < 0.03).astype(np.uint8))
    return _KEYS[n]


def _reconcile_seeds(method: str) -> Callable[[], list[bytes]]:
    def seeds() -> list[bytes]:
        from postproc_c.reconcile import make_side
        a, b = _keys(4096)
        sides = {"alice": make_side(method, "alice", a, 0.03, seed=1),
                 "bob": make_side(method, "bob", b, 0.03, seed=1)}
        out = []
        for _ in range(40):
            moved = False
            for src, dst in (("alice", "bob"), ("bob", "alice")):
                m = sides[src].next_message()
                if m is not None:
                    # control bytes: role that receives, messages exchanged before the injection
                    out.append(bytes([dst == "bob", len(out) % 8]) + m)
                    sides[dst].feed(m)
                    moved = True
            if not moved:
                break
        return out[:12]
    return seeds


def _fuzz_reconcile(method: str, data: bytes) -> None:
    from postproc_c import Error
    from postproc_c.reconcile import make_side
    if len(data) < 3:
        return
    victim = "bob" if data[0] & 1 else "alice"
    before = data[1] % 16
    a, b = _keys(4096)
    sides = {"alice": make_side(method, "alice", a, 0.03, seed=1),
             "bob": make_side(method, "bob", b, 0.03, seed=1)}

    def pump(steps: int) -> None:
        for _ in range(steps):
            moved = False
            for src, dst in (("alice", "bob"), ("bob", "alice")):
                m = sides[src].next_message()
                if m is not None:
                    try:
                        sides[dst].feed(m)
                    except Error:
                        pass  # the peer's state was changed by the injected message: a refusal is fine
                    moved = True
            if not moved:
                return

    pump(before)
    try:
        sides[victim].feed(data[2:])
    except Error:
        pass
    pump(200)  # the protocol goes on after the injected message; nothing may crash
    for s in sides.values():
        r = s.result()
        assert r.corrected.size == 4096 and r.leaked_bits >= 0


def _cascade(data: bytes) -> None:
    _fuzz_reconcile("cascade", data)


def _ldpc(data: bytes) -> None:
    _fuzz_reconcile("ldpc", data)


target("cascade", _reconcile_seeds("cascade"))(_cascade)
target("ldpc", _reconcile_seeds("ldpc"))(_ldpc)


# -- TOML: lab files and HIL scenarios --------------------------------------------------------

def _toml_seeds(paths: list[Path], fallback: bytes = b"") -> Callable[[], list[bytes]]:
    # The example files live in the repository, not in an installed package:
    # fall back to a small built-in seed so an installed tree still has one.
    return lambda: [p.read_bytes() for p in paths if p.exists()] or ([fallback] if fallback else [])


_LAB_SEED = b"""[lab]
name = "seed"

[alice.pattern_generator]
driver = "keysight_33500"
resource = "TCPIP0::127.0.0.1::5025::SOCKET"

[bob.polarization]
driver = "oz_epc400"
resource = "/dev/ttyUSB0"
"""


def _scenario_dir() -> Path:
    import hil  # the scenarios ship as package data of hil

    return Path(hil.__file__).resolve().parent / "scenarios"


def _toml(data: bytes) -> dict | None:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None  # load_lab / Scenario.load turn these into their own errors before parsing


@target("lab", _toml_seeds([ROOT / "examples" / "lab.toml", ROOT / "examples" / "emulated.toml"],
                          _LAB_SEED))
def fuzz_lab(data: bytes) -> None:
    from drivers.config import ConfigError, parse_lab
    d = _toml(data)
    if d is None:
        return
    try:
        parse_lab(d, "fuzz.toml")
    except ConfigError:
        return


@target("scenario", lambda: [p.read_bytes() for p in sorted(_scenario_dir().glob("*.toml"))])
def fuzz_scenario(data: bytes) -> None:
    from hil.scenario import Scenario, ScenarioError
    d = _toml(data)
    if d is None:
        return
    try:
        Scenario.from_dict(d, "fuzz.toml")
    except ScenarioError:
        return


def all_seeds(name: str) -> list[bytes]:
    return SEEDS[name]()


def _json_seed(obj) -> bytes:
    return json.dumps(obj).encode()



# -- classical-channel frames (link.messages.split_frame) and node files (link.config) ------------

def _wire_seeds() -> list[bytes]:
    from link.messages import MsgType, encode_header
    out = []
    for mt, lane, payload in ((MsgType.ACK, "proto", (5).to_bytes(8, "big")), (MsgType.RECON, "proto", b"xy"),
                              (MsgType.STOP, "ctrl", b"")):
        out.append(encode_header(mt, "alice", lane, 7, 3, len(payload)) + payload + bytes(8))
    return out


@target("wire", _wire_seeds)
def fuzz_wire(data: bytes) -> None:
    from link.messages import HEADER, TAG_LEN, WireError, split_frame
    try:
        fields, signed, tag = split_frame(data)
    except WireError:
        return
    assert len(signed) == HEADER.size + fields[5] and len(tag) == TAG_LEN


_NODE_TOML = b"""
[node]
role = "alice"
link_id = "lab-1"
psk = "alice.psk"
store = "alice.db"
[channel]
proto = "tcp://0.0.0.0:7100"
ctrl = "tcp://0.0.0.0:7101"
[protocol]
block_bits = 524288
intensities = [0.5, 0.1, 0.0002]
intensity_probs = [0.5, 0.3, 0.2]
[frontend]
lab = "lab.toml"
instrument = "pattern_generator"
frame_slots = 262144
clock_hz = 1e9
"""


@target("node_config", lambda: [_NODE_TOML])
def fuzz_node_config(data: bytes) -> None:
    from link.config import ConfigError, parse_node_file
    d = _toml(data)
    if d is None:
        return
    try:
        parse_node_file(d, "node.toml")
    except ConfigError:
        return


# -- the KME's JSON request bodies (ETSI GS QKD 014 enc_keys / dec_keys) ------------------------

def _kme_seeds() -> list[bytes]:
    return [_json_seed({"number": 2, "size": 256}), _json_seed({"number": "3", "size": "+128"}),
            _json_seed({"key_IDs": [{"key_ID": "bc490419-7d60-487f-adc1-4ddcc177c139"}]}),
            _json_seed({"number": 1, "additional_slave_SAE_IDs": ["x"]}), b"[]", b"{}"]


@target("kme", _kme_seeds)
def fuzz_kme(data: bytes) -> None:
    from types import SimpleNamespace

    from link.kme import Kme, KmeConfig, KmeError, dec_key_ids, parse_json_body
    try:
        body = parse_json_body(data)
    except KmeError as e:
        assert e.status == 400
        return
    cfg = SimpleNamespace(config=KmeConfig("KME_A", "KME_B", ("SAE_A",), {"SAE_A": ("SAE_B",)}))
    try:  # what the enc_keys POST handler does with the body
        n, s = Kme._parse_request(cfg, body.get("number"), body.get("size"),
                                  body.get("additional_slave_SAE_IDs"))
        assert n >= 1 and s >= 1
    except KmeError as e:
        assert e.status == 400
    try:  # and the dec_keys POST handler
        ids = dec_key_ids(body)
        assert isinstance(ids, list)
    except KmeError as e:
        assert e.status == 400


# -- instrument replies: every byte an instrument sends, through the production drivers ------------
# (module, class, write termination, read termination, reads after open()). The bytes after the
# first (which picks the driver) are what the instrument sends back, read as the driver reads its
# socket or serial line; nothing the driver writes is checked. Only DriverError may come out.
REPLY_DRIVERS = [
    ("drivers.keysight_awg", "Keysight33500", b"\n", b"\n", ("status", "error_queue")),
    ("drivers.single_quantum", "SingleQuantumSnspd", b"", b"\x17", ("status", "bias_currents_ua")),
    ("drivers.idq_id120", "IdqId120", b"\n", b"\n", ("status", "count_rates_hz")),
    ("drivers.oz_epc400", "OzEpc400", b"\r\n", b"\n", ("status", "get_actuators")),
    ("drivers.thorlabs_mpc320", "ThorlabsMpc320", b"\n", b"\n", ("status", "get_actuators")),
    ("drivers.picoquant", "PicoQuantStreamTagger", b"\n", b"\n", ("read_tags", "read_tags")),
]


def _reply_stream(data: bytes, wt: bytes, rt: bytes):
    from drivers.errors import DriverTimeout
    from drivers.transport import StreamTransport

    class ReplyStream(StreamTransport):
        """The instrument's side of the line: ``data``, then silence (an immediate timeout)."""

        def __init__(self):
            super().__init__(timeout_s=0.01, write_termination=wt, read_termination=rt)
            self._data = bytearray(data)
            self._open = False

        @property
        def description(self) -> str:
            return "fuzz-replies"

        @property
        def is_open(self) -> bool:
            return self._open

        def open(self) -> None:
            self._open = True

        def close(self) -> None:
            self._open = False

        def _send(self, data: bytes) -> None:
            pass

        def clear_input(self) -> None:
            pass        # the fuzz bytes stand for replies still to come, not stale input

        def _recv(self, max_bytes: int, timeout_s: float) -> bytes:
            if not self._data:
                raise DriverTimeout("no reply (end of the fuzz input)")
            out = bytes(self._data[:max_bytes])
            del self._data[:max_bytes]
            return out

    return ReplyStream()


def _reply_seeds() -> list[bytes]:
    """What the emulated twins answer to open() + the reads (recorded), and a T2 stream."""
    import importlib
    import tomllib

    from drivers.config import parse_lab
    from hil.emulated.lab import start_emulated_lab

    classes = [c for _, c, *_ in REPLY_DRIVERS]
    out = []
    lab = start_emulated_lab()
    try:
        cfg = parse_lab(tomllib.loads(lab.lab_toml()), "<lab>")
        for inst in cfg.instruments:
            drv = inst.build()
            if type(drv).__name__ not in classes:
                continue
            rec = bytearray()
            make = drv._make_transport

            def recording(make=make, rec=rec):
                t = make()
                recv = t._recv

                def rr(n, timeout_s, recv=recv):
                    b = recv(n, timeout_s)
                    rec.extend(b)
                    return b
                t._recv = rr
                return t
            drv._make_transport = recording
            drv.open()
            try:
                for name in REPLY_DRIVERS[classes.index(type(drv).__name__)][4]:
                    getattr(drv, name)()
            finally:
                drv.close()
            out.append(bytes([classes.index(type(drv).__name__)]) + bytes(rec))
    finally:
        lab.stop()
    pq = importlib.import_module("drivers.picoquant")
    i = classes.index("PicoQuantStreamTagger")
    out += [bytes([i]) + s for s in _ptu_seeds()]
    head = pq.encode_ptu_header([("HW_Type", -1, pq.TY_ANSISTRING, "HydraHarp 400"),
                                 ("MeasDesc_GlobalResolution", -1, pq.TY_FLOAT8, 1e-12),
                                 ("TTResultFormat_TTTRRecType", -1, pq.TY_INT8, pq.RT_HYDRAHARP_T2)])
    t = np.arange(1, 200, 7, dtype=np.uint32)
    recs = (((t % 4) << np.uint32(25)) | (t * 1000)).astype("<u4")   # channels 0-3, times in order
    out.append(bytes([i]) + head + recs.tobytes() + np.array([0xFE000001], "<u4").tobytes())
    return out


@target("replies", _reply_seeds)
def fuzz_replies(data: bytes) -> None:
    import importlib

    from drivers.errors import DriverError
    if not data:
        return
    mod, cls, wt, rt, reads = REPLY_DRIVERS[data[0] % len(REPLY_DRIVERS)]
    drv = getattr(importlib.import_module(mod), cls)(_reply_stream(data[1:], wt, rt), timeout_s=0.01)
    try:
        drv.open()
    except DriverError:
        return
    try:
        for name in reads:
            try:
                getattr(drv, name)()
            except DriverError:
                pass
    finally:
        drv.close()
