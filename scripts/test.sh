#!/usr/bin/env bash
# Everything CI checks: lint, types, security scan, dependency audit, tests with coverage.
# Extra arguments go to pytest (e.g. -m "not slow" to skip the slow end-to-end tests locally).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-system.sh
bash scripts/bootstrap.sh dev
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"
ruff check src tests bench
echo "== mypy --strict src"
mypy src
echo "== bandit src"
bandit -q -c pyproject.toml -r src
echo "== pip-audit"
# pip-audit reads vulnerabilities from PyPI's per-release JSON API; some mirrors and proxies
# serve packages but not that API, and then nothing can be audited.
if timeout 20 python -c "import urllib.request; urllib.request.urlopen('https://pypi.org/pypi/click/8.1.7/json', timeout=10)" >/dev/null 2>&1; then
    pip-audit --progress-spinner off --skip-editable || { echo "pip-audit found vulnerable dependencies (above)"; exit 1; }
else
    echo "pip-audit skipped: PyPI's vulnerability data (the per-release JSON API) is not reachable from here"
fi
echo "== pytest"
set +e
python -m pytest -p no:cacheprovider --cov=tinytelem --cov-report=term:skip-covered "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$rc"
