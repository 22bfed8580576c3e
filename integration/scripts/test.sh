#!/usr/bin/env bash
# Installs what the tests need and runs all of them. As root nothing is
# skipped; CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/../.."
./integration/scripts/setup.sh --test
export PATH="$PATH:/usr/local/go/bin"
make test
# Every fuzz target for a bounded number of inputs (make fuzz).
make fuzz
# cri-tools' conformance suite against runclet (three passes; fails on
# anything integration/cmd/critest/expected.txt does not list).
make critest
# A real kubelet and kube-apiserver on runclet: pods, probes, logs,
# exec/attach/port-forward through kubectl, restarts, OOM, runtime class.
make e2e-node
# cgroup v2 with systemd as PID 1, in a QEMU guest: the cgroup tests under
# both drivers (the first run builds the guest image, about 13 minutes).
make vmtest-ci
