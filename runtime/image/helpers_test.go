package image

import (
	"archive/tar"
	"bytes"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

type ocispecImage = ocispec.Image

type tarMember struct {
	name, body, link string
	dev              bool
}

func buildTar(t testing.TB, members []tarMember) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		h := &tar.Header{Name: m.name, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(m.body))}
		switch {
		case m.link != "":
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, m.link, 0
		case m.dev:
			h.Typeflag, h.Size = tar.TypeChar, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(m.body))
		}
	}
	tw.Close()
	return buf.Bytes()
}
