/* Standalone driver for libFuzzer-style harnesses (LLVMFuzzerTestOneInput), for
 * machines without clang: build with gcc, -fsanitize=address,undefined and
 * -fsanitize-coverage=trace-pc on the code under test (see build.sh).
 *
 * What it does: replays every file given on the command line (files or
 * directories: the corpus and the kept regressions), then, with -runs=N or
 * -max_total_time=S, runs a small coverage-guided mutation loop: gcc's
 * trace-pc callback below marks edges in a 64 Ki-bit map, and an input that
 * sets a new bit joins the in-memory corpus. Mutations: bit flips, random
 * bytes, interesting values, insert/erase, chunk copy, splice, truncation.
 * On a sanitizer report or a signal the current input is written to
 * crash-<hash>.bin (or -artifact_prefix=...) before the process dies.
 *
 * What it is not: libFuzzer (no value profiling, no CMP tracing, no
 * persistent merge); it is the fallback the CI can build everywhere gcc is.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---------- coverage (gcc -fsanitize-coverage=trace-pc) ---------- */
enum { MAP_BITS = 1 << 16 };
static uint8_t cov_map[MAP_BITS / 8];
static size_t cov_new;

__attribute__((no_sanitize_address, no_instrument_function))
void __sanitizer_cov_trace_pc(void)
{
    uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    uint32_t h = (uint32_t)((pc * 0x9E3779B97F4A7C15ULL) >> 48);
    uint8_t m = (uint8_t)(1u << (h & 7));
    if (!(cov_map[h >> 3] & m)) { cov_map[h >> 3] |= m; cov_new++; }
}

/* ---------- crash capture ---------- */
static const uint8_t *cur_data;
static size_t cur_size;
static char artifact_prefix[256] = "./";

static void write_crash(void)
{
    if (!cur_data) return;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < cur_size; i++) h = (h ^ cur_data[i]) * 1099511628211ULL;
    char path[400];
    snprintf(path, sizeof path, "%scrash-%016llx.bin", artifact_prefix, (unsigned long long)h);
    FILE *f = fopen(path, "wb");
    if (f) { fwrite(cur_data, 1, cur_size, f); fclose(f); }
    fprintf(stderr, "\n==driver== input of %zu bytes written to %s\n", cur_size, path);
    cur_data = NULL;
}

void __sanitizer_set_death_callback(void (*cb)(void));
static void on_signal(int sig) { write_crash(); signal(sig, SIG_DFL); raise(sig); }

/* ---------- corpus ---------- */
typedef struct { uint8_t *d; size_t n; } unit_t;
static unit_t *corpus; static size_t ncorpus, ccorpus;

static void add_unit(const uint8_t *d, size_t n)
{
    if (ncorpus == ccorpus) {
        ccorpus = ccorpus ? 2 * ccorpus : 256;
        corpus = realloc(corpus, ccorpus * sizeof *corpus);
        if (!corpus) abort();
    }
    corpus[ncorpus].d = malloc(n ? n : 1);
    if (!corpus[ncorpus].d) abort();
    memcpy(corpus[ncorpus].d, d, n);
    corpus[ncorpus].n = n;
    ncorpus++;
}

static size_t run_one(const uint8_t *d, size_t n)
{
    /* a private copy so reads past the end hit ASan's redzone */
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy) abort();
    memcpy(copy, d, n);
    cov_new = 0;
    cur_data = copy; cur_size = n;
    LLVMFuzzerTestOneInput(copy, n);
    cur_data = NULL;
    free(copy);
    return cov_new;
}

static void replay_path(const char *path, size_t *count)
{
    struct stat st;
    if (stat(path, &st)) { fprintf(stderr, "cannot stat %s\n", path); exit(2); }
    if (S_ISDIR(st.st_mode)) {
        DIR *dir = opendir(path);
        if (!dir) return;
        struct dirent *e;
        while ((e = readdir(dir))) {
            if (e->d_name[0] == '.') continue;
            char sub[4096];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            replay_path(sub, count);
        }
        closedir(dir);
        return;
    }
    FILE *f = fopen(path, "rb");
    if (!f) return;
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    if (!buf) abort();
    size_t n = fread(buf, 1, (size_t)st.st_size, f);
    fclose(f);
    run_one(buf, n);
    add_unit(buf, n);
    free(buf);
    (*count)++;
}

/* ---------- mutation ---------- */
static uint64_t rs[2];
static uint64_t rnd(void)
{
    uint64_t s1 = rs[0], s0 = rs[1];
    rs[0] = s0; s1 ^= s1 << 23;
    rs[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return rs[1] + s0;
}
static size_t below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static size_t mutate(uint8_t *b, size_t n, size_t cap)
{
    int k = 1 + (int)below(4);
    static const uint8_t interesting[] = {0, 1, 2, 3, 4, 7, 8, 12, 15, 16, 0x7F, 0x80, 0xFE, 0xFF};
    while (k--) {
        switch (below(9)) {
        case 0: if (n) b[below(n)] ^= (uint8_t)(1u << below(8)); break;
        case 1: if (n) b[below(n)] = (uint8_t)rnd(); break;
        case 2: if (n) b[below(n)] = interesting[below(sizeof interesting)]; break;
        case 3: if (n < cap) { size_t p = below(n + 1); memmove(b + p + 1, b + p, n - p); b[p] = (uint8_t)rnd(); n++; } break;
        case 4: if (n) { size_t p = below(n), l = 1 + below(n - p); memmove(b + p, b + p + l, n - p - l); n -= l; } break;
        case 5: if (n > 1) { size_t a = below(n), c = below(n), l = 1 + below(n - (a > c ? a : c)); memmove(b + c, b + a, l); } break;
        case 6: if (ncorpus) { const unit_t *u = &corpus[below(ncorpus)]; size_t p = below(n + 1), l = u->n < cap - p ? u->n : cap - p; size_t s = below(u->n + 1); if (s + l > u->n) l = u->n - s; memcpy(b + p, u->d + s, l); if (p + l > n) n = p + l; } break;
        case 7: n = below(n + 1); break;
        case 8: if (n >= 4) { size_t p = below(n - 3); uint32_t v = (uint32_t)interesting[below(sizeof interesting)] << (8 * below(4)); memcpy(b + p, &v, 4); } break;
        }
    }
    return n;
}

int main(int argc, char **argv)
{
    long runs = 0; double max_time = 0; uint64_t seed = (uint64_t)time(NULL); size_t max_len = 4096;
    size_t replayed = 0;
    signal(SIGSEGV, on_signal); signal(SIGABRT, on_signal); signal(SIGBUS, on_signal); signal(SIGFPE, on_signal);
    __sanitizer_set_death_callback(write_crash);
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "-runs=", 6)) runs = atol(argv[i] + 6);
        else if (!strncmp(argv[i], "-max_total_time=", 16)) max_time = atof(argv[i] + 16);
        else if (!strncmp(argv[i], "-seed=", 6)) seed = strtoull(argv[i] + 6, NULL, 10);
        else if (!strncmp(argv[i], "-max_len=", 9)) max_len = (size_t)atol(argv[i] + 9);
        else if (!strncmp(argv[i], "-artifact_prefix=", 17)) snprintf(artifact_prefix, sizeof artifact_prefix, "%s", argv[i] + 17);
        else if (argv[i][0] == '-') { fprintf(stderr, "unknown flag %s\n", argv[i]); return 2; }
    }
    for (int i = 1; i < argc; i++)   /* flags first (artifact_prefix), then the replays */
        if (argv[i][0] != '-') replay_path(argv[i], &replayed);
    fprintf(stderr, "==driver== replayed %zu inputs, corpus %zu\n", replayed, ncorpus);
    if (!ncorpus) { uint8_t z[8] = {0}; add_unit(z, sizeof z); }
    rs[0] = seed ^ 0x9E3779B97F4A7C15ULL; rs[1] = seed * 0xBF58476D1CE4E5B9ULL + 1;
    uint8_t *buf = malloc(max_len);
    if (!buf) abort();
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long done = 0; size_t added = 0;
    while ((runs && done < runs) || (max_time > 0 && !runs)) {
        if (max_time > 0 && (done & 63) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((double)(t.tv_sec - t0.tv_sec) + 1e-9 * (double)(t.tv_nsec - t0.tv_nsec) > max_time) break;
        }
        const unit_t *u = &corpus[below(ncorpus)];
        size_t n = u->n < max_len ? u->n : max_len;
        memcpy(buf, u->d, n);
        n = mutate(buf, n, max_len);
        if (run_one(buf, n) && ncorpus < 20000) { add_unit(buf, n); added++; }
        done++;
    }
    clock_gettime(CLOCK_MONOTONIC, &t);
    double secs = (double)(t.tv_sec - t0.tv_sec) + 1e-9 * (double)(t.tv_nsec - t0.tv_nsec);
    size_t edges = 0;
    for (size_t i = 0; i < sizeof cov_map; i++) edges += (size_t)__builtin_popcount(cov_map[i]);
    fprintf(stderr, "==driver== done: %ld runs in %.1f s (%.0f/s), %zu inputs added, %zu edges, seed %llu, 0 crashes\n",
            done, secs, secs > 0 ? (double)done / secs : 0.0, added, edges, (unsigned long long)seed);
    printf("runs=%ld seconds=%.1f edges=%zu corpus=%zu\n", done, secs, edges, ncorpus);
    free(buf);
    return 0;
}
