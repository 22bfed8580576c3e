package cri

import (
	"regexp"
	"runtime/debug"
	"strings"
)

// versionBase is the release line runclet's builds belong to; builds that
// carry no release version of their own report a pre-release of it.
const versionBase = "0.1.0"

// semverRe is a semantic version as kubelet parses it
// (k8s.io/apimachinery/pkg/util/version.ParseSemantic): an optional "v",
// three numbers, an optional pre-release and build metadata.
var semverRe = regexp.MustCompile(`^v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$`)

// notIdent are the characters a semver pre-release identifier cannot hold.
var notIdent = regexp.MustCompile(`[^0-9A-Za-z-]+`)

// runtimeVersion is the RuntimeVersion the Version RPC reports, derived
// from the build's version v (the -ldflags "-X main.version" of the
// Makefile, normally `git describe` output such as "43827c5-dirty").
// kubelet shows a runtime as RuntimeName://RuntimeVersion only when the
// version parses as a semantic or generic version and as "Unknown"
// otherwise, so a version that is not one becomes a pre-release of
// versionBase carrying it ("0.1.0-43827c5-dirty"); with no version at all
// the module version from the build info is used, else "0.1.0-dev". The
// result is never empty.
func runtimeVersion(v string) string {
	v = strings.TrimSpace(v)
	if v == "" || v == "dev" {
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	if semverRe.MatchString(v) {
		return v
	}
	pre := strings.Trim(notIdent.ReplaceAllString(v, "."), ".")
	if pre == "" {
		pre = "dev"
	}
	return versionBase + "-" + pre
}
