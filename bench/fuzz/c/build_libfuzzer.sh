#!/bin/sh
# Build the fuzz harnesses as real libFuzzer binaries (clang -fsanitize=fuzzer) with ASan + UBSan.
# usage: bench/fuzz/c/build_libfuzzer.sh OUTDIR   (prints the built binaries)
# Needs clang with the libFuzzer runtime (Debian/Ubuntu: clang-14 libclang-rt-14-dev); CLANG
# overrides the compiler. build.sh is the gcc fallback (its own driver) where clang is absent.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${1:-"$here/build-libfuzzer"}
mkdir -p "$out"
CLANG=${CLANG:-$(command -v clang-14 || command -v clang)}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CFLAGS="-O1 -g -std=c99 -Wall -Wextra -D_POSIX_C_SOURCE=200809L -DQPP_VERSION=\"fuzz\" -I$root/postproc_c/include"
objs=""
# the parts the harnesses reach (Toeplitz/GF(2)[x]/hash code takes no peer bytes);
# -fsanitize=fuzzer-no-link instruments them (edges, comparisons) without a second main
for src in "$root"/postproc_c/src/common.c "$root"/postproc_c/src/cascade.c \
           "$root"/postproc_c/src/ldpc_*.c "$root"/postproc_c/src/sift.c "$root"/postproc_c/src/slot.c; do
    o="$out/$(basename "$src" .c).o"
    $CLANG $CFLAGS $SAN -fsanitize=fuzzer-no-link -c "$src" -o "$o"
    objs="$objs $o"
done
for h in "$here"/fuzz_*.c; do
    name=$(basename "$h" .c)
    $CLANG $CFLAGS $SAN -fsanitize=fuzzer -o "$out/$name" "$h" $objs -lm
    echo "$out/$name"
done
