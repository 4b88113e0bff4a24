"""``qkd run`` with a reused ``--workdir``: the summary counts this run's keys, the stores keep all."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

from link.cli import main
from link.keystore import key_count


def _count(db) -> int:
    with closing(sqlite3.connect(db)) as c:
        return key_count(c)


def test_second_run_in_a_workdir_reports_its_own_keys_and_keeps_the_first_runs(tmp_path, capsys):
    args = ["run", "--blocks", "1", "--block-bits", "524288", "--instruments", "model",
            "--workdir", str(tmp_path)]
    assert main([*args, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    n1 = _count(tmp_path / "alice.db")
    assert n1 > 0 and first["keys_this_run"] == {"alice": n1, "bob": n1} == first["keys"]

    assert main(args) == 0                       # the table a lab engineer reads
    text = capsys.readouterr().out
    n2 = _count(tmp_path / "alice.db")
    assert n2 > n1 and _count(tmp_path / "bob.db") == n2      # nothing of the first run lost
    line = next(x for x in text.splitlines() if x.strip().startswith("secret key"))
    # this run's keys, and the store total named as such (it was "in <n2> keys" before)
    assert f" in {n2 - n1} keys " in line and f"hold {n2} keys" in line, line
