// Command mkimage writes one of runclet's test images (package
// integration/testimage) to a tarball that "runclet image import" reads. It
// needs no network: the images are built from the host's busybox-static.
//
//	go run ./integration/cmd/mkimage -o busybox.tar
//	go run ./integration/cmd/mkimage -o tools.tar -format oci -image tools -name localhost/runclet/tools:latest
//
// It prints nothing unless something fails.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/runclet/runclet/integration/testimage"
)

var images = map[string]func() (v1.Image, error){
	"busybox":    testimage.Busybox,
	"multilayer": testimage.MultiLayer,
	"whiteouts":  testimage.Whiteouts,
	"tools":      testimage.Tools,
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	names := make([]string, 0, len(images)+1)
	for n := range images {
		names = append(names, n)
	}
	names = append(names, "index")
	sort.Strings(names)

	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	out := fs.String("o", "", "output `file` (required)")
	format := fs.String("format", "docker", "archive format: docker (docker save) or oci (OCI image layout tar)")
	ref := fs.String("name", "localhost/runclet/busybox:latest", "image reference stored in the archive")
	image := fs.String("image", "busybox", "test image: "+strings.Join(names, ", ")+" (index only with -format oci)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // -h: the usage text is all that was asked for
		}
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *out == "" {
		return errors.New("-o FILE is required")
	}

	if *image == "index" {
		if *format != "oci" {
			return errors.New("-image index needs -format oci: a docker archive cannot hold a multi-platform index")
		}
		idx, err := testimage.Index()
		if err != nil {
			return err
		}
		return testimage.WriteOCIIndexArchive(*out, map[string]v1.ImageIndex{*ref: idx})
	}

	build, ok := images[*image]
	if !ok {
		return fmt.Errorf("unknown -image %q (want one of %s)", *image, strings.Join(names, ", "))
	}
	img, err := build()
	if err != nil {
		return err
	}
	switch *format {
	case "docker":
		return testimage.WriteDockerArchive(*out, map[string]v1.Image{*ref: img})
	case "oci":
		return testimage.WriteOCIArchive(*out, map[string]v1.Image{*ref: img})
	default:
		return fmt.Errorf("unknown -format %q (want docker or oci)", *format)
	}
}
