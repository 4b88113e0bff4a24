"""ETSI GS QKD 014 V1.1.1 points an integrator's audit found, over real HTTPS with mutual TLS.

Same set-up as ``test_kme`` (two KMEs over identical SQLite stores, certificates
from ``link.pki``). Each test names the clause it checks. The extension and
POST-query tests failed before their fixes; the others check behaviour that
was already right (keys one node has not committed are never delivered, no key
material in any log record, a key_ID fetched by many at once goes out once).
"""

from __future__ import annotations

import base64
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from test_kme import LinkPeer, call, pair, pki  # noqa: F401 - pki, pair are fixtures

from link.keystore import KeyStore
from link.kme import Kme, KmeConfig, KmeServer, ReservationStore, server_ssl_context

ENC = "/api/v1/keys/SAE_B/enc_keys"


def test_unsupported_extension_mandatory_is_refused(pki, pair):  # noqa: F811
    # 6.2 Key request: extension_mandatory lists extensions the KME "shall handle or return
    # an error". This KME supports none: it served such requests as if the field were absent.
    body = {"number": 1,
            "extension_mandatory": [{"abc_route_type": "direct"}, {"abc_transfer_method": "qkd"}]}
    st, err = call(pki, pair["a"].port, "POST", ENC, body)
    assert st == 400, err
    assert "extension_mandatory" in err["message"]
    assert {"extension_unsupported": "abc_route_type"} in err["details"]
    assert pair["src_a"].available() == pair["src_b"].available() == 400  # nothing taken
    assert pair["peer_a"].calls == 0                                       # nothing reserved
    # malformed extension fields are a 400 too, not silently ignored
    for bad in ({"extension_mandatory": "abc"}, {"extension_optional": {"abc_max_age": 1}},
                {"additional_slave_SAE_IDs": "SAE_C"}):
        st, err = call(pki, pair["a"].port, "POST", ENC, bad)
        assert st == 400 and next(iter(bad)) in err["message"], (bad, err)
    # optional extensions may be ignored, and an empty mandatory list asks for nothing
    st, cont = call(pki, pair["a"].port, "POST", ENC,
                    {"number": 1, "extension_mandatory": [], "extension_optional": [{"abc_max_age": 30000}]})
    assert st == 200 and len(cont["keys"]) == 1


def test_post_with_number_and_size_in_the_query(pki, pair):  # noqa: F811
    # 5.3: a POST carries number/size in its JSON body. A client that put them in the query
    # string got default-size keys (256 bits) without a word; now they are used...
    st, cont = call(pki, pair["a"].port, "POST", ENC + "?number=2&size=512", {})
    assert st == 200
    assert [len(base64.b64decode(k["key"])) for k in cont["keys"]] == [64, 64]
    # ... and a contradiction between query and body is refused, with nothing taken
    n = pair["src_a"].available()
    st, err = call(pki, pair["a"].port, "POST", ENC + "?size=512", {"size": 1024})
    assert st == 400 and "size" in err["message"]
    assert pair["src_a"].available() == n
    # the same value in both places is fine
    st, cont = call(pki, pair["a"].port, "POST", ENC + "?size=512", {"size": 512})
    assert st == 200 and len(base64.b64decode(cont["keys"][0]["key"])) == 64


def test_keys_one_node_has_not_committed_are_never_delivered(pki, tmp_path):  # noqa: F811
    # DESIGN "Key store": keys are usable only after both sides confirmed the block. Alice
    # committed block 1, Bob holds it only prepared (the COMMIT has not reached him):
    # neither KME may hand out its keys, whichever SAE is the master, and nothing is taken.
    key = bytearray(os.urandom(32 * 8))
    st_a, st_b = KeyStore(tmp_path / "a.db", "L"), KeyStore(tmp_path / "b.db", "L")
    st_a.prepare(1, bytearray(key), 8 * len(key))
    st_a.commit(1)
    st_b.prepare(1, bytearray(key), 8 * len(key))
    peer_of_a, peer_of_b = LinkPeer(), LinkPeer()
    kme_a = Kme(KmeConfig("KME_A", "KME_B", ("SAE_A",), {"SAE_A": ("SAE_B",)}, master_share=0), st_a,
                ReservationStore(tmp_path / "ra.db"), peer_of_a)
    kme_b = Kme(KmeConfig("KME_B", "KME_A", ("SAE_B",), {"SAE_B": ("SAE_A",)}, master_share=1), st_b,
                ReservationStore(tmp_path / "rb.db"), peer_of_b)
    peer_of_a.kme, peer_of_b.kme = kme_b, kme_a
    with KmeServer(kme_a, server_ssl_context(pki / "KME_A.pem", pki / "KME_A.key", pki / "ca.pem")) as sa, \
            KmeServer(kme_b, server_ssl_context(pki / "KME_B.pem", pki / "KME_B.key", pki / "ca.pem")) as sb:
        st, err = call(pki, sa.port, "POST", ENC, {"number": 1})
        assert st == 503, err                         # Bob's KME cannot reserve what he lacks
        st, err = call(pki, sb.port, "POST", "/api/v1/keys/SAE_A/enc_keys", {"number": 1}, sae="SAE_B")
        assert st == 503, err                         # Bob's store has no usable key at all
        assert st_a.count() == 8 and st_b.count() == 0
        st_b.commit(1)                                # the COMMIT arrives
        st, cont = call(pki, sa.port, "POST", ENC, {"number": 2})
        assert st == 200
        st, dec = call(pki, sb.port, "POST", "/api/v1/keys/SAE_A/dec_keys",
                       {"key_IDs": [{"key_ID": k["key_ID"]} for k in cont["keys"]]}, sae="SAE_B")
        assert st == 200 and dec["keys"] == cont["keys"]
        assert base64.b64decode(cont["keys"][0]["key"]) == key[:32]  # the block's first key (share 0)
    assert st_a.count() == st_b.count() == 6
    for s in (st_a, st_b, kme_a.reservations, kme_b.reservations):
        s.close()


def test_no_key_material_in_any_log_record(pki, pair, caplog):  # noqa: F811
    # Every logger at DEBUG (ours, aiohttp's, asyncio's) while keys are delivered, refused,
    # and a peer fails: no delivered key appears in any record, as base64, hex or bytes.
    caplog.set_level(logging.DEBUG)
    a, b = pair["a"].port, pair["b"].port
    keys = []
    st, cont = call(pki, a, "POST", ENC, {"number": 3, "size": 512})
    keys += cont["keys"]
    st, cont = call(pki, a, "GET", ENC + "?number=2")
    keys += cont["keys"]
    ids = [{"key_ID": k["key_ID"]} for k in keys]
    st, dec = call(pki, b, "POST", "/api/v1/keys/SAE_A/dec_keys", {"key_IDs": ids[:4]}, sae="SAE_B")
    assert st == 200
    st, _ = call(pki, b, "POST", "/api/v1/keys/SAE_A/dec_keys", {"key_IDs": ids}, sae="SAE_B")
    assert st == 400      # the first four are used: refused, the fifth's cut bytes wiped
    pair["peer_a"].fail = True
    st, _ = call(pki, a, "POST", ENC, {"number": 1})
    assert st == 503
    assert any("enc_keys:" in r.getMessage() for r in caplog.records)  # the server thread is heard
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    for k in keys:
        raw = base64.b64decode(k["key"])
        for form in (k["key"], raw.hex(), repr(raw)[2:-1], k["key"][:16]):
            assert form not in text


def test_a_key_id_fetched_by_many_at_once_is_delivered_once(pki, pair):  # noqa: F811
    # 5.4: the slave's copy is erased on delivery; eight simultaneous fetches of one key_ID
    # (over separate TLS connections) get it exactly once, the others a 400 Error object.
    st, cont = call(pki, pair["a"].port, "POST", ENC, {"number": 1})
    body = {"key_IDs": [{"key_ID": cont["keys"][0]["key_ID"]}]}
    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(lambda _: call(pki, pair["b"].port, "POST", "/api/v1/keys/SAE_A/dec_keys", body,
                                          sae="SAE_B"), range(8)))
    assert sorted(st for st, _ in got) == [200] + [400] * 7
    assert [b for st, b in got if st == 200] == [cont]
    assert all("message" in b for st, b in got if st == 400)
