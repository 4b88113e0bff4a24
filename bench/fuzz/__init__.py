"""Coverage-guided fuzzing of every byte parser (atheris): ``python -m bench.fuzz --seconds N``.

What it is for: issue 9's robustness requirement — each parser of untrusted bytes
(payload frames, PTU files and T2 records, ID900 timestamp messages,
reconciliation messages, lab and scenario TOML, the KME's JSON request bodies)
is driven by libFuzzer through atheris for a bounded time; the only exceptions a
target lets through are the ones its parser documents, so anything else
(IndexError, OverflowError, RecursionError, a C crash, a hang) is a finding.

What it must not do: run in the test process (libFuzzer calls ``exit`` when its
time is up, so each target runs in its own subprocess), or need atheris for the
regression check (``bench/fuzz/regressions/<target>/`` holds every input that
once crashed; ``tests/test_fuzz_regressions.py`` replays them through the plain
target functions).

Why atheris: it is libFuzzer with Python coverage and comparison feedback
(it learns magic bytes such as the PTU ``PQTTTR`` header from the ``==`` it
instruments), installs as a manylinux wheel, and also sees coverage of the C
core through the cffi calls' Python side.  Each run starts from a seed corpus
of valid inputs (``targets.seeds``) so the fuzzer mutates realistic messages.
"""
