/* libFuzzer harness: Alice's sifting of Bob's announcement (peer-supplied slots and
 * bases), then Bob's compaction by Alice's match mask (peer-supplied too).
 *
 * Input: byte 0 = flags (bit 0: take slots as raw 8-byte values, else as
 * 1-byte increments), then (slot, basis) records; Alice's frame pattern is
 * fixed (4096 slots). Checked: the functions either succeed or refuse with a
 * status and a bad_index inside the announcement, and never touch memory out
 * of bounds (ASan), whatever the announcement.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qpp_sift.h"

enum { FRAME = 4096, MAXN = 2048 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t basis[FRAME], bit[FRAME], inten[FRAME];
    static int init;
    if (!init) {
        uint64_t x = 5;
        for (int i = 0; i < FRAME; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            basis[i] = (uint8_t)(x >> 63); bit[i] = (uint8_t)(x >> 62) & 1; inten[i] = (uint8_t)((x >> 40) % 3);
        }
        init = 1;
    }
    if (size < 1) return 0;
    int raw = data[0] & 1;
    size_t rec = raw ? 9 : 2, n = (size - 1) / rec;
    if (n > MAXN) n = MAXN;
    uint64_t *slots = malloc((n ? n : 1) * sizeof *slots);
    uint8_t *bb = malloc(n ? n : 1), *match = malloc(n ? n : 1), *ob = malloc(n ? n : 1),
            *obits = malloc(n ? n : 1), *oint = malloc(n ? n : 1);
    uint64_t *os = malloc((n ? n : 1) * sizeof *os);
    if (!slots || !bb || !match || !ob || !obits || !oint || !os) abort();
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *r = data + 1 + i * rec;
        if (raw) { memcpy(&s, r, 8); slots[i] = s; bb[i] = r[8]; }
        else { s += r[0]; slots[i] = s; bb[i] = r[1]; }
    }
    size_t nsift = 0, badi = (size_t)-1;
    uint64_t det[6 * 2] = {0}, sifted[12] = {0};
    int st = qpp_sift_alice(slots, bb, n, basis, bit, inten, FRAME, match, os, ob, obits, oint,
                            &nsift, det, sifted, &badi);
    if (st != QPP_OK && n && badi >= n) abort();
    if (st == QPP_OK && nsift > n) abort();
    /* Bob compacts his events by the mask Alice sent (here: the payload bytes themselves). */
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) { match[i] = bb[i]; obits[i] = bb[i] & 1; }
    st = qpp_sift_bob_keep(match, n, slots, bb, obits, os, ob, oint, &kept, &badi);
    if (st != QPP_OK && n && badi >= n) abort();
    free(slots); free(bb); free(match); free(ob); free(obits); free(oint); free(os);
    return 0;
}
