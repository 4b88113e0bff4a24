"""LDPC mother codes for reconciliation: degree distributions and construction.

What it holds: the irregular degree distributions optimized for the binary
symmetric channel by Elkouss, Leverrier, Alleaume and Boutros, "Efficient
reconciliation protocol for discrete-variable quantum key distribution",
ISIT 2009 (arXiv:0901.2140), Table I (rates 0.50 .. 0.90, density-evolution
thresholds 0.1071 .. 0.0109), and two deterministic constructions from each:

* ``qc_code(rate, z)`` (the default family, rates ``QC_RATES``): quasi-cyclic, an
  mb x 256 base matrix lifted by z x z circulant permutations, n = 256 z:
  z = 256 (n = 2^16) by default; any z = 256 .. 2048 in steps of 64 (n up to
  2^19) for blocks long enough (``ldpc.qc_frame_bits``: z = 1152, n = 294,912
  for a 2^20-bit block). Every z
  gives the same base-matrix degrees, so the same ensemble and DE threshold
  (the table below); only the base-row arrangement and shifts differ (the
  seed includes z).
  Degree-2 columns form a staircase (IRA-style accumulator, at most mb - 1 of
  them),
  the other columns go to the least-loaded base rows (concentrated checks),
  and each circulant's shift is chosen to close the fewest 4-cycles in the
  lifted graph (Fossorier 2004, Thm 2.1). QC because the z checks of a base
  row share no variable: the decoder updates them as one layer in SIMD lanes.
* ``mother_code(rate)``: the earlier random construction of n = 2^14 (kept
  for the ``bp``/``minsum`` decoders and as a reference).

Why generated, not shipped: a code is fully determined by (distribution,
sizes, construction seed); building one takes well under a second in numpy
(QC: 0.03-0.1 s), so both nodes rebuild the identical matrix at first use
(cached in memory per process) instead of carrying megabytes of matrices in
the repository. A CRC-32 of the matrix (``code.tag``) travels in every
message, so two nodes that somehow built different matrices refuse each
other's messages instead of producing garbage.

QC family, measured (``python -m bench.test_bench_ldpc``: unpunctured mother
code, int16 layered BP of ``src/ldpc_qc.c`` (the ``"qc"`` decoder; the default
``"qc8"`` costs blind f 0.001-0.004 more, see its header), 100 iterations, 6 frames per
point, at the QBER where the code's rate gives efficiency f, h(q) = (m/n)/f;
FER and mean iterations):

    R0    m      edges   DE thr.  f=1.05        f=1.10        f=1.15
    0.50  32768  368640  0.1071   1/6  it 64    0/6  it 21    0/6 it 15
    0.55  29440  313600  0.0904   3/6  it 74    0/6  it 22    0/6 it 14
    0.60  26112  378368  0.0766   4/6  it 87    0/6  it 23    0/6 it 15
    0.65  23040  411648  0.0633   5/6  it 92    0/6  it 24    0/6 it 15
    0.70  19712  400640  0.05165  4/6  it 79    0/6  it 20    0/6 it 14   (DESIGNED)
    0.75  16384  425216  0.0392   6/6  it 100   0/6  it 28    0/6 it 16
    0.80  13056  389888  0.0298   6/6  it 100   2/6  it 47    0/6 it 17
    0.85   9728  451072  0.02009  3/6  it 71    0/6  it 33    0/6 it 17   (DESIGNED)
    0.90   6656  334848  0.0109   6/6  it 100   6/6  it 100   3/6 it 62
    0.91   5888  416768  0.01032  6/6  it 100   4/6  it 72    1/6 it 36   (DESIGNED)

Added in session 6 (``DESIGNED``), so that blind reconciliation finds a code needing little or
no puncturing at its start over QBER 0.5-11 % (the grid is in ``ldpc.BLIND_F_START``'s
comment; the blind plan skips Table I's 0.90, ``ldpc.BLIND_SKIP_RATES``); measured the same way:

    R0    m      edges   DE thr.  f=1.05        f=1.10        f=1.15
    0.67  21760  403456  0.05948  5/6  it 89    0/6  it 21    0/6 it 15
    0.72  18432  399872  0.04688  4/6  it 84    0/6  it 22    0/6 it 15   (session 7)
    0.77  15104  418048  0.03538  4/6  it 82    0/6  it 22    0/6 it 16
    0.81  12544  449280  0.02761  5/6  it 90    1/6  it 38    0/6 it 16   (session 7)
    0.82  11776  454912  0.02533  3/6  it 68    0/6  it 24    0/6 it 17
    0.86   9216  445696  0.01863  5/6  it 88    1/6  it 46    1/6 it 30   (session 7)
    0.88   7936  443392  0.01546  4/6  it 78    3/6  it 60    1/6 it 31
    0.89   6912  441856  0.01288  4/6  it 79    0/6  it 33    1/6 it 31
    0.93   4864  429056  0.00808  6/6  it 100   4/6  it 72    2/6 it 46
    0.94   4096  426496  0.00654  6/6  it 100   3/6  it 63    3/6 it 60
    0.95   3328  426496  0.00491  6/6  it 100   5/6  it 87    4/6 it 76

(n = 2^16 here; the blind frames are n = 294,912, which decode nearer the threshold.)

Rates up to 0.75 decode at f = 1.10 (waterfall between 1.05 and 1.10);
0.80-0.90 do not reach it: their ensembles' own thresholds are f = 1.03
(0.8), 1.08 (Table I's 0.85, DE of the profile as built, R = 0.8516, dc
41-42; that row read 6/6, 1/6, 2/6 before the designed 0.85 replaced it; the first designed
0.85, dc 42, 409,088 edges: 4/6 it 82, 1/6 it 35, 0/6 it 19; Table I's 0.70, 397,312 edges,
DE 0.0504: 5/6 it 89, 0/6 it 23, 0/6 it 16) and
1.17 (0.9) at the QC rates, and Table I asks for more degree-2 columns than
a staircase holds (capped at mb - 1, the excess made degree 3). The shifts
leave no 4-cycle in any of these codes at z = 256 or 512 (girth >= 6,
checked in tests/test_ldpc_qc.py); the dense base matrices (column degree
up to 26 of mb = 38..51 rows) still close many 6-cycles.

Frame length matters at these rates: the 0.85 code unpunctured, int16 BP,
200 iterations, frames failed of 16 at f = 1.08 / 1.10 / 1.12 (``python -m
bench.ldpc_frames --code-fer 0.85 --frame-bits 65536 131072 262144 294912``):
designed 0.85: n = 2^16 9, 8, 1; n = 2^17 8, 3, 0; n = 2^18 4, 0, 0;
n = 294,912 2, 0, 0. Table I's 0.85 (float BP failed the same frames):
n = 2^16 13, 10, 6; n = 2^17 13, 8, 2; n = 2^18 13, 3, 0. Table I's DE
threshold stays f* 1.08 for mb = 36..38 (1.080, 1.079, 1.077), so a rate
move alone does not help; a lower-degree profile (max degree 16,
``ldpc_design.search``) is worse (f* 1.11-1.13).

The rate-0.91 profile (``DESIGNED``) was optimized here by discretized
density evolution (``bench/ldpc_design.py``): threshold f* = 1.084 as built
against Table I 0.90's 1.15 (both by the same DE, which reproduces Table I's
0.0109 and 0.1071). In the blind protocol it brings QBER 1 % from f = 1.17
to 1.14. The rate-0.85 profile (``DESIGNED``, mb = 38)
allows variable degrees up to mb (that search stopped at 16) and keeps the
degree-2 columns within one staircase, so the code is built exactly as
designed: f* = 1.053 against 1.077 for Table I's 0.85 as built
(``ldpc_design.design_085``). Blind, QBER 2 %, 2^20-bit blocks (4 frames of
294,912), 72 frames: f 1.109 (Table I's 0.85) -> 1.101 at the same start
f 1.10, 1.088 at start 1.08 (the default since), no frame lost. Edges per
frame +0.6 % (1598 base edges against 1589), so the decoder cost per
iteration is unchanged.

Decoder work. At a fixed rate, edges per variable = (1 - R) x mean check
degree, and the decoder's time per frame is edges x iterations x ns per
edge-iteration (0.353-0.365 ns for check degrees 20-70, the same for the
old and new 0.85 codes, measured in one process). Fewer edges (lower check
degree, max variable degree 16-20) cost far more iterations at f 1.08-1.10
than they save (``ldpc_design.complexity_sweep``: dc 36-40 need 1.2-2.5x
the work at f 1.08), so the 0.85 code was redesigned at check degree 46
(degree-38 columns): 10 % more edges, fewer iterations. Blind, QBER 2 %,
2^20-bit blocks, 72 frames each, old (dc 42) and new in one process
(``ldpc_design.compare_frames``; f / iterations per frame / edge-iterations
per frame): start 1.08: 1.0877 / 55.0 / 101M -> 1.0843 / 44.4 / 90M;
start 1.09: 1.0929 / 42.6 / 78M -> 1.0913 / 35.3 / 72M; start 1.10:
1.1006 / 32.7 / 60M -> 1.1000 / 28.0 / 57M; no frame lost. The rate-0.70
code (QBER 5 %) was redesigned the same way (dc 20, f* 1.0253, +0.8 %
edges): start 1.04 (the default): 1.0934 / 76.9 / 138M -> 1.0775 / 69.9 /
126M; start 1.08: 1.0939 / 50.3 / 90M -> 1.0806 / 35.4 / 64M (the dc 22
design: 1.0761 / 69.4 / 135M and 1.0800 / 34.0 / 66M). A rate-0.91 redesign (dc 76, f* 1.077 against
1.084) lost at QBER 1 % (f 1.1226 -> 1.1289 at start 1.10, same work) and
was not adopted.

Table I family (n = 2^14), measured the same way with float layered BP, 20
frames per point (FER): 0.50: 7/20 0/20 0/20 at f = 1.05/1.10/1.15; 0.75:
17/20 6/20 3/20; 0.85: 17/20 10/20 6/20; 0.90: 20/20 18/20 13/20.

This module must not do any decoding or protocol work; it only builds
matrices (``postproc_c.ldpc`` owns the C objects).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np

#: Frame length of every mother code (bits).
FRAME_BITS = 1 << 14

# Elkouss et al. 2009, Table I: rate -> (threshold p*, lambda {degree: coeff}, rho {degree: coeff}).
# lambda(x) = sum lambda_i x^(i-1): the coefficient of x^k is the fraction of edges on degree-(k+1) nodes.
TABLE_I: dict[float, tuple[float, dict[int, float], dict[int, float]]] = {
    0.90: (0.0109, {2: 0.07689, 3: 0.28096, 5: 0.08933, 9: 0.19620, 12: 0.30631, 21: 0.05031},
           {50: 0.95025, 51: 0.04975}),
    0.85: (0.0199, {2: 0.04528, 3: 0.20537, 4: 0.05878, 5: 0.094274, 6: 0.08454, 7: 0.01176, 9: 0.05137,
                    21: 0.50015},
           {41: 0.54204, 42: 0.45795}),
    0.80: (0.0298, {2: 0.09420, 3: 0.18088, 6: 0.11972, 7: 0.08550, 8: 0.09816, 17: 0.07194, 26: 0.34960},
           {29: 0.58807, 30: 0.41193}),
    0.75: (0.0392, {2: 0.10805, 3: 0.09511, 4: 0.01449, 5: 0.13764, 6: 0.10667, 7: 0.05288, 28: 0.01107,
                    31: 0.47408},
           {25: 0.74161, 26: 0.25839}),
    0.70: (0.0504, {2: 0.05343, 3: 0.29406, 6: 0.00896, 9: 0.15571, 12: 0.12189, 25: 0.19872, 46: 0.09572,
                    62: 0.02741, 65: 0.04056, 73: 0.00354},
           {20: 0.76922, 21: 0.23077}),
    0.65: (0.0633, {2: 0.10451, 3: 0.15652, 4: 0.08057, 5: 0.00056, 9: 0.12151, 13: 0.10485, 15: 0.10719,
                    21: 0.00771, 51: 0.31656},
           {2: 0.000578, 15: 0.06089, 16: 0.47001, 21: 0.46852}),
    0.60: (0.0766, {2: 0.11040, 3: 0.20804, 8: 0.14163, 9: 0.14858, 26: 0.14438, 27: 0.08909, 46: 0.00748,
                    71: 0.15038},
           {2: 0.00036, 10: 0.13063, 13: 0.31068, 18: 0.49341, 19: 0.064915}),
    0.55: (0.0904, {2: 0.16880, 3: 0.20994, 6: 0.18095, 15: 0.03846, 16: 0.02635, 18: 0.23454, 19: 0.05815,
                    31: 0.08280},
           {10: 0.27631, 11: 0.72369}),
    0.50: (0.1071, {2: 0.14438, 3: 0.19026, 4: 0.01836, 5: 0.00233, 6: 0.04697, 8: 0.053943, 9: 0.05590,
                    10: 0.01290, 11: 0.00162, 14: 0.06159, 15: 0.13115, 17: 0.01481, 47: 0.00879,
                    49: 0.00650, 55: 0.00210, 56: 0.00099, 57: 0.11178, 58: 0.06238, 59: 0.05094,
                    66: 0.02230},
           {10: 0.47575, 12: 0.46847, 13: 0.02952, 14: 0.02626}),
}

RATES: tuple[float, ...] = tuple(sorted(TABLE_I))

# High-rate profiles designed here for the QC construction (``bench/ldpc_design.py``):
# sum-product density evolution on the BSC, discretized (Richardson-Urbanke 2001), the
# lambda improved by the linear programme of Richardson, Shokrollahi, Urbanke 2001 (Sec. III)
# from a Gaussian-approximation start (Chung, Richardson, Urbanke 2001), with the constraints of
# ``qc_code``: variable degrees <= mb, one check degree. The design allowed 2 (mb - 1) degree-2
# columns (a second staircase); built that way (shifted "ladder" rungs) the code decoded to wrong
# words of 6 degree-2 key bits bridged by punctured variables (2 silent frames in 36 at QBER 1 %,
# f = 1.2), so ``qc_code`` keeps one staircase and makes the excess degree 3 as for Table I.
# rate key -> (mb base rows of 256, DE threshold p*, lambda, rho); exact rate 1 - mb/256.
DESIGNED: dict[float, tuple[int, float, dict[int, float], dict[int, float]]] = {
    # R = 0.9102 (mb = 23). The designed lambda: DE threshold p* = 0.01055 (f* = (m/n) / h(p*) =
    # 1.064); as built (22 of its 44 degree-2 columns made degree 3, see above) p* = 0.01032,
    # f* = 1.084. Table I's 0.90 profile: p* = 0.0109 at R = 0.8984, f* = 1.15 (the same DE).
    # Check degree 70-71; the degree-23 columns meet every base row.
    0.91: (23, 0.01032, {2: 0.0548, 3: 0.20749, 6: 0.01787, 7: 0.13477, 8: 0.12712, 9: 0.07133, 23: 0.3865},
           {70: 1.0}),
    # R = 0.8516 (mb = 38), replacing Table I's 0.85 in the QC family (same rate, so the blind
    # plan is unchanged; Table I's 0.85 stays for ``mother_code``). Designed with variable degrees
    # {2..38} (Elkouss 2009 and Richardson-Shokrollahi-Urbanke 2001 use dmax 20-60; here dmax <= mb)
    # and concentrated checks: Gaussian-approximation LP start at check degree dc (``ga_profile``),
    # then discretized DE with an LP at fixed rate minimizing the error trajectory (the RSU 2001
    # Sec. III linearization, ``bench/ldpc_design.py: fixed_rate_climb``), dc chosen for the least
    # decoder work (edges x DE iterations at f 1.08-1.10, Smith et al. 2010's complexity measure;
    # ``ldpc_design.complexity_sweep``) and confirmed on real frames (``compare_frames``).
    # dc = 46 (``design_085(46, 0.018)``). As built: columns of degree 2/3/8/9/10/38 = 37 (mb - 1,
    # one staircase)/136/4/46/15/18, the 18 degree-38 columns meet every base row; check degree
    # 46-47; 1762 base edges (6.88 per variable; 2,029,824 per 294,912-bit frame): p* = 0.02009,
    # f* = 1.046 by the same DE that gives Table I's 0.85 as built p* = 0.01936, f* = 1.077. The
    # former profile (dc 42, degrees 2/3/9/10/32, 1598 base edges, f* 1.053) is
    # ``ldpc_design.DC42_085``: 10 % fewer edges, but 93 DE iterations at f 1.08 against 75.
    # R = 0.6992 (mb = 77), replacing Table I's 0.70 in the QC family (the blind code at QBER
    # 5 %). Designed the same way with variable degrees {2..38, 77} (``ldpc_design.design_070``:
    # dc = 20, climb from p 0.047). As built: columns of degree 2/3/9/16/38/77 = 76/111/53/2/13/1
    # (the degree-77 column meets every base row); check degree 20-21; 1565 base edges (6.11 per
    # variable; 1,802,880 per 294,912-bit frame, +0.8 % on Table I's 1552): p* = 0.05165,
    # f* = 1.0253, against Table I's 0.70 as built p* = 0.05053, f* = 1.042 (the same DE). Blind at
    # 5 %, same start 1.04: f 1.0934 -> 1.0775 at 8 % less decoder work per frame
    # (``ldpc_design.compare_frames``). A dc 22 design (f* 1.0225, 1687 edges) gave f lower by
    # 0.000-0.0014 at 3-7 % more work; dc 25 reached only f* 1.033.
    0.7: (77, 0.05165, {2: 0.0987, 3: 0.21716, 9: 0.30784, 16: 0.02043, 38: 0.32953, 77: 0.02634},
          {20: 0.66454, 21: 0.33546}),
    0.85: (38, 0.02009, {2: 0.04233, 3: 0.23399, 8: 0.02, 9: 0.23407, 10: 0.08716, 38: 0.38244},
           {46: 0.62656, 47: 0.37344}),
    # R = 0.8789 (mb = 31), added (no Table I rate between 0.85 and 0.90) for blind QBER
    # 1.2-1.7 %, where the 0.91 code has too few syndrome bits (f_max = m / (k h) < 1.13) and the
    # 0.85 code had to be punctured to rate 0.86-0.88 (f 1.158 at 1.5 %). Designed as the 0.85
    # (``ldpc_design.design_added(0.88)``: dc = 56, climb from p 0.0145, 90 s). As built: columns of
    # degree 2/3/8/9/10/31 = 30 (mb - 1)/137/31/29/7/22 (the degree-31 columns meet every base
    # row); check degree 55-56; 1732 base edges (6.77 per variable): p* = 0.01546, f* = 1.0519.
    # R = 0.6680 (mb = 85), added for QBER 5.3-6.2 %, where the 0.70 code has too few syndrome
    # bits and Table I's 0.65 had to be punctured (f 1.124 at 5.5 %). ``ldpc_design.design_added
    # (0.67)``: dc = 18.5, climb from p 0.056, 165 s. As built: columns of degree 2/3/8/9/18/38/85
    # = 84 (mb - 1)/102/33/18/7/10/2; check degree 18-19; 1576 base edges (6.16 per variable):
    # p* = 0.05948, f* = 1.0204.
    0.67: (85, 0.05948, {2: 0.10684, 3: 0.19436, 8: 0.16557, 9: 0.10514, 18: 0.08076, 38: 0.25044,
                         85: 0.09691}, {18: 0.44543, 19: 0.55457}),
    # R = 0.7695 (mb = 59), added for QBER 3.2-3.7 %, where the 0.80 code has too few syndrome
    # bits and Table I's 0.75 had to be punctured (f 1.137 at 3.5 %). ``ldpc_design.design_added
    # (0.77)``: dc = 28, climb from p 0.034, 195 s. As built: columns of degree 2/3/9/10/25/38/59
    # = 58 (mb - 1)/128/24/31/2/10/3; check degree 27-28; 1633 base edges (6.38 per variable):
    # p* = 0.03538, f* = 1.0442.
    0.77: (59, 0.03538, {2: 0.07022, 3: 0.23163, 9: 0.12953, 10: 0.18759, 25: 0.03573, 38: 0.23624,
                         59: 0.10907}, {27: 0.31415, 28: 0.68585}),
    # R = 0.8203 (mb = 46), added for QBER 2.2-2.7 %, where the 0.85 code has too few syndrome
    # bits and Table I's 0.80 had to be punctured to rate 0.81-0.83 (f 1.135 at 2.5 %).
    # ``ldpc_design.design_added(0.82)``: dc = 38, climb from p 0.024, 250 s. As built: columns of
    # degree 2/3/9/10/38/46 = 45 (mb - 1)/138/1/56/4/12; check degree 38-39; 1777 base edges
    # (6.94 per variable): p* = 0.02533, f* = 1.0544.
    0.82: (46, 0.02533, {2: 0.05149, 3: 0.23745, 9: 0.00564, 10: 0.32186, 25: 0.00402, 38: 0.07339,
                         46: 0.30615}, {38: 0.36353, 39: 0.63647}),
    # R = 0.8086 (mb = 49), added (session 7) for blind QBER 2.6-2.9 %, where the 0.82 code has
    # too few syndrome bits and the 0.80 code had to be punctured (f 1.111 at 2.75 %).
    # ``ldpc_design.design_added(0.81)``: dc = 35.5, climb from p 0.0257, 112 s. As built: columns
    # of degree 2/3/8/9/10/11/12/14/38/49 = 48 (mb - 1)/127/1/10/49/3/3/2/4/9; check degree 35-36;
    # 1755 base edges (6.86 per variable): p* = 0.02761, f* = 1.0501.
    0.81: (49, 0.02761, {2: 0.05519, 3: 0.21961, 8: 0.00358, 9: 0.04933, 10: 0.28293, 11: 0.02, 12: 0.02,
                         14: 0.02, 38: 0.08733, 49: 0.24204}, {35: 0.17949, 36: 0.82051}),
    # R = 0.7188 (mb = 72), added (session 7) for blind QBER 4.3-4.8 %, where the 0.75 code has
    # too few syndrome bits and the 0.70 code had to be punctured (f 1.102 at 4.5 %).
    # ``ldpc_design.design_added(0.72)``: dc = 22, climb from p 0.0425, 150 s. As built: columns of
    # degree 2/3/9/10/20/38/72 = 71 (mb - 1)/116/46/7/3/12/1 (the degree-72 column meets every base
    # row); check degree 21-22; 1562 base edges (6.10 per variable): p* = 0.04688, f* = 1.0303.
    0.72: (72, 0.04688, {2: 0.08965, 3: 0.21948, 9: 0.26059, 10: 0.04529, 20: 0.03442, 38: 0.28632,
                         72: 0.06425}, {21: 0.29577, 22: 0.70423}),
    # R = 0.9492 (mb = 13), added for QBER 0.4-0.6 % (``ldpc_design.design_added(0.95)``: dc = 128,
    # climb from p 0.0048, 110 s). Variable degrees are capped at mb = 13, so the ensemble is
    # weaker than the others: as built columns of degree 2/3/13 = 12 (mb - 1)/153/91; check
    # degree 128-129; 1666 base edges (6.51 per variable): p* = 0.00491, f* = 1.1354.
    0.95: (13, 0.00491, {2: 0.01441, 3: 0.27622, 13: 0.70937}, {128: 0.84514, 129: 0.15486}),
    # R = 0.9375 (mb = 16), added for QBER 0.55-0.7 % (between the 0.95 and 0.93: f 1.230 at
    # 0.6 % on the 0.93 punctured). ``ldpc_design.design_added(0.94)``: dc = 104, climb from
    # p 0.006, 47 s. As built: columns of degree 2/3/4/5/6/7/16 = 15 (mb - 1)/133/2/20/22/3/61;
    # check degree 104-105; 1666 base edges (6.51 per variable): p* = 0.00654, f* = 1.0993.
    0.94: (16, 0.00654, {2: 0.01803, 3: 0.24003, 4: 0.00544, 5: 0.06, 6: 0.08, 7: 0.01052, 16: 0.58597},
           {104: 0.87395, 105: 0.12605}),
    # R = 0.9258 (mb = 19), added for QBER 0.5-0.9 %, where the 0.91 code had to be punctured
    # to rate 0.93-0.95 (f 1.197 at 0.75 %, 1.357 at 0.5 %). ``ldpc_design.design_added(0.93)``: dc = 88,
    # climb from p 0.008, 50 s. As built: columns of degree 2/3/5/6/7/8/9/10/11/19 = 18 (mb - 1)
    # /141/2/6/10/12/17/10/1/39; check degree 88-89; 1676 base edges (6.55 per variable):
    # p* = 0.00808, f* = 1.0950.
    0.93: (19, 0.00808, {2: 0.02153, 3: 0.25384, 5: 0.00703, 6: 0.02, 7: 0.04, 8: 0.06, 9: 0.09292,
                         10: 0.05718, 11: 0.00478, 19: 0.44272}, {88: 0.78759, 89: 0.21241}),
    # R = 0.8945 (mb = 27), added with the 0.88 for QBER 1.1-1.4 % (between the 0.91's and the
    # 0.88's ranges; Table I's 0.90, f* 1.15, lost a frame there). ``ldpc_design.design_added(0.89)``:
    # dc = 64, climb from p 0.0122, 110 s. As built: columns of degree 2/3/7/8/9/10/11/27 = 26
    # (mb - 1)/140/7/37/11/7/1/27; check degree 63-64; 1726 base edges (6.74 per variable):
    # p* = 0.01288, f* = 1.0620.
    0.89: (27, 0.01288, {2: 0.03009, 3: 0.24264, 7: 0.02836, 8: 0.17103, 9: 0.06, 10: 0.04, 11: 0.00515,
                         27: 0.42273}, {63: 0.073, 64: 0.927}),
    # R = 0.8594 (mb = 36), added for blind QBER 1.6-1.9 %, where the 0.88 code has too few
    # syndrome bits and the 0.85 code had to be punctured (f 1.119 at 1.75 %). ``ldpc_design.
    # design_added(0.86)``: dc = 48.5, climb from p 0.0174, 68 s. As built: columns of degree
    # 2/3/8/9/10/36 = 35 (mb - 1)/138/4/59/1/19 (the degree-36 columns meet every base row); check
    # degree 48-49; 1741 base edges (6.80 per variable): p* = 0.01863, f* = 1.0521.
    0.86: (36, 0.01863, {2: 0.04009, 3: 0.23652, 8: 0.02, 9: 0.30127, 10: 0.00819, 36: 0.39393},
           {48: 0.63412, 49: 0.36588}),
    0.88: (31, 0.01546, {2: 0.03456, 3: 0.23756, 8: 0.14062, 9: 0.14924, 10: 0.04, 31: 0.39802},
           {55: 0.12702, 56: 0.87298}),
}

#: Rates of the QC family: Table I, with the designed profiles replacing or adding rates.
QC_RATES: tuple[float, ...] = tuple(sorted(set(TABLE_I) | set(DESIGNED)))


@dataclass(frozen=True)
class CodeSpec:
    """A constructed parity-check matrix H (m x n) in CSR form, rows sorted."""

    rate: float                 # design rate R0 = 1 - m/n
    n: int
    m: int
    threshold: float            # density-evolution BSC threshold of the ensemble (Table I)
    row_ptr: np.ndarray         # uint32, m + 1
    col_idx: np.ndarray         # uint32, edges
    tag: int                    # CRC-32 of (n, m, row_ptr, col_idx)
    z: int = 0                  # circulant size of a quasi-cyclic code (0: not QC)
    blk_ptr: np.ndarray | None = None     # QC base matrix, CSR over base rows (uint32, mb + 1)
    blk_col: np.ndarray | None = None     # base column of each circulant (uint32)
    blk_shift: np.ndarray | None = None   # its shift: check i*z+l meets variable col*z+(l+shift)%z

    @property
    def edges(self) -> int:
        return int(self.col_idx.size)

    def dense(self) -> np.ndarray:
        """H as a dense uint8 matrix (for tests on small codes only)."""
        h = np.zeros((self.m, self.n), np.uint8)
        rows = np.repeat(np.arange(self.m), np.diff(self.row_ptr.astype(np.int64)))
        h[rows, self.col_idx] = 1
        return h


def _node_counts(dist: dict[int, float], total: int) -> dict[int, int]:
    """Edge-perspective distribution -> integer node counts summing to ``total``."""
    degs = np.array(sorted(dist), dtype=np.int64)
    lam = np.array([dist[d] for d in degs], dtype=np.float64)
    frac = (lam / degs) / np.sum(lam / degs)
    raw = frac * total
    cnt = np.floor(raw).astype(np.int64)
    short = total - int(cnt.sum())
    # largest remainders get the leftover nodes (deterministic tie-break by degree order)
    order = np.argsort(-(raw - cnt), kind="stable")
    cnt[order[:short]] += 1
    return {int(d): int(c) for d, c in zip(degs, cnt, strict=True) if c > 0}


_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(seed: int, stream: int, count: int) -> np.ndarray:
    """``count`` pseudo-random uint64 from splitmix64 (Steele et al. 2014) of a counter.

    Counter-based and written out here so every numpy version on either node
    builds the same code (numpy's Generator streams carry no such promise)."""
    with np.errstate(over="ignore"):
        z = (np.arange(count, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z += np.uint64((seed * 0x632BE59BD9B4E019 + stream * 0xD6E8FEB86659FD93) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class _Stream:
    """Deterministic permutations and integers from ``_mix``; a new stream per call."""

    def __init__(self, seed: int) -> None:
        self.seed, self.k = int(seed), 0

    def permutation(self, n: int) -> np.ndarray:
        self.k += 1
        return np.argsort(_mix(self.seed, self.k, n), kind="stable")

    def integers(self, high: int, count: int) -> np.ndarray:
        self.k += 1
        return (_mix(self.seed, self.k, count) % np.uint64(high)).astype(np.int64)


def permutation(seed: int, n: int) -> np.ndarray:
    """A deterministic permutation of range(n) for a 64-bit seed (portable)."""
    return _Stream(seed).permutation(n)


def permutation_head(seed: int, n: int, count: int, among: np.ndarray | None = None) -> np.ndarray:
    """The first ``count`` entries of ``permutation(seed, n)`` that lie in ``among`` (a bool mask
    of n; None: all), in the same order, without sorting all n keys.

    ``permutation`` orders the indices by their ``_mix`` keys, and those keys are distinct
    (splitmix64's finalizer is a bijection of uint64 and its inputs (i + 1) * odd + c are
    distinct mod 2^64), so the head is exactly the ``count`` smallest keys in ``among``, sorted.
    The keys are uniform, so a threshold 8 sigma above their count-quantile keeps a few percent
    more than ``count`` (a partition when it keeps too few); only those are sorted (measured for
    n = 294,912, count = 32,768: about 5 ms against 23 ms for the full stable sort; the ``ldpc``
    adaptation positions of every block use it)."""
    keys = _mix(seed, 1, n)                  # stream 1: the first call on a fresh _Stream
    mask = np.ones(n, bool) if among is None else np.asarray(among, bool)
    if mask.shape != (n,):
        raise ValueError(f"among: expected a bool mask of {n}, got shape {mask.shape}")
    total = int(np.count_nonzero(mask))
    if not 0 <= count <= total:
        raise ValueError(f"count: expected 0 <= count <= {total}, got {count}")
    if count == 0:
        return np.zeros(0, np.int64)
    frac = (count + 8.0 * math.sqrt(count) + 64.0) / total
    keep = np.zeros(0, np.int64)
    if frac < 1.0:
        keep = np.flatnonzero((keys < np.uint64(int(frac * 2.0 ** 64))) & mask)
    if keep.size < count:                    # the threshold kept too few (or frac >= 1)
        cand = np.flatnonzero(mask)
        keep = cand[np.argpartition(keys[cand], count - 1)[:count]] if count < total else cand
    return keep[np.argsort(keys[keep])[:count]].astype(np.int64)


def construct(var_degrees: np.ndarray, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Matrix with the given variable degrees and m concentrated checks; returns
    CSR (row_ptr, col_idx) without repeated edges.

    Degree-2 variables are laid as zig-zag chains over a random order of the
    checks (variable j joins checks pi[j] and pi[j+1], the accumulator
    structure of IRA codes): a cycle made only of degree-2 variables is a
    low-weight codeword, and the chain has none while they number fewer than
    m (a second chain over a fresh order takes the rest, so cycles among them
    are long). Every other socket is matched by a seeded random permutation
    (configuration model) and repeated edges are removed by swapping."""
    rng = _Stream(seed)
    edges = int(var_degrees.sum())
    base, extra = divmod(edges, m)
    chk_deg = np.full(m, base, np.int64)
    chk_deg[rng.permutation(m)[:extra]] += 1
    deg2 = np.flatnonzero(var_degrees == 2)
    chain_v: list[np.ndarray] = []
    chain_c: list[np.ndarray] = []
    done = 0
    seen = np.zeros(0, np.int64)            # check pairs already joined by a degree-2 variable
    while done < deg2.size:
        take = min(m - 1, deg2.size - done)
        for _ in range(100):
            perm = rng.permutation(m)
            lo = np.minimum(perm[:take], perm[1: take + 1])
            hi = np.maximum(perm[:take], perm[1: take + 1])
            pairs = lo * m + hi
            if not np.isin(pairs, seen).any():   # two chains sharing a pair = weight-2 codeword
                break
        else:  # pragma: no cover
            raise RuntimeError("construct: degree-2 chains keep colliding")
        seen = np.concatenate([seen, pairs])
        vs = deg2[done: done + take]
        chain_v += [vs, vs]
        chain_c += [perm[:take], perm[1: take + 1]]
        done += take
    cv = np.concatenate(chain_v) if chain_v else np.zeros(0, np.int64)
    cc = np.concatenate(chain_c) if chain_c else np.zeros(0, np.int64)
    rest_deg = chk_deg - np.bincount(cc, minlength=m)
    if np.any(rest_deg < 0):
        raise ValueError("construct: check degrees too small for the degree-2 chain")
    others = np.flatnonzero(var_degrees != 2)
    var_of = np.repeat(others.astype(np.int64), var_degrees[others])
    chk_of = np.repeat(np.arange(m, dtype=np.int64), rest_deg)
    chk_of = chk_of[rng.permutation(chk_of.size)]
    e2 = var_of.size
    # Remove repeated (var, check) pairs by swapping the check endpoint with a random edge.
    for _ in range(1000):
        key = var_of * m + chk_of
        order = np.argsort(key, kind="stable")
        dup = np.zeros(e2, bool)
        dup[order[1:]] = key[order[1:]] == key[order[:-1]]
        bad = np.flatnonzero(dup)
        if bad.size == 0:
            break
        other = rng.integers(e2, bad.size)
        for i, j in zip(bad.tolist(), other.tolist(), strict=True):   # few; one at a time keeps degrees
            chk_of[i], chk_of[j] = chk_of[j], chk_of[i]
    else:  # pragma: no cover - never seen for these degree profiles
        raise RuntimeError("construct: could not remove repeated edges")
    var_all = np.concatenate([cv, var_of])
    chk_all = np.concatenate([cc, chk_of])
    # a chain variable can meet the same check twice only across chains: refuse such a code
    key = np.sort(var_all * m + chk_all)
    if np.any(key[1:] == key[:-1]):
        raise RuntimeError("construct: repeated edge in the degree-2 chains")
    order = np.lexsort((var_all, chk_all))
    col_idx = var_all[order].astype(np.uint32)
    row_ptr = np.zeros(m + 1, np.uint32)
    row_ptr[1:] = np.cumsum(np.bincount(chk_all, minlength=m))
    return row_ptr, col_idx


def _tag(n: int, m: int, row_ptr: np.ndarray, col_idx: np.ndarray) -> int:
    crc = zlib.crc32(np.array([n, m], np.uint32).tobytes())
    crc = zlib.crc32(row_ptr.tobytes(), crc)
    return zlib.crc32(col_idx.tobytes(), crc)


@cache
def mother_code(rate: float, n: int = FRAME_BITS) -> CodeSpec:
    """The mother code of design rate ``rate`` (one of ``RATES``), built once per process."""
    key = round(float(rate), 2)
    if key not in TABLE_I:
        raise ValueError(f"rate: no mother code of rate {rate}; available: {RATES}")
    if not 256 <= n <= 1 << 20:
        raise ValueError(f"n: frame length must be in [256, 2^20], got {n}")
    threshold, lam, _rho = TABLE_I[key]
    m = code_dims(key, n, qc=False)[1]
    counts = _node_counts(lam, n)
    # At most m - 1 degree-2 variables: then they form one acyclic zig-zag chain. More would
    # close cycles among themselves, i.e. codewords of a few degree-2 bits, which the decoder
    # does converge to (measured: 3- and 4-bit silent mismatches at QBER 2 % with the 0.8 code).
    # The excess become degree-3 variables (rates 0.75-0.9 only; a small move off Table I).
    if counts.get(2, 0) > m - 1:
        counts[3] = counts.get(3, 0) + counts[2] - (m - 1)
        counts[2] = m - 1
    var_deg = np.repeat(np.array(list(counts), np.int64), list(counts.values()))
    # interleave degrees so low- and high-degree nodes spread over the frame
    var_deg = var_deg[permutation(int(key * 100), n)]
    seed = 0x51D0 + int(key * 100) * 7919 + n
    row_ptr, col_idx = construct(var_deg, m, seed)
    return CodeSpec(key, n, m, threshold, row_ptr, col_idx, _tag(n, m, row_ptr, col_idx))


def regular_code(n: int, m: int, var_degree: int, seed: int) -> CodeSpec:
    """A small (dv, *)-regular code for tests and references."""
    if not (2 <= var_degree <= m < n):
        raise ValueError("regular_code: need 2 <= var_degree <= m < n")
    row_ptr, col_idx = construct(np.full(n, var_degree, np.int64), m, seed)
    return CodeSpec(round(1 - m / n, 4), n, m, float("nan"), row_ptr, col_idx, _tag(n, m, row_ptr, col_idx))


# ---------------------------------------------------------------- quasi-cyclic codes

#: Circulant size and base-matrix width of the QC mother codes: n = QC_Z * QC_NB = 2^16.
QC_Z = 256
QC_NB = 256


def _base_rows(var_deg: np.ndarray, mb: int, rng: _Stream) -> list[list[int]]:
    """Base-matrix rows for the given base-column degrees: degree-2 columns form a
    staircase (column t on rows t, t+1: lifted with shift 0 they are z parallel
    zig-zag chains, the accumulator of IRA codes, with no cycle among them); every
    other column goes to the rows of least weight so far (concentrated checks),
    ties broken by the seeded stream."""
    nb = var_deg.size
    rows: list[list[int]] = [[] for _ in range(mb)]
    weight = np.zeros(mb, np.int64)
    deg2 = np.flatnonzero(var_deg == 2)
    for t, j in enumerate(deg2.tolist()):
        rows[t].append(j)
        rows[t + 1].append(j)
        weight[t] += 1
        weight[t + 1] += 1
    others = np.flatnonzero(var_deg != 2)
    others = others[np.argsort(-var_deg[others], kind="stable")]
    for j in others.tolist():
        tie = rng.integers(1 << 30, mb)
        chosen = np.lexsort((tie, weight))[: int(var_deg[j])]
        for i in chosen.tolist():
            rows[i].append(j)
        weight[chosen] += 1
    assert all(len(set(r)) == len(r) for r in rows) and nb > 0
    return [sorted(r) for r in rows]


def _shifts(rows: list[list[int]], nb: int, z: int, staircase: set[int], rng: _Stream) -> np.ndarray:
    """Circulant shifts chosen one base edge at a time to create the fewest
    4-cycles in the lifted graph: base rows i, i2 and columns j, j2 close a
    4-cycle iff s(i,j) - s(i,j2) + s(i2,j2) - s(i2,j) = 0 mod z (Fossorier,
    "Quasi-cyclic LDPC codes from circulant permutation matrices", IEEE Trans.
    Inf. Theory 50 (2004) 1788, Theorem 2.1). Staircase edges keep shift 0."""
    mb = len(rows)
    S = np.full((mb, nb), -1, np.int64)
    for i, r in enumerate(rows):
        for j in r:
            if j in staircase:
                S[i, j] = 0
    order = [(i, j) for i, r in enumerate(rows) for j in r if j not in staircase]
    ties = rng.integers(1 << 30, len(order) * z).reshape(len(order), z)
    for t, (i, j) in enumerate(order):
        rows2 = np.flatnonzero(S[:, j] >= 0)
        rows2 = rows2[rows2 != i]
        cols = np.flatnonzero(S[i] >= 0)
        cols = cols[cols != j]
        counts = np.zeros(z, np.int64)
        if rows2.size and cols.size:
            A = S[np.ix_(rows2, cols)]
            bad = (S[i, cols][None, :] - A + S[rows2, j][:, None]) % z
            counts = np.bincount(bad[A >= 0], minlength=z)
        S[i, j] = int(np.lexsort((ties[t], counts))[0])
    return S


def _qc_rows(key: float, nb: int) -> int:
    """Base-matrix rows mb of QC mother code ``key`` with nb base columns."""
    if key in DESIGNED:
        return int(round(DESIGNED[key][0] * nb / QC_NB))
    return int(round(nb * (1.0 - key)))


def code_dims(rate: float, n: int | None = None, *, qc: bool = True) -> tuple[int, int]:
    """(n, m) of a mother code without building it: what ``qc_code(rate, n // QC_NB).n, .m``
    (or ``mother_code(rate, n)``) would give. Rate planning weighs every code of the family
    and needs only these; building one costs 0.03-0.5 s (its shifts), and building all
    of them made a process's first LDPC block 2.5 s slower per side."""
    key = round(float(rate), 2)
    if qc:
        if key not in QC_RATES:
            raise ValueError(f"rate: no QC mother code of rate {rate}; available: {QC_RATES}")
        z = QC_Z if n is None else n // QC_NB
        return z * QC_NB, z * _qc_rows(key, QC_NB)
    if key not in TABLE_I:
        raise ValueError(f"rate: no mother code of rate {rate}; available: {RATES}")
    n = FRAME_BITS if n is None else n
    return n, int(round(n * (1.0 - key)))


@cache
def qc_code(rate: float, z: int = QC_Z, nb: int = QC_NB) -> CodeSpec:
    """Quasi-cyclic mother code of design rate ``rate`` (one of ``RATES``): the
    Table I degree distribution on an mb x nb base matrix, lifted by z x z
    circulants (n = z nb = 2^16 by default), built once per process.

    Base columns get node degrees from lambda (as ``mother_code``; at most
    mb - 1 of degree 2, the excess degree 3; none above mb), shifts from
    ``_shifts`` (fewest 4-cycles). Deterministic: the portable splitmix stream
    seeded by (rate, z, nb)."""
    key = round(float(rate), 2)
    if key not in QC_RATES:
        raise ValueError(f"rate: no QC mother code of rate {rate}; available: {QC_RATES}")
    if z % 64 or not 64 <= z <= 4096 or not 16 <= nb <= 4096:
        raise ValueError(f"z, nb: need z a multiple of 64 in [64, 4096] and 16 <= nb <= 4096, got {z}, {nb}")
    threshold, lam, _rho = DESIGNED[key][1:] if key in DESIGNED else TABLE_I[key]
    mb = _qc_rows(key, nb)
    counts = _node_counts(lam, nb)
    if counts.get(2, 0) > mb - 1:
        counts[3] = counts.get(3, 0) + counts[2] - (mb - 1)
        counts[2] = mb - 1
    capped: dict[int, int] = {}
    for d, cnt in counts.items():
        capped[min(d, mb)] = capped.get(min(d, mb), 0) + cnt
    var_deg = np.repeat(np.array(list(capped), np.int64), list(capped.values()))
    rng = _Stream(0x0C0DE + int(key * 100) * 7919 + z * 31 + nb)
    var_deg = var_deg[rng.permutation(nb)]
    rows = _base_rows(var_deg, mb, rng)
    staircase = set(np.flatnonzero(var_deg == 2).tolist())
    S = _shifts(rows, nb, z, staircase, rng)
    return qc_spec(key, threshold, z, nb, rows, S)


def qc_spec(rate: float, threshold: float, z: int, nb: int, rows: list[list[int]], S: np.ndarray) -> CodeSpec:
    """CodeSpec of a QC code from its base rows and shift matrix S (mb x nb)."""
    mb = len(rows)
    blk_ptr = np.zeros(mb + 1, np.uint32)
    blk_ptr[1:] = np.cumsum([len(r) for r in rows])
    blk_col = np.array([j for r in rows for j in r], np.uint32)
    blk_shift = np.array([S[i, j] for i, r in enumerate(rows) for j in r], np.uint32)
    lanes = np.arange(z, dtype=np.int64)
    parts = []
    for i in range(mb):
        c = blk_col[blk_ptr[i]: blk_ptr[i + 1]].astype(np.int64)
        s = blk_shift[blk_ptr[i]: blk_ptr[i + 1]].astype(np.int64)
        parts.append((c[None, :] * z + (lanes[:, None] + s[None, :]) % z).ravel())
    col_idx = np.concatenate(parts).astype(np.uint32)
    deg = np.repeat(np.diff(blk_ptr.astype(np.int64)), z)
    row_ptr = np.zeros(mb * z + 1, np.uint32)
    row_ptr[1:] = np.cumsum(deg)
    n, m = z * nb, z * mb
    return CodeSpec(rate, n, m, threshold, row_ptr, col_idx, _tag(n, m, row_ptr, col_idx), z,
                    blk_ptr, blk_col, blk_shift)


def random_qc_code(z: int, mb: int, nb: int, row_deg: int, seed: int) -> CodeSpec:
    """A small random QC code (row_deg circulants per base row, random shifts) for tests."""
    rng = _Stream(seed)
    rows = [sorted(rng.permutation(nb)[:row_deg].tolist()) for _ in range(mb)]
    S = rng.integers(z, mb * nb).reshape(mb, nb)
    return qc_spec(round(1 - mb / nb, 4), float("nan"), z, nb, rows, S)
