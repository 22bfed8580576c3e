package spec

import (
	"errors"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runclet/runclet/internal/errdefs"
)

func TestProcessArgs(t *testing.T) {
	img := ocispec.ImageConfig{Entrypoint: []string{"/entry", "-v"}, Cmd: []string{"serve", "--port=80"}}
	onlyCmd := ocispec.ImageConfig{Cmd: []string{"sh"}}
	onlyEntry := ocispec.ImageConfig{Entrypoint: []string{"/bin/app"}}
	tests := []struct {
		name    string
		img     ocispec.ImageConfig
		command []string
		args    []string
		want    []string
	}{
		{"image entrypoint and cmd", img, nil, nil, []string{"/entry", "-v", "serve", "--port=80"}},
		{"command replaces entrypoint and cmd", img, []string{"/bin/sh"}, nil, []string{"/bin/sh"}},
		{"command and args", img, []string{"/bin/sh", "-c"}, []string{"echo hi"}, []string{"/bin/sh", "-c", "echo hi"}},
		{"args replace cmd only", img, nil, []string{"check"}, []string{"/entry", "-v", "check"}},
		{"cmd only image", onlyCmd, nil, nil, []string{"sh"}},
		{"args with cmd only image replace cmd", onlyCmd, nil, []string{"/bin/true"}, []string{"/bin/true"}},
		{"entrypoint only image", onlyEntry, nil, nil, []string{"/bin/app"}},
		{"command with empty image", ocispec.ImageConfig{}, []string{"/x"}, nil, []string{"/x"}},
		{"empty args slice keeps cmd", img, nil, []string{}, []string{"/entry", "-v", "serve", "--port=80"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := processArgs(tc.img, App{Name: "a", Command: tc.command, Args: tc.args})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("args = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestProcessArgsDoesNotAliasInputs(t *testing.T) {
	img := ocispec.ImageConfig{Entrypoint: make([]string, 1, 10), Cmd: []string{"a"}}
	img.Entrypoint[0] = "/e"
	first, _ := processArgs(img, App{Args: []string{"x"}})
	second, _ := processArgs(img, App{Args: []string{"y"}})
	if first[1] != "x" || second[1] != "y" {
		t.Fatalf("argument slices share storage: %q %q", first, second)
	}
}

func TestNoCommand(t *testing.T) {
	for _, img := range []ocispec.ImageConfig{{}, {Cmd: []string{""}}} {
		_, err := Generate(img, nil, App{Name: "a"}, testPod(), FlavorRunc)
		wantInvalid(t, err)
		if !strings.Contains(err.Error(), "no command specified") {
			t.Errorf("error %q does not say no command specified", err)
		}
	}
}

func TestProcessEnv(t *testing.T) {
	img := ocispec.ImageConfig{Env: []string{"PATH=/img/bin", "A=1", "B=2"}}
	pod := Pod{Hostname: "h1"}
	got, err := processEnv(img, App{Env: []string{"B=3", "C=4", "HOSTNAME=mine"}}, pod)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"PATH=/img/bin", "HOSTNAME=mine", "A=1", "B=3", "C=4"}
	if !slices.Equal(got, want) {
		t.Errorf("env = %q, want %q", got, want)
	}

	got, _ = processEnv(ocispec.ImageConfig{}, App{Terminal: true}, pod)
	want = []string{"PATH=" + DefaultPath, "HOSTNAME=h1", "TERM=xterm"}
	if !slices.Equal(got, want) {
		t.Errorf("env = %q, want %q", got, want)
	}

	got, _ = processEnv(ocispec.ImageConfig{}, App{Terminal: true, Env: []string{"TERM=vt100"}}, Pod{})
	want = []string{"PATH=" + DefaultPath, "TERM=vt100"}
	if !slices.Equal(got, want) {
		t.Errorf("env = %q, want %q", got, want)
	}

	got, _ = processEnv(ocispec.ImageConfig{}, App{Env: []string{"my.var=x", "EMPTY="}}, Pod{})
	if !slices.Contains(got, "my.var=x") || !slices.Contains(got, "EMPTY=") {
		t.Errorf("env = %q, want Kubernetes-style names and empty values kept", got)
	}

	for _, bad := range []string{"NOVALUE", "=x", "A=\x00"} {
		_, err := processEnv(ocispec.ImageConfig{}, App{Env: []string{bad}}, Pod{})
		wantInvalid(t, err)
	}
}

func TestWorkingDir(t *testing.T) {
	tests := []struct {
		img, app, want string
	}{
		{"", "", "/"},
		{"/srv", "", "/srv"},
		{"/srv", "/app", "/app"},
		{"srv/www", "", "/srv/www"},
		{"", "/a/../b/", "/b"},
	}
	for _, tc := range tests {
		got, err := workingDir(ocispec.ImageConfig{WorkingDir: tc.img}, App{WorkingDir: tc.app})
		if err != nil || got != tc.want {
			t.Errorf("workingDir(%q, %q) = %q, %v; want %q", tc.img, tc.app, got, err, tc.want)
		}
	}
	_, err := workingDir(ocispec.ImageConfig{}, App{WorkingDir: "relative"})
	wantInvalid(t, err)
}

func TestAppName(t *testing.T) {
	// critest's names are mixed case and longer than a DNS label.
	good := []string{"a", "web", "web-1", "0app", "Web", "web_1", "a.b", "web-",
		"container-for-create-test-" + strings.Repeat("0123456789abcdef", 3), strings.Repeat("a", 253)}
	bad := []string{"", "-web", ".", "..", "_a", strings.Repeat("a", 254), "a/b", "a b", "a\nb", "a:b", "ä"}
	for _, n := range good {
		if err := CheckName("app name", n); err != nil {
			t.Errorf("CheckName(%q) = %v", n, err)
		}
	}
	for _, n := range bad {
		_, err := Generate(busyboxImage(), nil, App{Name: n}, testPod(), FlavorRunc)
		wantInvalid(t, err)
	}
}

func TestPodAndFlavorChecks(t *testing.T) {
	for _, id := range []string{"", "a/b", "..", "a:b", "a b"} {
		pod := testPod()
		pod.ID = id
		_, err := Generate(busyboxImage(), nil, App{Name: "a"}, pod, FlavorRunc)
		wantInvalid(t, err)
	}
	for _, pod := range []Pod{{ID: "p", HostsPath: "hosts"}, {ID: "p", ShmPath: "shm"}, {ID: "p", ResolvConfPath: "./r"}, {ID: "p", HostnamePath: "h"}} {
		_, err := Generate(busyboxImage(), nil, App{Name: "a"}, pod, FlavorRunc)
		wantInvalid(t, err)
	}
	_, err := Generate(busyboxImage(), nil, App{Name: "a"}, testPod(), "kvm")
	wantInvalid(t, err)

	// The empty flavor is the default, runc.
	a := mustGenerate(t, busyboxImage(), nil, App{Name: "a"}, testPod(), "")
	b := mustGenerate(t, busyboxImage(), nil, App{Name: "a"}, testPod(), FlavorRunc)
	if !slices.EqualFunc(a.Linux.Namespaces, b.Linux.Namespaces, func(x, y specs.LinuxNamespace) bool { return x == y }) {
		t.Errorf("empty flavor differs from runc")
	}
}

func TestAnnotationsAndRoot(t *testing.T) {
	app := App{
		Name:           "a",
		Annotations:    map[string]string{"x.y/z": "1", AnnotationPodID: "spoofed"},
		RootfsPath:     "/var/lib/runclet/pods/p/apps/a/rootfs",
		ReadonlyRootfs: true,
		Terminal:       true,
	}
	s := mustGenerate(t, busyboxImage(), nil, app, testPod(), FlavorRunc)
	if s.Annotations["x.y/z"] != "1" || s.Annotations[AnnotationPodID] != podID || s.Annotations[AnnotationAppName] != "a" {
		t.Errorf("annotations = %v", s.Annotations)
	}
	if app.Annotations[AnnotationPodID] != "spoofed" {
		t.Errorf("Generate changed the caller's map")
	}
	if s.Root.Path != app.RootfsPath || !s.Root.Readonly || !s.Process.Terminal {
		t.Errorf("root = %+v, terminal = %v", s.Root, s.Process.Terminal)
	}
	if s.Version != specs.Version {
		t.Errorf("version = %q", s.Version)
	}
}

func TestRlimits(t *testing.T) {
	ok := []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 10, Hard: 20}, {Type: "RLIMIT_CORE"}}
	s := mustGenerate(t, busyboxImage(), nil, App{Name: "a", Rlimits: ok}, testPod(), FlavorRunc)
	if !slices.Equal(s.Process.Rlimits, ok) {
		t.Errorf("rlimits = %v", s.Process.Rlimits)
	}
	none := mustGenerate(t, busyboxImage(), nil, App{Name: "a"}, testPod(), FlavorRunc)
	if none.Process.Rlimits != nil {
		t.Errorf("default rlimits = %v, want none (inherit)", none.Process.Rlimits)
	}
	for _, bad := range [][]specs.POSIXRlimit{
		{{Type: "RLIMIT_NOFILE", Soft: 30, Hard: 20}},
		{{Type: "RLIMIT_NOFILE"}, {Type: "RLIMIT_NOFILE"}},
		{{Type: "NOFILE"}},
	} {
		_, err := Generate(busyboxImage(), nil, App{Name: "a", Rlimits: bad}, testPod(), FlavorRunc)
		wantInvalid(t, err)
	}
}

func TestProcessFields(t *testing.T) {
	app := App{Name: "a", NoNewPrivs: true, ApparmorProfile: "runclet-default", Resources: Resources{OOMScoreAdj: ptr(-998)}}
	s := mustGenerate(t, busyboxImage(), nil, app, testPod(), FlavorRunc)
	p := s.Process
	if !p.NoNewPrivileges || p.ApparmorProfile != "runclet-default" || p.OOMScoreAdj == nil || *p.OOMScoreAdj != -998 {
		t.Errorf("process = %+v", p)
	}
	if s.Linux.CgroupsPath != "/runclet/"+podID+"/a" {
		t.Errorf("cgroups path = %q", s.Linux.CgroupsPath)
	}
}

func TestGenerateWrapsClass(t *testing.T) {
	_, err := Generate(busyboxImage(), busyboxFiles(), App{Name: "a", User: "ghost"}, testPod(), FlavorRunc)
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "app a") {
		t.Fatalf("error = %v", err)
	}
}
