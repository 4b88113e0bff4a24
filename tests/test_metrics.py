"""Prometheus endpoint: telemetry objects in, metrics scraped over real HTTP out."""

from __future__ import annotations

import urllib.request

from link.metrics import MetricsExporter


def test_metrics_from_telemetry_over_http():
    ex = MetricsExporter()
    port = ex.serve(0)
    try:
        ex.observe({"node": "alice", "kind": "status", "t": 1.0, "qber_x": 0.021, "pool_bytes": 4096,
                    "rates": {"sifted_bps": 1.5e6}, "label": "text is ignored"})
        ex.observe({"node": "alice", "kind": "block", "t": 2.0, "ok": True, "secret_bits": 70000,
                    "f": 1.05, "qber_z": 0.02})
        ex.observe({"node": "alice", "kind": "block", "t": 3.0, "ok": False, "secret_bits": 0,
                    "f": float("nan")})
        ex.observe({"node": "alice", "kind": "alarm", "t": 4.0, "alarm": "qber_high"})
        ex.observe({"node": "alice", "kind": "kme", "t": 5.0, "enc_keys": 3})
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        ex.stop()
    assert 'qkd_qber_x{node="alice"} 0.021' in body
    assert 'qkd_pool_bytes{node="alice"} 4096.0' in body
    assert 'qkd_rates_sifted_bps{node="alice"} 1.5e+06' in body
    assert 'qkd_blocks_total{node="alice",result="ok"} 1.0' in body
    assert 'qkd_blocks_total{node="alice",result="aborted"} 1.0' in body
    assert 'qkd_secret_bits_total{node="alice"} 70000.0' in body
    assert 'qkd_last_block_f{node="alice"} 1.05' in body  # the NaN of the aborted block is skipped
    assert 'qkd_alarms_total{kind="qber_high",node="alice"} 1.0' in body
    assert 'qkd_kme_keys_served_total{call="enc_keys",node="alice"} 3.0' in body
