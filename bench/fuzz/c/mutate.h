/* The one message mutation the reconciliation harnesses share (fuzz_cascade.c, fuzz_ldpc.c).
 *
 * Builds in `bad` (capacity `cap`) the replacement for the genuine message `msg` (`len` bytes)
 * from the fuzzer's payload `pl`, by `mode & 3`: 0 the payload itself; 1 the message XORed with
 * the payload; 2 the message truncated or zero-padded to a payload-chosen length; 3 the message's
 * `header` bytes followed by the payload (at most cap - `room` bytes of it). Returns its length. */
#ifndef FUZZ_MUTATE_H
#define FUZZ_MUTATE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static size_t fuzz_mutate(int mode, const uint8_t *pl, size_t plen, const uint8_t *msg, size_t len,
                          uint8_t *bad, size_t cap, size_t header, size_t room)
{
    size_t n = 0;
    switch (mode & 3) {
    case 0: n = plen < cap ? plen : cap; memcpy(bad, pl, n); break;
    case 1:
        n = len; memcpy(bad, msg, n);
        for (size_t i = 0; plen && i < n; i++) bad[i] ^= pl[i % plen];
        break;
    case 2:
        n = plen >= 2 ? ((size_t)pl[0] | (size_t)pl[1] << 8) : 0;
        if (n > cap) n = cap;
        memset(bad, 0, n);
        memcpy(bad, msg, n < len ? n : len);
        break;
    default:
        n = header + (plen < cap - room ? plen : cap - room);
        memcpy(bad, msg, header < len ? header : len);
        memcpy(bad + header, pl, n - header);
        break;
    }
    return n;
}

#endif
