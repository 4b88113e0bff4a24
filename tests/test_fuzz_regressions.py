"""Every input the fuzzers (bench/fuzz) or their review turned up, replayed through the plain target
functions (no atheris needed), and the fixed behaviour of each parser asserted directly."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from bench.fuzz.targets import SEEDS, TARGETS
from drivers.errors import MalformedReply
from drivers.picoquant import (
    RT_GENERIC_T2,
    PtuFormatError,
    T2Decoder,
    _decode_record_bytes,
    parse_ptu_header,
)
from link.kme import KmeError, _as_int, dec_key_ids, parse_json_body
from link.payload import PayloadError, decode

REG = Path(__file__).resolve().parent.parent / "bench" / "fuzz" / "regressions"
CASES = sorted(REG.glob("*/*"))


def test_regression_corpus_is_there():
    assert {p.parent.name for p in CASES} >= {"ptu", "payload", "kme"}
    assert set(TARGETS) == {"payload", "ptu", "id900", "cascade", "ldpc", "lab", "scenario", "kme",
                            "wire", "node_config", "replies"}


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.name}" for p in CASES])
def test_stored_input_is_handled(path):
    TARGETS[path.parent.name](path.read_bytes())  # raises only on an undocumented exception


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_pass_their_target(name):
    seeds = SEEDS[name]()
    assert seeds
    for s in seeds:
        TARGETS[name](s)


def _read(name: str) -> bytes:
    return (REG / name).read_bytes()


def test_ptu_header_values_of_the_wrong_type_are_format_errors():
    # found by atheris: a tyEmpty8 MeasDesc_GlobalResolution gave TypeError from float(None)
    for case, match in [("ptu/resolution-empty-tag", "MeasDesc_GlobalResolution"),
                        ("ptu/resolution-inf", "MeasDesc_GlobalResolution"),
                        ("ptu/resolution-huge", "MeasDesc_GlobalResolution"),
                        ("ptu/record-type-float", "TTResultFormat_TTTRRecType: expected an integer")]:
        data = _read(case)
        h = parse_ptu_header(data)
        with pytest.raises(PtuFormatError, match=match):
            _decode_record_bytes(h, data[h.header_bytes:], strict=True, check_order=True, name="x")
    for bad in (float("inf"), float("nan"), 0.0, 2e9):
        with pytest.raises(PtuFormatError, match="resolution"):
            T2Decoder(RT_GENERIC_T2, bad)


def test_ptu_overflow_pileup_is_refused_not_wrapped():
    data = _read("ptu/overflow-pileup")
    h = parse_ptu_header(data)
    for check_order in (True, False):
        with pytest.raises(MalformedReply, match="2\\^62"):
            _decode_record_bytes(h, data[h.header_bytes:], strict=True, check_order=check_order, name="x")


def test_payload_deep_nesting_and_bool_length():
    with pytest.raises(PayloadError, match="nested too deeply"):
        decode(_read("payload/deep-nesting"))
    with pytest.raises(PayloadError, match="bad array entry"):
        decode(_read("payload/bool-length"))
    h = b'{"meta":{},"arrays":[["a","u1",1]]}'
    assert decode(struct.pack("<I", len(h)) + h + b"x")[1]["a"].tolist() == [120]


def test_kme_bodies_give_400_not_500():
    for case in ("kme/deep-nesting",):
        with pytest.raises(KmeError) as ei:
            parse_json_body(_read(case))
        assert ei.value.status == 400
    for case in ("kme/superscript-digit", "kme/double-sign", "kme/huge-int-string"):
        body = parse_json_body(_read(case))
        (key, value), = body.items()
        with pytest.raises(KmeError) as ei:
            _as_int(value, key, 1)
        assert ei.value.status == 400 and key in str(ei.value.message)
    assert [_as_int(v, "n", 0) for v in ("12", " +7 ", "-3", 5, None)] == [12, 7, -3, 5, 0]
    assert dec_key_ids(json.loads('{"key_IDs": [{"key_ID": "a"}, {}]}')) == ["a", None]
    with pytest.raises(KmeError):
        dec_key_ids({"key_IDs": ["a"]})


def test_mpc320_data_packet_too_short_for_its_channel_word_is_a_malformed_reply():
    # found by atheris ('replies'): a one-byte data packet answering a paddle status request gave
    # struct.error from the channel-word read in ThorlabsMpc320._wait_for
    from bench.fuzz.targets import REPLY_DRIVERS, _reply_stream
    from drivers.thorlabs_mpc320 import ThorlabsMpc320

    data = _read("replies/mpc320-one-byte-data-packet")
    assert REPLY_DRIVERS[data[0] % len(REPLY_DRIVERS)][1] == "ThorlabsMpc320"
    drv = ThorlabsMpc320(_reply_stream(data[1:], b"\n", b"\n"), timeout_s=0.01)
    drv.open()
    try:
        with pytest.raises(MalformedReply, match="no channel word"):
            drv.get_actuators()
    finally:
        drv.close()
