"""Connect the emulated Alice/Bob instruments to the physical link model.

What it is for: the rig (``hil.Rig``) builds one ``hil.model.LinkModel`` and
the emulators; these functions subscribe to each emulator's change hooks and
forward what the driver set to the model, so that (DESIGN "HIL") the pattern
the AWG receives is what Alice sends, the EPC-400 voltages / MPC320 angles
rotate Bob's polarization, and the detector settings set the model's detector
parameters.

What it must not do: import ``hil.model`` (the model is passed in and used by
its documented methods only: ``set_controller_epc400(voltages_v)``,
``set_controller_mpc320(angles_deg)``, ``set_detector(index, **params)``), or
translate units silently: every conversion is written here (mV -> V,
detector efficiency and dark counts from the emulator's own model).

Why hooks rather than polling: a setting reaches the model in the same server
thread that accepted it, before the driver's next query is answered, so a
calibration loop never measures with a stale model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["wire_awg", "wire_epc400", "wire_mpc320", "wire_id120", "wire_snspd"]


def wire_awg(awg, on_pattern: Callable[[np.ndarray, np.ndarray, np.ndarray, float], None]) -> None:
    """Call ``on_pattern(basis, bit, intensity, slot_rate_hz)`` whenever Alice's AWG plays a new pattern.

    The rig wraps the arrays in ``hil.model.Pattern`` for ``LinkModel.run_frame``.
    """
    awg.on_pattern(on_pattern)


def wire_epc400(epc, model, *, v_pi_v: float | None = None) -> None:
    """EPC-400 voltages (mV on the wire) -> ``model.set_controller_epc400(volts)``."""

    def apply(voltages_mv: np.ndarray) -> None:
        volts = [float(v) / 1000.0 for v in voltages_mv]
        if v_pi_v is None:
            model.set_controller_epc400(volts)
        else:
            model.set_controller_epc400(volts, v_pi_v=v_pi_v)

    epc.on_change(apply)


def wire_mpc320(mpc, model) -> None:
    """MPC320 paddle angles (degrees) -> ``model.set_controller_mpc320(angles)``."""
    mpc.on_change(lambda angles: model.set_controller_mpc320([float(a) for a in angles]))


def wire_id120(apd, model, detector_index: int) -> None:
    """ID120 settings -> ``model.set_detector(index, efficiency, dark_count_rate_hz, dead_time_ns)``."""

    def apply(_name: str, _value: float, state) -> None:
        model.set_detector(
            detector_index,
            efficiency=float(apd.efficiency()),
            dark_count_rate_hz=float(apd.dark_count_hz if apd.efficiency() > 0 else 0.0),
            dead_time_ns=float(state.dead_time_ns),
        )

    apd.on_change(apply)


def wire_snspd(snspd, model, detector_indices: Sequence[int] = (0, 1, 2, 3)) -> None:
    """SNSPD bias / enable -> per-channel ``model.set_detector(index, efficiency, dark_count_rate_hz)``.

    Channel ``k`` of the controller feeds model detector ``detector_indices[k]``.
    """
    if len(detector_indices) > snspd.n:
        raise ValueError(f"detector_indices has {len(detector_indices)} entries for {snspd.n} channels")

    def apply(label: str, _value) -> None:
        if label not in ("BiasCurrent", "DetectorEnable"):
            return
        eff = snspd.efficiency()
        saved = snspd.incident_rate_hz
        try:  # dark counts = the emulator's rate with no light
            snspd.incident_rate_hz = np.zeros(snspd.n)
            dark = snspd.count_rates_hz()
        finally:
            snspd.incident_rate_hz = saved
        for k, idx in enumerate(detector_indices):
            model.set_detector(idx, efficiency=float(eff[k]), dark_count_rate_hz=float(min(dark[k], 1e8)))

    snspd.on_change(apply)
