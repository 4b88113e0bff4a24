/* libFuzzer harness: Bob's slotting close step (qpp_slot_close) and gap counts (qpp_slot_gaps)
 * on tagger tags, which come from an instrument and must never crash the node.
 *
 * Input: byte 0 = flags (bit 0: times as raw 8-byte values, else 2-byte increments; bit 1: the
 * dead-time guard on; bits 2-3: period 1000 / 997.3 / 64 / 1 ps; bit 4: window = period, else 0.8;
 * bit 5: large offsets), byte 1 = n_close, bytes 2..9 = four int16 offset steps, then records
 * (time, channel): channel 0 is a sync, 0xFE a guard-memory entry (key = the time's low bits),
 * the rest tags (any channel, so 0 and 5..253 must be refused). Checked: a documented status,
 * on a channel error a bad_index naming a bad tag, on success outputs that account for every
 * tag once, and no memory touched out of bounds (ASan), whatever the tags.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qpp_slot.h"

enum { MAXN = 4096 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 10)
        return 0;
    const int raw = data[0] & 1, guard = (data[0] >> 1) & 1;
    static const double periods[4] = {1000.0, 997.3, 64.0, 1.0};
    const double period = periods[(data[0] >> 2) & 3];
    const double window = (data[0] & 16) ? period : 0.8 * period;
    double offsets[4];
    for (int d = 0; d < 4; d++) {
        int16_t v;
        memcpy(&v, data + 2 + 2 * d, 2);
        offsets[d] = (double)v * ((data[0] & 32) ? 1000.0 : 1.0);
    }
    size_t rec = raw ? 9 : 3, n_rec = (size - 10) / rec;
    if (n_rec > MAXN)
        n_rec = MAXN;
    size_t cap = n_rec ? n_rec : 1;
    int64_t *t = malloc(cap * sizeof *t), *syncs = malloc(cap * sizeof *syncs);
    int64_t *sidx = malloc(cap * sizeof *sidx), *tail_ps = malloc(cap * sizeof *tail_ps);
    int64_t *tail_key = malloc(cap * sizeof *tail_key), *pend_t = malloc(cap * sizeof *pend_t);
    int64_t *otp = malloc(2 * cap * sizeof *otp), *otk = malloc(2 * cap * sizeof *otk);
    uint8_t *ch = malloc(cap), *pend_ch = malloc(cap), *ev_m = malloc(cap);
    uint64_t *ev_s = malloc(cap * sizeof *ev_s), *fstat = malloc(cap * 4 * sizeof *fstat);
    if (!t || !syncs || !sidx || !tail_ps || !tail_key || !pend_t || !otp || !otk || !ch || !pend_ch
        || !ev_m || !ev_s || !fstat)
        abort();
    size_t n = 0, ns = 0, nt = 0;
    uint64_t clock = 0;
    for (size_t i = 0; i < n_rec; i++) {
        const uint8_t *r = data + 10 + i * rec;
        uint8_t c;
        if (raw) {
            memcpy(&clock, r, 8);
            c = r[8];
        } else {
            clock += (uint64_t)r[0] | (uint64_t)r[1] << 8;
            c = r[2];
        }
        if (c == 0) {
            syncs[ns] = (int64_t)clock;
            sidx[ns] = (int64_t)ns;
            ns++;
        } else if (c == 0xFE) {
            tail_ps[nt] = (int64_t)clock;
            tail_key[nt] = (int64_t)(clock & 0xFFFF) - 1;
            nt++;
        } else {
            t[n] = (int64_t)clock;
            ch[n] = c;
            n++;
        }
    }
    size_t n_close = ns ? 1 + data[1] % ns : 0, badi = (size_t)-1;
    uint64_t counts[QPP_SLOT_NCOUNTS] = {0, 0, 0, 0};
    int st = qpp_slot_close(t, ch, n, syncs, sidx, ns, n_close, offsets, window, period, 1024,
                            guard ? 5000.0 + window : 0.0, tail_ps, tail_key, nt, ev_s, ev_m, fstat,
                            pend_t, pend_ch, otp, otk, counts, &badi);
    if (ns == 0 && st != QPP_ERR_LENGTH)
        abort();
    if (st == QPP_ERR_VALUE && (badi >= n || (ch[badi] >= 1 && ch[badi] <= 4)))
        abort();
    if (st != QPP_OK && st != QPP_ERR_VALUE && st != QPP_ERR_LENGTH && st != QPP_ERR_UNSORTED
        && st != QPP_ERR_RANGE)
        abort();
    if (st == QPP_OK) {
        uint64_t ev = 0, kept = 0, dropped = 0;
        for (size_t i = 0; i < n_close; i++) {
            ev += fstat[4 * i + QPP_SLOT_F_EVENTS];
            kept += fstat[4 * i + QPP_SLOT_F_KEPT];
            dropped += fstat[4 * i + QPP_SLOT_F_DROPPED];
            if (fstat[4 * i + QPP_SLOT_F_EVENTS] + fstat[4 * i + QPP_SLOT_F_VETOED]
                > fstat[4 * i + QPP_SLOT_F_KEPT])
                abort();
        }
        if (ev != counts[QPP_SLOT_C_EVENTS] || ev > n || counts[QPP_SLOT_C_TAIL] > nt + n
            || kept + dropped + counts[QPP_SLOT_C_EARLY] + counts[QPP_SLOT_C_PENDING] != n)
            abort();
        for (size_t i = 0; i < ev; i++)
            if (ev_s[i] >= 1024 || ev_m[i] < 1 || ev_m[i] > 15)
                abort();
    }
    int64_t last[4] = {0, 0, 0, 0};
    uint8_t has[4] = {0, 0, 0, 0};
    uint64_t g[4], sg[4], sum[4];
    if (qpp_slot_gaps(t, ch, n, 10800.0, last, has, g, sg, sum) != QPP_OK)
        abort();
    for (int d = 0; d < 4; d++)
        if (g[d] > n || sg[d] > g[d])
            abort();
    free(t); free(syncs); free(sidx); free(tail_ps); free(tail_key); free(pend_t); free(otp);
    free(otk); free(ch); free(pend_ch); free(ev_m); free(ev_s); free(fstat);
    return 0;
}
