package leakcheck

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/runclet/runclet/integration/hostcgroup"
	"github.com/runclet/runclet/internal/testutil"
)

// Each kind of object a runtime can leak is made by hand after the
// snapshot and must be reported; objects that existed before must not.
func TestLeaksListsWhatAppearedSinceTheSnapshot(t *testing.T) {
	testutil.RequiresRoot(t, "mounts, veths and cgroups")
	dir := t.TempDir()
	b := make([]byte, 3)
	rand.Read(b)
	id := hex.EncodeToString(b)
	s := Scope{Root: filepath.Join(dir, "root"), RunRoot: filepath.Join(dir, "run"), Bridge: "rlkbr" + id,
		PodCgroupParent: "/rlk" + id, IPAMDirs: []string{filepath.Join(dir, "root", "cni", "networks")}}
	os.MkdirAll(filepath.Join(s.Root, "pods", "old"), 0o700)
	w, err := WatchPods(s.Root)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s.Pods = w
	before := Take(s)

	os.MkdirAll(filepath.Join(s.Root, "pods", "new"), 0o700)
	// A pod that came and went: its cgroup is still a leak.
	os.Mkdir(filepath.Join(s.Root, "pods", "gone"), 0o700)
	os.Remove(filepath.Join(s.Root, "pods", "gone"))
	ns := filepath.Join(s.RunRoot, "pods", "new", "net")
	os.MkdirAll(filepath.Dir(ns), 0o700)
	os.WriteFile(ns, nil, 0o600)
	if err := syscall.Mount("/proc/self/ns/net", ns, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(ns, syscall.MNT_DETACH) })
	ipam := filepath.Join(s.IPAMDirs[0], "net1")
	os.MkdirAll(ipam, 0o700)
	os.WriteFile(filepath.Join(ipam, "10.1.2.3"), nil, 0o600)
	os.WriteFile(filepath.Join(ipam, "last_reserved_ip.0"), nil, 0o600)
	veth := "vethrlk" + id
	for _, args := range [][]string{
		{"link", "add", s.Bridge, "type", "bridge"},
		{"link", "add", veth, "type", "veth", "peer", "name", "rlkp" + id},
		{"link", "set", veth, "master", s.Bridge},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", veth).Run()
		exec.Command("ip", "link", "del", s.Bridge).Run()
	})
	var cg []string
	for _, mp := range hostcgroup.Mounts() {
		if strings.HasSuffix(mp, "/memory") {
			d := filepath.Join(mp, s.PodCgroupParent, "gone", "app")
			other := filepath.Join(mp, s.PodCgroupParent, "another-instances-pod")
			for _, x := range []string{d, other} {
				if err := os.MkdirAll(x, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			cg = append(cg, d, filepath.Dir(d), other, filepath.Dir(other))
		}
	}
	t.Cleanup(func() {
		for _, d := range cg {
			os.Remove(d)
		}
	})
	// A process naming the run root, like a pod supervisor ("; :" keeps sh
	// from exec'ing sleep in its place).
	sleep := exec.Command("sh", "-c", "sleep 60; :", s.RunRoot)
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleep.Process.Kill(); sleep.Wait() })
	// Start returns after fork; the command line is sleep's after exec.
	for i := 0; i < 1000; i++ {
		if b, _ := os.ReadFile("/proc/" + strconv.Itoa(sleep.Process.Pid) + "/cmdline"); strings.HasPrefix(string(b), "sh\x00") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	got := strings.Join(before.Leaks(s), "\n")
	for _, want := range []string{
		"pod dir " + filepath.Join(s.Root, "pods", "new"),
		"mount " + ns,
		"address " + filepath.Join(ipam, "10.1.2.3"),
		"link " + veth + " on " + s.Bridge,
		"process " + strconv.Itoa(sleep.Process.Pid) + " sh -c sleep 60; : " + s.RunRoot,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("leaks lack %q:\n%s", want, got)
		}
	}
	if len(cg) > 0 && !strings.Contains(got, "cgroup "+cg[0]) {
		t.Errorf("leaks lack cgroup %s:\n%s", cg[0], got)
	}
	for _, not := range []string{"pods/old", "last_reserved_ip", "another-instances-pod"} {
		if strings.Contains(got, not) {
			t.Errorf("leaks name %q, which is no leak:\n%s", not, got)
		}
	}
}
