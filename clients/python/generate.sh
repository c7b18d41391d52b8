#!/usr/bin/env bash
# Regenerates the Python gRPC code from proto/switchyard/v1/switchyard.proto with grpcio-tools
# (the version pinned in requirements.txt). Usage: generate.sh [OUT_DIR] (default: this folder).
# The files land in OUT_DIR/switchyard/v1/, importable as `switchyard.v1`.
# PYTHON picks the interpreter (default python3); it must have grpcio-tools installed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:-$here}"
python="${PYTHON:-python3}"
mkdir -p "$out/switchyard/v1"
"$python" -m grpc_tools.protoc \
  --proto_path="$repo/proto" \
  --python_out="$out" \
  --pyi_out="$out" \
  --grpc_python_out="$out" \
  "$repo/proto/switchyard/v1/switchyard.proto"
