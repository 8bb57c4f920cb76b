#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of what parses outside input:
#   image_decode  - image bytes (API uploads, files given to `enroll`)
#   config_parse  - a config file's text (embedded default + file + validation)
# Each target runs for SECONDS (default 120); the corpus grows in target/fuzz-corpus/
# and any crash, timeout or out-of-memory input lands in fuzz/artifacts/<target>/ —
# turn each into a regression test, fix it, delete the artifact.
#
# Stable toolchain with `--sanitizer none` (the one toolchain a new machine has; the
# code under test is safe Rust, so AddressSanitizer adds little): panics, hangs
# (-timeout) and runaway allocations (-rss_limit_mb) are what it finds.
#
# Usage: scripts/fuzz.sh [SECONDS]   (make fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-120}
tools=$PWD/.cache/cargo-tools
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
    echo "installing cargo-fuzz into $tools"
    cargo install --quiet --locked --root "$tools" cargo-fuzz
fi
export PATH=$tools/bin:$PATH
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"

# seeds: the repository's own inputs, plus the downloaded face photos when set up
corpus=target/fuzz-corpus
mkdir -p "$corpus/image_decode" "$corpus/config_parse"
cp -n fuzz/seeds/config_parse/* "$corpus/config_parse/" 2>/dev/null || true
for f in .cache/fixtures/*.png .cache/fixtures/*.jpg; do
    [ -f "$f" ] && [ "$(stat -c %s "$f")" -lt 300000 ] && cp -n "$f" "$corpus/image_decode/"
done
true

status=0
for target in image_decode config_parse; do
    echo "== $target: $seconds s"
    mkdir -p "fuzz/artifacts/$target"
    # the fuzz crate's lock starts from the service's, so both build the same versions
    set +e
    cargo fuzz run --sanitizer none "$target" "$corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$target/" > "target/fuzz-$target.log" 2>&1
    rc=$?
    set -e
    grep -E '^(#[0-9]+.*DONE|Done [0-9]+ runs|stat::number_of_executed_units|stat::new_units_added|SUMMARY|.*panicked)' \
        "target/fuzz-$target.log" || true
    if ! grep -q '^Done [0-9]* runs' "target/fuzz-$target.log" && \
        ! ls "fuzz/artifacts/$target/"* >/dev/null 2>&1; then
        echo "$target: did not run (exit $rc); the end of target/fuzz-$target.log:"
        tail -15 "target/fuzz-$target.log"
        status=1
    elif ls "fuzz/artifacts/$target/"* >/dev/null 2>&1; then
        echo "$target: FINDINGS in fuzz/artifacts/$target/ (log: target/fuzz-$target.log)"
        status=1
    else
        echo "$target: no crash, timeout or OOM; corpus $(ls "$corpus/$target" | wc -l) inputs"
    fi
done
exit $status
