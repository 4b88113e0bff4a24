"""The node file (TOML) that ``qkd alice --config`` and ``qkd bob --config`` run from.

Layout (paths are relative to the file)::

    [node]
    role = "alice"                      # "alice" or "bob"
    link_id = "lab-link-1"              # both nodes of a pair use the same
    psk = "alice.psk"                   # from `qkd psk`
    store = "alice.db"                  # this node's SQLite key store

    [channel]
    proto = "tcp://0.0.0.0:7100"        # Alice binds these, Bob connects to them
    ctrl = "tcp://0.0.0.0:7101"
    telemetry = "tcp://127.0.0.1:7110"  # this node's PUB socket (`qkd monitor --connect`)
    retry_s = 0.2

    [protocol]                          # must be the same on both nodes
    block_bits = 1048576
    key_size_bits = 256
    reconciliation = "cascade"
    finite_key = "2-decoy"              # or "1-decoy"
    eps_sec = 1e-10
    eps_cor = 1e-15
    eps_auth = 1e-11                    # a block's authentication term above it: no key (forgeries)
    p_z = 0.5                           # Alice's probability of the Z basis
    receiver = "passive"                # Bob's basis choice: "passive" (beam splitter) or "active"
    receiver_split_z = 0.5              # passive: measured share of the light in Bob's Z arm
    detector_efficiency_ratio_min = 0.9 # lab's bound on eta_min/eta_max of Bob's four detectors
                                        # over every mode (README: how to measure it)
    intensities = [0.5, 0.1, 0.0002]
    intensity_probs = [0.5, 0.3, 0.2]
    auth_refill_bytes = 4096
    qber_alarm = 0.11

    [frontend]
    lab = "lab.toml"                    # the lab file (drivers.config) naming the instruments
    instrument = "pattern_generator"    # Alice: her pattern generator's role in the lab file;
                                        # Bob: his time tagger's ("time_tagger")
    frame_slots = 262144
    clock_hz = 1e9
    offsets_ps = [0.0, 0.0, 0.0, 0.0]   # Bob: per-detector offsets from timing calibration; if absent,
                                        # those of the lab file's [bob.timing] (`qkd calibrate timing
                                        # --config lab.toml` writes it), else zeros
    window_ps = 800.0                   # Bob: detection window (absent: [bob.timing]'s, else 0.8 slot)
    dead_time_ns = 50.0                 # Bob: the longest dead time of his detectors, as set on
                                        # them (absent: [bob.timing]'s, which `qkd calibrate timing`
                                        # measures; neither: qkd bob refuses to start). An event is
                                        # kept only if every detector was live (link.slotting)

    [kme]                               # optional: the ETSI GS QKD 014 key delivery (link.kme)
    kme_id = "KME_A"
    peer_kme_id = "KME_B"
    listen = "127.0.0.1:8443"           # HOST:PORT of the HTTPS server (port 0: any free port)
    cert = "pki/KME_A.pem"              # server + client certificate, from `qkd pki --kme KME_A
                                        # --kme KME_B --sae SAE_A --sae SAE_B` (its default names
                                        # are others: name the IDs this file uses)
    key = "pki/KME_A.key"
    ca = "pki/ca.pem"                   # the CA that signed the SAEs' and the peer KME's certificates
    reservations = "alice-kme.db"       # keys reserved for this site's slave SAEs (SQLite)
    peer_url = "https://10.0.0.2:8443"  # standalone `qkd kme` only: the peer KME (mutual TLS);
                                        # inside `qkd alice`/`qkd bob` the link's channel is used
    key_size = 256                      # and min_key_size, max_key_size, max_key_per_request,
                                        # max_key_count, timeout_s (the peer's answer)
    [kme.saes]                          # SAE attached to this KME = the remote SAEs it shares keys with
    SAE_A = ["SAE_B"]

    [metrics]                           # optional: Prometheus endpoint of `qkd alice`/`qkd bob`
    port = 9100                         # 0: any free port
    addr = "127.0.0.1"

    [watch]                             # optional: instruments read back while the link runs
    instruments = ["snspd", "apd"]      # their roles in the lab file (this node's); a failing one
    period_s = 0.5                      # stops the node with an `instrument` alarm (link.instrument_watch)

What it must not do: open sockets, files other than the one it reads, or
instruments. Every error is a ``ConfigError`` naming the file, the dotted key
and what was expected, raised on load (never later, half-way through a run).
"""

from __future__ import annotations

import numbers
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .node import NodeConfig


class ConfigError(ValueError):
    """A node file is missing, unreadable or invalid; the message names file and key."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source, self.key = source, key
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


@dataclass
class ChannelSettings:
    proto: str
    ctrl: str
    telemetry: str = "tcp://127.0.0.1:*"
    retry_s: float = 0.2


@dataclass
class FrontendSettings:
    lab: Path
    instrument: str
    frame_slots: int
    clock_hz: float
    offsets_ps: tuple[float, float, float, float] | None = None   # None: not in the file
    window_ps: float = 0.0
    dead_time_ns: float | None = None   # None: not in the file (Bob: [bob.timing]'s); Alice: unused


@dataclass
class CalibrationSettings:
    """``[calibration]`` (Bob, optional): polarization tracking while key is made (issue 7)."""

    track_polarization: bool = False
    controller: str = "polarization"          # the controller's role in the lab file (bob.<controller>)
    drift_rad_per_sqrt_s: float = 0.1          # expected fiber drift (the tracker's process noise)


@dataclass
class KmeSettings:
    kme_id: str
    peer_kme_id: str
    host: str
    port: int
    cert: Path
    key: Path
    ca: Path
    reservations: Path
    saes: dict[str, tuple[str, ...]]
    peer_url: str | None = None
    timeout_s: float = 5.0
    limits: dict[str, int] = field(default_factory=dict)   # key_size, min_key_size, ... (KmeConfig)


@dataclass
class WatchSettings:
    """``[watch]`` (optional): the node's other instruments, read back every ``period_s``."""

    instruments: tuple[str, ...] = ()
    period_s: float = 0.5


@dataclass
class MetricsSettings:
    port: int
    addr: str = "127.0.0.1"


@dataclass
class NodeFile:
    source: Path
    role: str
    link_id: str
    psk: Path
    store: Path
    channel: ChannelSettings
    frontend: FrontendSettings
    protocol: NodeConfig = field(default_factory=NodeConfig)
    kme: KmeSettings | None = None
    metrics: MetricsSettings | None = None
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    watch: WatchSettings = field(default_factory=WatchSettings)


_NUM = (int, float)


def _get(src: str, table: dict, section: str, key: str, types: tuple, expected: str,
         default: Any = ..., check=None) -> Any:
    dotted = f"{section}.{key}"
    if key not in table:
        if default is ...:
            raise ConfigError(src, dotted, f"missing (expected {expected})")
        return default
    v = table[key]
    if isinstance(v, bool) and bool not in types or not isinstance(v, types):
        raise ConfigError(src, dotted, f"expected {expected}, got {v!r}")
    if check is not None:
        problem = check(v)
        if problem:
            raise ConfigError(src, dotted, f"expected {expected}, got {v!r} ({problem})")
    return v


def _unknown(src: str, table: dict, section: str, known: set[str]) -> None:
    for k in table:
        if k not in known:
            raise ConfigError(src, f"{section}.{k}" if section else k,
                              f"unknown key (known: {', '.join(sorted(known))})")


def _table(src: str, data: dict, name: str, required: bool = True) -> dict:
    t = data.get(name)
    if t is None:
        if required:
            raise ConfigError(src, f"[{name}]", "missing table")
        return {}
    if not isinstance(t, dict):
        raise ConfigError(src, name, f"expected a table, got {t!r}")
    return t


def _endpoint(v: str) -> str | None:
    return None if v.startswith(("tcp://", "ipc://", "inproc://")) else "not a ZeroMQ endpoint"


def _float_list(n: int | None, lo: float | None = None):
    def check(v):
        if n is not None and len(v) != n:
            return f"need {n} numbers"
        if not all(isinstance(x, _NUM) and not isinstance(x, bool) for x in v):
            return "numbers only"
        if lo is not None and any(x < lo for x in v):
            return f"each >= {lo}"
        return None
    return check


def parse_node_file(data: dict, source: str | Path) -> NodeFile:
    src = str(source)
    base = Path(source).resolve().parent if source != "<dict>" else Path.cwd()
    if "node" not in data and {"lab", "alice", "bob"} & set(data):
        raise ConfigError(src, "", "this is a lab file (drivers/config.py: [lab], [alice.*], [bob.*]); "
                                   "--config takes a node file (link/config.py) whose [frontend] lab "
                                   "names it")
    _unknown(src, data, "", {"node", "channel", "protocol", "frontend", "calibration", "kme", "metrics",
                             "watch"})
    node = _table(src, data, "node")
    _unknown(src, node, "node", {"role", "link_id", "psk", "store"})
    role = _get(src, node, "node", "role", (str,), '"alice" or "bob"',
                check=lambda v: None if v in ("alice", "bob") else "unknown role")
    link_id = _get(src, node, "node", "link_id", (str,), "a non-empty string",
                   check=lambda v: None if v.strip() else "empty")
    psk = base / _get(src, node, "node", "psk", (str,), "a path to the pre-shared secret file")
    store = base / _get(src, node, "node", "store", (str,), "a path for the key store")

    ch = _table(src, data, "channel")
    _unknown(src, ch, "channel", {"proto", "ctrl", "telemetry", "retry_s"})
    chs = ChannelSettings(
        proto=_get(src, ch, "channel", "proto", (str,), "a ZeroMQ endpoint", check=_endpoint),
        ctrl=_get(src, ch, "channel", "ctrl", (str,), "a ZeroMQ endpoint", check=_endpoint),
        telemetry=_get(src, ch, "channel", "telemetry", (str,), "a ZeroMQ endpoint",
                       "tcp://127.0.0.1:*", check=_endpoint),
        retry_s=float(_get(src, ch, "channel", "retry_s", _NUM, "seconds > 0", 0.2,
                           check=lambda v: None if v > 0 else "must be > 0")))

    pr = _table(src, data, "protocol", required=False)
    known = {f.name for f in fields(NodeConfig)}
    _unknown(src, pr, "protocol", known)
    defaults = NodeConfig()
    kw: dict[str, Any] = {}
    for f in fields(NodeConfig):
        if f.name not in pr:
            continue
        d = getattr(defaults, f.name)
        if isinstance(d, tuple):
            v = _get(src, pr, "protocol", f.name, (list,), "a list of numbers >= 0",
                     check=_float_list(None, 0.0))
            kw[f.name] = tuple(float(x) for x in v)
        elif isinstance(d, bool):
            kw[f.name] = _get(src, pr, "protocol", f.name, (bool,), "true or false")
        elif isinstance(d, int):
            kw[f.name] = _get(src, pr, "protocol", f.name, (int,), "an integer > 0",
                              check=lambda v: None if v > 0 else "must be > 0")
        elif isinstance(d, float):
            kw[f.name] = float(_get(src, pr, "protocol", f.name, _NUM, "a number > 0",
                                    check=lambda v: None if v > 0 else "must be > 0"))
        else:
            kw[f.name] = _get(src, pr, "protocol", f.name, (str,), "a string")
    cfg = NodeConfig(**{**{f.name: getattr(defaults, f.name) for f in fields(NodeConfig)}, **kw})
    if cfg.finite_key not in ("2-decoy", "1-decoy"):
        raise ConfigError(src, "protocol.finite_key",
                          f'expected "2-decoy" or "1-decoy", got {cfg.finite_key!r}')
    from postproc_c import methods
    if cfg.reconciliation not in [*methods(), "auto"]:
        raise ConfigError(src, "protocol.reconciliation",
                          f"expected one of {[*methods(), 'auto']}, got {cfg.reconciliation!r}")
    if len(cfg.auto_ldpc_qber) != 2 or not cfg.auto_ldpc_qber[0] <= cfg.auto_ldpc_qber[1] < 0.5:
        raise ConfigError(src, "protocol.auto_ldpc_qber",
                          f"expected [lo, hi] with 0 <= lo <= hi < 0.5, got {list(cfg.auto_ldpc_qber)}")
    if not 0 < cfg.p_z < 1:
        raise ConfigError(src, "protocol.p_z", f"expected 0 < p_z < 1, got {cfg.p_z}")
    if cfg.receiver not in ("passive", "active"):
        raise ConfigError(src, "protocol.receiver", f'expected "passive" or "active", got {cfg.receiver!r}')
    if not 0 < cfg.receiver_split_z < 1:
        raise ConfigError(src, "protocol.receiver_split_z",
                          f"expected 0 < receiver_split_z < 1, got {cfg.receiver_split_z}")
    if cfg.receiver == "passive" and cfg.receiver_split_z < 0.5:
        raise ConfigError(src, "protocol.receiver_split_z",
                          f"expected 0.5 <= receiver_split_z < 1 for a passive receiver (the analysis "
                          f"does not cover one that sends less than half its light to the key basis "
                          f"Z), got {cfg.receiver_split_z}")
    if not 0 < cfg.detector_efficiency_ratio_min <= 1:
        raise ConfigError(src, "protocol.detector_efficiency_ratio_min",
                          f"expected 0 < detector_efficiency_ratio_min <= 1 (the lab's lower bound on "
                          f"eta_min/eta_max of Bob's four detectors), got "
                          f"{cfg.detector_efficiency_ratio_min}")
    if len(cfg.intensities) != len(cfg.intensity_probs):
        raise ConfigError(src, "protocol.intensity_probs",
                          f"expected one probability per intensity ({len(cfg.intensities)})")
    if abs(sum(cfg.intensity_probs) - 1) > 1e-9:
        raise ConfigError(src, "protocol.intensity_probs", "expected probabilities summing to 1")
    try:
        from .finite_key import DecoySettings
        DecoySettings(cfg.intensities, cfg.intensity_probs).check(cfg.finite_key)
    except ValueError as exc:
        raise ConfigError(src, "protocol.intensities", str(exc)) from None
    if cfg.key_size_bits % 8:
        raise ConfigError(src, "protocol.key_size_bits", "expected a multiple of 8")

    fe = _table(src, data, "frontend")
    _unknown(src, fe, "frontend", {"lab", "instrument", "frame_slots", "clock_hz", "offsets_ps",
                                   "window_ps", "dead_time_ns"})
    fes = FrontendSettings(
        lab=base / _get(src, fe, "frontend", "lab", (str,), "a path to the lab file"),
        instrument=_get(src, fe, "frontend", "instrument", (str,), "an instrument role in the lab file"),
        frame_slots=_get(src, fe, "frontend", "frame_slots", (int,), "an integer > 0",
                         check=lambda v: None if v > 0 else "must be > 0"),
        clock_hz=float(_get(src, fe, "frontend", "clock_hz", _NUM, "a frequency in Hz > 0",
                            check=lambda v: None if v > 0 else "must be > 0")),
        offsets_ps=(None if "offsets_ps" not in fe else
                    tuple(float(x) for x in _get(src, fe, "frontend", "offsets_ps", (list,),
                                                 "4 numbers (ps)", check=_float_list(4)))),
        window_ps=float(_get(src, fe, "frontend", "window_ps", _NUM, "a window in ps >= 0", 0.0,
                             check=lambda v: None if v >= 0 else "must be >= 0")),
        dead_time_ns=(None if "dead_time_ns" not in fe else
                      float(_get(src, fe, "frontend", "dead_time_ns", _NUM,
                                 "the longest dead time of Bob's detectors in ns (> 0)",
                                 check=lambda v: None if 0 < v < 1e9 else
                                 "must be > 0 (and < 1 s): every detector has one, and Bob keeps an "
                                 "event only if no detector was dead (link.slotting)"))))
    ca = _table(src, data, "calibration", required=False)
    _unknown(src, ca, "calibration", {"track_polarization", "controller", "drift_rad_per_sqrt_s"})
    cal = CalibrationSettings(
        track_polarization=_get(src, ca, "calibration", "track_polarization", (bool,), "true or false",
                                False),
        controller=_get(src, ca, "calibration", "controller", (str,),
                        "the polarization controller's role in the lab file", "polarization"),
        drift_rad_per_sqrt_s=float(_get(src, ca, "calibration", "drift_rad_per_sqrt_s", _NUM,
                                        "a rate in rad/sqrt(s) > 0", 0.1,
                                        check=lambda v: None if v > 0 else "must be > 0")))
    if cal.track_polarization and role != "bob":
        raise ConfigError(src, "calibration.track_polarization", "only Bob's node drives a controller")
    kme = parse_kme(src, base, data) if "kme" in data else None
    metrics = None
    if "metrics" in data:
        mt = _table(src, data, "metrics")
        _unknown(src, mt, "metrics", {"port", "addr"})
        metrics = MetricsSettings(
            port=_get(src, mt, "metrics", "port", (int,), "a TCP port 0..65535",
                      check=lambda v: None if 0 <= v <= 65535 else "out of range"),
            addr=_get(src, mt, "metrics", "addr", (str,), "an address to listen on", "127.0.0.1",
                      check=lambda v: None if v.strip() else "empty"))
    wa = _table(src, data, "watch", required=False)
    _unknown(src, wa, "watch", {"instruments", "period_s"})

    def _roles(v):
        if not all(isinstance(x, str) and x.strip() for x in v):
            return "instrument roles (non-empty strings)"
        if fes.instrument in v:
            return f"{fes.instrument!r} is the front end (its failures already stop the node)"
        if cal.track_polarization and cal.controller in v:
            return f"{cal.controller!r} is driven by the tracking loop (its failures already stop the node)"
        return "each role once" if len(set(v)) != len(v) else None
    watch = WatchSettings(
        instruments=tuple(_get(src, wa, "watch", "instruments", (list,),
                               "a list of instrument roles in the lab file", [], check=_roles)),
        period_s=float(_get(src, wa, "watch", "period_s", _NUM, "a period in s > 0", 0.5,
                            check=lambda v: None if v > 0 else "must be > 0")))
    return NodeFile(Path(source), role, link_id, psk, store, chs, fes, cfg, kme, metrics, cal, watch)


_KME_LIMITS = ("key_size", "min_key_size", "max_key_size", "max_key_per_request", "max_key_count")


def _host_port(v: str) -> str | None:
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return "expected HOST:PORT"
    return None


def parse_kme(src: str, base: Path, data: dict) -> KmeSettings:
    """The ``[kme]`` table (see the module docstring); ``ConfigError`` naming ``kme.<key>``."""
    km = _table(src, data, "kme")
    _unknown(src, km, "kme", {"kme_id", "peer_kme_id", "listen", "cert", "key", "ca", "reservations",
                              "peer_url", "timeout_s", "saes", *_KME_LIMITS})
    nonempty = lambda v: None if v.strip() else "empty"  # noqa: E731
    kme_id = _get(src, km, "kme", "kme_id", (str,), "a non-empty KME ID", check=nonempty)
    peer = _get(src, km, "kme", "peer_kme_id", (str,), "the peer KME's ID", check=nonempty)
    if peer == kme_id:
        raise ConfigError(src, "kme.peer_kme_id", f"must differ from kme.kme_id ({kme_id!r})")
    listen = _get(src, km, "kme", "listen", (str,), "HOST:PORT", "127.0.0.1:0", check=_host_port)
    host, _, port = listen.rpartition(":")
    paths = {}
    for k, what in (("cert", "the KME's certificate (PEM)"), ("key", "the KME's private key (PEM)"),
                    ("ca", "the lab CA certificate (PEM)")):
        p = base / _get(src, km, "kme", k, (str,), f"a path to {what}")
        if not p.is_file():
            raise ConfigError(src, f"kme.{k}", f"{p} does not exist (create it with `qkd pki`)")
        paths[k] = p
    reservations = base / _get(src, km, "kme", "reservations", (str,),
                               "a path for the reservation store (SQLite)")
    peer_url = _get(src, km, "kme", "peer_url", (str,), "https://HOST:PORT", None,
                    check=lambda v: None if v.startswith("https://") else "not an https:// URL")
    timeout_s = float(_get(src, km, "kme", "timeout_s", _NUM, "seconds > 0", 5.0,
                           check=lambda v: None if v > 0 else "must be > 0"))
    limits = {k: _get(src, km, "kme", k, (int,), "an integer > 0",
                      check=lambda v: None if v > 0 else "must be > 0") for k in _KME_LIMITS if k in km}
    for k in ("key_size", "min_key_size", "max_key_size"):
        if k in limits and limits[k] % 8:
            raise ConfigError(src, f"kme.{k}", f"expected a multiple of 8 bits, got {limits[k]}")
    saes_t = km.get("saes")
    if not isinstance(saes_t, dict) or not saes_t:
        raise ConfigError(src, "kme.saes", "expected a table SAE_ID = [remote SAE IDs] with at least "
                                            "one SAE")
    saes: dict[str, tuple[str, ...]] = {}
    for sae, partners in saes_t.items():
        if not sae.strip():
            raise ConfigError(src, "kme.saes", "blank SAE ID")
        if not isinstance(partners, list) or not all(isinstance(x, str) and x.strip() for x in partners):
            raise ConfigError(src, f"kme.saes.{sae}", f"expected a list of remote SAE IDs, got {partners!r}")
        if sae in partners:
            raise ConfigError(src, f"kme.saes.{sae}", "an SAE cannot share keys with itself")
        saes[sae] = tuple(partners)
    from .kme import KmeConfig
    try:
        KmeConfig(kme_id, peer, tuple(saes), saes, **limits)
    except ValueError as exc:
        name, _, problem = str(exc).partition(": ")
        raise ConfigError(src, f"kme.{name}", problem or str(exc)) from None
    return KmeSettings(kme_id, peer, host, int(port), paths["cert"], paths["key"], paths["ca"],
                       reservations, saes, peer_url, timeout_s, limits)


def load_node_file(path: str | Path) -> NodeFile:
    """Read and validate a node file; ``ConfigError`` names the file and key on any problem."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(str(p), "", f"cannot read the file: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), "", f"not valid TOML: {exc}") from None
    return parse_node_file(data, p)


RIG_PROTOCOL_KEYS = ("block_bits", "p_z", "receiver", "receiver_split_z", "intensities",
                     "intensity_probs", "finite_key", "detector_efficiency_ratio_min")


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, numbers.Integral):   # numpy integers too
        return str(int(v))
    if isinstance(v, float):          # numpy float64 too, written as a plain number
        return repr(float(v))
    raise TypeError(f"no TOML form for {v!r}")


def render_node_file(tables: dict[str, dict[str, Any]]) -> str:
    """A node file's text from ``{table: {key: value}}`` (values str, bool, int, float or lists of
    them), in the order given: what the lab set-up scripts and tests write for the rig
    (``bench.soak``, ``tests/rig_nodes.py``); ``load_node_file`` reads it back."""
    out = []
    for name, table in tables.items():
        out.append(f"[{name}]")
        out += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
        out.append("")
    return "\n".join(out)

