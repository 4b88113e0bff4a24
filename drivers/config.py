"""The lab file: which instrument, on which resource, with which settings, for Alice and for Bob.

What it is for: a lab engineer describes the set-up once in TOML and every
tool (``qkd devices check``, the nodes, calibration) builds the same drivers
from it.  Layout::

    [alice.pattern_generator]          # <node>.<role>
    driver = "keysight_33500"          # a name in DRIVERS
    resource = "TCPIP0::192.168.1.20::5025::SOCKET"
    timeout_s = 5.0                    # optional
    [alice.pattern_generator.settings] # optional: keyword arguments of the driver
    max_points = 1048576
    [alice.pattern_generator.settings.encoding]
    samples_per_slot = 4

Nodes are ``alice`` and ``bob``; a role is any identifier (``detector_h``,
``polarization``...).  An optional ``[lab]`` table holds ``name`` and
``description``.  ``[bob.timing]`` is not an instrument: it is the record
``qkd calibrate timing --config`` writes (offsets, window, period; see
``calibration.timing.timing_section``), kept as ``LabConfig.timing`` and read by
``qkd calibrate polarization`` and by ``qkd bob`` when its node file gives no
``offsets_ps``.

What it must not do: open an instrument (loading is pure validation: the
drivers do no I/O in ``__init__``), or accept a file that would fail later:
unknown tables and keys, wrong types, unknown drivers, resources of a kind the
driver cannot use and out-of-range settings are all reported on load, as
``ConfigError`` naming the file, the dotted key and the expected value.

Why build the driver at load time: each driver validates its own settings
(ranges, types) in ``__init__`` without I/O, so constructing it is the most
complete check there is and the rules are not written twice.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DriverError
from .resources import resource_kind

__all__ = [
    "ConfigError",
    "DriverSpec",
    "InstrumentSpec",
    "LabConfig",
    "DRIVERS",
    "NODES",
    "load_lab",
    "parse_lab",
    "register_driver",
]

NODES = ("alice", "bob")
_ROLE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_INSTRUMENT_KEYS = {"driver", "resource", "timeout_s", "settings"}
# tables under a node that are records, not instruments: (node, name)
_RECORDS = {("bob", "timing")}


class ConfigError(ValueError):
    """A lab file is invalid; the message names the file, the key and what was expected."""

    def __init__(self, source: str, key: str, expected: str, got: Any = None, *, detail: str = ""):
        self.source, self.key, self.expected = source, key, expected
        msg = f"{source}: {key}: expected {expected}"
        if got is not None:
            msg += f", got {got!r}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


@dataclass(frozen=True)
class DriverSpec:
    """How a ``driver = "<name>"`` entry becomes a driver object."""

    target: str  # "module:Class"
    # pattern_generator | detector | polarization_controller | polarization_stabilizer | time_tagger
    # | random_source
    device_class: str
    resource_kinds: tuple[str, ...] = ("visa", "tcp", "serial")
    # settings whose TOML table is turned into an object before the driver gets it
    converters: dict[str, str] = field(default_factory=dict)  # key -> "module:Class"
    emulator: str | None = None  # "module:Class" of the emulated twin, for `qkd devices emulate`
    named: bool = True  # the constructor takes ``name=`` (drivers.base.Instrument subclasses do)

    def load_class(self) -> type:
        return _import(self.target)


def _import(target: str):
    mod, _, name = target.partition(":")
    return getattr(importlib.import_module(mod), name)


DRIVERS: dict[str, DriverSpec] = {
    "keysight_33500": DriverSpec(
        "drivers.keysight_awg:Keysight33500",
        "pattern_generator",
        ("visa", "tcp"),
        {"encoding": "drivers.keysight_awg:FrameEncoding"},
        emulator="hil.emulated.awg:EmulatedAwg",
    ),
    "idq_id120": DriverSpec(
        "drivers.idq_id120:IdqId120", "detector", emulator="hil.emulated.id120:EmulatedId120"
    ),
    "single_quantum": DriverSpec(
        "drivers.single_quantum:SingleQuantumSnspd",
        "detector",
        ("tcp",),
        emulator="hil.emulated.snspd:EmulatedSnspd",
    ),
    "oz_epc400": DriverSpec(
        "drivers.oz_epc400:OzEpc400", "polarization_controller", emulator="hil.emulated.epc400:EmulatedEpc400"
    ),
    # time taggers and random sources (drivers by the tagger helper; no `devices emulate` twin here)
    "idq_id900": DriverSpec("drivers.idq_id900:IdqTimeController", "time_tagger", ("tcp",)),
    "picoquant_stream": DriverSpec("drivers.picoquant:PicoQuantStreamTagger", "time_tagger", ("tcp",)),
    "qrng_device": DriverSpec("drivers.qrng:QrngDevice", "random_source", ("serial",), named=False),
    "os_entropy": DriverSpec("drivers.qrng:OsEntropySource", "random_source", ("serial",), named=False),
    # stabilizer loop inside the instrument (target SOP), no per-actuator set points: its own class
    "keysight_n778x": DriverSpec(
        "drivers.keysight_n778x:KeysightN778x", "polarization_stabilizer", ("visa", "tcp"),
        emulator="hil.emulated.n778x:EmulatedN778x",
    ),
    "thorlabs_mpc320": DriverSpec(
        "drivers.thorlabs_mpc320:ThorlabsMpc320",
        "polarization_controller",
        ("serial", "tcp"),
        emulator="hil.emulated.mpc320:EmulatedMpc320",
    ),
}


def register_driver(name: str, spec: DriverSpec) -> None:
    """Make ``driver = "<name>"`` usable in lab files (for drivers living in other modules)."""
    if not _ROLE.match(name):
        raise ValueError(f"driver name {name!r} must be lower-case letters, digits and '_'")
    DRIVERS[name] = spec


@dataclass
class InstrumentSpec:
    """One validated instrument entry of a lab file."""

    node: str
    role: str
    driver: str
    resource: str
    timeout_s: float | None
    settings: dict
    source: str = "<lab>"

    @property
    def key(self) -> str:
        return f"{self.node}.{self.role}"

    @property
    def spec(self) -> DriverSpec:
        return DRIVERS[self.driver]

    @property
    def device_class(self) -> str:
        return self.spec.device_class

    def build(self):
        """Construct the driver (no I/O); ConfigError naming the setting if the driver refuses a value."""
        cls = self.spec.load_class()
        kwargs = dict(self.settings)
        for k, target in self.spec.converters.items():
            if k in kwargs and isinstance(kwargs[k], dict):
                conv = _import(target)
                try:
                    kwargs[k] = conv(**kwargs[k])
                except TypeError as e:
                    raise ConfigError(
                        self.source, f"{self.key}.settings.{k}", _kw_list(conv), detail=str(e)
                    ) from None
                except (DriverError, ValueError) as e:
                    raise ConfigError(
                        self.source,
                        f"{self.key}.settings.{k}",
                        "valid values",
                        detail=getattr(e, "message", str(e)),
                    ) from None
        # TOML table keys are strings; integer-keyed maps (channel_map, stream_ports) want ints
        for k, v in list(kwargs.items()):
            if isinstance(v, dict) and v and all(isinstance(x, str) and x.isdigit() for x in v):
                kwargs[k] = {int(x): y for x, y in v.items()}
        if self.timeout_s is not None:
            if "timeout_s" not in inspect.signature(cls.__init__).parameters:
                raise ConfigError(
                    self.source, f"{self.key}.timeout_s", f"no timeout_s ({self.driver} has none)"
                )
            kwargs["timeout_s"] = self.timeout_s
        if self.spec.named:
            kwargs["name"] = f"{self.key}:{getattr(cls, 'KIND', cls.__name__)}@{self.resource}"
        try:
            return cls(self.resource, **kwargs)
        except (DriverError, ValueError, TypeError) as e:
            msg = getattr(e, "message", str(e))
            bad = next((k for k in self.settings if re.search(rf"\b{re.escape(k)}\b", msg)), None)
            if bad is None and len(self.settings) == 1:
                bad = next(iter(self.settings))
            key = f"{self.key}.settings.{bad}" if bad else f"{self.key}.settings"
            raise ConfigError(self.source, key, "a value the driver accepts", detail=msg) from None


def _kw_list(cls) -> str:
    params = [
        p
        for p in inspect.signature(cls).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        and not p.name.startswith("_")
        and p.name not in ("resource", "name", "timeout_s", "self")
    ]
    return "one of: " + ", ".join(p.name for p in params)


@dataclass
class LabConfig:
    source: str
    name: str = ""
    description: str = ""
    instruments: list[InstrumentSpec] = field(default_factory=list)
    timing: dict | None = None        # [bob.timing], the timing calibration's record (if any)

    def __iter__(self) -> Iterator[InstrumentSpec]:
        return iter(self.instruments)

    def node(self, node: str) -> dict[str, InstrumentSpec]:
        return {i.role: i for i in self.instruments if i.node == node}

    def find(self, node: str, device_class: str) -> list[InstrumentSpec]:
        """The instruments of ``node`` whose driver is of ``device_class`` (in file order)."""
        return [i for i in self.instruments if i.node == node and i.device_class == device_class]

    def build(self, node: str, role: str):
        """The driver of ``[node.role]``; ``ConfigError`` naming the roles the file has if absent."""
        found = self.node(node)
        if role not in found:
            raise ConfigError(self.source, f"{node}.{role}", f"an instrument table [{node}.{role}]",
                              detail=f"{node}'s instruments in this file: "
                                     f"{', '.join(sorted(found)) or 'none'}")
        return found[role].build()


def _timing_record(source: str, key: str, rec: Any) -> dict:
    """``[bob.timing]`` checked where it is read for every tool (``qkd bob``, ``qkd calibrate
    polarization``): 4 detector offsets, and numbers for the window, frame and period."""
    if not isinstance(rec, dict):
        raise ConfigError(source, key, "a table (written by `qkd calibrate timing`)", rec)
    offs = rec.get("offsets_ps")
    if not (isinstance(offs, list) and len(offs) == 4):
        raise ConfigError(source, f"{key}.offsets_ps", "4 numbers (ps)", offs)
    for i, x in enumerate(offs):
        _check_type(source, f"{key}.offsets_ps[{i}]", x, (int, float), "a number (ps)")
    for name in ("window_ps", "frame_slots", "nominal_period_ps"):
        if name in rec:
            _check_type(source, f"{key}.{name}", rec[name], (int, float), "a number")
    if "dead_time_ns" in rec:
        _check_type(source, f"{key}.dead_time_ns", rec["dead_time_ns"], (int, float), "a dead time in ns > 0")
        if not 0 < rec["dead_time_ns"] < 1e9:
            raise ConfigError(source, f"{key}.dead_time_ns", "a dead time in ns > 0", rec["dead_time_ns"])
    if "afterpulse_guard_ns" in rec:
        what = "a guard length in ns > 0"
        _check_type(source, f"{key}.afterpulse_guard_ns", rec["afterpulse_guard_ns"], (int, float), what)
        if not 0 < rec["afterpulse_guard_ns"] < 1e9:
            raise ConfigError(source, f"{key}.afterpulse_guard_ns", what, rec["afterpulse_guard_ns"])
    return dict(rec)


def _check_type(source: str, key: str, value: Any, types: tuple[type, ...], expected: str) -> None:
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(source, key, expected, value)
    if not isinstance(value, types):
        raise ConfigError(source, key, expected, value)


def _check_settings(source: str, key: str, cls: type, settings: dict, converters: dict) -> None:
    sig = inspect.signature(cls.__init__)
    params = {
        n: p
        for n, p in sig.parameters.items()
        if n not in ("self", "resource", "name", "timeout_s") and p.kind == p.KEYWORD_ONLY
    }
    for k, v in settings.items():
        if k not in params:
            raise ConfigError(
                source,
                f"{key}.{k}",
                f"a setting of {cls.__name__} ({', '.join(sorted(params))})",
                detail="unknown setting",
            )
        if k in converters:
            if not isinstance(v, dict):
                raise ConfigError(source, f"{key}.{k}", "a table", v)
            conv = _import(converters[k])
            cparams = set(inspect.signature(conv).parameters) - {"self"}
            for ck in v:
                if ck not in cparams or ck.startswith("_"):
                    raise ConfigError(source, f"{key}.{k}.{ck}", _kw_list(conv), detail="unknown setting")
            continue
        default = params[k].default
        if isinstance(default, bool):
            _check_type(source, f"{key}.{k}", v, (bool,), "true or false")
        elif isinstance(default, int):
            _check_type(source, f"{key}.{k}", v, (int,), "an integer")
        elif isinstance(default, float):
            _check_type(source, f"{key}.{k}", v, (int, float), "a number")
        elif isinstance(default, str):
            _check_type(source, f"{key}.{k}", v, (str,), "a string")
        # default None: any TOML value; the driver's own validation decides


def parse_lab(data: dict, source: str = "<lab>") -> LabConfig:
    """Validate a parsed TOML document (see the module docstring) and return the LabConfig."""
    if not isinstance(data, dict):
        raise ConfigError(source, "<root>", "a table", data)
    cfg = LabConfig(source)
    for top, val in data.items():
        if top == "lab":
            if not isinstance(val, dict):
                raise ConfigError(source, "lab", "a table", val)
            for k, v in val.items():
                if k not in ("name", "description"):
                    raise ConfigError(source, f"lab.{k}", "one of: name, description", detail="unknown key")
                _check_type(source, f"lab.{k}", v, (str,), "a string")
            cfg.name, cfg.description = val.get("name", ""), val.get("description", "")
            continue
        if top not in NODES:
            hint = ("unknown table; this is a node file (link/config.py): give the lab file its [frontend] "
                    "lab names" if top in ("node", "channel", "protocol", "frontend") else "unknown table")
            raise ConfigError(source, top, "one of: lab, alice, bob", detail=hint)
        if not isinstance(val, dict):
            raise ConfigError(source, top, "a table of instruments", val)
        for role, inst in val.items():
            key = f"{top}.{role}"
            if (top, role) in _RECORDS:       # [bob.timing]: the timing calibration's record
                cfg.timing = _timing_record(source, key, inst)
                continue
            if not _ROLE.match(role):
                raise ConfigError(source, key, "a role name of lower-case letters, digits and '_'", role)
            if not isinstance(inst, dict):
                raise ConfigError(source, key, "a table with driver and resource", inst)
            for k in inst:
                if k not in _INSTRUMENT_KEYS:
                    raise ConfigError(
                        source,
                        f"{key}.{k}",
                        "one of: " + ", ".join(sorted(_INSTRUMENT_KEYS)),
                        detail="unknown key",
                    )
            for k in ("driver", "resource"):
                if k not in inst:
                    raise ConfigError(source, f"{key}.{k}", "a string", detail="missing")
                _check_type(source, f"{key}.{k}", inst[k], (str,), "a string")
            drv = inst["driver"]
            if drv not in DRIVERS:
                raise ConfigError(source, f"{key}.driver", "one of: " + ", ".join(sorted(DRIVERS)), drv)
            spec = DRIVERS[drv]
            res = inst["resource"]
            try:
                kind = resource_kind(res)
            except DriverError:
                raise ConfigError(
                    source,
                    f"{key}.resource",
                    "a VISA resource (TCPIP0::host::port::SOCKET), host:port or serial device path",
                    res,
                ) from None
            if kind not in spec.resource_kinds:
                raise ConfigError(
                    source,
                    f"{key}.resource",
                    f"a {' or '.join(spec.resource_kinds)} resource for {drv}",
                    res,
                    detail=f"this is a {kind} resource",
                )
            timeout = inst.get("timeout_s")
            if timeout is not None:
                _check_type(source, f"{key}.timeout_s", timeout, (int, float), "a number of seconds")
                if not (0 < timeout <= 600 and math.isfinite(timeout)):
                    raise ConfigError(source, f"{key}.timeout_s", "a number of seconds in (0, 600]", timeout)
            settings = inst.get("settings", {})
            if not isinstance(settings, dict):
                raise ConfigError(source, f"{key}.settings", "a table", settings)
            _check_settings(source, f"{key}.settings", spec.load_class(), settings, spec.converters)
            item = InstrumentSpec(
                top, role, drv, res, None if timeout is None else float(timeout), settings, source
            )
            item.build()  # the driver validates ranges without I/O
            cfg.instruments.append(item)
    if not cfg.instruments:
        raise ConfigError(
            source, "alice / bob", "at least one instrument table such as [alice.pattern_generator]"
        )
    return cfg


def load_lab(path: str | Path, *, loads: Callable[[str], dict] = tomllib.loads) -> LabConfig:
    """Read and validate a lab TOML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(p), "<file>", "a readable TOML file", detail=e.strerror or str(e)) from None
    try:
        data = loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(p), "<syntax>", "valid TOML", detail=str(e)) from None
    return parse_lab(data, str(p))
