package integration

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// freeTCPPort is a port nothing listens on now.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type inspectApp struct {
	ID         string `json:"id"`
	PodID      string `json:"podID"`
	Name       string `json:"name"`
	State      string `json:"state"`
	Pid        int    `json:"pid"`
	Pids       []int  `json:"pids"`
	LogPath    string `json:"logPath"`
	Bundle     string `json:"bundle"`
	StateRoot  string `json:"runcStateRoot"`
	CgroupPath string `json:"cgroupPath"`
	CgroupDir  string `json:"cgroupDir"`
	Mounts     []struct {
		HostPath      string
		ContainerPath string
	} `json:"mounts"`
	Config struct {
		Process struct {
			Args []string `json:"args"`
		} `json:"process"`
		Mounts []struct {
			Destination string `json:"destination"`
		} `json:"mounts"`
	} `json:"config"`
}

// TestCLIInspect: inspect POD, POD APP and APP-ID print one JSON document
// with the state, network, ports, volumes, processes and the paths a
// person debugging the app looks for (log, cgroup, bundle).
func TestCLIInspect(t *testing.T) {
	pi := newPodInstance(t)
	img := pi.busybox()
	vol := t.TempDir()
	port := freeTCPPort(t)
	podID := lastLine(pi.run("run", "-d", "--name", "insp", "-p", strconv.Itoa(port)+":80", "-v", vol+":/data", img, "--", "sleep", "300"))
	var p struct {
		ID    string   `json:"id"`
		Name  string   `json:"name"`
		State string   `json:"state"`
		IPs   []string `json:"ips"`
		Ports []struct {
			HostPort      int `json:"hostPort"`
			ContainerPort int `json:"containerPort"`
		} `json:"ports"`
		Dir  string       `json:"dir"`
		Apps []inspectApp `json:"apps"`
	}
	out := pi.run("inspect", "insp")
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("inspect: %v: %s", err, out)
	}
	if p.ID != podID || p.State != "ready" || len(p.IPs) == 0 || len(p.Ports) != 1 || p.Ports[0].HostPort != port || len(p.Apps) != 1 {
		t.Fatalf("inspect pod: %s", out)
	}
	a := p.Apps[0]
	checkApp := func(a inspectApp) {
		t.Helper()
		if a.State != "running" || a.Pid <= 0 || !slices.Contains(a.Pids, a.Pid) {
			t.Errorf("app state/pids: %+v", a)
		}
		if _, err := os.Stat(filepath.Join(a.Bundle, "config.json")); err != nil {
			t.Errorf("bundle: %v", err)
		}
		if _, err := os.Stat(a.LogPath); err != nil {
			t.Errorf("log path: %v", err)
		}
		if _, err := os.Stat(filepath.Join(a.StateRoot, a.ID, "state.json")); err != nil {
			t.Errorf("runc state root: %v", err)
		}
		if a.CgroupPath == "" || a.CgroupDir == "" {
			t.Errorf("cgroup: %q %q", a.CgroupPath, a.CgroupDir)
		} else if _, err := os.Stat(a.CgroupDir); err != nil {
			t.Errorf("cgroup dir: %v", err)
		}
		if !slices.Equal(a.Config.Process.Args, []string{"sleep", "300"}) || len(a.Mounts) != 1 || a.Mounts[0].HostPath != vol {
			t.Errorf("config/volumes: args %q mounts %+v", a.Config.Process.Args, a.Mounts)
		}
		if !slices.ContainsFunc(a.Config.Mounts, func(m struct {
			Destination string `json:"destination"`
		}) bool {
			return m.Destination == "/data"
		}) {
			t.Errorf("spec mounts lack /data: %+v", a.Config.Mounts)
		}
	}
	checkApp(a)
	for _, args := range [][]string{{"inspect", "insp", "busybox"}, {"inspect", a.ID[:10]}} {
		var one inspectApp
		out := pi.run(args...)
		if err := json.Unmarshal([]byte(out), &one); err != nil || one.ID != a.ID || one.PodID != podID {
			t.Fatalf("runclet %v: %v: %s", args, err, out)
		}
		checkApp(one)
	}
	_, stderr, err := pi.try("inspect", "no-such-thing")
	if exitCodeOf(t, err) != 125 || !strings.Contains(stderr, `no pod named "no-such-thing"`) {
		t.Errorf("inspect of nothing: %v %q", err, stderr)
	}
}

// TestCLIVersionAndConfigShow: version names every component a bug
// report needs; config show prints the effective configuration, which
// reads back as the same configuration.
func TestCLIVersionAndConfigShow(t *testing.T) {
	in := newInstance(t, "[network]\ndefault_bridge = \"rcltshow0\"\n[cri]\nstop_timeout = \"42s\"\n")
	out := in.run("version")
	for _, want := range []string{"runclet:", "stage1-runc:", "stage1 contract:  2 (runclet speaks 2)", "libcontainer:     runc v", "go:               go1.", "cgroup:           v", "driver cgroupfs"} {
		if !strings.Contains(out, want) {
			t.Errorf("version lacks %q:\n%s", want, out)
		}
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(in.run("version", "-o", "json")), &v); err != nil || v["stage1Contract"] != float64(2) {
		t.Errorf("version -o json: %v %v", err, v)
	}
	if help := in.run("--help"); !strings.Contains(help, "Pods and apps:\n") || !strings.Contains(help, "Looking inside:\n") || strings.Contains(help, "Additional Commands") {
		t.Errorf("help is not grouped:\n%s", help)
	}
	shown := in.run("config", "show")
	for _, want := range []string{`default_bridge = "rcltshow0"`, `stop_timeout = "42s"`, `root = "` + in.root + `"`, `default_flavor = "runc"`} {
		if !strings.Contains(shown, want) {
			t.Errorf("config show lacks %q:\n%s", want, shown)
		}
	}
	again := filepath.Join(t.TempDir(), "shown.toml")
	os.WriteFile(again, []byte(shown), 0o644)
	reread := in.run("--config", again, "config", "show")
	strip := func(s string) string { return s[strings.Index(s, "\n")+1:] }
	if strip(reread) != strip(shown) {
		t.Errorf("config show does not read back as itself:\n%s\nvs\n%s", shown, reread)
	}
}
