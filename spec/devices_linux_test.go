package spec

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/runclet/runclet/internal/errdefs"
)

func TestDeviceFromHost(t *testing.T) {
	d, err := DeviceFromHost("/dev/null", "/dev/mynull", "rw")
	if err != nil {
		t.Skipf("no /dev/null here: %v", err)
	}
	want := Device{HostPath: "/dev/null", ContainerPath: "/dev/mynull", Permissions: "rw", Type: "c", Major: 1, Minor: 3, FileMode: d.FileMode, UID: d.UID, GID: d.GID}
	if d != want {
		t.Errorf("device = %+v, want %+v", d, want)
	}

	if _, err := DeviceFromHost(filepath.Join(t.TempDir(), "none"), "", ""); !errdefs.IsNotFound(err) {
		t.Errorf("missing device: %v, want not found", err)
	}
	_, err = DeviceFromHost(t.TempDir(), "", "")
	wantInvalid(t, err)
}

func TestHostDevices(t *testing.T) {
	list, err := HostDevices("/dev")
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(list, func(d Device) bool { return d.HostPath == "/dev/null" })
	if i < 0 {
		t.Skip("no /dev/null here")
	}
	if list[i].Type != "c" || list[i].Major != 1 || list[i].Minor != 3 {
		t.Errorf("/dev/null = %+v", list[i])
	}
	for _, d := range list {
		if filepath.Dir(d.HostPath) == "/dev/pts" || d.HostPath == "/dev/console" {
			t.Errorf("listed %s", d.HostPath)
		}
	}
	// Every listed device must be accepted by Generate.
	if _, err := Generate(busyboxImage(), nil, App{Name: "a", Privileged: true, HostDevices: list}, testPod(), FlavorRunc); err != nil {
		t.Errorf("Generate with host devices: %v", err)
	}
	empty, err := HostDevices(t.TempDir())
	if err != nil || len(empty) != 0 {
		t.Errorf("empty dir: %v, %v", empty, err)
	}
}
