"""Lab TOML files: validation errors name file, key and expected value; `qkd devices check/emulate`."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from drivers.commands import check
from drivers.config import ConfigError, load_lab
from drivers.keysight_awg import FrameEncoding, Keysight33500
from hil.emulated.lab import start_emulated_lab
from link.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

GOOD = """
[lab]
name = "t"
[alice.pattern_generator]
driver = "keysight_33500"
resource = "TCPIP0::192.168.1.2::5025::SOCKET"
timeout_s = 3
[alice.pattern_generator.settings]
max_points = 4194304
[alice.pattern_generator.settings.encoding]
samples_per_slot = 8
pulse_samples = 3
[bob.polarization]
driver = "oz_epc400"
resource = "/dev/ttyUSB0"
"""


def _write(tmp_path, text, name="lab.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_examples_load_and_build():
    for f in ("lab.toml", "emulated.toml"):
        cfg = load_lab(EXAMPLES / f)
        assert {i.key for i in cfg} >= {"alice.pattern_generator", "bob.polarization", "bob.snspd"}
        assert [i.key for i in cfg.find("bob", "polarization_controller")] == [
            "bob.polarization",
            "bob.paddles",
        ]


def test_good_file_builds_drivers_with_settings(tmp_path):
    cfg = load_lab(_write(tmp_path, GOOD))
    awg = cfg.build("alice", "pattern_generator")
    assert isinstance(awg, Keysight33500) and not awg.is_open  # no I/O on load
    assert awg.encoding == FrameEncoding(samples_per_slot=8, pulse_samples=3)
    assert awg.timeout_s == 3.0 and awg._max_points_override == 4194304
    assert "alice.pattern_generator" in awg.name


@pytest.mark.parametrize(
    "edit, key, expected",
    [
        (("keysight_33500", "keysight_99"), "alice.pattern_generator.driver", "one of: idq_id120"),
        (('"/dev/ttyUSB0"', '"nowhere"'), "bob.polarization.resource", "a VISA resource"),
        (
            ('"TCPIP0::192.168.1.2::5025::SOCKET"', '"/dev/ttyS0"'),
            "alice.pattern_generator.resource",
            "a visa or tcp resource",
        ),
        (("timeout_s = 3", "timeout_s = -1"), "alice.pattern_generator.timeout_s", "(0, 600]"),
        (("timeout_s = 3", 'timeout_s = "3"'), "alice.pattern_generator.timeout_s", "a number of seconds"),
        (
            ("max_points = 4194304", "max_points = 4.5"),
            "alice.pattern_generator.settings.max_points",
            "an integer",
        ),
        (
            ("max_points = 4194304", "max_points = 3"),
            "alice.pattern_generator.settings.max_points",
            "accepts",
        ),
        (("max_points = 4194304", "colour = 1"), "alice.pattern_generator.settings.colour", "a setting of"),
        (
            ("pulse_samples = 3", "pulse_samples = 9"),
            "alice.pattern_generator.settings.encoding",
            "valid values",
        ),
        (
            ("pulse_samples = 3", "pulse_width = 3"),
            "alice.pattern_generator.settings.encoding.pulse_width",
            "one of: samples_per_slot",
        ),
        (("[bob.polarization]", "[carol.polarization]"), "carol", "one of: lab, alice, bob"),
        (
            ('resource = "/dev/ttyUSB0"', 'resource = "/dev/ttyUSB0"\nbaud = 9600'),
            "bob.polarization.baud",
            "one of: driver, resource, settings",
        ),
        (('resource = "/dev/ttyUSB0"', ""), "bob.polarization.resource", "a string"),
        (('name = "t"', "name = 5"), "lab.name", "a string"),
        # [bob.timing], the timing calibration's record, is checked where every tool reads it
        (("[bob.polarization]", "[bob.timing]\noffsets_ps = [1.0, 2.0]\n\n[bob.polarization]"),
         "bob.timing.offsets_ps", "4 numbers (ps)"),
        (("[bob.polarization]", '[bob.timing]\noffsets_ps = [1.0, 2.0, "x", 4.0]\n\n[bob.polarization]'),
         "bob.timing.offsets_ps[2]", "a number (ps)"),
        (("[bob.polarization]", '[bob.timing]\noffsets_ps = [1, 2, 3, 4]\nwindow_ps = "wide"\n\n'
          "[bob.polarization]"), "bob.timing.window_ps", "a number"),
    ],
)
def test_bad_files_name_file_key_and_expected_value(tmp_path, edit, key, expected):
    old, new = edit
    assert old in GOOD
    p = _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as ei:
        load_lab(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}: {key}: expected"), msg
    assert expected in msg, msg
    assert ei.value.key == key


def test_syntax_error_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"lab.toml: <syntax>: expected valid TOML"):
        load_lab(_write(tmp_path, "[alice\n"))
    with pytest.raises(ConfigError, match="<file>: expected a readable TOML file"):
        load_lab(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="at least one instrument"):
        load_lab(_write(tmp_path, '[lab]\nname = "x"\n', "empty.toml"))


def test_devices_check_against_emulated_lab(tmp_path):
    with start_emulated_lab() as lab:
        p = _write(tmp_path, lab.lab_toml())
        out = io.StringIO()
        assert check(str(p), out=out) == 0
        text = out.getvalue()
        assert "5/5 instruments answered" in text
        for model in ("33522B", "WebSQ", "ID120", "EPC-400", "MPC320"):
            assert model in text
        # a stopped instrument shows as a failure row naming the error, exit code 1
        lab.servers["bob.apd"].stop()
        out = io.StringIO()
        assert check(str(p), out=out) == 1
        assert "ConnectionLost" in out.getvalue() and "4/5 instruments answered" in out.getvalue()
        del lab.servers["bob.apd"]


def test_devices_check_keeps_one_line_per_instrument_on_a_multi_line_error(tmp_path):
    # examples/lab.toml's ID120 is a USBTMC resource; without PyUSB, pyvisa-py's error is two
    # lines ("Please install PyUSB ...\nNo module named 'usb'"), and its second line stood alone
    # in the table. Each instrument keeps one row whatever its error says.
    p = _write(tmp_path, """
[bob.monitor_apd]
driver = "idq_id120"
resource = "USB0::0x1DDC::0x0330::002008::INSTR"
timeout_s = 0.5
""")
    out = io.StringIO()
    assert check(str(p), out=out) == 1
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["instrument", "bob.monitor_apd", "0/1"], lines
    assert "USB0::0x1DDC::0x0330::002008::INSTR" in lines[1]


def test_devices_emulate_binds_the_files_ports_and_paths(tmp_path):
    text = f"""
[alice.pattern_generator]
driver = "keysight_33500"
resource = "127.0.0.1:0"
[bob.polarization]
driver = "oz_epc400"
resource = "{tmp_path}/epc"
"""
    cfg = load_lab(_write(tmp_path, text))
    with start_emulated_lab(cfg) as lab:
        assert Path(f"{tmp_path}/epc").is_symlink()
        assert lab.resources["bob.polarization"] == f"{tmp_path}/epc"
        with cfg.build("bob", "polarization") as epc:
            epc.set_voltage_mv(3, -1234)
        assert lab.servers["bob.polarization"].voltages_mv[2] == -1234
    assert not Path(f"{tmp_path}/epc").exists()


def test_cli_reports_config_errors(tmp_path, capsys):
    p = _write(tmp_path, GOOD.replace("oz_epc400", "oz_epc999"))
    assert main(["devices", "check", "--config", str(p)]) == 2
    assert "bob.polarization.driver: expected one of" in capsys.readouterr().err
    assert main(["devices", "emulate", "--duration-s", "0"]) == 0
    assert "[alice.pattern_generator]" in capsys.readouterr().out


def test_time_tagger_and_random_source_entries(tmp_path):
    p = _write(
        tmp_path,
        """
[alice.qrng]
driver = "os_entropy"
resource = "/dev/urandom"
[bob.time_tagger]
driver = "idq_id900"
resource = "tcp://127.0.0.1:5555"
[bob.time_tagger.settings]
channel_map = { 1 = 1, 2 = 2 }
""",
    )
    cfg = load_lab(p)
    assert cfg.build("bob", "time_tagger").channel_map == {1: 1, 2: 2}
    out = io.StringIO()
    check(str(p), node="alice", out=out)
    assert (
        "is_quantum=False read 4096 bytes" in out.getvalue() and "1/1 instruments answered" in out.getvalue()
    )
    bad = _write(
        tmp_path,
        GOOD.replace(
            "[bob.polarization]",
            '[bob.tt]\ndriver = "idq_id900"\n'
            'resource = "tcp://127.0.0.1:5555"\n[bob.tt.settings]\n'
            "channel_map = { 1 = 7 }\n[bob.polarization]",
        ),
        "bad.toml",
    )
    with pytest.raises(
        ConfigError, match=r"bad.toml: bob.tt.settings.channel_map: expected a value the driver"
    ):
        load_lab(bad)


def test_emulate_on_a_port_in_use_names_the_instrument_and_port(tmp_path, capsys):
    # `qkd devices emulate --config examples/emulated.toml` while another one runs: an error naming the
    # instrument and its resource, exit 2 (was: OSError traceback); nothing left listening
    import socket

    from drivers.commands import emulate

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        lab = tmp_path / "lab.toml"
        lab.write_text(f'[bob.apd]\ndriver = "idq_id120"\nresource = "127.0.0.1:{_free()}"\n\n'
                       f'[alice.pattern_generator]\ndriver = "keysight_33500"\n'
                       f'resource = "127.0.0.1:{port}"\n')
        assert emulate(str(lab), 0.0) == 2
    err = capsys.readouterr().err
    assert "alice.pattern_generator" in err and f"127.0.0.1:{port}" in err and "in use" in err, err


def _free() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
