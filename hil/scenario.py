"""Scenarios for the HIL physical model: TOML files validated on load.

A scenario fixes every physical parameter of one emulated link (source, fiber,
Bob's optics, detectors, time tagger, an optional attack). It is data only: it
must not hold random state or simulate anything; :class:`hil.model.LinkModel`
turns it into events.

Why this shape: the link is replayed from (scenario, seed), so a scenario must
be complete, typed and checked before anything runs. Every key is declared once
in ``_SCHEMA`` with its type, range and default; unknown keys are errors too
(a typo would otherwise silently fall back to a default). Errors name the file,
the ``[section] key`` and what was expected, as DESIGN.md asks.
"""

from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
DEFAULT_SCENARIO = "metro-25km"
ATTACKS = ("none", "intercept-resend", "pns", "blinding", "fiber-cut")


class ScenarioError(ValueError):
    """A scenario file or override is malformed: names the file, key and what was expected."""


@dataclass(frozen=True)
class _Key:
    kind: str                       # "float", "int", "str", "float4" (scalar or list of 4), "float3"
    default: Any
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False           # lo excluded
    choices: tuple[str, ...] = ()
    doc: str = ""

    def expected(self) -> str:
        kinds = {"float": "a number", "int": "an integer", "str": "a string",
                 "float4": "a number or a list of 4 numbers", "float3": "a list of 3 numbers"}
        text = kinds[self.kind]
        if self.choices:
            return f"one of {', '.join(repr(c) for c in self.choices)}"
        if self.lo is not None or self.hi is not None:
            lo = "-inf" if self.lo is None else f"{self.lo:g}"
            hi = "inf" if self.hi is None else f"{self.hi:g}"
            text += f" in {'(' if self.lo_open else '['}{lo}, {hi}]"
        return text


_SCHEMA: dict[str, dict[str, _Key]] = {
    "scenario": {
        "name": _Key("str", "", doc="scenario name"),
        "description": _Key("str", "", doc="one line for humans"),
    },
    "source": {
        "clock_hz": _Key("float", 1e9, 1.0, 1e11, doc="Alice's pulse clock"),
        "frame_slots": _Key("int", 1 << 20, 1, 1 << 26, doc="slots per frame (one sync tag each)"),
        "p_z": _Key("float", 0.5, 0.0, 1.0, doc="probability Alice picks the Z basis"),
        "decoys": _Key("int", 2, 1, 2, doc="1: signal+decoy, 2: signal+decoy+vacuum/second decoy"),
        "intensities": _Key("float3", [0.5, 0.1, 0.0], 0.0, 100.0, doc="mean photon numbers mu1, mu2, mu3"),
        "intensity_probs": _Key("float3", [0.7, 0.2, 0.1], 0.0, 1.0, doc="probabilities of mu1, mu2, mu3"),
        "prep_error_deg": _Key("float4", 0.0, -90.0, 90.0,
                               doc="polarization angle error of the H, V, D, A states (degrees); one "
                                   "number = a common rotation (e_d = sin^2 in both bases, which Bob's "
                                   "calibration can undo), four different ones a flaw no rotation fixes"),
    },
    "fiber": {
        "length_km": _Key("float", 25.0, 0.0, 1000.0),
        "attenuation_db_per_km": _Key("float", 0.2, 0.0, 10.0),
        "group_index": _Key("float", 1.4682, 1.0, 2.0, doc="for the time of flight"),
        "drift_rad_per_sqrt_s": _Key("float", 0.0, 0.0, 100.0,
                                     doc="SU(2) random-walk rate: Poincare-sphere angle, E[angle^2] = "
                                         "3 rate^2 t"),
        "drift_step_s": _Key("float", 1e-3, 1e-6, 10.0, lo_open=True, doc="random-walk grid step"),
        "temperature_amplitude_rad": _Key("float", 0.0, 0.0, 2 * math.pi,
                                          doc="slow temperature term: Poincare angle amplitude"),
        "temperature_period_s": _Key("float", 3600.0, 1e-3, 1e7),
        "initial_rotation_rad": _Key("float", 0.0, -2 * math.pi, 2 * math.pi,
                                     doc="static Poincare rotation about S3 (= linear rotation x 2)"),
    },
    "bob": {
        "p_z": _Key("float", 0.5, 0.0, 1.0, doc="passive beam splitter: fraction to the Z (H/V) arm"),
        "insertion_loss_db": _Key("float", 1.0, 0.0, 60.0, doc="Bob's optics before the detectors"),
    },
    "detectors": {
        "efficiency": _Key("float4", 0.7, 0.0, 1.0, doc="per photon (a Poisson pulse: 1 - exp(-eta n))"),
        "dark_count_rate_hz": _Key("float4", 100.0, 0.0, 1e8,
                                   doc="free-running: 1 - exp(-rate / clock_hz) per slot, uniform in it"),
        "dead_time_ns": _Key("float4", 25.0, 0.0, 1e6,
                             doc="non-paralyzable, per detector, at slot resolution"),
        "afterpulse_prob": _Key("float4", 0.0, 0.0, 0.5,
                                doc="probability a registered click is followed by an afterpulse after "
                                    "the dead time (charge released during it is lost)"),
        "afterpulse_time_constant_ns": _Key("float4", 20.0, 0.0, 1e6,
                                            doc="exponential delay past the dead time"),
        "jitter_ps": _Key("float4", 30.0, 0.0, 1e6, doc="Gaussian sigma"),
        "delay_ps": _Key("float4", 0.0, -1e9, 1e9, doc="cable + electronics delay per detector"),
    },
    "tagger": {
        "resolution_ps": _Key("float", 1.0, 1.0, 1e6, doc="timestamp bin"),
        "jitter_ps": _Key("float", 8.0, 0.0, 1e6, doc="Gaussian sigma per tag"),
        "clock_drift_ppm": _Key("float", 0.0, -1000.0, 1000.0, doc="tagger clock rate error vs Alice"),
        "offset_ps": _Key("float", 0.0, -1e12, 1e12, doc="tagger clock offset"),
        "max_tag_rate_hz": _Key("float", 0.0, 0.0, 1e11, doc="0 = unlimited"),
        "rate_window_ns": _Key("float", 1000.0, 1.0, 1e9, lo_open=True, doc="window of the rate limit"),
        "sync_delay_ps": _Key("float", 0.0, -1e9, 1e9, doc="delay of the sync (channel 0) tag"),
    },
    "attack": {
        "kind": _Key("str", "none", choices=ATTACKS),
        "start_time_s": _Key("float", 0.0, 0.0, 1e9, doc="attack (or cut) active from this emulated time"),
        "fraction": _Key("float", 1.0, 0.0, 1.0, doc="intercept-resend: fraction of pulses attacked"),
        "eve_p_z": _Key("float", 0.5, 0.0, 1.0, doc="Eve's probability of measuring in Z"),
        "eve_efficiency": _Key("float", 1.0, 0.0, 1.0, doc="Eve's detector efficiency"),
        "resend_mu": _Key("float", 0.5, 0.0, 100.0, doc="intercept-resend: mean photons Eve re-sends"),
        "block_single_fraction": _Key("float", 1.0, 0.0, 1.0,
                                      doc="pns: fraction of single-photon pulses Eve blocks"),
        "trigger_prob": _Key("float", 0.05, 0.0, 1.0,
                             doc="blinding: probability Eve fires a trigger pulse after a detection"),
    },
}


def _check(section: str, key: str, value: Any, spec: _Key, where: str) -> Any:
    def fail() -> ScenarioError:
        return ScenarioError(f"{where}: [{section}] {key}: expected {spec.expected()}, got {value!r}")

    def num(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise fail()
        v = float(v)
        if not math.isfinite(v):
            raise fail()
        if spec.lo is not None and (v < spec.lo or (spec.lo_open and v == spec.lo)):
            raise fail()
        if spec.hi is not None and v > spec.hi:
            raise fail()
        return v

    if spec.kind == "str":
        if not isinstance(value, str) or (spec.choices and value not in spec.choices):
            raise fail()
        return value
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail()
        num(value)
        return int(value)
    if spec.kind == "float":
        return num(value)
    if spec.kind == "float4":
        if isinstance(value, list):
            if len(value) != 4:
                raise fail()
            return tuple(num(v) for v in value)
        return (num(value),) * 4
    if spec.kind == "float3":
        if not isinstance(value, list) or len(value) != 3:
            raise fail()
        return tuple(num(v) for v in value)
    raise AssertionError(spec.kind)


def _section_class(name: str, fields: dict[str, _Key]) -> type:
    ns = {"__annotations__": {k.replace("-", "_"): Any for k in fields}}
    cls = type(name, (), ns)
    return dataclass(frozen=True)(cls)


_SECTIONS = {sec: _section_class(sec.capitalize() + "Params", keys) for sec, keys in _SCHEMA.items()}


@dataclass(frozen=True)
class Scenario:
    """A validated scenario. Sections are frozen dataclasses: ``scenario.fiber.length_km``.

    ``raw`` keeps the (validated) TOML tables so ``with_overrides`` can re-validate.
    """

    name: str
    description: str
    source: Any
    fiber: Any
    bob: Any
    detectors: Any
    tagger: Any
    attack: Any
    origin: str
    raw: dict

    # -- construction -------------------------------------------------------
    @staticmethod
    def names() -> list[str]:
        """Names of the scenarios shipped in ``hil/scenarios``."""
        return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))

    @classmethod
    def load(cls, path_or_name: str | Path | None = None) -> Scenario:
        """Load a shipped scenario by name (default ``metro-25km``) or a TOML file by path."""
        if path_or_name is None:
            path_or_name = DEFAULT_SCENARIO
        p = Path(path_or_name)
        if p.suffix != ".toml" and p.parent == Path(".") and not p.exists():
            if str(path_or_name) not in cls.names():
                raise ScenarioError(f"unknown scenario {str(path_or_name)!r}: shipped are "
                                    f"{', '.join(cls.names())}, or give a path to a .toml file")
            p = SCENARIO_DIR / f"{path_or_name}.toml"
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(f"{p}: cannot read scenario: {exc.strerror or exc}") from exc
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"{p}: invalid TOML: {exc}") from exc
        return cls.from_dict(data, origin=str(p))

    @classmethod
    def from_dict(cls, data: dict, origin: str = "<dict>") -> Scenario:
        """Validate TOML-shaped tables (``{"fiber": {"length_km": 25}, ...}``)."""
        if not isinstance(data, dict):
            raise ScenarioError(f"{origin}: expected a table of sections, got {type(data).__name__}")
        top = {k: v for k, v in data.items() if not isinstance(v, dict)}
        for key in top:
            if key not in _SCHEMA["scenario"]:
                raise ScenarioError(f"{origin}: unknown top-level key {key!r} (sections are "
                                    f"{', '.join(s for s in _SCHEMA if s != 'scenario')})")
        tables = {"scenario": top}
        for sec, val in data.items():
            if isinstance(val, dict):
                if sec not in _SCHEMA or sec == "scenario":
                    raise ScenarioError(f"{origin}: unknown section [{sec}] (expected one of "
                                        f"{', '.join(s for s in _SCHEMA if s != 'scenario')})")
                tables[sec] = val
        parsed: dict[str, Any] = {}
        for sec, keys in _SCHEMA.items():
            given = tables.get(sec, {})
            for key in given:
                if key not in keys:
                    raise ScenarioError(f"{origin}: [{sec}] unknown key {key!r} (known: {', '.join(keys)})")
            vals = {}
            for key, spec in keys.items():
                raw = given.get(key, spec.default)
                vals[key] = _check(sec, key, raw, spec, origin)
            parsed[sec] = vals
        src = parsed["source"]
        probs = src["intensity_probs"]
        if abs(sum(probs) - 1.0) > 1e-9:
            raise ScenarioError(f"{origin}: [source] intensity_probs: expected 3 probabilities summing "
                                f"to 1, got {list(probs)!r}")
        if src["decoys"] == 1 and probs[2] != 0.0:
            raise ScenarioError(f"{origin}: [source] intensity_probs: with decoys = 1 the third "
                                f"probability must be 0, got {probs[2]!r}")
        if src["intensities"][0] <= 0.0:
            raise ScenarioError(f"{origin}: [source] intensities: expected mu1 > 0, "
                                f"got {src['intensities'][0]!r}")
        return cls(
            name=parsed["scenario"]["name"] or Path(origin).stem,
            description=parsed["scenario"]["description"],
            source=_SECTIONS["source"](**src),
            fiber=_SECTIONS["fiber"](**parsed["fiber"]),
            bob=_SECTIONS["bob"](**parsed["bob"]),
            detectors=_SECTIONS["detectors"](**parsed["detectors"]),
            tagger=_SECTIONS["tagger"](**parsed["tagger"]),
            attack=_SECTIONS["attack"](**parsed["attack"]),
            origin=origin,
            raw=copy.deepcopy(data),
        )

    def with_overrides(self, overrides: dict[str, Any] | None = None, **kw: Any) -> Scenario:
        """A copy with ``{"section.key": value}`` changed, validated like a file.

        Keyword form uses ``__`` for the dot: ``with_overrides(fiber__length_km=0)``.
        """
        changes = dict(overrides or {})
        changes.update({k.replace("__", "."): v for k, v in kw.items()})
        data = copy.deepcopy(self.raw)
        for dotted, value in changes.items():
            sec, _, key = dotted.partition(".")
            if not key:
                raise ScenarioError(f"{self.origin}: override {dotted!r}: expected 'section.key'")
            if isinstance(value, tuple):
                value = list(value)
            data.setdefault(sec, {})[key] = value
        return Scenario.from_dict(data, origin=f"{self.origin} (with overrides)")


def schema_doc() -> str:
    """A text listing of every key, its type/range and default (for the CLI and docs)."""
    lines = []
    for sec, keys in _SCHEMA.items():
        lines.append(f"[{sec}]")
        for key, spec in keys.items():
            lines.append(f"  {key} = {spec.default!r}  # {spec.expected()}; {spec.doc}".rstrip("; "))
    return "\n".join(lines)
