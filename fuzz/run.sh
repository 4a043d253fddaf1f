#!/usr/bin/env bash
# Time-bounded atheris (libFuzzer) run over every decoder target (RELIABILITY.md §2).
#
#   bash fuzz/run.sh                      # every fuzz/fuzz_*.py for 20 s each
#   FUZZ_SECONDS=300 bash fuzz/run.sh     # longer
#   bash fuzz/run.sh frames sealed_unseal # only these targets
#
# Corpora and crash artifacts go to $FUZZ_WORK (default /tmp/xchat-fuzz). Exit status is
# non-zero if any target found a crash (an exception that is not an XChatError) or could
# not run.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
SECS="${FUZZ_SECONDS:-20}"
WORK="${FUZZ_WORK:-/tmp/xchat-fuzz}"

if ! "$PY" -c "import atheris" 2>/dev/null; then
    echo "fuzz/run.sh: atheris is not importable by $PY." >&2
    echo "  Install it with: $PY -m pip install atheris" >&2
    echo "  (it ships manylinux wheels for CPython 3.8-3.12 on x86_64; elsewhere it needs" >&2
    echo "   clang with libFuzzer to build from source)." >&2
    echo "  The Hypothesis fuzz tests (tests/reliability/test_fuzz_decoders.py) still run." >&2
    exit 1
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for f in fuzz/fuzz_*.py; do
        n="$(basename "$f" .py)"
        targets+=("${n#fuzz_}")
    done
fi

mkdir -p "$WORK/artifacts"
failed=()
for name in "${targets[@]}"; do
    script="fuzz/fuzz_${name}.py"
    if [ ! -f "$script" ]; then
        echo "no such target: $name" >&2
        failed+=("$name")
        continue
    fi
    corpus="$WORK/corpus/$name"
    mkdir -p "$corpus"
    log="$WORK/$name.log"
    printf '%-28s ' "$name"
    PYTHONPATH="src:fuzz${PYTHONPATH:+:$PYTHONPATH}" "$PY" "$script" "$corpus" \
        -max_total_time="$SECS" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$WORK/artifacts/$name-" >"$log" 2>&1
    rc=$?
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)"
    if [ "$rc" -eq 0 ]; then
        echo "ok   ${runs:-?} execs"
    else
        echo "FAIL (exit $rc) ${runs:-?} execs; see $log"
        grep -m3 -E 'Uncaught Python exception|Error|Exception' "$log" | sed 's/^/    /'
        failed+=("$name")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]} (artifacts in $WORK/artifacts)"
    exit 1
fi
echo "fuzz: ${#targets[@]} target(s) ran ${SECS}s each without a crash"
