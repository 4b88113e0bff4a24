#!/bin/sh
# Build the fuzz harnesses for AFL++ (afl-clang-fast, its libFuzzer-compatible driver) with ASan + UBSan.
# usage: bench/fuzz/c/build_afl.sh OUTDIR   (prints the built binaries)
# Needs AFL++ (Debian/Ubuntu: afl++ with clang); AFL_CC overrides the compiler wrapper.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${1:-"$here/build-afl"}
mkdir -p "$out"
AFL_CC=${AFL_CC:-afl-clang-fast}
export AFL_USE_ASAN=1 AFL_USE_UBSAN=1 AFL_QUIET=1
CFLAGS="-O1 -g -std=c99 -D_POSIX_C_SOURCE=200809L -DQPP_VERSION=\"fuzz\" -I$root/postproc_c/include"
srcs="$root/postproc_c/src/common.c $root/postproc_c/src/cascade.c $(ls "$root"/postproc_c/src/ldpc_*.c) $root/postproc_c/src/sift.c $root/postproc_c/src/slot.c"
for h in "$here"/fuzz_*.c; do
    name=$(basename "$h" .c)
    # -fsanitize=fuzzer with afl-clang-fast links AFL++'s driver (libAFLDriver) around the harness
    $AFL_CC $CFLAGS -fsanitize=fuzzer -o "$out/$name" "$h" $srcs -lm 2>"$out/$name.log" || { cat "$out/$name.log" >&2; exit 1; }
    echo "$out/$name"
done
