package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

type goldenCase struct {
	name   string
	img    ocispec.ImageConfig
	files  ImageFiles
	app    App
	pod    Pod
	flavor Flavor
}

const debianPasswd = `root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
nginx:x:101:101:nginx user:/nonexistent:/bin/false
`

const debianGroup = `root:x:0:
daemon:x:1:
adm:x:4:
www-data:x:33:
ssl-cert:x:110:www-data,nginx
nginx:x:101:
nogroup:x:65534:
`

func goldenCases() []goldenCase {
	busybox := goldenCase{
		name:  "busybox-default",
		img:   busyboxImage(),
		files: busyboxFiles(),
		app:   App{Name: "shell"},
		pod:   testPod(),
	}

	nginxPod := testPod()
	nginxPod.Sysctls = map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"}
	nginx := goldenCase{
		name: "nginx-like-user",
		img: ocispec.ImageConfig{
			User:         "www-data",
			ExposedPorts: map[string]struct{}{"80/tcp": {}, "443/tcp": {}},
			Volumes:      map[string]struct{}{"/var/cache/nginx": {}},
			Env:          []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "NGINX_VERSION=1.27.3"},
			Entrypoint:   []string{"/docker-entrypoint.sh"},
			Cmd:          []string{"nginx", "-g", "daemon off;"},
			WorkingDir:   "/usr/share/nginx/html",
			StopSignal:   "SIGQUIT",
		},
		files: imageFiles(map[string]string{"/etc/passwd": debianPasswd, "/etc/group": debianGroup}),
		app: App{
			Name:               "nginx",
			Env:                []string{"NGINX_ENTRYPOINT_QUIET_LOGS=1", "NGINX_VERSION=1.27.3-custom"},
			SupplementalGroups: []int64{2000},
			Mounts: []Mount{
				{HostPath: "/var/lib/runclet/pods/" + podID + "/volumes/cache/client", ContainerPath: "/var/cache/nginx/client_temp"},
				{HostPath: "/var/lib/runclet/pods/" + podID + "/volumes/cache", ContainerPath: "/var/cache/nginx"},
				{HostPath: "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~configmap/conf", ContainerPath: "/etc/nginx/conf.d", Readonly: true},
			},
			Annotations: map[string]string{
				"io.kubernetes.container.name": "nginx",
				"kubernetes.io/config.source":  "api",
			},
			ApparmorProfile: "runclet-default",
		},
		pod: nginxPod,
	}

	flyPod := Pod{ID: "node-agent-01", Name: "node-agent", Hostname: "node1", HostNetwork: true, HostPID: true, HostIPC: true,
		CgroupParent:   "/runclet/node-agent-01",
		ResolvConfPath: "/var/lib/runclet/pods/node-agent-01/resolv.conf", HostsPath: "/var/lib/runclet/pods/node-agent-01/hosts"}
	fly := goldenCase{
		name:  "privileged-fly",
		img:   busyboxImage(),
		files: busyboxFiles(),
		app: App{
			Name:       "agent",
			Command:    []string{"/bin/sh", "-c"},
			Args:       []string{"exec /usr/bin/agent --root /host"},
			Privileged: true,
			Terminal:   true,
			Stdin:      true,
			HostDevices: []Device{
				{HostPath: "/dev/fuse", Type: "c", Major: 10, Minor: 229, FileMode: 0o666},
				{HostPath: "/dev/sda", Type: "b", Major: 8, Minor: 0, FileMode: 0o660, GID: 6},
				{HostPath: "/dev/tty", Type: "c", Major: 5, Minor: 0, FileMode: 0o666, GID: 5},
			},
			Mounts: []Mount{
				{HostPath: "/var/lib/kubelet", ContainerPath: "/var/lib/kubelet", Propagation: PropagationBidirectional},
				{HostPath: "/", ContainerPath: "/host", Readonly: true, Propagation: PropagationHostToContainer},
			},
		},
		pod:    flyPod,
		flavor: FlavorFly,
	}

	limitsPod := testPod()
	limitsPod.SystemdCgroup = true
	limitsPod.CgroupParent = "runclet-" + podID + ".slice"
	limitsPod.Sysctls = map[string]string{"kernel.shm_rmid_forced": "1"}
	limits := goldenCase{
		name:  "limits",
		img:   ocispec.ImageConfig{Entrypoint: []string{"/app/server"}, Cmd: []string{"--port=8080"}},
		files: imageFiles(nil),
		app: App{
			Name:    "server",
			Args:    []string{"--port=9090", "--workers=4"},
			Sysctls: map[string]string{"net.core.somaxconn": "1024"},
			Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 1024, Hard: 4096}},
			Devices: []Device{{HostPath: "/dev/fuse", Type: "c", Major: 10, Minor: 229, Permissions: "rw", FileMode: 0o666}},
			Resources: Resources{
				CPUShares: 512, CPUQuota: 50000, CPUPeriod: 100000, CPUsetCPUs: "0-1", CPUsetMems: "0",
				MemoryLimit: 256 << 20, MemorySwapLimit: 256 << 20, PidsLimit: 128,
				HugepageLimits: map[string]uint64{"2MB": 8 << 20, "1GB": 0},
				OOMScoreAdj:    ptr(937),
				Unified:        map[string]string{"memory.high": "240000000", "io.weight": "default 100"},
			},
		},
		pod: limitsPod,
	}

	usernsPod := testPod()
	usernsPod.UserNS = &UserNamespace{
		UIDMap: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}},
		GIDMap: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}},
	}
	userns := goldenCase{
		name:  "readonly-userns",
		img:   ocispec.ImageConfig{Entrypoint: []string{"/bin/worker"}, User: "nobody"},
		files: busyboxFiles(),
		app: App{
			Name:           "worker",
			RunAsUser:      ptr(int64(1000)),
			RunAsGroup:     ptr(int64(3000)),
			ReadonlyRootfs: true,
			NoNewPrivs:     true,
			CapDrop:        []string{"ALL"},
			CapAdd:         []string{"NET_BIND_SERVICE"},
			Mounts: []Mount{{
				HostPath: "/var/lib/runclet/pods/" + podID + "/volumes/data", ContainerPath: "/data",
				Readonly: true, RecursiveReadOnly: true,
				UIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}},
				GIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}},
			}},
			SupplementalGroupsPolicy: SupplementalGroupsStrict,
			SupplementalGroups:       []int64{4000, 3000},
		},
		pod: usernsPod,
	}
	return []goldenCase{busybox, nginx, fly, limits, userns}
}

// TestGolden compares generated specs with testdata/golden/<name>.json and
// checks every one of them passes Validate. A mismatch lists the differing
// JSON paths with their golden and generated values. With -update the files
// are rewritten and every change is logged the same way; run
//
//	go test -v -count=1 -run Golden ./spec -update
//
// (-v, or go test hides the log of passing tests) and check each line
// against spec/testdata/golden/README.md, which records why the goldens
// look as they do next to containerd's spec for the same request.
func TestGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			s := mustGenerate(t, tc.img, tc.files, tc.app, tc.pod, tc.flavor)
			got, err := json.MarshalIndent(s, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			file := filepath.Join("testdata", "golden", tc.name+".json")
			want, err := os.ReadFile(file)
			if err != nil && !(*update && errors.Is(err, fs.ErrNotExist)) {
				t.Fatalf("%v (run go test ./spec -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				diff, derr := jsonDiff(want, got)
				if derr != nil {
					t.Fatalf("diff %s: %v", file, derr)
				}
				if *update {
					if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(file, got, 0o644); err != nil {
						t.Fatal(err)
					}
					t.Logf("rewrote %s, %d change(s) (golden → generated):\n%s", file, len(diff), formatDiff(diff, 200))
				} else {
					t.Errorf("spec differs from %s in %d place(s) (golden → generated); if intended, rerun with -update -v and review:\n%s",
						file, len(diff), formatDiff(diff, 50))
				}
			}

			dir := t.TempDir()
			if err := WriteBundle(dir, s); err != nil {
				t.Fatal(err)
			}
			if err := Validate(dir); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

// TestGoldenDeterministic generates every case twice: maps must not leak
// their random order into the spec.
func TestGoldenDeterministic(t *testing.T) {
	for _, tc := range goldenCases() {
		a, _ := json.Marshal(mustGenerate(t, tc.img, tc.files, tc.app, tc.pod, tc.flavor))
		for range 5 {
			b, _ := json.Marshal(mustGenerate(t, tc.img, tc.files, tc.app, tc.pod, tc.flavor))
			if !bytes.Equal(a, b) {
				t.Fatalf("%s: two runs differ", tc.name)
			}
		}
	}
}
