#!/usr/bin/env bash
# Make benchmarks/.venv: linger-sched (editable, with its test extras: psycopg, PyMySQL) plus the
# peers it is compared with (huey, procrastinate). The peers live only in this environment.
#
#     bash benchmarks/setup.sh                 # then: benchmarks/.venv/bin/python benchmarks/run_all.py
#     PYTHON=python3.12 bash benchmarks/setup.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$HERE/.venv/bin/python" ]; then
    "$PYTHON" -m venv "$HERE/.venv"
fi
"$HERE/.venv/bin/pip" install -q --upgrade pip
"$HERE/.venv/bin/pip" install -q -e "$ROOT[test]" "huey>=2.5" "procrastinate>=3" "psycopg[binary,pool]>=3.1.18" "pyinstrument>=4"
"$HERE/.venv/bin/python" - <<'PY'
import importlib.metadata as m
for name in ("linger-sched", "huey", "procrastinate", "psycopg", "PyMySQL", "SQLAlchemy"):
    print(f"{name:14} {m.version(name)}")
PY
