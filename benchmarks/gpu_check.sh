#!/usr/bin/env bash
# One command for a CUDA machine: the cuda-marked tests, then the GPU benchmarks
# (benchmarks/gpu_check.py), all in one JSON: benchmarks/results/gpu_check.json
# (machine, versions, test counts, every figure).
#
#   bash benchmarks/gpu_check.sh             # on a CUDA machine (exit 1 if a test or figure failed)
#   bash benchmarks/gpu_check.sh --dry-run   # on a CPU: the same steps at toy sizes (< 2 min; CI runs it)
#   PYTHON=/path/to/python OUT=file.json bash benchmarks/gpu_check.sh ...
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
OUT="${OUT:-benchmarks/results/gpu_check.json}"
DRY=""
case "${1:-}" in
  --dry-run) DRY="--dry-run" ;;
  "") ;;
  *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac
mkdir -p "$(dirname "$OUT")"
TESTS_JSON="$(mktemp)"
trap 'rm -f "$TESTS_JSON" "$TESTS_JSON.xml"' EXIT

if [ -n "$DRY" ]; then
  # CPU: the cuda-marked tests are collected (proves they import) but skip without a device
  TEST_ARGS=(-m cuda --collect-only -q)
else
  TEST_ARGS=(-m cuda -q -p no:cacheprovider)
fi
echo "==> cuda-marked tests: $PY -m pytest ${TEST_ARGS[*]}"
# only the files that hold cuda-marked tests (collecting the whole suite costs minutes)
mapfile -t FILES < <(grep -rl "pytest.mark.cuda" tests --include="test_*.py" | sort)
"$PY" -m pytest "${TEST_ARGS[@]}" --junitxml="$TESTS_JSON.xml" "${FILES[@]}"
TEST_RC=$?
"$PY" - "$TESTS_JSON.xml" "$TEST_RC" "$TESTS_JSON" "$DRY" <<'PY'
import json, sys, xml.etree.ElementTree as ET
xml, rc, out, dry = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
doc = {"exit_code": rc, "collect_only": bool(dry)}
try:
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    doc.update({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")})
except Exception as exc:  # collect-only writes no cases
    doc["note"] = f"no junit summary ({type(exc).__name__})"
json.dump(doc, open(out, "w"))
PY

echo "==> GPU benchmarks: $PY benchmarks/gpu_check.py $DRY"
"$PY" benchmarks/gpu_check.py $DRY --tests "$TESTS_JSON" --out "$OUT"
BENCH_RC=$?
# pytest exit 5 = no tests collected/selected; anything else non-zero is a failure
if [ "$TEST_RC" -ne 0 ] && [ "$TEST_RC" -ne 5 ]; then exit 1; fi
exit "$BENCH_RC"
