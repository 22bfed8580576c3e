package proto

import (
	"io"
	"reflect"
	"testing"
)

// What stage0 builds is what the supervisor parses, field by field.
func TestSuperviseArgsRoundTrip(t *testing.T) {
	for _, a := range []SuperviseArgs{
		{PodID: "p", RunDir: "/run/r/pods/p", StateRoot: "/run/r/runc", Flavor: "runc", MaxLogLine: DefaultMaxLogLine},
		{PodID: "p", RunDir: "/r d", StateRoot: "/s", Flavor: "fly", ReadyFD: 3, SystemdCgroup: true, MaxLogLine: 100,
			PidNS: "/run/r/pods/p/ns/pid", HolderCgroup: "/kubepods/podx/pidns-holder", HolderPid: 42, ExitCommand: []string{"/bin/runclet", "--root", "/x y", "pod-exited", "p"}, Debug: true},
		{PodID: "p", RunDir: "/r", StateRoot: "/s", Flavor: "runc", MaxLogLine: DefaultMaxLogLine, ExitCommand: []string{"/only-the-program"}},
	} {
		got, err := ParseSuperviseArgs(a.Args(), io.Discard)
		if err != nil {
			t.Fatalf("%+v: %v", a, err)
		}
		if !reflect.DeepEqual(got, a) {
			t.Errorf("round trip:\n got %+v\nwant %+v\nargs %q", got, a, a.Args())
		}
	}
	// Unset fields take the parser's defaults.
	got, err := ParseSuperviseArgs(SuperviseArgs{PodID: "p", RunDir: "/r", StateRoot: "/s"}.Args(), io.Discard)
	if err != nil || got.Flavor != "runc" || got.MaxLogLine != DefaultMaxLogLine {
		t.Fatalf("defaults: %+v %v", got, err)
	}
	for _, args := range [][]string{nil, {"--pod-id", "p", "--run-dir", "/r"}, {"--pod-id", "p", "--run-dir", "/r", "--state-root", "/s", "--bogus"}} {
		if _, err := ParseSuperviseArgs(args, io.Discard); err == nil {
			t.Errorf("%q parsed", args)
		}
	}
}

// A method added after version 1 is sent at the version that added it and
// only to a supervisor naming its feature; the others at MinVersion.
func TestRequestVersionsAndFeatures(t *testing.T) {
	for _, m := range []string{MethodHello, MethodAddApp, MethodStartApp, MethodStopApp, MethodKillApp, MethodRemove, MethodState, MethodShutdown, MethodAttach, MethodExec, MethodReopenLog} {
		if RequestVersion(m) != MinVersion || FeatureOf(m) != "" {
			t.Errorf("%s: version %d feature %q", m, RequestVersion(m), FeatureOf(m))
		}
	}
	v1 := HelloResult{Version: 1}
	now := HelloResult{Version: Version, Features: Features}
	for _, m := range []string{MethodStats, MethodUpdateApp} {
		f := FeatureOf(m)
		if RequestVersion(m) != 2 || f == "" || v1.Supports(f) || !now.Supports(f) {
			t.Errorf("%s: version %d feature %q", m, RequestVersion(m), f)
		}
	}
}

func TestDestroyArgsRoundTrip(t *testing.T) {
	for _, a := range []DestroyArgs{
		{StateRoot: "/run/r/runc"},
		{StateRoot: "/s", SystemdCgroup: true, Containers: []DestroyContainer{{"a1", "/r/pods/p/apps/a1/bundle"}, {"-b", ""}}},
		{StateRoot: "/s", CgroupParent: "/runclet/p"},
		{StateRoot: "/s", HolderCgroup: "/runclet/p/pidns-holder", CgroupParent: "/runclet/p"},
	} {
		got, err := ParseDestroyArgs(a.Args(), io.Discard)
		if err != nil || !reflect.DeepEqual(got, a) {
			t.Errorf("round trip of %+v: %+v %v", a, got, err)
		}
	}
	for _, args := range [][]string{nil, {"--state-root", "/s", "--", "odd"}, {"--state-root", "/s", "--", "../x", "/b"}, {"--state-root", "/s", "--", "a/b", "/b"}} {
		if _, err := ParseDestroyArgs(args, io.Discard); err == nil {
			t.Errorf("%q parsed", args)
		}
	}
}
