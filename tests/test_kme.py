"""ETSI GS QKD 014 conformance over real HTTPS with real certificates (mutual TLS).

Two KMEs (one per node) share identical key stores, as the link engine leaves
them; each serves its own SAE. A master SAE fetches keys from its KME, the
slave SAE fetches the same keys by ID from the other KME.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import sqlite3
import ssl
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from link.kme import Kme, KmeConfig, KmeError, KmeServer, ReservationStore, server_ssl_context
from link.pki import create_lab_pki, issue


class SqliteKeys:
    """A node's key store as the KME sees it: fixed-size keys in a real SQLite file."""

    unit_bits = 256

    def __init__(self, path: Path, keys: list[tuple[str, bytes]]) -> None:
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("CREATE TABLE IF NOT EXISTS keys (seq INTEGER PRIMARY KEY, id TEXT UNIQUE, key BLOB)")
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO keys (id, key) VALUES (?, ?)", keys)
        self.db.execute("COMMIT")
        self.lock = threading.Lock()

    def available(self) -> int:
        with self.lock:
            return self.db.execute("SELECT COUNT(*) FROM keys").fetchone()[0]

    def peek(self, count: int) -> list[str]:
        with self.lock:
            return [r[0] for r in self.db.execute("SELECT id FROM keys ORDER BY seq LIMIT ?", (count,))]

    def _rows(self, store_ids: Sequence[str]) -> list[bytearray]:   # the caller holds the lock
        out = []
        for sid in store_ids:
            row = self.db.execute("SELECT key FROM keys WHERE id=?", (sid,)).fetchone()
            if row is None:
                raise KeyError(sid)
            out.append(bytearray(row[0]))
        return out

    def read(self, store_ids: Sequence[str]) -> list[bytearray]:
        with self.lock:
            return self._rows(store_ids)

    def take(self, store_ids: Sequence[str]) -> list[bytearray]:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                out = self._rows(store_ids)
                self.db.executemany("DELETE FROM keys WHERE id=?", [(sid,) for sid in store_ids])
                self.db.execute("COMMIT")
                return out
            except BaseException:
                self.db.execute("ROLLBACK")
                raise


class LinkPeer:
    """The peer KME reached through the link; ``fail`` simulates a partition."""

    def __init__(self) -> None:
        self.kme: Kme | None = None
        self.fail = False
        self.calls = 0

    def reserve(self, master_sae: str, slave_sae: str, keys: list[dict]) -> None:
        self.calls += 1
        if self.fail:
            raise ConnectionError("link to the peer KME is down")
        assert self.kme is not None
        # what crosses the link is JSON: make it so here too
        self.kme.reserve_for_peer(master_sae, slave_sae, json.loads(json.dumps(keys)))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    create_lab_pki(d, kmes=["KME_A", "KME_B"], saes=["SAE_A", "SAE_B", "SAE_C"])
    return d


@pytest.fixture
def pair(pki, tmp_path):
    keys = [(f"blk0-{i:05d}", os.urandom(32)) for i in range(400)]
    src_a, src_b = SqliteKeys(tmp_path / "a.db", keys), SqliteKeys(tmp_path / "b.db", keys)
    peer_of_a, peer_of_b = LinkPeer(), LinkPeer()
    cfg_a = KmeConfig("KME_A", "KME_B", ("SAE_A", "SAE_C"), {"SAE_A": ("SAE_B",), "SAE_C": ()})
    cfg_b = KmeConfig("KME_B", "KME_A", ("SAE_B",), {"SAE_B": ("SAE_A",)})
    kme_a = Kme(cfg_a, src_a, ReservationStore(tmp_path / "ra.db"), peer_of_a)
    kme_b = Kme(cfg_b, src_b, ReservationStore(tmp_path / "rb.db"), peer_of_b)
    peer_of_a.kme, peer_of_b.kme = kme_b, kme_a
    srv_a = KmeServer(kme_a, server_ssl_context(pki / "KME_A.pem", pki / "KME_A.key", pki / "ca.pem"))
    srv_b = KmeServer(kme_b, server_ssl_context(pki / "KME_B.pem", pki / "KME_B.key", pki / "ca.pem"))
    srv_a.start()
    srv_b.start()
    yield {"a": srv_a, "b": srv_b, "kme_a": kme_a, "kme_b": kme_b, "src_a": src_a, "src_b": src_b,
           "peer_a": peer_of_a}
    srv_a.stop()
    srv_b.stop()


def call(pki: Path, port: int, method: str, path: str, body: object = None, sae: str | None = "SAE_A",
         raw: bytes | None = None):
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if sae:
        ctx.load_cert_chain(str(pki / f"{sae}.pem"), str(pki / f"{sae}.key"))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read() or b"null")
    conn.close()
    return out


def test_status_object(pki, pair):
    st, body = call(pki, pair["a"].port, "GET", "/api/v1/keys/SAE_B/status")
    assert st == 200
    assert body == {"source_KME_ID": "KME_A", "target_KME_ID": "KME_B", "master_SAE_ID": "SAE_A",
                    "slave_SAE_ID": "SAE_B", "key_size": 256, "stored_key_count": 400,
                    "max_key_count": 100_000, "max_key_per_request": 128, "max_key_size": 4096,
                    "min_key_size": 64, "max_SAE_ID_count": 0}


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_master_and_slave_get_identical_keys_once(pki, pair, method):
    a, b = pair["a"].port, pair["b"].port
    if method == "POST":
        st, cont = call(pki, a, "POST", "/api/v1/keys/SAE_B/enc_keys", {"number": 3, "size": 512})
    else:
        st, cont = call(pki, a, "GET", "/api/v1/keys/SAE_B/enc_keys?number=3&size=512")
    assert st == 200 and len(cont["keys"]) == 3
    for k in cont["keys"]:
        uuid.UUID(k["key_ID"])
        assert len(base64.b64decode(k["key"])) == 64
    ids = [k["key_ID"] for k in cont["keys"]]
    if method == "POST":
        st, dec = call(pki, b, "POST", "/api/v1/keys/SAE_A/dec_keys",
                       {"key_IDs": [{"key_ID": i} for i in ids]}, sae="SAE_B")
    else:
        st, dec = call(pki, b, "GET", "/api/v1/keys/SAE_A/dec_keys?" + "&".join(f"key_ID={i}" for i in ids),
                       sae="SAE_B")
    assert st == 200
    assert dec["keys"] == cont["keys"]  # identical keys, same IDs, same order
    # both stores consumed the same 6 store keys; the key is gone on both sides
    assert pair["src_a"].available() == pair["src_b"].available() == 400 - 6
    st, again = call(pki, b, "POST", "/api/v1/keys/SAE_A/dec_keys",
                     {"key_IDs": [{"key_ID": ids[0]}]}, sae="SAE_B")
    assert st == 400 and "message" in again


@pytest.mark.parametrize("body,fragment", [
    ({"number": 0}, "number"), ({"number": -1}, "number"), ({"number": "abc"}, "number"),
    ({"number": 129}, "number"), ({"size": 0}, "size"), ({"size": 100}, "size"),
    ({"size": 8192}, "size"), ({"size": "x"}, "size"), ({"number": True}, "number"),
    ({"additional_slave_SAE_IDs": ["SAE_X"]}, "additional_slave_SAE_IDs"),
])
def test_bad_key_requests_get_400(pki, pair, body, fragment):
    st, err = call(pki, pair["a"].port, "POST", "/api/v1/keys/SAE_B/enc_keys", body)
    assert st == 400
    assert fragment in err["message"]
    assert pair["src_a"].available() == 400


def test_bad_json_and_bad_key_ids_get_400(pki, pair):
    a, b = pair["a"].port, pair["b"].port
    st, err = call(pki, a, "POST", "/api/v1/keys/SAE_B/enc_keys", raw=b"{not json")
    assert st == 400 and "JSON" in err["message"]
    st, err = call(pki, b, "POST", "/api/v1/keys/SAE_A/dec_keys", {"key_IDs": [{"key_ID": "nope"}]},
                   sae="SAE_B")
    assert st == 400 and "UUID" in err["message"]
    st, err = call(pki, b, "POST", "/api/v1/keys/SAE_A/dec_keys",
                   {"key_IDs": [{"key_ID": str(uuid.uuid4())}]}, sae="SAE_B")
    assert st == 400
    st, err = call(pki, b, "POST", "/api/v1/keys/SAE_A/dec_keys", {"key_IDs": []}, sae="SAE_B")
    assert st == 400


def test_blank_or_equal_sae_ids_get_400(pki, pair):
    st, err = call(pki, pair["a"].port, "GET", "/api/v1/keys/SAE_A/status")
    assert st == 400 and "differ" in err["message"]
    st, err = call(pki, pair["a"].port, "GET", "/api/v1/keys/%20/status")
    assert st == 400 and "blank" in err["message"]


def test_wrong_or_missing_certificate(pki, pair, tmp_path):
    # SAE_C is served by KME_A but has no link to SAE_B
    st, err = call(pki, pair["a"].port, "GET", "/api/v1/keys/SAE_B/status", sae="SAE_C")
    assert st == 401
    # SAE_B's certificate at KME_A: not an SAE of this KME
    st, err = call(pki, pair["a"].port, "POST", "/api/v1/keys/SAE_A/enc_keys", {"number": 1}, sae="SAE_B")
    assert st == 401
    # no client certificate at all: the spec's 401 with an Error object
    st, err = call(pki, pair["a"].port, "GET", "/api/v1/keys/SAE_B/status", sae=None)
    assert st == 401 and "certificate" in err["message"]
    # a certificate from another CA does not get past the handshake
    other = tmp_path / "other"
    create_lab_pki(other, kmes=[], saes=["SAE_A"])
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.load_cert_chain(str(other / "SAE_A.pem"), str(other / "SAE_A.key"))
    conn = http.client.HTTPSConnection("127.0.0.1", pair["a"].port, context=ctx, timeout=10)
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException, OSError)):
        conn.request("GET", "/api/v1/keys/SAE_B/status")
        conn.getresponse().read()


def test_dec_keys_by_other_sae_is_refused(pki, pair, tmp_path):
    st, cont = call(pki, pair["a"].port, "POST", "/api/v1/keys/SAE_B/enc_keys", {"number": 1})
    kid = cont["keys"][0]["key_ID"]
    # an SAE that KME_B does not serve cannot fetch SAE_B's key there
    st, err = call(pki, pair["b"].port, "POST", "/api/v1/keys/SAE_A/dec_keys",
                   {"key_IDs": [{"key_ID": kid}]}, sae="SAE_C")
    assert st == 401
    # and the key is still there for SAE_B
    st, dec = call(pki, pair["b"].port, "POST", "/api/v1/keys/SAE_A/dec_keys",
                   {"key_IDs": [{"key_ID": kid}]}, sae="SAE_B")
    assert st == 200 and dec["keys"] == cont["keys"]


def test_link_down_gives_503_and_loses_nothing(pki, pair):
    pair["peer_a"].fail = True
    st, err = call(pki, pair["a"].port, "POST", "/api/v1/keys/SAE_B/enc_keys", {"number": 2})
    assert st == 503
    assert pair["src_a"].available() == pair["src_b"].available() == 400
    pair["peer_a"].fail = False
    st, cont = call(pki, pair["a"].port, "POST", "/api/v1/keys/SAE_B/enc_keys", {"number": 2})
    assert st == 200


def test_exhaustion_gives_503(pki, pair):
    st, err = call(pki, pair["a"].port, "POST", "/api/v1/keys/SAE_B/enc_keys", {"number": 128, "size": 4096})
    assert st == 503 and "not enough key" in err["message"]


def test_lost_answer_then_regrouped_request_strands_nothing(pair):
    # The peer reserved, but the master crashed before delivering. The master's
    # next request (another size) regroups the same store keys: the peer must
    # move them to the new reservation, not refuse and not keep both.
    kme_a, kme_b = pair["kme_a"], pair["kme_b"]
    ids = pair["src_a"].peek(2)
    from link.kme import derive_key_id
    kme_b.reserve_for_peer("SAE_A", "SAE_B", [{"key_ID": derive_key_id(ids[:1], 256), "store_IDs": ids[:1],
                                              "size": 256}])
    cont = kme_a.enc_keys("SAE_A", "SAE_B", number=1, size=512)
    dec = kme_b.dec_keys("SAE_B", "SAE_A", [cont["keys"][0]["key_ID"]])
    assert dec["keys"] == cont["keys"]
    assert kme_b.reservations.count() == 0
    with pytest.raises(KmeError):
        kme_b.dec_keys("SAE_B", "SAE_A", [derive_key_id(ids[:1], 256)])


def test_concurrent_requests_never_share_a_key(pki, pair):
    a, b = pair["a"].port, pair["b"].port

    def fetch(_):
        st, cont = call(pki, a, "POST", "/api/v1/keys/SAE_B/enc_keys", {"number": 4})
        return cont["keys"] if st == 200 else []

    with ThreadPoolExecutor(8) as ex:
        batches = list(ex.map(fetch, range(40)))
    got = [k for batch in batches for k in batch]
    assert len(got) == 160
    assert len({k["key_ID"] for k in got}) == 160
    assert len({k["key"] for k in got}) == 160
    st, dec = call(pki, b, "POST", "/api/v1/keys/SAE_A/dec_keys",
                   {"key_IDs": [{"key_ID": k["key_ID"]} for k in got[:129]]}, sae="SAE_B")
    assert st == 400  # more than max_key_per_request, nothing delivered
    dec_keys = []
    for i in range(0, 160, 80):
        st, dec = call(pki, b, "POST", "/api/v1/keys/SAE_A/dec_keys",
                       {"key_IDs": [{"key_ID": k["key_ID"]} for k in got[i:i + 80]]}, sae="SAE_B")
        assert st == 200
        dec_keys += dec["keys"]
    assert dec_keys == got
    assert pair["src_a"].available() == pair["src_b"].available() == 400 - 160


def test_config_validation():
    with pytest.raises(ValueError, match="key_size"):
        KmeConfig("A", "B", ("S",), {}, key_size=100)
    with pytest.raises(ValueError, match="cn"):
        issue(Path("/nonexistent"), "", server=False)


def test_kme_pair_serves_identical_keys_from_the_engine_key_stores(pki, tmp_path):
    # Keys distilled by both nodes (a real run of the engine), then delivered by
    # each node's KME from its own store: master and slave SAEs get the same keys.
    from link.keystore import KeyStore
    from link.pipeline import run_local

    s = run_local(None, blocks=1, duration_s=120, workdir=tmp_path, instruments="model")
    assert s["keys_identical"] and s["secret_bits"] > 0
    link_id = "hil-metro-25km"
    st_a = KeyStore(tmp_path / "alice.db", link_id)
    st_b = KeyStore(tmp_path / "bob.db", link_id)
    n0 = st_a.available()
    assert n0 == st_b.available() > 10
    peer_of_a, peer_of_b = LinkPeer(), LinkPeer()
    kme_a = Kme(KmeConfig("KME_A", "KME_B", ("SAE_A",), {"SAE_A": ("SAE_B",)}), st_a,
                ReservationStore(tmp_path / "ra.db"), peer_of_a)
    kme_b = Kme(KmeConfig("KME_B", "KME_A", ("SAE_B",), {"SAE_B": ("SAE_A",)}), st_b,
                ReservationStore(tmp_path / "rb.db"), peer_of_b)
    peer_of_a.kme, peer_of_b.kme = kme_b, kme_a
    with KmeServer(kme_a, server_ssl_context(pki / "KME_A.pem", pki / "KME_A.key", pki / "ca.pem")) as sa, \
            KmeServer(kme_b, server_ssl_context(pki / "KME_B.pem", pki / "KME_B.key", pki / "ca.pem")) as sb:
        st, status = call(pki, sa.port, "GET", "/api/v1/keys/SAE_B/status")
        assert st == 200 and status["stored_key_count"] == n0
        st, cont = call(pki, sa.port, "POST", "/api/v1/keys/SAE_B/enc_keys", {"number": 5, "size": 512})
        assert st == 200
        st, dec = call(pki, sb.port, "POST", "/api/v1/keys/SAE_A/dec_keys",
                       {"key_IDs": [{"key_ID": k["key_ID"]} for k in cont["keys"]]}, sae="SAE_B")
        assert st == 200 and dec["keys"] == cont["keys"]
    assert st_a.available() == st_b.available() == n0 - 10
    assert st_a.fingerprint() == st_b.fingerprint()
    st_a.close()
    st_b.close()
