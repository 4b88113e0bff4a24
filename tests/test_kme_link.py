"""The KMEs of two real nodes reserve keys over the link's authenticated channel.

Two nodes (``run_local``: real ZeroMQ sockets on 127.0.0.1, real auth pools,
real key stores) each start their KME (``link.services.start_kme``); the
reservation a master KME makes at its peer crosses as KME_RESERVE/KME_RESERVED
messages on the channel's ctrl lane. Meanwhile the Prometheus endpoint is
scraped over HTTP while the run goes on.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_kme import call

from link.config import KmeSettings, MetricsSettings
from link.pipeline import run_local
from link.pki import create_lab_pki
from link.services import start_kme, start_metrics


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    create_lab_pki(d, kmes=["KME_A", "KME_B"], saes=["SAE_A", "SAE_B"])
    return d


def _settings(pki, tmp_path, role: str, timeout_s: float = 5.0) -> KmeSettings:
    me, peer, sae, partner = (("KME_A", "KME_B", "SAE_A", "SAE_B") if role == "alice"
                              else ("KME_B", "KME_A", "SAE_B", "SAE_A"))
    return KmeSettings(me, peer, "127.0.0.1", 0, pki / f"{me}.pem", pki / f"{me}.key", pki / "ca.pem",
                       tmp_path / f"{role}-kme.db", {sae: (partner,)}, timeout_s=timeout_s)


def _enc(pki, port, sae, slave, n, size):
    for _ in range(40):  # the peer may not have committed the newest block yet: 503, retry
        st, body = call(pki, port, "POST", f"/api/v1/keys/{slave}/enc_keys", {"number": n, "size": size},
                        sae=sae)
        if st == 200:
            return body
        assert st == 503, body
        time.sleep(0.25)
    raise AssertionError(f"enc_keys kept failing: {body}")


def test_kmes_of_two_nodes_reserve_over_the_link_and_metrics_are_scraped(pki, tmp_path):
    out: dict = {}
    stop = threading.Event()

    def exercise(nodes, handles, ex):
        try:
            stores = {r: n.store for r, n in nodes.items()}
            end = time.monotonic() + 60
            while not (stores["alice"].count() >= 40 and stores["bob"].count() >= 40):
                assert time.monotonic() < end, "no key distilled in 60 s"
                time.sleep(0.1)
            pa = handles["alice"].server.port
            # Bob's KME is not running yet: nobody answers the reservation, the SAE gets 503
            # after the timeout and nothing is taken from Alice's store
            n_a = stores["alice"].count()
            out["no_peer"] = call(pki, pa, "POST", "/api/v1/keys/SAE_B/enc_keys", {"number": 1}, sae="SAE_A")
            out["no_peer_lost"] = n_a - stores["alice"].count()
            handles["bob"] = start_kme(_settings(pki, tmp_path, "bob"), nodes["bob"].store, "bob",
                                       node=nodes["bob"])
            pb = handles["bob"].server.port
            # both sites act as master at the same time: 4 requests each way, concurrently
            with ThreadPoolExecutor(8) as pool:
                fa = [pool.submit(_enc, pki, pa, "SAE_A", "SAE_B", 2, 512) for _ in range(4)]
                fb = [pool.submit(_enc, pki, pb, "SAE_B", "SAE_A", 3, 256) for _ in range(4)]
                enc_a = [k for f in fa for k in f.result()["keys"]]
                enc_b = [k for f in fb for k in f.result()["keys"]]
            st, dec_b = call(pki, pb, "POST", "/api/v1/keys/SAE_A/dec_keys",
                             {"key_IDs": [{"key_ID": k["key_ID"]} for k in enc_a]}, sae="SAE_B")
            out["dec_b"] = (st, dec_b)
            st, dec_a = call(pki, pa, "POST", "/api/v1/keys/SAE_B/dec_keys",
                             {"key_IDs": [{"key_ID": k["key_ID"]} for k in enc_b]}, sae="SAE_A")
            out["dec_a"] = (st, dec_a)
            # used once: a second fetch of the same ID is refused
            out["again"] = call(pki, pb, "GET", f"/api/v1/keys/SAE_A/dec_keys?key_ID={enc_a[0]['key_ID']}",
                                sae="SAE_B")
            out["enc_a"], out["enc_b"] = enc_a, enc_b
            time.sleep(1.2)  # a status telemetry tick after the deliveries
            out["metrics"] = urllib.request.urlopen(f"http://127.0.0.1:{ex.port}/metrics",
                                                    timeout=5).read().decode()
            out["peer_counters"] = {r: dict(h.peer.counters) for r, h in handles.items()}
            out["fingerprints_equal"] = stores["alice"].fingerprint() == stores["bob"].fingerprint()
        except BaseException as exc:  # reported by the test below
            out["error"] = exc
        finally:
            stop.set()

    def attach(nodes):
        handles = {"alice": start_kme(_settings(pki, tmp_path, "alice", timeout_s=1.5), nodes["alice"].store,
                                      "alice", node=nodes["alice"])}
        ex = start_metrics(nodes.values(), MetricsSettings(0))
        t = threading.Thread(target=exercise, args=(nodes, handles, ex))
        t.start()

        def detach():
            t.join(60)
            ex.stop()
            for h in handles.values():
                h.close()
        return detach

    s = run_local(None, config=_small(), blocks=50, duration_s=90, workdir=tmp_path, transport="tcp",
                  stop_event=stop, attach=attach)
    if "error" in out:
        raise out["error"]
    enc_a, enc_b = out["enc_a"], out["enc_b"]
    assert len(enc_a) == 8 and len(enc_b) == 12
    assert out["dec_b"][0] == 200 and out["dec_b"][1]["keys"] == enc_a
    assert out["dec_a"][0] == 200 and out["dec_a"][1]["keys"] == enc_b
    ids = [k["key_ID"] for k in enc_a + enc_b]
    assert len(set(ids)) == len(ids)                              # no key handed out twice
    assert len({k["key"] for k in enc_a + enc_b}) == len(ids)
    assert out["again"][0] == 400
    pc = out["peer_counters"]
    # every reservation crossed the channel and was answered by the other node
    assert pc["alice"]["requests_served"] >= 4 and pc["bob"]["requests_served"] >= 4
    assert pc["alice"]["timeouts"] == 1 and pc["bob"]["timeouts"] == 0
    st, err = out["no_peer"]
    assert st == 503 and "peer KME" in err["message"] and out["no_peer_lost"] == 0
    assert out["fingerprints_equal"] and s["keys_identical"]
    assert "auth" not in " ".join(s["alarms"]) and "bad_tag" not in s["alarms"]
    m = out["metrics"]
    assert 'qkd_kme_keys_served_total{call="enc_keys",node="alice"} 8.0' in m
    assert 'qkd_kme_keys_served_total{call="dec_keys",node="bob"} 8.0' in m
    assert 'qkd_kme_keys_served_total{call="enc_keys",node="bob"} 12.0' in m
    assert 'qkd_blocks_total{node="alice",result="ok"}' in m
    assert 'qkd_secret_bits_total{node="alice"}' in m
    assert 'qkd_store_keys{node="bob"}' in m
    assert 'qkd_status_blocks{node="alice"}' in m


def _small():
    # blocks of 2^19 Z bits (key from 2^19 on at 25 km): a first block sooner
    from hil.model import LinkModel
    from link.pipeline import config_for_scenario

    return config_for_scenario(LinkModel(None).scenario, block_bits=1 << 19)
