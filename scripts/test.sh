#!/usr/bin/env bash
# Runs every test of the workspace. The Python interop peers the tests drive (PyJWT, grpcio,
# py-spiffe) are installed with pip on first use, so this also works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import jwt, grpc, grpc_tools, spiffe, cryptography, h2' 2>/dev/null; then
    # PIP_BREAK_SYSTEM_PACKAGES: a distribution's own Python refuses user-level installs
    # otherwise (PEP 668); older pips ignore the variable.
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check \
        -r tests/python/requirements.txt
fi

cargo test --workspace --all-targets --no-fail-fast "$@"

# Every fuzz target briefly (fuzz/README.md), where cargo-afl is installed (.ci/run installs it).
if cargo afl --version >/dev/null 2>&1; then
    ./fuzz/run.sh "${FUZZ_SECONDS:-15}"
else
    echo "fuzz: skipped (cargo-afl is not installed; see fuzz/README.md)"
fi
