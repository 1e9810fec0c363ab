#!/usr/bin/env python3
"""Integration and end-to-end tests of auth-service and crypto-server.

    python3 tests/integration/run.py [--build DIR] [-k PATTERN] [--keep]

Starts its own PostgreSQL cluster (scripts/pg.sh; or uses the running one in
$M2M_TEST_PG_DIR), auth-service and crypto-server on free ports, nginx in
front of them (scripts/nginx-conf.sh), runs the test cases in a fixed order, stops
everything, and ends with one line "N passed, N failed" (", N skipped" only if
any). Exit status 1 on any failure.

DIR defaults to build-asan/ when it exists, else build/. With an ASan/UBSan
build, every daemon that is stopped must exit 0 with no sanitizer report.
--keep (or M2M_TEST_KEEP=1) keeps the temp dir with the logs.
Python 3 standard library only; Node 20 runs the verifiers in tests/e2e.
"""

import argparse
import atexit
import os
import signal
import sys
import time
import traceback
import unittest
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import cases  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    default_build = harness.ROOT / "build-asan"
    if not default_build.is_dir():
        default_build = harness.ROOT / "build"
    ap.add_argument("--build", default=str(default_build), help="CMake build directory")
    ap.add_argument("-k", dest="patterns", action="append", default=[],
                    help="only tests whose id contains this (may repeat)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = ap.parse_args()
    if args.keep:
        os.environ["M2M_TEST_KEEP"] = "1"

    started = time.monotonic()
    stack = None
    torn_down = False

    def teardown():
        nonlocal torn_down
        if stack is not None and not torn_down:
            torn_down = True
            stack.teardown()

    def on_signal(signum, frame):
        # SIGTERM (e.g. from timeout(1)) unwinds like Ctrl-C so finally runs.
        raise KeyboardInterrupt(f"signal {signum}")

    atexit.register(teardown)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    passed = failed = skipped = 0
    try:
        try:
            stack = harness.Stack(args.build)
            harness.STACK = stack
            stack.setup()
        except Exception:
            traceback.print_exc()
            print("stack setup failed: no test could run", file=sys.stderr)
            print("0 passed, 1 failed")
            return 1

        stack.full_run = not args.patterns
        suite = cases.suite(args.patterns)
        runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, buffer=False)
        result = runner.run(suite)
        # Count tests, not sub-tests: a test fails once however many of its
        # sub-tests failed.
        def test_id(t):
            return getattr(t, "test_case", t).id()
        bad = {test_id(t) for t, _ in result.failures + result.errors}
        bad |= {test_id(t) for t in result.unexpectedSuccesses}
        skipped_ids = {test_id(t) for t, _ in result.skipped} - bad
        failed = len(bad)
        skipped = len(skipped_ids)
        passed = result.testsRun - failed - skipped - len(result.expectedFailures)
    except KeyboardInterrupt as e:
        print(f"\ninterrupted ({e}); stopping everything", file=sys.stderr)
        failed += 1
    finally:
        teardown()

    elapsed = time.monotonic() - started
    print(f"duration: {elapsed:.1f} s", file=sys.stderr)
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(line, flush=True)
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
