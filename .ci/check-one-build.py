#!/usr/bin/env python3
"""Check that the wheel and the test suite can share one release build.

maturin compiles only py-pgqrs and its dependencies; `make test` compiles the
whole workspace, dev-dependencies included. Cargo resolves features separately
for each, and any crate whose feature set differs between the two is compiled
twice -- together with everything that depends on it (a proc-macro helper such
as syn drags in serde, tokio, sqlx, ...).

This script compares the two resolved graphs with `cargo tree` and lists the
crates whose features differ. Exit status 1 when there are any.

    python3 .ci/check-one-build.py      # or: make check-one-build
"""

from __future__ import annotations

import re
import subprocess
import sys

# Keep in step with CARGO_FLAGS in the Makefile.
WHEEL = ["-p", "py-pgqrs", "-e", "normal,build"]
TESTS = [
    "--workspace",
    "--no-default-features",
    "--features",
    "pgqrs/full",
    "-e",
    "normal,build,dev",
]
LINE = re.compile(r"^(?P<pkg>\S+ v\S+)(?: \([^)]*\))?(?: \(\*\))? \[(?P<features>[^\]]*)\]$")


def resolve(args: list[str]) -> dict[str, set[str]]:
    out = subprocess.run(
        ["cargo", "tree", *args, "--prefix", "none", "-f", "{p} [{f}]"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    graph: dict[str, set[str]] = {}
    for line in out.splitlines():
        match = LINE.match(line.strip())
        if match:
            features = {f for f in match["features"].split(",") if f}
            graph.setdefault(match["pkg"], set()).update(features)
    return graph


def main() -> int:
    wheel, tests = resolve(WHEEL), resolve(TESTS)
    differing = sorted(p for p in wheel.keys() & tests.keys() if wheel[p] != tests[p])
    for pkg in differing:
        only_tests = ", ".join(sorted(tests[pkg] - wheel[pkg])) or "-"
        only_wheel = ", ".join(sorted(wheel[pkg] - tests[pkg])) or "-"
        print(f"{pkg}: only in tests: {only_tests}; only in wheel: {only_wheel}")
    if differing:
        print(f"{len(differing)} crate(s) differ: they and their dependents build twice")
        return 1
    print(f"one build: {len(wheel)} crates of the wheel resolve identically for the tests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
