"""hil: the hardware-in-the-loop rig's physical model of the optical link (issue 4).

The emulated instruments (another part) expose this model through real wire
protocols; this package holds only the physics and must not open sockets or
know the link engine. Public API (names other parts depend on):

``hil.scenario``
    ``Scenario.load(path_or_name=None)`` -> validated scenario (default
    ``"metro-25km"``); ``Scenario.names()`` lists the shipped ones
    (back-to-back, metro-25km, long-100km, drifting-fiber, intercept-resend, pns,
    blinding, fiber-cut); ``scenario.with_overrides({"fiber.length_km": 50})``;
    ``ScenarioError`` (a ValueError) names the file, ``[section] key`` and what
    was expected; ``schema_doc()`` lists every key.

``hil.model``
    ``LinkModel(scenario_or_name, seed)`` with ``.clock_hz``, ``.frame_slots``,
    ``.period_ps``, ``.tof_ps``, ``.transmittance``, ``.frame_duration_s``,
    ``.frame_start_s(f)``, ``.fiber`` (``FiberDrift``: ``.rotation_at(t_s)``),
    ``.rotation_at(t_s)`` (controller @ fiber), ``.earliest_tag_ps(f)``,
    ``.expected_slot_click_probability()`` (x clock_hz = raw clicks per emulated second).

    * ``alice_pattern(f) -> Pattern(basis, bit, intensity)``: uint8 arrays of
      ``frame_slots`` (basis 0=Z 1=X; bit; intensity 0=mu1 1=mu2 2=mu3), from the
      model's own seeded QRNG.
    * ``run_frame(f, pattern=None, *, method="kernel") -> FrameResult``;
      ``run_frames(first, count, patterns=None)``. Frames must be run in order for
      dead time and afterpulses to carry over (a jump resets detector state).
      ``method``: "kernel" (default: the C hot path ``hil._kernel``, built from
      ``hil/csrc`` by ``hil/build_ffi.py``), "skip" (its numpy reference),
      "per-slot" (every pulse sampled; the benchmark baseline).
    * ``FrameResult``: per click ``slot`` (uint64, slot within the frame, sorted),
      ``detector`` (uint8 0..3 = H V D A), ``time_ps`` (int64 tagger timestamp),
      ``tag_lost`` (bool), ``noise`` (bool: dark count/afterpulse); per slot
      ``slots`` (uint64 unique) and ``mask`` (uint8, bit d = detector d); tags
      ``tag_t_ps`` (int64 sorted), ``tag_channel`` (uint8, 0 = sync, 1..4 =
      detector + 1), ``tags`` = (tag_t_ps, tag_channel), ``lost_tags`` (int),
      ``sync_ps``; ``eve`` (``hil.eve.EveRecord`` aligned with ``slots``:
      ``code``, ``basis``, ``bit``, ``knows_bit``; None without attack);
      ``start_time_s``, ``duration_s`` (emulated seconds), ``counts`` (dict).
    * Setters: ``set_controller_rotation(u)`` (2x2 unitary, Jones H/V basis),
      ``set_controller_epc400(voltages_v, v_pi_v=2.5)``,
      ``set_controller_mpc320(paddle_angles_deg, retardances_rad=None)``,
      ``set_detector(index, efficiency=, dark_count_rate_hz=, dead_time_ns=,
      afterpulse_prob=, afterpulse_time_constant_ns=, jitter_ps=, delay_ps=)``,
      ``set_attack(kind, **params)`` with kind in ``hil.scenario.ATTACKS``.

``hil.optics``
    ``retarder``, ``mpc320_rotation``, ``epc400_rotation``, ``linear_rotation``,
    ``su2_rotation``, ``poincare_angle``, ``FiberDrift``.

``hil.tagger``
    ``tagger_clock``, ``rate_limit``, ``TagStream`` (merges frames into one
    time-ordered tag stream as a real tagger delivers it).
"""

from .model import FrameResult, LinkModel, Pattern
from .scenario import Scenario, ScenarioError

__all__ = ["FrameResult", "LinkModel", "Pattern", "Scenario", "ScenarioError"]
