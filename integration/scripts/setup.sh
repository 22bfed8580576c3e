#!/usr/bin/env bash
# Installs what building and testing runclet needs on Debian 12. Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# containerd: the peer that critest, e2e-node and podbench compare runclet
# with (each starts a private instance; the harness tests run one).
# skopeo, umoci, podman (and containerd's ctr): the tools the image
# archive interop tests (integration/interop_test.go) read and write with.
packages=(make gcc git busybox-static libseccomp-dev containernetworking-plugins iptables iproute2 ca-certificates containerd
	skopeo umoci podman)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
export PATH="$PATH:/usr/local/go/bin"
if ! command -v go >/dev/null; then
	echo "setup: Go 1.26 is needed on PATH (or in /usr/local/go)" >&2
	exit 1
fi
go mod download
