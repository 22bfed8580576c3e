package image

import "testing"

func TestParseReferenceNormalizes(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":                            "docker.io/library/busybox:latest",
		"docker.io/library/busybox:1.36":     "docker.io/library/busybox:1.36",
		"index.docker.io/foo/bar":            "docker.io/foo/bar:latest",
		"127.0.0.1:5000/a/b:t":               "127.0.0.1:5000/a/b:t",
		"localhost/runclet/busybox":          "localhost/runclet/busybox:latest",
		"registry.k8s.io/pause:3.10":         "registry.k8s.io/pause:3.10",
		"quay.io/x/y@sha256:" + sixtyFourA:   "quay.io/x/y@sha256:" + sixtyFourA,
		"quay.io/x/y:t@sha256:" + sixtyFourA: "quay.io/x/y@sha256:" + sixtyFourA,
	} {
		r, err := ParseReference(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if r.String() != want {
			t.Errorf("%s: got %s, want %s", in, r, want)
		}
	}
	for _, bad := range []string{"", "UPPER/case", "a b", "x@sha256:short"} {
		if _, err := ParseReference(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

const sixtyFourA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
