#!/bin/sh
# Build the fuzz harnesses with gcc + ASan/UBSan + trace-pc coverage and the standalone driver.
# usage: bench/fuzz/c/build.sh OUTDIR   (prints the built binaries)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${1:-"$here/build"}
mkdir -p "$out"
CC=${CC:-gcc}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CFLAGS="-O1 -g -std=c99 -Wall -Wextra -D_POSIX_C_SOURCE=200809L -DQPP_VERSION=\"fuzz\" -I$root/postproc_c/include"
objs=""
pids=""
# the parts the harnesses reach (Toeplitz/GF(2)[x]/hash code takes no peer bytes)
for src in "$root"/postproc_c/src/common.c "$root"/postproc_c/src/cascade.c \
           "$root"/postproc_c/src/ldpc_*.c "$root"/postproc_c/src/sift.c "$root"/postproc_c/src/slot.c; do
    o="$out/$(basename "$src" .c).o"
    $CC $CFLAGS $SAN -fsanitize-coverage=trace-pc -c "$src" -o "$o" &
    pids="$pids $!"
    objs="$objs $o"
done
$CC -O1 -g -std=c99 -Wall -Wextra $SAN -c "$here/driver.c" -o "$out/driver.o" &
pids="$pids $!"
for h in "$here"/fuzz_*.c; do
    $CC $CFLAGS $SAN -fsanitize-coverage=trace-pc -c "$h" -o "$out/$(basename "$h" .c).o" &
    pids="$pids $!"
done
for pid in $pids; do wait "$pid"; done   # compile in parallel; any failure stops here
for h in "$here"/fuzz_*.c; do
    name=$(basename "$h" .c)
    $CC $SAN -o "$out/$name" "$out/$name.o" "$out/driver.o" $objs -lm
    echo "$out/$name"
done
