# runclet build and test entry points. `make help` lists them.
GO      ?= go
PREFIX  ?= /usr/local
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# Tests run as root and create real mounts, namespaces and bridges; two
# packages at a time matches the 2-core CI machine.
TESTFLAGS ?= -count=1 -timeout 30m -p 2

.PHONY: help build test test-unit lint fuzz install install-files uninstall tarball clean bench bench-images bench-pods critest e2e-node e2e-conformance cluster vmtest vmtest-ci vmtest-image

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

# nri_no_wasm: runclet hosts NRI plugins over its socket only, not as WASM
# modules (that support adds 4 MB).
build: ## build bin/runclet, bin/stage1-runc and bin/runclet-init (static, for run --init)
	$(GO) build -trimpath -tags nri_no_wasm -ldflags '$(LDFLAGS) -s -w' -o bin/runclet ./cmd/runclet
	CGO_ENABLED=1 $(GO) build -trimpath -tags seccomp -ldflags '$(LDFLAGS) -s -w' -o bin/stage1-runc ./cmd/stage1-runc
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS) -s -w' -o bin/runclet-init ./cmd/runclet-init

# gotest runs `go test -json`, prints failures and skips, and (with CI=true
# or STRICT=1) fails on a skip integration/scripts/skips-allowed.txt lacks.
test: lint ## run every test (as root nothing is skipped; in CI a skip not in skips-allowed.txt fails)
	$(GO) run ./integration/cmd/gotest -allow integration/scripts/skips-allowed.txt $(if $(STRICT),-strict) -- $(TESTFLAGS) ./...

test-unit: ## run the tests without lint; as a non-root user the root-only tests skip
	$(GO) test -count=1 ./...

# Each fuzz target for a bounded number of inputs (CI runs this after the
# tests): the CRI request validators, the stage1 protocol decoder, the
# layer unpacker and the user parser; about 15 s each here. Counts, not
# durations: a -fuzztime deadline that strikes while the engine minimizes
# an input is reported as a failure ("context deadline exceeded").
# -fuzzminimizetime bounds input shrinking, which otherwise takes a minute
# per new input.
FUZZ_TARGETS := cri:FuzzValidateSandboxConfig:30000x cri:FuzzValidateContainerConfig:30000x \
	runtime/image/unpack:FuzzApply:8000x stage1-runc/proto:FuzzReadRequest:500000x spec:FuzzParseUser:100000x
fuzz: ## run every fuzz target for a bounded number of inputs
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; rest=$${t#*:}; fn=$${rest%%:*}; n=$${rest#*:}; echo "fuzz $$fn ($$pkg, $$n)"; \
	  $(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $$n -fuzzminimizetime 50x ./$$pkg; \
	done

lint: ## gofmt and go vet
	@out=$$(gofmt -l cmd runtime spec tty cri integration stage1-runc 2>/dev/null); \
	  if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

bench: ## Go benchmarks of the image store (unpack and pull)
	$(GO) test -run '^$$' -bench . -benchtime 5x ./runtime/image/...

bench-images: build ## compare runclet's image pull and unpack with skopeo + umoci (root)
	$(GO) run ./integration/cmd/imagebench -runclet bin/runclet

bench-pods: build ## pod start latency and supervisor memory vs runc and containerd (root)
	$(GO) run ./integration/cmd/podbench -runclet bin/runclet

# Three passes: the whole suite; the NRI specs with runclet's NRI socket;
# the streaming specs over WebSocket instead of SPDY. Each fails on any
# result integration/cmd/critest/expected.txt does not list, and when fewer
# specs ran (passed or failed) than its -min-run.
critest: build ## cri-tools critest v1.37.0 against a private runclet daemon, all passes (root; CRITEST_FLAGS="-focus RE" for one)
ifeq ($(CRITEST_FLAGS),)
	$(GO) run ./integration/cmd/critest -runclet bin/runclet -min-run 115
	$(GO) run ./integration/cmd/critest -runclet bin/runclet -nri -focus NRI -min-run 13
	$(GO) run ./integration/cmd/critest -runclet bin/runclet -websocket -focus Streaming -min-run 5
else
	$(GO) run ./integration/cmd/critest -runclet bin/runclet $(CRITEST_FLAGS)
endif

# kubelet, kube-apiserver and kubectl v1.37.2 are built from the module
# proxy once (~12 min on an idle 2-core machine) and cached under ~/.cache/runclet-k8s.
e2e-node: build ## a real kubelet + kube-apiserver on a private runclet daemon: the node e2e scenarios (root; E2E_FLAGS="-run RE")
	$(GO) run ./integration/cmd/e2enode -runclet bin/runclet $(E2E_FLAGS)

# A local multi-node cluster of runclet nodes (integration/cmd/conformance;
# docs/conformance.md). Besides e2e-node's binaries it builds
# kube-controller-manager, kube-scheduler, kube-proxy, agnhost, ginkgo,
# e2e.test and CoreDNS once (cached under ~/.cache/runclet-k8s).
e2e-conformance: build ## upstream's [sig-node] Conformance e2e tests on a 2-node runclet cluster (root; CONFORMANCE_FLAGS="-focus RE -nodes N")
	$(GO) run ./integration/cmd/conformance -runclet bin/runclet $(CONFORMANCE_FLAGS)

cluster: build ## bring a 2-node runclet cluster up and keep it until Ctrl-C (root; CLUSTER_FLAGS="-nodes N")
	$(GO) run ./integration/cmd/conformance -runclet bin/runclet -up $(CLUSTER_FLAGS)

# Where `make install` puts things (DESTDIR is prepended to each). The
# binaries from BINSRC (bin/ after `make build`).
BINSRC      ?= bin
BINDIR      ?= $(PREFIX)/bin
MANDIR      ?= $(PREFIX)/share/man
UNITDIR     ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR  ?= /etc
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
UNITS       := runclet.service runclet-gc.service runclet-gc.timer
CONF        := $(DESTDIR)$(SYSCONFDIR)/runclet/runclet.toml

install: build install-files ## install binaries, systemd units, default config, man pages and completions (PREFIX, DESTDIR)

# The files of a node install, from already built binaries (BINSRC). The
# default config is written only when there is none: an existing one is
# the operator's.
install-files:
	install -D -m 0755 $(BINSRC)/runclet $(DESTDIR)$(BINDIR)/runclet
	install -D -m 0755 $(BINSRC)/stage1-runc $(DESTDIR)$(BINDIR)/stage1-runc
	install -D -m 0755 $(BINSRC)/runclet-init $(DESTDIR)$(BINDIR)/runclet-init
	install -d $(DESTDIR)$(UNITDIR)
	for u in $(UNITS); do \
	  sed 's|@BINDIR@|$(BINDIR)|g' cmd/runclet/dist/$$u > $(DESTDIR)$(UNITDIR)/$$u && chmod 0644 $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done
	if [ ! -e $(CONF) ]; then \
	  install -d $(dir $(CONF)) && $(BINSRC)/runclet config default > $(CONF) && chmod 0644 $(CONF); \
	fi
	install -d $(DESTDIR)$(MANDIR)/man1
	$(BINSRC)/runclet gen-man $(DESTDIR)$(MANDIR)/man1
	install -d $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	$(BINSRC)/runclet completion bash > $(DESTDIR)$(BASHCOMPDIR)/runclet
	$(BINSRC)/runclet completion zsh > $(DESTDIR)$(ZSHCOMPDIR)/_runclet
	$(BINSRC)/runclet completion fish > $(DESTDIR)$(FISHCOMPDIR)/runclet.fish

# Removes what install-files put in place; the config only when it is
# still the default (an edited one is kept, and said so).
uninstall: ## remove what make install installed (same PREFIX, DESTDIR)
	if [ -e $(CONF) ]; then \
	  if $(DESTDIR)$(BINDIR)/runclet config default 2>/dev/null | cmp -s - $(CONF); then rm -f $(CONF); \
	  else echo "keeping $(CONF): it is not the default configuration"; fi; \
	fi
	-rmdir $(dir $(CONF)) 2>/dev/null
	rm -f $(DESTDIR)$(BINDIR)/runclet $(DESTDIR)$(BINDIR)/stage1-runc $(DESTDIR)$(BINDIR)/runclet-init
	rm -f $(addprefix $(DESTDIR)$(UNITDIR)/,$(UNITS))
	rm -f $(DESTDIR)$(MANDIR)/man1/runclet.1 $(DESTDIR)$(MANDIR)/man1/runclet-*.1
	rm -f $(DESTDIR)$(BASHCOMPDIR)/runclet $(DESTDIR)$(ZSHCOMPDIR)/_runclet $(DESTDIR)$(FISHCOMPDIR)/runclet.fish

# A tarball of the node install (PREFIX=/usr/local, config under /etc):
# extract it at / on the node, then systemctl enable --now runclet.
tarball: build ## _output/runclet-VERSION-OS-ARCH.tar.gz: the make install tree, to extract at /
	rm -rf _output/root && $(MAKE) install-files DESTDIR=$(CURDIR)/_output/root
	tar -C _output/root --owner=0 --group=0 -czf _output/runclet-$(VERSION)-$$($(GO) env GOOS)-$$($(GO) env GOARCH).tar.gz .

# A Debian 12 guest with systemd as PID 1 on pure cgroup v2 (QEMU; KVM when a
# test boot works, else TCG), built once by debootstrap into
# ~/.cache/runclet-vm; the cgroup integration tests run in it once per cgroup
# driver. See docs/vmtest.md. Logs: _output/vmtest.
VMTEST_OUT ?= _output/vmtest
vmtest: ## cgroup v2 + systemd: the cgroup integration tests in a VM, both drivers (root; VMTEST_FLAGS="-run RE -drivers systemd")
	$(GO) run ./integration/cmd/vmtest -out $(VMTEST_OUT) $(VMTEST_FLAGS)

# The subset proposed for CI: the v2 limit/layout/OOM/stats/exec tests under
# both drivers (see docs/vmtest.md for its times).
VMTEST_CI_RUN := ^(TestCgroupV2.*|TestMemoryLimitOOMKillRecorded|TestExecUserCgroupAndTimeout|TestCRIStatsUpdateAndEvents)$$
vmtest-ci: ## the CI subset of vmtest (root)
	$(GO) run ./integration/cmd/vmtest -out $(VMTEST_OUT) -run '$(VMTEST_CI_RUN)' $(VMTEST_FLAGS)

vmtest-image: ## build (or find) the vmtest guest image only (root)
	$(GO) run ./integration/cmd/vmtest -image-only

clean: ## remove build output
	rm -rf bin
