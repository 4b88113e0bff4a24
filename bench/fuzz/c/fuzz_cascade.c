/* libFuzzer harness: Cascade messages fed to either side at any point of a run.
 *
 * Input: byte 0 = mode, byte 1 = step k, the rest = payload. A genuine run
 * (fixed keys, QBER 5 %, seed 7) is replayed up to message k; then message k
 * is replaced according to mode & 3: 0 the payload as a whole message, 1 the
 * genuine message XOR the payload (repeated), 2 the genuine message cut or
 * zero-extended to a length from the payload, 3 the genuine header with the
 * payload as body. Bit 2 picks the original variant, else bit 5 the optimized
 * one with waves; bits 3..4 the frame length. If the
 * receiver accepts the message the exchange continues to its end (a refused
 * later message stops it). Oracle besides the sanitizers: a refused message
 * leaves the state unchanged (the genuine message is then accepted), and Bob
 * never reports success with a key different from Alice's.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qpp_cascade.h"
#include "mutate.h"

enum { NBITS = 1500, NW = (NBITS + 63) / 64, MAXMSG = 1 << 16, MAXSTEPS = 4000 };

static void keys(uint64_t *a, uint64_t *b)
{
    uint64_t x = 0x1234567;
    for (int i = 0; i < NW; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        a[i] = x ^ (x >> 29);
        uint64_t e = 0;
        for (int j = 0; j < 64; j++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            if ((x >> 40) % 20 == 0) e |= (uint64_t)1 << j;   /* ~5 % */
        }
        b[i] = a[i] ^ e;
    }
    a[NW - 1] &= ((uint64_t)1 << (NBITS % 64)) - 1;
    b[NW - 1] &= ((uint64_t)1 << (NBITS % 64)) - 1;
}

static uint8_t msg[MAXMSG], bad[MAXMSG];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    int mode = data[0], step = data[1];
    const uint8_t *pl = data + 2;
    size_t plen = size - 2;
    int variant = (mode >> 2) & 1 ? QPP_CASCADE_ORIGINAL
                : (mode >> 5) & 1 ? QPP_CASCADE_OPT_WAVES : QPP_CASCADE_OPT;
    static const size_t frames[4] = {0, 256, 512, 1024};
    size_t fb = frames[(mode >> 3) & 3];
    uint64_t a[NW], b[NW];
    keys(a, b);
    qpp_cascade *A = NULL, *B = NULL;
    if (qpp_cascade_create(&A, QPP_CASCADE_ALICE, variant, a, NBITS, 0.05, 7, 99, fb, NULL, 0)) abort();
    if (qpp_cascade_create(&B, QPP_CASCADE_BOB, variant, b, NBITS, 0.05, 7, 0, fb, NULL, 0)) abort();
    int k = 0, stop = 0;
    for (int guard = 0; guard < MAXSTEPS && !stop; guard++) {
        qpp_cascade *from = qpp_cascade_pending(B) ? B : A, *to = from == B ? A : B;
        size_t len;
        if (!qpp_cascade_pending(from)) break;
        if (qpp_cascade_next(from, msg, sizeof msg, &len)) abort();
        if (k++ == step) {
            size_t n = fuzz_mutate(mode, pl, plen, msg, len, bad, MAXMSG, QPP_CASCADE_HEADER_BYTES, 16);
            int same = n == len && !memcmp(bad, msg, n);
            if (qpp_cascade_feed(to, n ? bad : msg, n) != QPP_OK) {
                /* refused: the state must be unchanged, so the genuine message still goes in */
                if (!same && qpp_cascade_feed(to, msg, len) != QPP_OK) abort();
            }
            continue;
        }
        if (qpp_cascade_feed(to, msg, len) != QPP_OK) stop = 1;
    }
    qpp_cascade_stats st;
    uint64_t out[NW];
    if (qpp_cascade_result(B, out, NW, &st)) abort();
    if (st.success && memcmp(out, a, sizeof a)) abort();   /* a silent mismatch */
    qpp_cascade_free(A);
    qpp_cascade_free(B);
    return 0;
}
