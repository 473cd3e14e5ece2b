#!/bin/sh
# Fuzz each target (all, or those named) for $FUZZ_SECONDS (default 180) with inputs
# up to 1 MiB, one after the other. New inputs go to a scratch corpus; merge the
# interesting ones into corpus/<target> with `cargo fuzz cmin` or `-merge=1`.
# The stable toolchain works with RUSTC_BOOTSTRAP=1.
set -e
cd "$(dirname "$0")"
secs=${FUZZ_SECONDS:-180}
targets=${*:-$(cargo fuzz list)}
for t in $targets; do
    mkdir -p "target/new-corpus/$t"
    RUSTC_BOOTSTRAP=1 cargo fuzz run -a "$t" "target/new-corpus/$t" "corpus/$t" -- \
        -max_len=1048576 -max_total_time="$secs" -timeout=30 -print_final_stats=1
done
