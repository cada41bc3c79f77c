#!/usr/bin/env bash
# The property tests at length: every property of the parsers and
# normalisers Fanout owns (`tests/properties.rs` in config, http-cache,
# server and loadtest) with CASES generated cases each, in release mode. The default, 500 000 per property, is over ten million
# cases in all; CI runs proptest's default of 256 per property.
#
# A failure prints proptest's minimal failing input and saves its seed in
# the crate's tests/properties.proptest-regressions, which is committed:
# every later run tries it first. Turn it into a named unit test beside
# the code it found wrong, too.
#
# Usage: loadtest/bench/properties.sh    (env: CASES=500000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

CASES=${CASES:-500000}
total_properties=0
started=$SECONDS
printf '%-20s %10s %14s %8s\n' crate properties cases seconds
for crate in fanout-config fanout-http-cache fanout-server fanout-loadtest; do
  t0=$SECONDS
  if ! out=$(PROPTEST_CASES=$CASES cargo test --release --locked --quiet -p "$crate" --test properties 2>&1); then
    echo "$out"
    echo "properties of $crate FAILED (see the minimal failing input above)" >&2
    exit 1
  fi
  n=$(grep -oP 'test result: ok\. \K[0-9]+' <<<"$out" | head -1)
  total_properties=$((total_properties + n))
  printf '%-20s %10d %14d %8d\n' "$crate" "$n" $((n * CASES)) $((SECONDS - t0))
done
printf '%-20s %10d %14d %8d\n' total "$total_properties" $((total_properties * CASES)) $((SECONDS - started))
