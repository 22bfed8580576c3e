package spec

import (
	"slices"
	"testing"
)

func TestComputeCaps(t *testing.T) {
	def := DefaultCapabilities()
	without := func(list []string, drop ...string) []string {
		return slices.DeleteFunc(slices.Clone(list), func(c string) bool { return slices.Contains(drop, c) })
	}
	with := func(list []string, add ...string) []string {
		return sortCaps(append(slices.Clone(list), add...))
	}
	tests := []struct {
		name string
		app  App
		want []string
	}{
		{"defaults", App{}, def},
		{"add short name", App{CapAdd: []string{"NET_ADMIN"}}, with(def, "CAP_NET_ADMIN")},
		{"add full lower-case name", App{CapAdd: []string{"cap_sys_time"}}, with(def, "CAP_SYS_TIME")},
		{"add existing is a no-op", App{CapAdd: []string{"CHOWN"}}, def},
		{"drop", App{CapDrop: []string{"CAP_NET_RAW", "MKNOD"}}, without(def, "CAP_NET_RAW", "CAP_MKNOD")},
		{"add all", App{CapAdd: []string{"ALL"}}, AllCapabilities()},
		{"add all drop one", App{CapAdd: []string{"ALL"}, CapDrop: []string{"SYS_ADMIN"}}, without(AllCapabilities(), "CAP_SYS_ADMIN")},
		{"drop all", App{CapDrop: []string{"ALL"}}, nil},
		{"drop all add one", App{CapDrop: []string{"all"}, CapAdd: []string{"NET_BIND_SERVICE"}}, []string{"CAP_NET_BIND_SERVICE"}},
		{"add and drop same drops", App{CapAdd: []string{"NET_ADMIN"}, CapDrop: []string{"NET_ADMIN"}}, def},
		{"add all drop all", App{CapAdd: []string{"ALL"}, CapDrop: []string{"ALL"}}, nil},
		{"privileged ignores drops", App{Privileged: true, CapDrop: []string{"ALL"}}, AllCapabilities()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := computeCaps(tc.app)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) == 0 && len(tc.want) == 0 {
				return
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("caps = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestUnknownCapability(t *testing.T) {
	for _, app := range []App{{CapAdd: []string{"CAP_FLY"}}, {CapDrop: []string{"SUPERPOWER"}}} {
		_, err := computeCaps(app)
		wantInvalid(t, err)
	}
}

func TestCapabilitySetsInSpec(t *testing.T) {
	s := mustGenerate(t, busyboxImage(), nil, App{Name: "a", CapAdd: []string{"SYS_PTRACE"}}, testPod(), FlavorRunc)
	c := s.Process.Capabilities
	if !slices.Contains(c.Bounding, "CAP_SYS_PTRACE") || !slices.Equal(c.Bounding, c.Effective) || !slices.Equal(c.Bounding, c.Permitted) {
		t.Errorf("capabilities = %+v", c)
	}
	if len(c.Inheritable) != 0 || len(c.Ambient) != 0 {
		t.Errorf("inheritable/ambient = %v/%v, want empty", c.Inheritable, c.Ambient)
	}

	// Fly keeps the requested capabilities: it is not a privilege switch.
	fly := mustGenerate(t, busyboxImage(), nil, App{Name: "a"}, Pod{ID: "p"}, FlavorFly)
	if !slices.Equal(fly.Process.Capabilities.Bounding, DefaultCapabilities()) {
		t.Errorf("fly capabilities = %v", fly.Process.Capabilities.Bounding)
	}
}

func TestCapabilityLists(t *testing.T) {
	all := AllCapabilities()
	if len(all) != 41 || all[40] != "CAP_CHECKPOINT_RESTORE" {
		t.Errorf("all capabilities end with %q (%d)", all[len(all)-1], len(all))
	}
	if len(DefaultCapabilities()) != 14 {
		t.Errorf("default capabilities = %v", DefaultCapabilities())
	}
	for _, c := range DefaultCapabilities() {
		if !slices.Contains(all, c) {
			t.Errorf("default %s is not a known capability", c)
		}
	}
	// Callers must not be able to change the package's lists.
	DefaultCapabilities()[0] = "CAP_X"
	all[0] = "CAP_X"
	if DefaultCapabilities()[0] == "CAP_X" || AllCapabilities()[0] == "CAP_X" {
		t.Error("capability lists are shared with callers")
	}
}
