/* k-way stable merge of sorted int64 streams with labels (see tagmerge.h).
 *
 * Method: a balanced tree of two-way merges, one pass per level (ceil(log2 k)
 * passes, ping-ponging between the output and a scratch buffer so the last
 * pass lands in the output). The two-way merge is branch-free (the comparison
 * selects with conditional moves), which on random interleavings of a few
 * streams beats both a heap and a linear scan of the heads, whose branches
 * mispredict about half the time. Adjacent runs are merged left-before-right
 * and ties take the left run, so equal values keep stream order.
 */
#include "tagmerge.h"

#include <string.h>

int tm_abi_version(void) { return TM_ABI_VERSION; }

/* Label of element i of a run: from the run's label array, or the run's constant label. */
#define TM_LAB(l, c, i) ((CONST_LAB) ? (c) : (l)[i])

/* Two-way stable merge of a[0..na) and b[0..nb) into o[0..na+nb).
 *
 * Bidirectional: one chain takes the smallest remaining element from the
 * front, an independent chain takes the largest from the back, so the CPU
 * overlaps the two load -> compare -> advance dependency chains (a branch-free
 * merge is bound by that chain's latency, not by throughput). In the stable
 * order equal values put a's before b's: the front takes a on ties, the back
 * takes b on ties. When either chain reaches the end of a run, the middle that
 * is left is finished by the front chain alone. */
static inline __attribute__((always_inline)) void merge2_body(
    const int CONST_LAB, const int64_t *a, const uint8_t *la, uint8_t ca, int64_t na,
    const int64_t *b, const uint8_t *lb, uint8_t cb, int64_t nb, int64_t *ot, uint8_t *ol)
{
    int64_t i = 0, j = 0, o = 0;             /* front cursors */
    int64_t ie = na - 1, je = nb - 1, oe = na + nb - 1; /* back cursors (inclusive) */
    while (i < ie && j < je && o + 1 < oe) {
        int64_t x = a[i], y = b[j];
        int tb = y < x;
        uint8_t lx = TM_LAB(la, ca, i), ly = TM_LAB(lb, cb, j);
        int64_t xe = a[ie], ye = b[je];
        int te = ye >= xe; /* back: b wins ties */
        uint8_t lxe = TM_LAB(la, ca, ie), lye = TM_LAB(lb, cb, je);
        int64_t mb = -(int64_t)tb, me = -(int64_t)te; /* all-ones masks: selects without branches */
        ot[o] = x ^ ((x ^ y) & mb);
        ol[o] = (uint8_t)(lx ^ ((lx ^ ly) & mb));
        ot[oe] = xe ^ ((xe ^ ye) & me);
        ol[oe] = (uint8_t)(lxe ^ ((lxe ^ lye) & me));
        o++;
        oe--;
        j += tb;
        i += 1 - tb;
        je -= te;
        ie -= 1 - te;
    }
    /* The middle: a[i..ie], b[j..je] into ot[o..oe]. */
    while (i <= ie && j <= je) {
        int64_t x = a[i], y = b[j];
        int tb = y < x;
        uint8_t lx = TM_LAB(la, ca, i), ly = TM_LAB(lb, cb, j);
        int64_t mb = -(int64_t)tb;
        ot[o] = x ^ ((x ^ y) & mb);
        ol[o] = (uint8_t)(lx ^ ((lx ^ ly) & mb));
        o++;
        j += tb;
        i += 1 - tb;
    }
    if (i <= ie) {
        memcpy(ot + o, a + i, (size_t)(ie + 1 - i) * sizeof *ot);
        if (CONST_LAB)
            memset(ol + o, ca, (size_t)(ie + 1 - i));
        else
            memcpy(ol + o, la + i, (size_t)(ie + 1 - i));
    } else if (j <= je) {
        memcpy(ot + o, b + j, (size_t)(je + 1 - j) * sizeof *ot);
        if (CONST_LAB)
            memset(ol + o, cb, (size_t)(je + 1 - j));
        else
            memcpy(ol + o, lb + j, (size_t)(je + 1 - j));
    }
}

/* Source streams: constant label per run. */
static void merge2_src(const int64_t *a, uint8_t ca, int64_t na, const int64_t *b, uint8_t cb, int64_t nb,
                       int64_t *ot, uint8_t *ol)
{
    merge2_body(1, a, NULL, ca, na, b, NULL, cb, nb, ot, ol);
}

/* Intermediate runs: labels travel with the values. */
static void merge2_run(const int64_t *a, const uint8_t *la, int64_t na, const int64_t *b, const uint8_t *lb,
                       int64_t nb, int64_t *ot, uint8_t *ol)
{
    merge2_body(0, a, la, 0, na, b, lb, 0, nb, ot, ol);
}

static int is_sorted(const int64_t *x, int64_t n)
{
    int bad = 0;
    for (int64_t i = 1; i < n; i++)
        bad |= x[i] < x[i - 1]; /* no early exit: vectorizes */
    return !bad;
}

/* Balanced tree of two-way merges of streams src[0..k) into land_*, using other_* as the
 * ping-pong buffer (ceil(log2 k) passes; the first pass writes where the parity of
 * the pass count makes the last one land in land_*). other_* may be NULL if k <= 2. */
static void tree_merge(size_t k, const int64_t *const *src, const int64_t *n, const uint8_t *label,
                       int64_t total, int64_t *land_t, uint8_t *land_l, int64_t *other_t, uint8_t *other_l)
{
    size_t passes = 0;
    for (size_t r = k; r > 1; r = (r + 1) / 2)
        passes++;
    if (passes == 0) { /* one stream: copy */
        if (n[0] > 0) {
            memcpy(land_t, src[0], (size_t)n[0] * sizeof *land_t);
            memset(land_l, label[0], (size_t)n[0]);
        }
        return;
    }
    int64_t *dt = (passes % 2) ? land_t : other_t;
    uint8_t *dl = (passes % 2) ? land_l : other_l;
    int64_t off[TM_MAX_STREAMS + 1];
    size_t runs = 0;
    int64_t o = 0;
    for (size_t s = 0; s < k; s += 2) {
        off[runs++] = o;
        if (s + 1 < k) {
            merge2_src(src[s], label[s], n[s], src[s + 1], label[s + 1], n[s + 1], dt + o, dl + o);
            o += n[s] + n[s + 1];
        } else {
            if (n[s] > 0) {
                memcpy(dt + o, src[s], (size_t)n[s] * sizeof *dt);
                memset(dl + o, label[s], (size_t)n[s]);
            }
            o += n[s];
        }
    }
    off[runs] = total;
    while (runs > 1) {
        int64_t *st = dt;
        uint8_t *sl = dl;
        dt = (st == land_t) ? other_t : land_t;
        dl = (sl == land_l) ? other_l : land_l;
        size_t nr = 0;
        for (size_t r = 0; r < runs; r += 2) {
            int64_t a0 = off[r], a1 = off[r + 1];
            off[nr++] = a0;
            if (r + 1 < runs) {
                int64_t b1 = off[r + 2];
                merge2_run(st + a0, sl + a0, a1 - a0, st + a1, sl + a1, b1 - a1, dt + a0, dl + a0);
            } else if (a1 > a0) {
                memcpy(dt + a0, st + a0, (size_t)(a1 - a0) * sizeof *dt);
                memcpy(dl + a0, sl + a0, (size_t)(a1 - a0));
            }
        }
        off[nr] = total;
        runs = nr;
    }
}

/* Does element (bt, bl) of the merged run come before a sparse element (t, c)?
 * The run is ordered by (time, label) because labels are non-decreasing in stream
 * order and ties keep stream order; equal (time, label) pairs are indistinguishable. */
static inline int goes_before(int64_t bt, uint8_t bl, int64_t t, uint8_t c)
{
    return bt < t || (bt == t && bl < c);
}

/* Merge a sparse stream s[0..ns) (label c) into the merged run b (nb entries):
 * for each sparse element, gallop then binary-search its place from the previous
 * one, copy the run up to it with memcpy, then the element. O(nb + ns log(nb/ns))
 * instead of a compare per element: a few sync tags spread over millions of
 * detector tags cost one memcpy of the run. */
static void insert_sparse(const int64_t *bt, const uint8_t *bl, int64_t nb, const int64_t *s, uint8_t c,
                          int64_t ns, int64_t *ot, uint8_t *ol)
{
    int64_t p = 0, o = 0;
    for (int64_t i = 0; i < ns; i++) {
        int64_t t = s[i];
        int64_t lo = p, hi = p, step = 1;
        while (hi < nb && goes_before(bt[hi], bl[hi], t, c)) {
            lo = hi + 1;
            hi = lo + step;
            step *= 2;
        }
        if (hi > nb)
            hi = nb;
        while (lo < hi) { /* first index in [lo, hi) that does not go before (t, c) */
            int64_t mid = lo + (hi - lo) / 2;
            if (goes_before(bt[mid], bl[mid], t, c))
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo > p) {
            memcpy(ot + o, bt + p, (size_t)(lo - p) * sizeof *ot);
            memcpy(ol + o, bl + p, (size_t)(lo - p));
            o += lo - p;
            p = lo;
        }
        ot[o] = t;
        ol[o] = c;
        o++;
    }
    if (p < nb) {
        memcpy(ot + o, bt + p, (size_t)(nb - p) * sizeof *ot);
        memcpy(ol + o, bl + p, (size_t)(nb - p));
    }
}

int tm_merge_i64(size_t k, const int64_t *const *src, const int64_t *n, const uint8_t *label,
                 int64_t *out_t, uint8_t *out_label, int64_t *scratch_t, uint8_t *scratch_label,
                 int64_t *bad_stream)
{
    if (bad_stream)
        *bad_stream = -1;
    if (k == 0)
        return TM_OK;
    if (!src || !n || !label || !out_t || !out_label)
        return TM_ERR_NULL;
    if (k > TM_MAX_STREAMS)
        return TM_ERR_TOO_MANY;
    int64_t total = 0;
    int labels_sorted = 1;
    for (size_t s = 0; s < k; s++) {
        if (n[s] < 0)
            return TM_ERR_NULL;
        if (n[s] > 0 && !src[s])
            return TM_ERR_NULL;
        if (!is_sorted(src[s], n[s])) {
            if (bad_stream)
                *bad_stream = (int64_t)s;
            return TM_ERR_UNSORTED;
        }
        total += n[s];
        if (s > 0 && label[s] < label[s - 1])
            labels_sorted = 0;
    }
    if (k > 2 && (!scratch_t || !scratch_label))
        return TM_ERR_NULL;

    /* A sparse stream (e.g. one sync tag per frame among the detector tags) is left out
     * of the tree and inserted afterwards (insert_sparse): in the tree it would cost a
     * whole extra pass of compares. Needs labels in stream order for the (time, label)
     * order of the merged run. */
    size_t sparse = k;
    if (k >= 3 && labels_sorted) {
        size_t m = 0;
        for (size_t s = 1; s < k; s++)
            if (n[s] < n[m])
                m = s;
        if (n[m] > 0 && n[m] * TM_SPARSE_RATIO <= total)
            sparse = m;
    }
    if (sparse == k) {
        tree_merge(k, src, n, label, total, out_t, out_label, scratch_t, scratch_label);
        return TM_OK;
    }
    const int64_t *rest[TM_MAX_STREAMS];
    int64_t rest_n[TM_MAX_STREAMS];
    uint8_t rest_l[TM_MAX_STREAMS];
    size_t kr = 0;
    for (size_t s = 0; s < k; s++) {
        if (s == sparse)
            continue;
        rest[kr] = src[s];
        rest_n[kr] = n[s];
        rest_l[kr] = label[s];
        kr++;
    }
    int64_t nb = total - n[sparse];
    tree_merge(kr, rest, rest_n, rest_l, nb, scratch_t, scratch_label, out_t, out_label);
    insert_sparse(scratch_t, scratch_label, nb, src[sparse], label[sparse], n[sparse], out_t, out_label);
    return TM_OK;
}

int tm_check_pairs(const uint64_t *pairs, int64_t n, uint64_t value_limit, uint64_t index_limit,
                   int64_t *bad)
{
    if (bad)
        *bad = -1;
    if (n < 0 || (n > 0 && !pairs))
        return TM_ERR_NULL;
    /* Branch-free flags over blocks, a second look only to name the offender. */
    int range = 0, order = 0;
    uint64_t prev = n > 0 ? pairs[1] : 0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t v = pairs[2 * i], r = pairs[2 * i + 1];
        range |= (v >= value_limit) | (r >= index_limit);
        order |= r < prev;
        prev = r;
    }
    if (!range && !order)
        return TM_OK;
    prev = pairs[1];
    for (int64_t i = 0; i < n; i++) {
        uint64_t v = pairs[2 * i], r = pairs[2 * i + 1];
        if (v >= value_limit || r >= index_limit) {
            if (bad)
                *bad = i;
            return TM_ERR_RANGE;
        }
        if (r < prev) {
            if (bad)
                *bad = i;
            return TM_ERR_UNSORTED;
        }
        prev = r;
    }
    return TM_OK; /* not reached: the first pass saw an offender */
}

int tm_pairs_affine(const uint64_t *pairs, int64_t n, int64_t scale, int64_t *out, int64_t *bad)
{
    if (bad)
        *bad = -1;
    if (n < 0 || (n > 0 && (!pairs || !out)) || scale < 1)
        return TM_ERR_NULL;
    /* Overflow: index * scale + value <= INT64_MAX iff index <= (INT64_MAX - value) / scale.
     * The loop keeps the largest value and index (no division per pair); only if
     * those two together could overflow does a second, exact pass look pair by pair. */
    uint64_t vmax = 0, rmax = 0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t v = pairs[2 * i], r = pairs[2 * i + 1];
        vmax = v > vmax ? v : vmax;
        rmax = r > rmax ? r : rmax;
        out[i] = (int64_t)(r * (uint64_t)scale + v);
    }
    int over = vmax > (uint64_t)INT64_MAX || rmax > ((uint64_t)INT64_MAX - vmax) / (uint64_t)scale;
    if (!over)
        return TM_OK;
    for (int64_t i = 0; i < n; i++) {
        uint64_t v = pairs[2 * i], r = pairs[2 * i + 1];
        if (v > (uint64_t)INT64_MAX || r > ((uint64_t)INT64_MAX - v) / (uint64_t)scale) {
            if (bad)
                *bad = i;
            return TM_ERR_RANGE;
        }
    }
    return TM_OK; /* the two maxima came from different pairs: no pair overflows */
}
