#!/usr/bin/env bash
# The Python packages scripts/bench_gpu_packing.py needs on a GPU machine whose python3 already has
# torch, torchvision, opencv, pandas, pyarrow and the like, but not ray, ultralytics, submitit or
# polars: the versions installed in .venv, as wheels for that machine's Python, unpacked, trimmed
# (ray's Java jars and source maps removed, debug symbols stripped) and packed as one xz archive
# small enough to travel (~55 MiB instead of ~136 MB of wheels):
#
#     bash scripts/gpu_packing_bundle.sh [PYTHON_VERSION]      # default 3.12
#     -> .test-shared/gpu-bundle/site-3.12.tar.xz
#
# On the GPU machine, from the repository root:
#     mkdir -p /tmp/site && tar -xJf .test-shared/gpu-bundle/site-3.12.tar.xz -C /tmp/site
#     PYTHONPATH=/tmp/site python3 scripts/bench_gpu_packing.py --out OUT/gpu_packing.json
# NO_ARCHIVE=1 leaves the unpacked folder only (.test-shared/gpu-bundle/site-VERSION).
set -euo pipefail

PYV=${1:-3.12}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
DIR=${HPCTUNE_TEST_SHARED:-$REPO/.test-shared}/gpu-bundle
NAMES=(ray ultralytics ultralytics-thop polars polars-runtime-32 submitit tensorboardX jsonschema
       jsonschema-specifications referencing rpds-py)

mapfile -t PINS < <("$PY" - "${NAMES[@]}" <<'EOF'
import importlib.metadata
import sys

for name in sys.argv[1:]:
    print(f"{name}=={importlib.metadata.version(name)}")
EOF
)
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done
TARGET=(--only-binary=:all: --python-version "$PYV" --implementation cp "${PLATFORMS[@]}")

mkdir -p "$DIR/whl-$PYV"
"$PY" -m pip download -q --no-deps "${TARGET[@]}" -d "$DIR/whl-$PYV" "${PINS[@]}"
SITE=$DIR/site-$PYV
rm -rf "$SITE"
"$PY" -m pip install -q --no-index --no-deps --no-compile "${TARGET[@]}" --target "$SITE" \
    $(for pin in "${PINS[@]}"; do
          name=${pin%%==*}; version=${pin##*==}
          ls "$DIR/whl-$PYV/"* | grep -i "/${name//-/[-_]}-${version}-" | head -1
      done)

rm -rf "$SITE/ray/jars"                 # the Java worker (31 MB): Python trials never use it
find "$SITE" -name '*.js.map' -delete   # the dashboard's source maps
if command -v strip >/dev/null; then
    find "$SITE" -type f \( -name '*.so' -o -name '*.so.*' -o -path '*/ray/core/src/*' \) -print0 |
        xargs -0 -r -n 20 strip --strip-unneeded 2>/dev/null || true  # a non-ELF file is left as it is
fi
echo "unpacked: $(du -sh "$SITE" | cut -f1) in $SITE"
[ -n "${NO_ARCHIVE:-}" ] && exit 0

ARCHIVE=$DIR/site-$PYV.tar.xz
tar -C "$SITE" -cf - . | xz -6 -T0 >"$ARCHIVE.tmp"
mv "$ARCHIVE.tmp" "$ARCHIVE"
SIZE=$(stat -c %s "$ARCHIVE")
echo "archive: $ARCHIVE ($((SIZE / 1048576)) MiB)"
if [ "$SIZE" -gt $((60 * 1048576)) ]; then
    echo "warning: over 60 MiB: with the working tree it may not fit a 64 MiB transfer" >&2
fi
