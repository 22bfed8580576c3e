package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// needUnified skips a test on a host that is not pure cgroup v2 (this
// machine's CI is hybrid v1; make vmtest boots a pure v2 guest).
func needUnified(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 5 && f[4] == "/sys/fs/cgroup" && strings.Contains(l, " - cgroup2 ") {
			return
		}
	}
	t.Skip("needs a pure cgroup v2 host (/sys/fs/cgroup is not cgroup2): make vmtest runs it in a guest")
}

// procCgroup is the v2 cgroup path of process pid.
func procCgroup(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if strings.HasPrefix(l, "0::") {
			return strings.TrimPrefix(l, "0::")
		}
	}
	t.Fatalf("no v2 line in /proc/%d/cgroup: %s", pid, b)
	return ""
}

// On a pure cgroup v2 host, with the driver the run selects: a pod from the
// CLI gets its memory and pids limits in memory.max and pids.max of the
// cgroup its app really runs in, which is where the driver's layout says;
// removing the pod removes every cgroup (and, with systemd, every unit) it had.
func TestCgroupV2CLILimitsAndLayout(t *testing.T) {
	needUnified(t)
	pi := newPodInstance(t)
	img := pi.busybox()
	podID := lastLine(pi.run("run", "--detach", "--memory", "48M", "--pids-limit", "25", img, "--", "sleep", "300"))
	p := pi.status(podID)
	a := p.Apps[0]
	want := appCgroup(p.CgroupParent, podID, a.ID)
	if got := procCgroup(t, a.Pid); got != want {
		t.Fatalf("app runs in cgroup %s, want %s (driver %s)", got, want, cgroupDriver)
	}
	dir := filepath.Join("/sys/fs/cgroup", want)
	for file, v := range map[string]string{"memory.max": strconv.Itoa(48 << 20), "pids.max": "25"} {
		if got := readTrim(t, filepath.Join(dir, file)); got != v {
			t.Errorf("%s = %s, want %s", file, got, v)
		}
	}
	if cgroupDriver == "systemd" {
		unit := "runclet-" + podID + "-" + a.ID + ".scope"
		out, _ := exec.Command("systemctl", "show", "-p", "ActiveState", "-p", "MemoryMax", "-p", "TasksMax", unit).Output()
		for _, w := range []string{"ActiveState=active", "MemoryMax=" + strconv.Itoa(48<<20), "TasksMax=25"} {
			if !strings.Contains(string(out), w) {
				t.Errorf("systemctl show %s: want %s in\n%s", unit, w, out)
			}
		}
	}
	pi.run("rm", "--force", podID)
	for _, d := range []string{want, cgroupPath(p.CgroupParent)} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", d)); err == nil {
			t.Errorf("cgroup %s left after rm", d)
		}
	}
	if cgroupDriver == "systemd" {
		for _, unit := range []string{"runclet-" + podID + "-" + a.ID + ".scope", p.CgroupParent} {
			out, _ := exec.Command("systemctl", "show", "-p", "LoadState", "-p", "ActiveState", unit).Output()
			if strings.Contains(string(out), "ActiveState=active") {
				t.Errorf("unit %s still active after rm:\n%s", unit, out)
			}
		}
	}
}

// Through CRI with the cgroup parent kubelet gives for each driver (the
// path of a kubepods slice, or a /kubepods path): the limits reach memory.max,
// cpu.max and cpu.weight of the container's cgroup under that parent, an
// update changes them, a container over its memory limit is reported
// OOMKilled with memory.events counting the kill, and removal leaves no
// container cgroup under the parent.
func TestCgroupV2CRIKubeletParent(t *testing.T) {
	needUnified(t)
	ci := newCRIInstance(t)
	ref := ci.pushBusybox()
	ci.startDaemon()
	ctx := ctxT(t)
	if _, err := ci.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		t.Fatal(err)
	}
	rc, err := ci.rt.RuntimeConfig(ctx, &runtimeapi.RuntimeConfigRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.ToLower(rc.GetLinux().GetCgroupDriver().String()); got != cgroupDriver {
		t.Fatalf("RuntimeConfig reports driver %s, the instance runs %s", got, cgroupDriver)
	}
	uid := fmt.Sprintf("%x", time.Now().UnixNano())
	parent := "/kubepods/burstable/pod" + uid
	if cgroupDriver == "systemd" {
		// What kubelet's systemd driver sends: the slice's path.
		parent = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uid + ".slice"
	}
	parentDir := filepath.Join("/sys/fs/cgroup", cgroupPath(parent))
	// kubelet makes the pod cgroup before RunPodSandbox; with cgroupfs
	// runclet finds it there. (systemd makes the slice on first use.)
	if cgroupDriver == "cgroupfs" {
		if err := os.MkdirAll(parentDir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			os.Remove(parentDir)
			os.Remove(filepath.Dir(parentDir))
			os.Remove(filepath.Dir(filepath.Dir(parentDir)))
		})
	} else {
		t.Cleanup(func() {
			exec.Command("systemctl", "stop", filepath.Base(parent), "kubepods-burstable.slice", "kubepods.slice").Run()
		})
	}
	sb := ci.sandboxConfig("v2")
	sb.Linux.CgroupParent = parent
	run, err := ci.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sb})
	if err != nil {
		t.Fatal(err)
	}
	podID := run.PodSandboxId
	create := func(cc *runtimeapi.ContainerConfig) string {
		t.Helper()
		r, err := ci.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cc, SandboxConfig: sb})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ci.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: r.ContainerId}); err != nil {
			t.Fatal(err)
		}
		return r.ContainerId
	}
	cc := containerConfig("limited", ref, nil, "sleep", "1000")
	cc.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{
		MemoryLimitInBytes: 48 << 20, CpuQuota: 50000, CpuPeriod: 100000, CpuShares: 512}}
	limited := create(cc)
	pid := appPid(t, ci, podID, limited)
	cg := procCgroup(t, pid)
	if !strings.HasPrefix(cg, cgroupPath(parent)+"/") {
		t.Fatalf("container runs in %s, not under the pod's parent %s", cg, cgroupPath(parent))
	}
	if want := appCgroup(parent, podID, limited); cg != want {
		t.Fatalf("container cgroup %s, want %s", cg, want)
	}
	dir := filepath.Join("/sys/fs/cgroup", cg)
	if got := readTrim(t, filepath.Join(dir, "memory.max")); got != strconv.Itoa(48<<20) {
		t.Errorf("memory.max %s", got)
	}
	if got := readTrim(t, filepath.Join(dir, "cpu.max")); got != "50000 100000" {
		t.Errorf("cpu.max %s", got)
	}
	// 512 shares, half of the default 1024, is a weight below the
	// default 100 (runc's conversion).
	if w, _ := strconv.Atoi(readTrim(t, filepath.Join(dir, "cpu.weight"))); w < 1 || w >= 100 {
		t.Errorf("cpu.weight %d for 512 shares", w)
	}
	if _, err := ci.rt.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: limited,
		Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 40 << 20, CpuQuota: 30000, CpuPeriod: 100000, CpuShares: 512}}); err != nil {
		t.Fatal(err)
	}
	if got := readTrim(t, filepath.Join(dir, "memory.max")); got != strconv.Itoa(40<<20) {
		t.Errorf("memory.max after update %s", got)
	}
	if got := readTrim(t, filepath.Join(dir, "cpu.max")); got != "30000 100000" {
		t.Errorf("cpu.max after update %s", got)
	}

	oomCfg := containerConfig("hog", ref, nil, "sh", "-c", "tail /dev/zero")
	oomCfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 16 << 20}}
	hog := create(oomCfg)
	hogDir := filepath.Join("/sys/fs/cgroup", appCgroup(parent, podID, hog))
	st := ci.waitState(ctx, hog, runtimeapi.ContainerState_CONTAINER_EXITED)
	if st.ExitCode != 137 {
		t.Errorf("hog: exit %d, want 137", st.ExitCode)
	}
	checkOOMKilled(t, "hog", st.Reason == "OOMKilled", st.Reason)
	// The exited container's cgroup may be gone already; when it is
	// there its events count the kill.
	if b, err := os.ReadFile(filepath.Join(hogDir, "memory.events")); err == nil && !strings.Contains(string(b), "oom_kill 1") {
		t.Errorf("%s/memory.events:\n%s", hogDir, b)
	}

	if _, err := ci.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if _, err := ci.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, hogDir} {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("container cgroup %s left after RemovePodSandbox", d)
		}
	}
	if ents, err := os.ReadDir(parentDir); err == nil {
		for _, e := range ents {
			if e.IsDir() {
				t.Errorf("cgroup %s left under the pod's parent", e.Name())
			}
		}
	}
}
