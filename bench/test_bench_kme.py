"""KME load test (bounded, loopback only): concurrent enc_keys then dec_keys over mutual TLS.

Reports requests/s and latency percentiles, and checks that no key is handed
out twice and none is lost: every key the master SAE got is fetched once by
the slave SAE, identical, and both stores shrink by exactly what was served.
The baseline in the group is the same number of status calls (TLS round trip
with no key work), measured in the same run.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench.common import record
from link.kme import Kme, KmeConfig, KmeServer, ReservationStore, server_ssl_context
from link.pki import create_lab_pki

N_KEYS = 4000
CLIENTS = 8
REQUESTS = 200          # enc_keys requests, 4 keys each
KEYS_PER_REQ = 4


class _Store:
    """A key store with identical content on both nodes (SQLite, as the engine's)."""

    unit_bits = 256

    def __init__(self, path, keys):
        import sqlite3
        import threading

        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("CREATE TABLE k (seq INTEGER PRIMARY KEY, id TEXT UNIQUE, key BLOB)")
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO k (id, key) VALUES (?, ?)", keys)
        self.db.execute("COMMIT")
        self.lock = threading.Lock()

    def available(self):
        with self.lock:
            return self.db.execute("SELECT COUNT(*) FROM k").fetchone()[0]

    def peek(self, n):
        with self.lock:
            return [r[0] for r in self.db.execute("SELECT id FROM k ORDER BY seq LIMIT ?", (n,))]

    def _rows(self, ids):          # the caller holds the lock
        out = []
        for i in ids:
            row = self.db.execute("SELECT key FROM k WHERE id=?", (i,)).fetchone()
            if row is None:
                raise KeyError(i)
            out.append(bytearray(row[0]))
        return out

    def read(self, ids):
        with self.lock:
            return self._rows(ids)

    def take(self, ids):
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                out = self._rows(ids)
            except KeyError:
                self.db.execute("ROLLBACK")
                raise
            self.db.executemany("DELETE FROM k WHERE id=?", [(i,) for i in ids])
            self.db.execute("COMMIT")
            return out


class _Peer:
    def __init__(self):
        self.kme = None

    def reserve(self, master, slave, keys):
        self.kme.reserve_for_peer(master, slave, json.loads(json.dumps(keys)))


def _ctx(pki, sae):
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.load_cert_chain(str(pki / f"{sae}.pem"), str(pki / f"{sae}.key"))
    return ctx


def _call(ctx, port, method, path, body=None):
    t0 = time.perf_counter()
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
    r = conn.getresponse()
    out = r.status, json.loads(r.read())
    conn.close()
    return out, time.perf_counter() - t0


@pytest.fixture(scope="module")
def kme_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("kme-load")
    create_lab_pki(d, kmes=["KME_A", "KME_B"], saes=["SAE_A", "SAE_B"])
    keys = [(f"k{i:06d}", os.urandom(32)) for i in range(N_KEYS)]
    sa, sb = _Store(d / "a.db", keys), _Store(d / "b.db", keys)
    pa, pb = _Peer(), _Peer()
    ka = Kme(KmeConfig("KME_A", "KME_B", ("SAE_A",), {"SAE_A": ("SAE_B",)}), sa,
             ReservationStore(d / "ra"), pa)
    kb = Kme(KmeConfig("KME_B", "KME_A", ("SAE_B",), {"SAE_B": ("SAE_A",)}), sb,
             ReservationStore(d / "rb"), pb)
    pa.kme, pb.kme = kb, ka
    srv_a = KmeServer(ka, server_ssl_context(d / "KME_A.pem", d / "KME_A.key", d / "ca.pem"))
    srv_b = KmeServer(kb, server_ssl_context(d / "KME_B.pem", d / "KME_B.key", d / "ca.pem"))
    srv_a.start()
    srv_b.start()
    yield d, srv_a.port, srv_b.port, sa, sb
    srv_a.stop()
    srv_b.stop()


def test_kme_status_baseline(benchmark, kme_pair):
    pki, pa, _, _, _ = kme_pair
    ctx = _ctx(pki, "SAE_A")

    def run():
        with ThreadPoolExecutor(CLIENTS) as ex:
            return list(ex.map(lambda _: _call(ctx, pa, "GET", "/api/v1/keys/SAE_B/status"), range(REQUESTS)))

    benchmark.group = "kme-load"
    res = benchmark.pedantic(run, rounds=1, iterations=1)
    assert all(st == 200 for (st, _), _ in res)
    record(benchmark, units=REQUESTS, unit="req", baseline=True, note="status calls, same TLS set-up")


def test_kme_enc_dec_load(benchmark, kme_pair):
    pki, pa, pb, sa, sb = kme_pair
    ca, cb = _ctx(pki, "SAE_A"), _ctx(pki, "SAE_B")
    before = sa.available()
    out = {}

    def run():
        with ThreadPoolExecutor(CLIENTS) as ex:
            enc = list(ex.map(lambda _: _call(ca, pa, "POST", "/api/v1/keys/SAE_B/enc_keys",
                                              {"number": KEYS_PER_REQ}), range(REQUESTS)))

            def dec(item):
                (st, cont), _ = item
                return _call(cb, pb, "POST", "/api/v1/keys/SAE_A/dec_keys",
                             {"key_IDs": [{"key_ID": k["key_ID"]} for k in cont["keys"]]})
            decs = list(ex.map(dec, enc))
        out.update(enc=enc, dec=decs)
        return len(enc) + len(decs)

    benchmark.group = "kme-load"
    benchmark.pedantic(run, rounds=1, iterations=1)
    enc, dec = out["enc"], out["dec"]
    assert all(st == 200 for (st, _), _ in enc) and all(st == 200 for (st, _), _ in dec)
    got = [k for (_, c), _ in enc for k in c["keys"]]
    fetched = [k for (_, c), _ in dec for k in c["keys"]]
    assert len(got) == REQUESTS * KEYS_PER_REQ == len({k["key_ID"] for k in got})
    assert sorted(got, key=lambda k: k["key_ID"]) == sorted(fetched, key=lambda k: k["key_ID"])
    assert sa.available() == sb.available() == before - len(got)     # none lost, none twice
    lat = sorted(t for _, t in enc + dec)
    record(benchmark, units=2 * REQUESTS, unit="req", note=f"{CLIENTS} clients, {KEYS_PER_REQ} keys/request",
           latency_ms_p50=1e3 * statistics.median(lat), latency_ms_p99=1e3 * lat[int(0.99 * (len(lat) - 1))],
           keys=len(got))


# -- reservations over the link's authenticated channel ------------------------------------------
# Two real nodes (run_local, ZeroMQ on 127.0.0.1) keep distilling while SAEs take keys. The
# same enc_keys + dec_keys traffic runs twice on the same stores: once with the KMEs' peer call
# in process (baseline: what the load test above measures) and once with the reservation
# crossing the classical channel (link.kme_link.ChannelPeer). The ratio is the channel's cost.

LINK_REQUESTS = 60


@pytest.fixture(scope="module")
def link_pair(tmp_path_factory):
    import threading

    from hil.model import LinkModel
    from link.config import KmeSettings
    from link.pipeline import config_for_scenario, run_local
    from link.services import start_kme

    d = tmp_path_factory.mktemp("kme-link")
    create_lab_pki(d, kmes=["KME_A", "KME_B"], saes=["SAE_A", "SAE_B"])
    ready, stop, box = threading.Event(), threading.Event(), {}

    def attach(nodes):
        box["nodes"] = nodes
        for role, me, peer, sae, partner in (("alice", "KME_A", "KME_B", "SAE_A", "SAE_B"),
                                             ("bob", "KME_B", "KME_A", "SAE_B", "SAE_A")):
            s = KmeSettings(me, peer, "127.0.0.1", 0, d / f"{me}.pem", d / f"{me}.key", d / "ca.pem",
                            d / f"{role}-kme.db", {sae: (partner,)})
            box[role] = start_kme(s, nodes[role].store, role, node=nodes[role])
        ready.set()
        return lambda: [box[r].close() for r in ("alice", "bob")]

    cfg = config_for_scenario(LinkModel(None).scenario)
    t = threading.Thread(target=lambda: box.setdefault("summary", run_local(
        None, config=cfg, blocks=1000, duration_s=600, workdir=d, transport="tcp", stop_event=stop,
        attach=attach)))
    t.start()
    assert ready.wait(60)
    nodes = box["nodes"]
    need = 2 * LINK_REQUESTS * KEYS_PER_REQ + 100    # both runs, from share 0 (half the store)
    end = time.monotonic() + 300
    while min(nodes[r].store.available(0) for r in ("alice", "bob")) < need:
        assert time.monotonic() < end, "not enough key distilled for the KME link bench"
        time.sleep(0.2)
    yield d, box
    stop.set()
    t.join(60)


def _enc_dec(pki, pa, pb, n):
    ca, cb = _ctx(pki, "SAE_A"), _ctx(pki, "SAE_B")
    with ThreadPoolExecutor(CLIENTS) as ex:
        enc = list(ex.map(lambda _: _call(ca, pa, "POST", "/api/v1/keys/SAE_B/enc_keys",
                                          {"number": KEYS_PER_REQ}), range(n)))
        dec = list(ex.map(lambda item: _call(cb, pb, "POST", "/api/v1/keys/SAE_A/dec_keys", {
            "key_IDs": [{"key_ID": k["key_ID"]} for k in item[0][1]["keys"]]}), enc))
    assert all(st == 200 for (st, _), _ in enc + dec)
    got = [k for (_, c), _ in enc for k in c["keys"]]
    assert got == [k for (_, c), _ in dec for k in c["keys"]] and len({k["key_ID"] for k in got}) == len(got)
    return sorted(t for _, t in enc + dec)


def test_kme_link_in_process_peer_baseline(benchmark, link_pair):
    d, box = link_pair
    a, b = box["alice"], box["bob"]
    # the same KMEs and stores with the peer call made in process (what the load test uses)
    ka = Kme(a.kme.config, a.kme.source, ReservationStore(d / "ra-direct.db"), None)
    kb = Kme(b.kme.config, b.kme.source, ReservationStore(d / "rb-direct.db"), None)
    pa_, pb_ = _Peer(), _Peer()
    pa_.kme, pb_.kme = kb, ka
    ka.peer, kb.peer = pa_, pb_
    with KmeServer(ka, a.server.ssl_context) as sa, KmeServer(kb, b.server.ssl_context) as sb:
        benchmark.group = "kme-link"
        lat = benchmark.pedantic(lambda: _enc_dec(d, sa.port, sb.port, LINK_REQUESTS), rounds=1, iterations=1)
    record(benchmark, units=2 * LINK_REQUESTS, unit="req", baseline=True,
           note="peer KME called in process; nodes distilling meanwhile",
           latency_ms_p50=1e3 * statistics.median(lat))


def test_kme_link_reservation_over_channel(benchmark, link_pair):
    d, box = link_pair
    benchmark.group = "kme-link"
    lat = benchmark.pedantic(lambda: _enc_dec(d, box["alice"].server.port, box["bob"].server.port,
                                              LINK_REQUESTS), rounds=1, iterations=1)
    pc = box["alice"].peer.counters
    assert pc["timeouts"] == 0 and box["bob"].peer.counters["requests_served"] >= LINK_REQUESTS
    record(benchmark, units=2 * LINK_REQUESTS, unit="req",
           note="reservation over the authenticated ZeroMQ channel (ctrl lane)",
           latency_ms_p50=1e3 * statistics.median(lat), latency_ms_p99=1e3 * lat[int(0.99 * (len(lat) - 1))])
