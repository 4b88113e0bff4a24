/* libFuzzer harness: LDPC side messages (SYNDROME, STATUS, REVEAL) fed to either side.
 *
 * A small code built here (n = 128 variables of degree 3, m = 64 checks, 16
 * adaptation positions: 4 shortened, 12 punctured, reveal step 4, blind mode)
 * and fixed keys of 300 bits (3 frames) at ~3 % errors. Input layout and the
 * replacement modes are those of fuzz_cascade.c: byte 0 = mode, byte 1 =
 * step, the rest the payload. Oracle besides the sanitizers: a refused message
 * leaves the state unchanged (the genuine one is then accepted). The LDPC
 * protocol has no final hash, so key equality is not asserted here.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qpp_ldpc.h"
#include "mutate.h"

enum { N = 128, M = 64, DV = 3, NPOS = 16, KEYBITS = 300, KW = (KEYBITS + 63) / 64,
       MAXMSG = 1 << 16, MAXSTEPS = 200 };

static qpp_ldpc_code *code;
static uint32_t pos[NPOS];

static uint64_t lcg(uint64_t *x)
{
    *x = *x * 6364136223846793005ULL + 1442695040888963407ULL;
    return *x >> 17;
}

static void build_code(void)
{
    /* column j has DV distinct checks; rows collect them (CSR). */
    static uint32_t col_chk[N][DV], row_ptr[M + 1], col_idx[N * DV], fill[M];
    uint64_t x = 42;
    for (;;) {
        uint32_t deg[M] = {0};
        for (int j = 0; j < N; j++)
            for (int t = 0; t < DV; t++) {
                uint32_t r;
                int dup;
                do {
                    r = (uint32_t)(lcg(&x) % M);
                    dup = 0;
                    for (int u = 0; u < t; u++) dup |= col_chk[j][u] == r;
                } while (dup);
                col_chk[j][t] = r; deg[r]++;
            }
        int ok = 1;
        for (int r = 0; r < M; r++) ok &= deg[r] > 0;
        if (!ok) continue;
        row_ptr[0] = 0;
        for (int r = 0; r < M; r++) row_ptr[r + 1] = row_ptr[r] + deg[r];
        memset(fill, 0, sizeof fill);
        for (int j = 0; j < N; j++)
            for (int t = 0; t < DV; t++) {
                uint32_t r = col_chk[j][t];
                col_idx[row_ptr[r] + fill[r]++] = (uint32_t)j;
            }
        break;
    }
    if (qpp_ldpc_code_create(&code, N, M, row_ptr, col_idx, N * DV)) abort();
    for (int i = 0; i < NPOS; i++) pos[i] = (uint32_t)(7 * i + 3);   /* distinct, < N */
}

static uint8_t msg[MAXMSG], bad[MAXMSG];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!code) build_code();
    if (size < 2) return 0;
    int mode = data[0], step = data[1];
    const uint8_t *pl = data + 2;
    size_t plen = size - 2;
    uint64_t a[KW], b[KW], punct[4] = {0x0123456789abcdefULL, 0xfedcba9876543210ULL, 0x55aa55aa55aa55aaULL, 0};
    uint64_t x = 9;
    for (int i = 0; i < KW; i++) {
        a[i] = lcg(&x) ^ (lcg(&x) << 40);
        uint64_t e = 0;
        for (int j = 0; j < 64; j++) if (lcg(&x) % 32 == 0) e |= (uint64_t)1 << j;
        b[i] = a[i] ^ e;
    }
    a[KW - 1] &= ((uint64_t)1 << (KEYBITS % 64)) - 1;
    b[KW - 1] &= ((uint64_t)1 << (KEYBITS % 64)) - 1;
    struct qpp_ldpc_config cfg = {4, (mode >> 2) & 1 ? 0 : 4, 20, 0, (mode >> 3) & 1, 0.8f, 3.4f, 77};
    qpp_ldpc_side *A = NULL, *B = NULL;
    if (qpp_ldpc_side_create(&A, code, QPP_LDPC_ALICE, a, KW, KEYBITS, pos, NPOS, punct, 4, &cfg)) abort();
    if (qpp_ldpc_side_create(&B, code, QPP_LDPC_BOB, b, KW, KEYBITS, pos, NPOS, NULL, 0, &cfg)) abort();
    int k = 0, stop = 0;
    for (int guard = 0; guard < MAXSTEPS && !stop; guard++) {
        qpp_ldpc_side *from = qpp_ldpc_side_pending(A) ? A : B, *to = from == A ? B : A;
        size_t len;
        if (!qpp_ldpc_side_pending(from)) break;
        if (qpp_ldpc_side_next(from, msg, sizeof msg, &len)) abort();
        if (k++ == step) {
            size_t n = fuzz_mutate(mode, pl, plen, msg, len, bad, MAXMSG, QPP_LDPC_MSG_HEADER, 64);
            int same = n == len && !memcmp(bad, msg, n);
            if (qpp_ldpc_side_feed(to, n ? bad : msg, n) != QPP_OK) {
                if (!same && qpp_ldpc_side_feed(to, msg, len) != QPP_OK) abort();
            }
            continue;
        }
        if (qpp_ldpc_side_feed(to, msg, len) != QPP_OK) stop = 1;
    }
    uint64_t out[KW], leaked, iters;
    uint32_t ok, msgs, rounds;
    int rc = qpp_ldpc_side_result(B, out, KW, &leaked, &ok, &msgs, &rounds, &iters);
    (void)rc;
    qpp_ldpc_side_free(A);
    qpp_ldpc_side_free(B);
    return 0;
}
