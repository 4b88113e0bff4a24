"""Benchmarks of calibration (issue 7), on the physical model at 1 GHz, 25 km.

* ``calibration-timing``: ``calibrate_timing`` on 40 frames of 2^18 slots of tags (10.5 ms of
  link time), units = tags; baseline in the same run: ``scipy.signal.correlate`` (FFT) of the
  four detectors' click trains with Alice's intensity pattern, the coarse step alone.
* ``calibration-polarization``: one alignment from a random fiber rotation through the EPC-400
  driver on the rig's pty (LM with dithered Jacobian), units = alignments; ``extra_info`` holds the
  measurement count, the link time and the true residual misalignment QBER. Baseline: scipy's
  Nelder-Mead on the measured QBER_Z + QBER_X with the same probe and budget.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.common import record
from calibration.polarization import LinkProbe, align
from calibration.timing import calibrate_timing
from drivers.oz_epc400 import OzEpc400
from hil.model import LinkModel
from hil.optics import _SIGMA, su2_rotation
from hil.rig import Rig
from hil.scenario import Scenario
from hil.tagger import TagStream
from link.frontend import ModelLink, Timing


def _tags(frames=40):
    sc = Scenario.load("drifting-fiber").with_overrides({"source.frame_slots": 1 << 18,
                                                         "tagger.sync_delay_ps": 12345.0,
                                                         "detectors.delay_ps": [3e3, -7e3, 11e3, 0.0]})
    m = LinkModel(sc, 4)
    st = TagStream()
    ts, cs, pats = [], [], []
    for f in range(frames):
        r = m.run_frame(f)
        t, c = st.push(r.tag_t_ps, r.tag_channel, m.earliest_tag_ps(f + 1))
        ts.append(t)
        cs.append(c)
        pats.append(m.alice_pattern(f).intensity)
    t, c = st.flush()
    return m, np.concatenate(ts + [t]), np.concatenate(cs + [c]), pats


@pytest.mark.parametrize("impl", ["calibrate_timing", "scipy-correlate"])
def test_timing(benchmark, impl):
    m, t, c, pats = _tags()
    benchmark.group = "calibration-timing"
    if impl == "calibrate_timing":
        cal = benchmark.pedantic(lambda: calibrate_timing(t, c, pats, frame_slots=m.frame_slots,
                                                          clock_hz=m.clock_hz, mu=tuple(m.mu)),
                                 rounds=3, iterations=1)
        err = np.abs(np.array(cal.offsets_ps) - np.array(Timing.for_model(m).offsets_ps)).max()
        record(benchmark, units=len(t), unit="tag", link_s=cal.data_s, max_offset_error_ps=float(err))
    else:
        from scipy.signal import correlate

        w = np.concatenate([np.asarray(m.mu)[p] for p in pats[:4]])
        w -= w.mean()
        g = (t[c > 0] // 1000).astype(np.int64)
        g = g[g < 8 * m.frame_slots]

        def run():
            train = np.bincount(g - g.min(), minlength=1).astype(float)
            return [int(np.argmax(correlate(train, w, mode="full", method="fft"))) for _ in range(4)]

        benchmark.pedantic(run, rounds=3, iterations=1)
        record(benchmark, units=len(t), unit="tag", baseline=True)


def _stokes(u):
    return np.array([[0.5 * np.trace(_SIGMA[i] @ u @ _SIGMA[j] @ u.conj().T).real for j in range(3)]
                     for i in range(3)])


@pytest.mark.parametrize("impl", ["lm-dither", "nelder-mead"])
def test_polarization(benchmark, impl):
    benchmark.group = "calibration-polarization"
    sc = Scenario.load("metro-25km").with_overrides({"source.prep_error_deg": 0.0})
    out = {}

    def run():
        seeds = (3, 4, 5, 6)
        res = []
        for seed in seeds:
            with Rig(sc, seed=seed, frame_slots=1 << 18) as rig:
                fiber = su2_rotation(np.random.default_rng(seed).normal(size=3) * 3)
                rig.model.fiber.rotation_at = lambda t, f=fiber: f
                dev = OzEpc400(rig.resources()["bob.polarization"])
                dev.open()
                link = ModelLink(rig.model, timing=Timing.for_model(rig.model))
                probe = LinkProbe(link.alice, link.bob, frames=2, seed=seed, poll_s=0.0)
                if impl == "lm-dither":
                    try:
                        r = align(dev, probe.measure, seed=seed)
                        steps = r.measurements
                    except Exception:
                        steps = 101
                else:
                    from scipy.optimize import minimize

                    n = [0]

                    def cost(x, n=n, dev=dev, probe=probe):
                        n[0] += 1
                        dev.set_actuators(np.clip(x, -5000, 5000))
                        mm = probe.measure()
                        return mm.qber_z + mm.qber_x

                    x0 = np.random.default_rng(seed).uniform(-5000, 5000, 4)
                    minimize(cost, x0, method="Nelder-Mead",
                             options={"maxfev": 100, "initial_simplex": x0 + 1500 * np.vstack(
                                 [np.zeros(4), np.eye(4)])})
                    steps = n[0]
                rr = _stokes(rig.model.rotation_at(0.0))
                res.append((steps, probe.link_s, (1 - rr[0, 0]) / 2, (1 - rr[1, 1]) / 2))
                dev.close()
        out["res"] = res

    benchmark.pedantic(run, rounds=1, iterations=1)
    a = np.array(out["res"])
    record(benchmark, units=len(a), unit="alignment", baseline=impl == "nelder-mead",
           measurements=a[:, 0].tolist(), link_ms=(a[:, 1] * 1e3).round(1).tolist(),
           true_qber_z=a[:, 2].round(5).tolist(), true_qber_x=a[:, 3].round(5).tolist())
    print(impl, "measurements", a[:, 0], "link ms", (a[:, 1] * 1e3).round(1), "true QBER Z", a[:, 2].round(5),
          "X", a[:, 3].round(5))
