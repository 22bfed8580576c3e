#!/usr/bin/env bash
# runclet's main job with its embedded defaults, from nothing: install what
# is needed, build, make a busybox test image locally (no internet), import
# it into the image store, list it, and run a pod of it that says hello.
set -euo pipefail
cd "$(dirname "$0")/../.."
./integration/scripts/setup.sh
export PATH="$PATH:/usr/local/go/bin"
make build
image="$(mktemp -d)/busybox.tar"
go run ./integration/cmd/mkimage -o "$image" -name localhost/runclet/busybox:latest
./bin/runclet image import "$image"
./bin/runclet image ls
./bin/runclet run --rm localhost/runclet/busybox -- echo "hello from a runclet pod"
rm -rf "$(dirname "$image")"
