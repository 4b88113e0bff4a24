/* Packed frame patterns: gather at announced slots, class counts. See qpp_pattern.h. */
#include "qpp_pattern.h"

int qpp_pattern_gather(const uint64_t *basis_w, const uint64_t *bit_w, const uint64_t *int_lo_w,
                       const uint64_t *int_hi_w, uint64_t frame_len,
                       const uint64_t *slots, size_t n,
                       uint8_t *out_basis, uint8_t *out_bit, uint8_t *out_intensity,
                       size_t *bad_index)
{
    size_t i;
    if (n > 0 && (!basis_w || !bit_w || !int_lo_w || !int_hi_w || !slots || !out_basis || !out_bit
                  || !out_intensity))
        return QPP_ERR_NULL;
    for (i = 0; i < n; i++) {
        uint64_t s = slots[i], w, sh;
        unsigned lo, hi;
        if (s >= frame_len) {
            if (bad_index) *bad_index = i;
            return QPP_ERR_RANGE;
        }
        w = s >> 6;
        sh = s & 63u;
        lo = (unsigned)((int_lo_w[w] >> sh) & 1u);
        hi = (unsigned)((int_hi_w[w] >> sh) & 1u);
        if (lo & hi) {
            if (bad_index) *bad_index = i;
            return QPP_ERR_VALUE;
        }
        out_basis[i] = (uint8_t)((basis_w[w] >> sh) & 1u);
        out_bit[i] = (uint8_t)((bit_w[w] >> sh) & 1u);
        out_intensity[i] = (uint8_t)(lo | (hi << 1));
    }
    return QPP_OK;
}

static inline unsigned popc(uint64_t x) { return (unsigned)__builtin_popcountll(x); }

int qpp_pattern_counts(const uint64_t *basis_w, const uint64_t *int_lo_w, const uint64_t *int_hi_w,
                       uint64_t frame_len, uint64_t *counts)
{
    size_t nw = (size_t)((frame_len + 63) / 64), w;
    uint64_t lastmask = (frame_len % 64) ? ((UINT64_C(1) << (frame_len % 64)) - 1) : ~UINT64_C(0);
    uint64_t c[6] = {0, 0, 0, 0, 0, 0};
    int k;
    if (!counts || (nw && (!basis_w || !int_lo_w || !int_hi_w)))
        return QPP_ERR_NULL;
    for (w = 0; w < nw; w++) {
        uint64_t m = (w + 1 == nw) ? lastmask : ~UINT64_C(0);
        uint64_t b = basis_w[w] & m, lo = int_lo_w[w] & m, hi = int_hi_w[w] & m;
        uint64_t i0 = m & ~lo & ~hi;
        if (lo & hi)
            return QPP_ERR_VALUE;
        c[0] += popc(~b & i0);
        c[1] += popc(~b & m & lo);
        c[2] += popc(~b & m & hi);
        c[3] += popc(b & i0);
        c[4] += popc(b & lo);
        c[5] += popc(b & hi);
    }
    for (k = 0; k < 6; k++)
        counts[k] = c[k];
    return QPP_OK;
}

int qpp_pattern_sift_alice(const uint64_t *basis_w, const uint64_t *bit_w, const uint64_t *int_lo_w,
                           const uint64_t *int_hi_w, uint64_t frame_len,
                           const uint32_t *slots, const uint8_t *bob_basis, size_t n,
                           uint8_t *match, uint8_t *out_basis, uint8_t *out_bits,
                           uint8_t *out_intensity, size_t *n_sifted,
                           uint64_t *detections, uint64_t *sifted, size_t *bad_index)
{
    uint64_t det[8] = {0}, sif[8] = {0};
    size_t i, k = 0;
    int b, t;
    if (!n_sifted || !detections || !sifted)
        return QPP_ERR_NULL;
    if (n && (!basis_w || !bit_w || !int_lo_w || !int_hi_w || !slots || !bob_basis || !match
              || !out_basis || !out_bits || !out_intensity))
        return QPP_ERR_NULL;
    for (i = 0; i < n; i++) {
        uint64_t s = slots[i], w, sh;
        unsigned ab, bt, lo, hi, bb, m, c;
        if ((i > 0 && s <= slots[i - 1]) || s >= frame_len || bob_basis[i] > 1) {
            if (bad_index) *bad_index = i;
            return (i > 0 && s <= slots[i - 1]) ? QPP_ERR_UNSORTED
                 : (s >= frame_len ? QPP_ERR_RANGE : QPP_ERR_VALUE);
        }
        w = s >> 6;
        sh = s & 63u;
        ab = (unsigned)((basis_w[w] >> sh) & 1u);
        bt = (unsigned)((bit_w[w] >> sh) & 1u);
        lo = (unsigned)((int_lo_w[w] >> sh) & 1u);
        hi = (unsigned)((int_hi_w[w] >> sh) & 1u);
        if (lo & hi) {
            if (bad_index) *bad_index = i;
            return QPP_ERR_VALUE;
        }
        bb = bob_basis[i];
        m = (ab == bb);
        c = (ab << 2) | lo | (hi << 1);
        match[i] = (uint8_t)m;
        out_basis[k] = (uint8_t)ab;
        out_bits[k] = (uint8_t)bt;
        out_intensity[k] = (uint8_t)(lo | (hi << 1));
        k += m;
        det[c]++;
        sif[c] += m;
    }
    *n_sifted = k;
    for (b = 0; b < 2; b++)
        for (t = 0; t < 3; t++) {
            detections[b * 3 + t] = det[b * 4 + t];
            sifted[b * 3 + t] = sif[b * 4 + t];
        }
    return QPP_OK;
}

int qpp_slot_gaps16(const uint64_t *slots, size_t n, const uint64_t *counts, size_t n_frames,
                    uint16_t *gaps, size_t *bad_index)
{
    size_t f, i = 0;
    if (n_frames && !counts) return QPP_ERR_NULL;
    if (n && (!slots || !gaps)) return QPP_ERR_NULL;
    for (f = 0; f < n_frames; f++) {
        uint64_t c = counts[f], prev = 0;
        size_t end;
        if (c > n - i) return QPP_ERR_LENGTH;
        end = i + (size_t)c;
        if (i < end) {                      /* the frame's first slot, absolute */
            if (slots[i] > 0xFFFFu) goto range;
            gaps[i] = (uint16_t)slots[i];
            prev = slots[i];
            i++;
        }
        for (; i < end; i++) {
            uint64_t s = slots[i];
            if (s <= prev || s - prev > 0xFFFFu) goto range;
            gaps[i] = (uint16_t)(s - prev);
            prev = s;
        }
    }
    return QPP_OK;
range:
    if (bad_index) *bad_index = i;
    return QPP_ERR_RANGE;
}

int qpp_slots_from_gaps16(const uint16_t *gaps, size_t n, uint32_t *slots, size_t *bad_index)
{
    uint64_t s = 0;
    size_t i;
    if (n && (!gaps || !slots)) return QPP_ERR_NULL;
    for (i = 0; i < n; i++) {
        s += gaps[i];
        if (s > 0xFFFFFFFFu) {
            if (bad_index) *bad_index = i;
            return QPP_ERR_RANGE;
        }
        slots[i] = (uint32_t)s;
    }
    return QPP_OK;
}

int qpp_split_by_basis(const uint8_t *basis, const uint8_t *bits, const uint8_t *intensity, size_t n,
                       uint8_t *z_bits, uint8_t *z_intensity, size_t z_cap,
                       uint8_t *x_bits, uint8_t *x_intensity, size_t x_cap,
                       size_t *n_z, size_t *n_x)
{
    size_t i, z = 0, x = 0;
    if (!n_z || !n_x) return QPP_ERR_NULL;
    if (n && (!basis || !bits || !intensity)) return QPP_ERR_NULL;
    if ((z_cap && (!z_bits || !z_intensity)) || (x_cap && (!x_bits || !x_intensity))) return QPP_ERR_NULL;
    for (i = 0; i < n; i++) {
        if (basis[i] == 0) {
            if (z == z_cap) return QPP_ERR_LENGTH;
            z_bits[z] = bits[i]; z_intensity[z] = intensity[i]; z++;
        } else {
            if (x == x_cap) return QPP_ERR_LENGTH;
            x_bits[x] = bits[i]; x_intensity[x] = intensity[i]; x++;
        }
    }
    *n_z = z;
    *n_x = x;
    return QPP_OK;
}
