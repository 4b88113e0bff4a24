"""The designed QC mother codes (``codes.DESIGNED``) are built as documented.

Checks that the base matrix of each designed code has exactly the column degrees of its profile
(``ldpc_design.as_built``: the profile rounded to 256 base columns, nothing capped), the
documented column counts and check degrees, and that the density-evolution threshold stored
with the code holds for the profile as built: discretized sum-product DE (Richardson-Urbanke
2001) converges 3 % below p* and stalls 3 % above it.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.ldpc_design import DE, as_built, h2
from postproc_c import codes

#: Base-matrix column counts per degree and check degrees, as documented in ``codes.DESIGNED``.
DOCUMENTED = {
    0.7: ({2: 76, 3: 111, 9: 53, 16: 2, 38: 13, 77: 1}, (20, 21), 1.0253),
    0.85: ({2: 37, 3: 136, 8: 4, 9: 46, 10: 15, 38: 18}, (46, 47), 1.046),
    0.91: ({2: 22, 3: 133, 6: 5, 7: 31, 8: 25, 9: 13, 23: 27}, (70, 71), 1.084),
    0.88: ({2: 30, 3: 137, 8: 31, 9: 29, 10: 7, 31: 22}, (55, 56), 1.0519),
    0.89: ({2: 26, 3: 140, 7: 7, 8: 37, 9: 11, 10: 7, 11: 1, 27: 27}, (63, 64), 1.0620),
    0.93: ({2: 18, 3: 141, 5: 2, 6: 6, 7: 10, 8: 12, 9: 17, 10: 10, 11: 1, 19: 39}, (88, 89), 1.0950),
    0.95: ({2: 12, 3: 153, 13: 91}, (128, 129), 1.1354),
    0.82: ({2: 45, 3: 138, 9: 1, 10: 56, 38: 4, 46: 12}, (38, 39), 1.0544),
    0.77: ({2: 58, 3: 128, 9: 24, 10: 31, 25: 2, 38: 10, 59: 3}, (27, 28), 1.0442),
    0.94: ({2: 15, 3: 133, 4: 2, 5: 20, 6: 22, 7: 3, 16: 61}, (104, 105), 1.0993),
    0.67: ({2: 84, 3: 102, 8: 33, 9: 18, 18: 7, 38: 10, 85: 2}, (18, 19), 1.0204),
    0.86: ({2: 35, 3: 138, 8: 4, 9: 59, 10: 1, 36: 19}, (48, 49), 1.0521),
    0.81: ({2: 48, 3: 127, 8: 1, 9: 10, 10: 49, 11: 3, 12: 3, 14: 2, 38: 4, 49: 9}, (35, 36), 1.0501),
    0.72: ({2: 71, 3: 116, 9: 46, 10: 7, 20: 3, 38: 12, 72: 1}, (21, 22), 1.0303),
}


@pytest.mark.parametrize("rate", sorted(codes.DESIGNED))
def test_designed_code_has_its_profile(rate):
    mb, threshold, lam, _rho = codes.DESIGNED[rate]
    cnt, edges, _, rho_b = as_built(lam, mb)
    spec = codes.qc_code(rate)
    col_deg = np.bincount(spec.blk_col, minlength=codes.QC_NB)
    built = dict(zip(*np.unique(col_deg, return_counts=True), strict=True))
    assert {int(d): int(c) for d, c in built.items()} == cnt == DOCUMENTED[rate][0]
    assert spec.blk_col.size == edges and spec.edges == edges * spec.z
    row_deg = np.diff(spec.blk_ptr.astype(np.int64))
    assert (int(row_deg.min()), int(row_deg.max())) == DOCUMENTED[rate][1] == tuple(sorted(rho_b))
    assert spec.threshold == threshold


@pytest.mark.parametrize("rate", [0.67, 0.7, 0.72, 0.77, 0.81, 0.82, 0.85, 0.86, 0.88, 0.89, 0.93, 0.94,
                                  0.95])
def test_designed_threshold_holds(rate):
    mb, threshold, lam, _ = codes.DESIGNED[rate]
    _, _, lam_b, rho_b = as_built(lam, mb)
    de = DE()
    assert de.converges(0.97 * threshold, lam_b, rho_b)[0]
    assert not de.converges(1.03 * threshold, lam_b, rho_b)[0]
    assert (mb / codes.QC_NB) / h2(threshold) == pytest.approx(DOCUMENTED[rate][2], abs=5e-4)
