#!/usr/bin/env bash
# Installs what building and running runclet needs on Debian 12, and with
# --test what its tests need too. Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(make gcc git busybox-static libseccomp-dev containernetworking-plugins iptables iproute2 ca-certificates)
if [ "${1:-}" = --test ]; then
	# containerd: the peer that critest, e2e-node and podbench compare
	# runclet with (each starts a private instance; the harness tests run
	# one). skopeo, umoci, podman (and containerd's ctr): the tools the
	# image archive interop tests (integration/interop_test.go) read and
	# write with. apparmor: its parser checks the generated default
	# profile. podman's package drops a CNI config into /etc/cni/net.d,
	# which is why the demo (runclet's defaults) does not install it.
	packages+=(containerd skopeo umoci podman apparmor)
	# bash-completion: the CLI completion test loads runclet's script;
	# systemd: systemd-analyze verifies the installed unit files. QEMU and
	# debootstrap: the cgroup v2 + systemd guest of make vmtest.
	packages+=(bash-completion systemd qemu-system-x86 debootstrap e2fsprogs)
fi
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
