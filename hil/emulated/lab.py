"""Start the emulated twins of a lab file's instruments (``qkd devices emulate``).

What it is for: a lab engineer (or a test) wants to try the production drivers
without hardware.  :func:`start_emulated_lab` starts, for every instrument of a
lab file whose driver has an emulated twin, that emulator: TCP twins on the
``127.0.0.1`` port the file names (or a free port), serial twins on a
pseudo-terminal symlinked at the device path the file names, so the same file
then works with ``qkd devices check``.  With no file it starts one of each
twin on free ports and :meth:`EmulatedLab.lab_toml` prints a lab file for them.

What it must not do: bind anything but 127.0.0.1, replace an existing
non-symlink device file, or leave servers or symlinks behind (``stop()`` and
the context manager remove both).  It knows nothing of the optical model: the
rig (``hil.Rig``) wires the emulators' hooks to it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from drivers.config import DRIVERS, InstrumentSpec, LabConfig, _import
from drivers.resources import resource_kind

__all__ = ["EmulatedLab", "start_emulated_lab", "DEFAULT_LAB"]

_SOCKET = re.compile(r"^TCPIP\d*::([^:]+)::(\d+)::SOCKET$", re.IGNORECASE)

# (node, role, driver) of the default emulated lab
DEFAULT_LAB = [
    ("alice", "pattern_generator", "keysight_33500"),
    ("bob", "snspd", "single_quantum"),
    ("bob", "apd", "idq_id120"),
    ("bob", "polarization", "oz_epc400"),
    ("bob", "paddles", "thorlabs_mpc320"),
]


def _tcp_port(resource: str) -> tuple[str, int]:
    r = resource.strip()
    m = _SOCKET.match(r)
    if m:
        host, port = m.group(1), int(m.group(2))
    else:
        host, _, port_s = r.removeprefix("tcp://").rpartition(":")
        port = int(port_s)
    if host not in ("127.0.0.1", "localhost"):
        raise ValueError(f"emulated instruments listen on 127.0.0.1 only; resource {resource!r} names {host}")
    return host, port


@dataclass
class EmulatedLab:
    servers: dict[str, object] = field(default_factory=dict)
    resources: dict[str, str] = field(default_factory=dict)
    drivers: dict[str, str] = field(default_factory=dict)
    settings: dict[str, dict] = field(default_factory=dict)
    links: list[Path] = field(default_factory=list)

    def stop(self) -> None:
        errors = []
        for srv in self.servers.values():
            try:
                srv.stop()
            except Exception as e:  # noqa: BLE001 - stop them all, report the first failure
                errors.append(e)
        for link in self.links:
            try:
                if link.is_symlink():
                    link.unlink()
            except OSError:
                pass
        self.servers.clear()
        self.links.clear()
        if errors:
            raise errors[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def lab_toml(self) -> str:
        """A lab file naming every running emulator (for ``qkd devices check --config``)."""
        out = ['[lab]\nname = "emulated"\ndescription = "emulated twins started by qkd devices emulate"\n']
        for key, res in self.resources.items():
            out.append(f'[{key}]\ndriver = "{self.drivers[key]}"\nresource = "{res}"\n')
            s = self.settings.get(key)
            if s:
                out.append(f"[{key}.settings]\n" + "".join(f"{k} = {v!r}\n" for k, v in s.items()))
        return "\n".join(out)


def _start_one(lab: EmulatedLab, key: str, driver: str, resource: str | None, settings: dict) -> None:
    spec = DRIVERS[driver]
    if spec.emulator is None:
        raise ValueError(f"{key}: driver {driver!r} has no emulated twin")
    cls = _import(spec.emulator)
    kw: dict = {"name": key}
    link = None
    if resource is not None and resource_kind(resource) in ("tcp", "visa"):
        _, kw["port"] = _tcp_port(resource)
    elif resource is not None:
        link = Path(resource.removeprefix("serial://"))
        if link.exists() and not link.is_symlink():
            raise ValueError(
                f"{key}: {link} exists and is not a symlink; choose another path for the emulator"
            )
    if driver == "single_quantum":
        kw["counts_port"] = int(settings.get("counts_port", 0)) if resource is not None else 0
        if "n_detectors" in settings:
            kw["n_detectors"] = settings["n_detectors"]
    try:
        srv = cls(**kw).start()
    except OSError as e:      # the port is taken: name the instrument and where it was to listen
        raise OSError(e.errno, f"{key}: cannot listen on {resource or 'a free port'}: "
                               f"{e.strerror or e}") from None
    lab.servers[key] = srv
    lab.drivers[key] = driver
    if link is not None:
        if link.is_symlink():
            link.unlink()
        os.symlink(srv.port, link)
        lab.links.append(link)
        lab.resources[key] = str(link)
    elif resource is not None:
        lab.resources[key] = resource
    else:
        lab.resources[key] = str(srv.port) if driver in ("oz_epc400", "thorlabs_mpc320") else srv.address
    if driver == "single_quantum":
        lab.settings[key] = {"counts_port": srv.counts_port}


def start_emulated_lab(cfg: LabConfig | None = None) -> EmulatedLab:
    """Start the emulators for ``cfg`` (or the default set on free ports); stop them with ``stop()``."""
    lab = EmulatedLab()
    try:
        if cfg is None:
            for node, role, driver in DEFAULT_LAB:
                _start_one(lab, f"{node}.{role}", driver, None, {})
        else:
            inst: InstrumentSpec
            for inst in cfg:
                if DRIVERS[inst.driver].emulator is None:
                    continue
                _start_one(lab, inst.key, inst.driver, inst.resource, inst.settings)
    except BaseException:
        lab.stop()
        raise
    return lab
