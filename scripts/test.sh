#!/usr/bin/env bash
# The one test command: deps, release build + unit tests, sanitizer build +
# unit tests, integration/end-to-end tests, then a summary line.
#
# Usage: scripts/test.sh [--fast] [--no-deps]
#   --fast     skip the ASan/UBSan build (integration then uses build/)
#   --no-deps  skip scripts/deps.sh
# Environment: M2M_INTEGRATION_TIMEOUT (seconds, default 1800).
# Exits non-zero on the first failing step.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT="$M2M_ROOT"
fast=0
deps=1
while (($#)); do
    case "$1" in
    --fast) fast=1 ;;
    --no-deps) deps=0 ;;
    -h | --help)
        m2m_usage "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *) m2m_die "unknown option: $1 (see --help)" ;;
    esac
    shift
done

logdir="$(mktemp -d)"
pgdir="$logdir/pg"
cleanup() {
    [[ -f "$pgdir/port" ]] && "$ROOT/scripts/pg.sh" stop "$pgdir" >/dev/null 2>&1 || true
    rm -rf -- "$logdir"
}
trap cleanup EXIT
passed=0
failed=0
skipped=0
steps=()
started=$SECONDS

summary() {
    echo
    echo "steps: ${steps[*]} ($((SECONDS - started)) s)"
    echo "summary: $passed passed, $failed failed, $skipped skipped"
}

fail() {
    steps+=("$1=FAILED")
    summary
    m2m_die "step '$1' failed"
}

# Adds the counts of a ctest log ("83% tests passed, 2 tests failed out of 12").
count_ctest() {
    local line total f
    line="$(grep -Eo '[0-9]+ tests? failed out of [0-9]+' "$1" | tail -n 1 || true)"
    [[ -n "$line" ]] || return 0
    f="${line%% *}"
    total="${line##* }"
    passed=$((passed + total - f))
    failed=$((failed + f))
}

# Adds the counts of a runner's closing line ("12 passed, 1 failed, 2 skipped").
count_runner() {
    local line n
    line="$(grep -E '[0-9]+ passed' "$1" | tail -n 1 || true)"
    [[ -n "$line" ]] || return 1
    n="$(grep -Eo '[0-9]+ passed' <<<"$line" | head -n 1)"
    passed=$((passed + ${n%% *}))
    if n="$(grep -Eo '[0-9]+ failed' <<<"$line" | head -n 1)"; then failed=$((failed + ${n%% *})); fi
    if n="$(grep -Eo '[0-9]+ skipped' <<<"$line" | head -n 1)"; then skipped=$((skipped + ${n%% *})); fi
    return 0
}

# build_and_test NAME BUILDDIR CMAKE_ARGS...
build_and_test() {
    local name="$1" dir="$2"
    shift 2
    m2m_header "$name: configure + build ($dir)"
    cmake -S "$ROOT" -B "$dir" "$@" || fail "$name-configure"
    cmake --build "$dir" -j2 || fail "$name-build"
    m2m_header "$name: unit tests (ctest)"
    local log="$logdir/ctest-$name.log" rc=0
    ctest --test-dir "$dir" --output-on-failure --no-tests=error --timeout 300 2>&1 |
        tee "$log" || rc=$?
    count_ctest "$log"
    ((rc == 0)) || fail "$name-ctest"
    steps+=("$name=ok")
}

# a. dependencies
if ((deps)); then
    m2m_header "dependencies (scripts/deps.sh)"
    "$ROOT/scripts/deps.sh" || fail deps
    steps+=(deps=ok)
else
    m2m_header "dependencies: skipped (--no-deps)"
    steps+=(deps=skipped)
fi

# One throwaway PostgreSQL cluster for the whole run: the unit tests of the
# store (test_db, test_auth_clients) and the integration tests use it.
m2m_header "test database (scripts/pg.sh, throwaway cluster)"
pgport="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$ROOT/scripts/pg.sh" init "$pgdir" "$pgport" || fail test-database
"$ROOT/scripts/pg.sh" start "$pgdir" || fail test-database
M2M_TEST_DATABASE_URL="$("$ROOT/scripts/pg.sh" bootstrap "$pgdir")" || fail test-database
export M2M_TEST_DATABASE_URL
export M2M_TEST_PG_DIR="$pgdir"
steps+=(test-database=ok)

# b. release build and unit tests
build_and_test release "$ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo

# c. sanitizer build and unit tests
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
if ((fast)); then
    m2m_header "sanitizers: skipped (--fast)"
    steps+=(sanitizers=skipped)
    itbuild="$ROOT/build"
else
    build_and_test sanitizers "$ROOT/build-asan" -DCMAKE_BUILD_TYPE=Debug -DM2M_SANITIZE=ON
    itbuild="$ROOT/build-asan"
fi

# d. integration and end-to-end tests
runner="$ROOT/tests/integration/run.py"
if [[ -f "$runner" ]]; then
    m2m_header "integration + end-to-end: python3 tests/integration/run.py --build $itbuild"
    log="$logdir/integration.log"
    rc=0
    timeout -k 30 "${M2M_INTEGRATION_TIMEOUT:-1800}" \
        python3 "$runner" --build "$itbuild" 2>&1 | tee "$log" || rc=$?
    count_runner "$log" || m2m_info "integration: no 'N passed' line in its output; judged by exit status ($rc)"
    ((rc != 124)) || m2m_warn "integration: timed out after ${M2M_INTEGRATION_TIMEOUT:-1800} s"
    ((rc == 0)) || fail integration
    steps+=(integration=ok)
else
    m2m_header "integration + end-to-end: SKIPPED, tests/integration/run.py does not exist yet"
    steps+=(integration=absent)
fi

# e. summary (the counts line comes last)
echo
echo "all steps passed"
summary
