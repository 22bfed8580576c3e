package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/runclet/runclet/integration/hostcgroup"
	"github.com/runclet/runclet/integration/kube"
)

func scenarios() []scenario {
	return []scenario{
		{name: "static-pod-init-emptydir", run: staticPodInit},
		{name: "logs", run: logsScenario},
		{name: "logs-previous", run: logsPrevious},
		{name: "exec", run: execScenario},
		{name: "attach", run: attachScenario},
		{name: "port-forward", run: portForward},
		{name: "liveness-probes", run: livenessProbes},
		{name: "readiness-probes", run: readinessProbes},
		{name: "restart-policies", run: restartPolicies},
		{name: "guaranteed-qos", run: guaranteedQoS},
		{name: "oom-killed", run: oomKilled},
		{name: "host-namespaces", run: hostNamespaces},
		{name: "runtimeclass-fly", run: runtimeClassFly,
			runcletOnly: "the fly flavor is runclet's (RuntimeClass handler \"fly\")"},
		{name: "dotted-pod-name", run: dottedPodName},
		{name: "graceful-delete", run: gracefulDelete},
		{name: "log-rotation", run: logRotation},
		{name: "pod-start-latency", serial: true, run: podStartLatency},
		{name: "runtime-daemon-restart", serial: true, run: daemonRestart,
			runcletOnly: "restarts the runclet daemon under running pods (runclet's design point)"},
		{name: "supervisor-killed", run: supervisorKilled,
			runcletOnly: "kills runclet's per-pod supervisor"},
	}
}

// sleeper is a container that runs until killed.
const sleeper = `
- name: main
  image: ` + busyboxImage + `
  command: [sleep, "3600"]
`

// staticPodInit: a static pod (a manifest in kubelet's staticPodPath) whose
// init container writes into an emptyDir that the main container reads;
// its mirror pod shows up in the API; removing the file removes the pod.
func staticPodInit(t *T) error {
	const name = "static-init"
	manifest := `apiVersion: v1
kind: Pod
metadata:
  name: ` + name + `
  namespace: default
spec:
  # The mirror pod's name ends in the node name (127.0.0.1): an explicit
  # hostname keeps this scenario about init containers; dotted-pod-name
  # covers the name as hostname.
  hostname: ` + name + `
  terminationGracePeriodSeconds: 1
  volumes: [{name: data, emptyDir: {}}]
  initContainers:
  - name: init
    image: ` + busyboxImage + `
    command: [sh, -c, 'echo "written by init in $(hostname)" > /data/msg']
    volumeMounts: [{name: data, mountPath: /data}]
  containers:
  - name: main
    image: ` + busyboxImage + `
    command: [sh, -c, 'cat /data/msg; exec sleep 3600']
    volumeMounts: [{name: data, mountPath: /data}]
`
	path := filepath.Join(t.c.staticPodDir, name+".yaml")
	if err := os.WriteFile(path, []byte(manifest), 0o644); err != nil {
		return err
	}
	t.defer_(func() { os.Remove(path) })
	mirror := name + "-" + nodeName
	p, err := t.running(mirror, false)
	if err != nil {
		return err
	}
	if p.Metadata.Annotations["kubernetes.io/config.mirror"] == "" {
		return fmt.Errorf("pod %s is not a mirror pod (annotations %v)", mirror, p.Metadata.Annotations)
	}
	ic := p.container("init")
	if ic == nil || ic.State.Terminated == nil || ic.State.Terminated.ExitCode != 0 || ic.State.Terminated.Reason != "Completed" {
		return fmt.Errorf("init container not terminated with Completed, exit 0: %s", p.summary())
	}
	out, err := t.waitLogs(mirror, "main", "written by init in "+name)
	if err != nil {
		return err
	}
	t.note("main container printed %q", strings.TrimSpace(out))
	if err := os.Remove(path); err != nil {
		return err
	}
	return t.gone(mirror, 60*time.Second)
}

// gone waits until pod name is no longer in the API.
func (t *T) gone(name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		p, err := t.getPod(name)
		if isNotFound(err) {
			return nil
		}
		if time.Now().After(deadline) || t.ctx.Err() != nil {
			s := fmt.Sprint(err)
			if p != nil {
				s = p.summary()
			}
			return fmt.Errorf("pod %s still there after %v (%s)", name, timeout, s)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitLogs waits until `kubectl logs` of a container contains want.
func (t *T) waitLogs(podName, ctr, want string, extra ...string) (string, error) {
	var out string
	err := kube.Poll(t.ctx, 30*time.Second, 500*time.Millisecond, "kubectl logs "+podName, func() (bool, error) {
		var err error
		out, err = t.kubectlOK(append([]string{"logs", podName, "-c", ctr}, extra...)...)
		if err != nil {
			return false, err
		}
		return strings.Contains(out, want), fmt.Errorf("logs %q do not contain %q", clip(out, 300), want)
	})
	return out, err
}

var criLine = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)) (stdout|stderr) ([FP]) (.*)$`)

// criLog is one record of a CRI log file.
type criLog struct {
	time   time.Time
	stream string
	tag    string
	msg    string
}

// parseCRILog parses a CRI log file's content, strictly.
func parseCRILog(data string) ([]criLog, error) {
	var recs []criLog
	for i, line := range strings.Split(strings.TrimSuffix(data, "\n"), "\n") {
		if line == "" && i == 0 {
			break
		}
		m := criLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("line %d is not a CRI log record: %q", i+1, clip(line, 120))
		}
		ts, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			return nil, fmt.Errorf("line %d: time %q: %w", i+1, m[1], err)
		}
		recs = append(recs, criLog{ts, m[4], m[5], m[6]})
	}
	return recs, nil
}

// podLogDir is kubelet's log directory of a pod:
// <podLogsDir>/<namespace>_<name>_<uid>.
func (t *T) podLogDir(p *pod) string {
	return filepath.Join(t.c.podLogsDir, fmt.Sprintf("%s_%s_%s", p.Metadata.Namespace, p.Metadata.Name, p.Metadata.UID))
}

// logsScenario: stdout and stderr lines land in the pod's CRI log file
// (kubelet's pod log directory) in CRI format; kubectl logs shows them in
// order; kubectl logs -f follows new lines as they are written.
func logsScenario(t *T) error {
	const name = "logs"
	if err := t.createPod(name, `
terminationGracePeriodSeconds: 1
containers:
- name: c
  image: `+busyboxImage+`
  command:
  - sh
  - -c
  - |
    echo out-1; echo err-1 >&2
    i=2
    while [ $i -le 6 ]; do sleep 1; echo out-$i; i=$((i+1)); done
    echo "a line with	tab and ünïcödé"
    exec sleep 3600
`); err != nil {
		return err
	}
	p, err := t.running(name, false)
	if err != nil {
		return err
	}
	follow, err := t.kubectlBG(false, "logs", "-f", name)
	if err != nil {
		return err
	}
	if _, err := follow.waitOutput(t.ctx, regexp.MustCompile(`(?s)out-1\n.*out-5\n`), 30*time.Second); err != nil {
		return fmt.Errorf("logs -f: %w", err)
	}
	if _, err := follow.waitOutput(t.ctx, regexp.MustCompile(`ünïcödé`), 15*time.Second); err != nil {
		return fmt.Errorf("logs -f: %w", err)
	}
	follow.stop()
	out, err := t.kubectlOK("logs", name)
	if err != nil {
		return err
	}
	want := "out-1\nerr-1\nout-2\nout-3\nout-4\nout-5\nout-6\na line with\ttab and ünïcödé\n"
	if out != want && strings.Replace(out, "err-1\nout-1", "out-1\nerr-1", 1) != want {
		return fmt.Errorf("kubectl logs = %q, want %q", out, want)
	}
	file := filepath.Join(t.podLogDir(p), "c", "0.log")
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("CRI log file: %w", err)
	}
	recs, err := parseCRILog(string(data))
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	var sawErr, sawOut bool
	for _, r := range recs {
		sawOut = sawOut || (r.stream == "stdout" && r.tag == "F" && r.msg == "out-1")
		sawErr = sawErr || (r.stream == "stderr" && r.tag == "F" && r.msg == "err-1")
	}
	if !sawOut || !sawErr || len(recs) != 8 {
		return fmt.Errorf("%s: want 8 records with stdout F out-1 and stderr F err-1, got %d records:\n%s", file, len(recs), clip(string(data), 800))
	}
	tail, err := t.kubectlOK("logs", name, "--tail", "2", "--timestamps")
	if err != nil {
		return err
	}
	if lines := strings.Split(strings.TrimSpace(tail), "\n"); len(lines) != 2 || !strings.HasSuffix(lines[0], " out-6") {
		return fmt.Errorf("kubectl logs --tail 2 --timestamps = %q", tail)
	}
	t.note("%s: %d CRI records, stdout and stderr tagged", strings.TrimPrefix(file, t.c.dir+"/"), len(recs))
	return nil
}

// logsPrevious: a container that exits once and is restarted; kubectl
// logs shows the new instance, --previous the one before, and kubelet
// keeps both CRI log files (0.log, 1.log).
func logsPrevious(t *T) error {
	const name = "logs-previous"
	if err := t.createPod(name, `
terminationGracePeriodSeconds: 1
volumes: [{name: state, emptyDir: {}}]
containers:
- name: c
  image: `+busyboxImage+`
  volumeMounts: [{name: state, mountPath: /state}]
  command:
  - sh
  - -c
  - |
    n=$(cat /state/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /state/n
    echo "instance $n"
    if [ $n -ge 2 ]; then exec sleep 3600; fi
    sleep 1; exit 3
`); err != nil {
		return err
	}
	p, err := t.waitPod(name, 90*time.Second, "restarted once and running", func(p *pod) (bool, error) {
		cs := p.container("c")
		return cs != nil && cs.RestartCount >= 1 && cs.State.Running != nil, nil
	})
	if err != nil {
		return err
	}
	cs := p.container("c")
	if cs.LastState.Terminated == nil || cs.LastState.Terminated.ExitCode != 3 || cs.LastState.Terminated.Reason != "Error" {
		return fmt.Errorf("last state = %s, want terminated(Error, exit 3)", cs.LastState)
	}
	if _, err := t.waitLogs(name, "c", "instance 2"); err != nil {
		return err
	}
	prev, err := t.kubectlOK("logs", name, "--previous")
	if err != nil {
		return err
	}
	if prev != "instance 1\n" {
		return fmt.Errorf("kubectl logs --previous = %q, want %q", prev, "instance 1\n")
	}
	for _, f := range []string{"0.log", "1.log"} {
		if _, err := os.Stat(filepath.Join(t.podLogDir(p), "c", f)); err != nil {
			return fmt.Errorf("CRI log of the instance: %w", err)
		}
	}
	return nil
}

// execScenario: kubectl exec without stdin (exit code and both streams),
// with -i (stdin piped, EOF delivered), and with -it on a real pty
// (terminal size, a tty, the shell's exit code).
func execScenario(t *T) error {
	const name = "exec"
	if err := t.createPod(name, "terminationGracePeriodSeconds: 1\ncontainers:\n"+sleeper); err != nil {
		return err
	}
	if _, err := t.running(name, false); err != nil {
		return err
	}
	out, errOut, code, err := t.kubectl("", "exec", name, "--", "sh", "-c", "echo out; echo err >&2; exit 7")
	if err != nil {
		return err
	}
	if code != 7 || out != "out\n" || !strings.Contains(errOut, "err\n") {
		return fmt.Errorf("exec: exit %d stdout %q stderr %q, want exit 7, \"out\\n\", \"err\\n\"", code, out, errOut)
	}
	out, errOut, code, err = t.kubectl("hello stdin\nsecond line\n", "exec", "-i", name, "--", "sh", "-c", "cat; echo :eof")
	if err != nil {
		return err
	}
	if code != 0 || out != "hello stdin\nsecond line\n:eof\n" {
		return fmt.Errorf("exec -i: exit %d stdout %q stderr %q", code, out, errOut)
	}
	// A larger stdin, checked byte for byte on the way back.
	big := strings.Repeat("0123456789abcdef", 64<<10/16*4) // 256 KiB
	out, errOut, code, err = t.kubectl(big, "exec", "-i", name, "--", "sh", "-c", "cat")
	if err != nil {
		return err
	}
	if code != 0 || out != big {
		return fmt.Errorf("exec -i of 256 KiB: exit %d, %d bytes back (stderr %q)", code, len(out), errOut)
	}

	term, err := t.kubectlPTY(37, 111, "exec", "-it", name, "--", "sh")
	if err != nil {
		return err
	}
	if _, err := term.waitOutput(t.ctx, regexp.MustCompile(`# $|# \x1b`), 20*time.Second); err != nil {
		return fmt.Errorf("exec -it: no shell prompt: %w", err)
	}
	if _, err := term.stdin.Write([]byte("stty size; tty; echo $((6*7))x; exit 5\r")); err != nil {
		return err
	}
	code, err = term.wait(20 * time.Second)
	if err != nil {
		return fmt.Errorf("exec -it: %w", err)
	}
	got := term.out.String()
	for _, want := range []string{"37 111", "/dev/pts/", "42x"} {
		if !strings.Contains(got, want) {
			return fmt.Errorf("exec -it: output lacks %q: %q", want, clip(got, 400))
		}
	}
	if code != 5 {
		return fmt.Errorf("exec -it: kubectl exit %d, want 5; output %q", code, clip(got, 400))
	}
	return nil
}

// attachScenario: kubectl attach to a container printing a line a second
// sees new lines; attach -i to a container reading stdin gets its
// answers; with stdinOnce, closing the attach closes the container's
// stdin.
func attachScenario(t *T) error {
	const name = "attach"
	if err := t.createPod(name, `
terminationGracePeriodSeconds: 1
containers:
- name: ticker
  image: `+busyboxImage+`
  command: [sh, -c, 'i=0; while true; do echo tick-$i; i=$((i+1)); sleep 1; done']
- name: reader
  image: `+busyboxImage+`
  stdin: true
  command: [sh, -c, 'while read l; do echo "got:$l"; done']
- name: once
  image: `+busyboxImage+`
  stdin: true
  stdinOnce: true
  command: [sh, -c, 'cat; echo stdin-closed; exec sleep 3600']
`); err != nil {
		return err
	}
	if _, err := t.running(name, false); err != nil {
		return err
	}
	a, err := t.kubectlBG(false, "attach", name, "-c", "ticker")
	if err != nil {
		return err
	}
	m, err := a.waitOutput(t.ctx, regexp.MustCompile(`tick-(\d+)\n`), 20*time.Second)
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	first, _ := strconv.Atoi(m[1])
	if _, err := a.waitOutput(t.ctx, regexp.MustCompile(fmt.Sprintf(`tick-%d\n`, first+2)), 20*time.Second); err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	a.stop()

	r, err := t.kubectlBG(true, "attach", "-i", name, "-c", "reader")
	if err != nil {
		return err
	}
	// The attach session may not be wired up at once: repeat the line
	// until an answer comes back.
	var answered bool
	for i := 0; i < 20 && !answered; i++ {
		fmt.Fprintf(r.stdin, "hello-%d\n", i)
		if _, err := r.waitOutput(t.ctx, regexp.MustCompile(`got:hello-\d+`), time.Second); err == nil {
			answered = true
		}
	}
	if !answered {
		return fmt.Errorf("attach -i: no answer from the container: %s", clip(r.out.String(), 300))
	}
	r.stop()

	o, err := t.kubectlBG(true, "attach", "-i", name, "-c", "once")
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	io.WriteString(o.stdin, "only once\n")
	o.stdin.Close()
	if _, err := o.waitOutput(t.ctx, regexp.MustCompile(`only once`), 20*time.Second); err != nil {
		return fmt.Errorf("attach -i (stdinOnce): %w", err)
	}
	o.wait(10 * time.Second)
	if _, err := t.waitLogs(name, "once", "stdin-closed"); err != nil {
		return fmt.Errorf("stdinOnce: the container's stdin was not closed after the attach ended: %w", err)
	}
	return nil
}

// portForward: kubectl port-forward to a web server in the pod, several
// requests in a row and at the same time.
func portForward(t *T) error {
	const name = "port-forward"
	if err := t.createPod(name, `
terminationGracePeriodSeconds: 1
containers:
- name: web
  image: `+busyboxImage+`
  command: [sh, -c, 'mkdir -p /www && echo "pf-ok $(hostname)" > /www/index.html && exec httpd -f -p 8080 -h /www']
  readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
`); err != nil {
		return err
	}
	if _, err := t.running(name, true); err != nil {
		return err
	}
	pf, err := t.kubectlBG(false, "port-forward", "pod/"+name, ":8080", "--address", "127.0.0.1")
	if err != nil {
		return err
	}
	m, err := pf.waitOutput(t.ctx, regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> 8080`), 20*time.Second)
	if err != nil {
		return err
	}
	url := "http://127.0.0.1:" + m[1] + "/"
	get := func() error {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "pf-ok "+name+"\n" {
			return fmt.Errorf("GET %s: %d %q", url, resp.StatusCode, b)
		}
		return nil
	}
	for i := 0; i < 3; i++ {
		if err := get(); err != nil {
			return fmt.Errorf("request %d: %w", i+1, err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = get() }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("concurrent request %d: %w", i+1, err)
		}
	}
	return nil
}

// livenessProbes: one container per probe kind (exec, HTTP, TCP), each
// healthy for 5 s, then failing; kubelet must restart each one.
func livenessProbes(t *T) error {
	const name = "liveness"
	if err := t.createPod(name, `
terminationGracePeriodSeconds: 1
containers:
- name: exec
  image: `+busyboxImage+`
  command: [sh, -c, 'touch /tmp/healthy; sleep 5; rm /tmp/healthy; exec sleep 3600']
  livenessProbe: {exec: {command: [cat, /tmp/healthy]}, periodSeconds: 1, failureThreshold: 2}
- name: http
  image: `+busyboxImage+`
  command: [sh, -c, 'mkdir -p /www; echo ok > /www/healthz; httpd -p 8081 -h /www; sleep 5; rm /www/healthz; exec sleep 3600']
  livenessProbe: {httpGet: {path: /healthz, port: 8081}, periodSeconds: 1, failureThreshold: 2}
- name: tcp
  image: `+busyboxImage+`
  command: [sh, -c, 'httpd -p 8082 -h /tmp; sleep 5; killall httpd; exec sleep 3600']
  livenessProbe: {tcpSocket: {port: 8082}, periodSeconds: 1, failureThreshold: 2}
`); err != nil {
		return err
	}
	p, err := t.waitPod(name, 120*time.Second, "restarted by each liveness probe", func(p *pod) (bool, error) {
		for _, c := range []string{"exec", "http", "tcp"} {
			cs := p.container(c)
			if cs == nil || cs.RestartCount < 1 || cs.LastState.Terminated == nil {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	var evs struct{ Items []event }
	if err := t.c.api.get(t.ctx, "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D"+name, &evs); err != nil {
		return err
	}
	unhealthy := map[string]bool{}
	for _, e := range evs.Items {
		if e.Reason == "Unhealthy" && strings.Contains(e.Message, "Liveness probe failed") {
			unhealthy[e.InvolvedObject.FieldPath] = true
		}
	}
	for _, c := range []string{"exec", "http", "tcp"} {
		cs := p.container(c)
		t.note("%s: restarts=%d last=%s", c, cs.RestartCount, cs.LastState)
		if !unhealthy["spec.containers{"+c+"}"] {
			return fmt.Errorf("no \"Liveness probe failed\" event for container %s (events: %v)", c, unhealthy)
		}
	}
	return nil
}

// readinessProbes: one container per probe kind, not ready for 6 s, then
// ready for 10 s, then not ready again; the pod's Ready condition follows,
// nothing is restarted.
func readinessProbes(t *T) error {
	const name = "readiness"
	if err := t.createPod(name, `
terminationGracePeriodSeconds: 1
containers:
- name: exec
  image: `+busyboxImage+`
  command: [sh, -c, 'sleep 6; touch /tmp/ready; sleep 10; rm /tmp/ready; exec sleep 3600']
  readinessProbe: {exec: {command: [cat, /tmp/ready]}, periodSeconds: 1}
- name: http
  image: `+busyboxImage+`
  command: [sh, -c, 'mkdir -p /www; httpd -p 8091 -h /www; sleep 6; echo ok > /www/ready; sleep 10; rm /www/ready; exec sleep 3600']
  readinessProbe: {httpGet: {path: /ready, port: 8091}, periodSeconds: 1}
- name: tcp
  image: `+busyboxImage+`
  command: [sh, -c, 'sleep 6; httpd -p 8092 -h /tmp; sleep 10; killall httpd; exec sleep 3600']
  readinessProbe: {tcpSocket: {port: 8092}, periodSeconds: 1}
`); err != nil {
		return err
	}
	ctrs := []string{"exec", "http", "tcp"}
	allReady := func(p *pod, want bool) bool {
		for _, c := range ctrs {
			cs := p.container(c)
			if cs == nil || cs.State.Running == nil || cs.Ready != want {
				return false
			}
		}
		return true
	}
	if _, err := t.waitPod(name, 60*time.Second, "running, not ready", func(p *pod) (bool, error) {
		return allReady(p, false) && p.condition("Ready") == "False", nil
	}); err != nil {
		return err
	}
	if _, err := t.waitPod(name, 30*time.Second, "ready", func(p *pod) (bool, error) {
		return allReady(p, true) && p.condition("Ready") == "True", nil
	}); err != nil {
		return err
	}
	p, err := t.waitPod(name, 30*time.Second, "not ready again", func(p *pod) (bool, error) {
		return allReady(p, false) && p.condition("Ready") == "False", nil
	})
	if err != nil {
		return err
	}
	for _, c := range ctrs {
		if n := p.container(c).RestartCount; n != 0 {
			return fmt.Errorf("container %s restarted %d times; readiness must not restart", c, n)
		}
	}
	return nil
}

// restartPolicies: Always restarts a container that exits 0; OnFailure
// restarts one that fails and not one that succeeds (pod Succeeded);
// Never leaves a failed container (pod Failed). Restart counts, exit codes
// and reasons are checked.
func restartPolicies(t *T) error {
	pods := []struct{ name, policy, script string }{
		{"rp-always", "Always", "echo run; exit 0"},
		{"rp-onfailure-fail", "OnFailure", "exit 3"},
		{"rp-onfailure-ok", "OnFailure", "sleep 1; exit 0"},
		{"rp-never", "Never", "exit 2"},
	}
	for _, p := range pods {
		if err := t.createPod(p.name, `
terminationGracePeriodSeconds: 1
restartPolicy: `+p.policy+`
containers:
- name: c
  image: `+busyboxImage+`
  command: [sh, -c, '`+p.script+`']
`); err != nil {
			return err
		}
	}
	type check struct {
		name string
		cond func(*pod) (bool, error)
	}
	terminatedWith := func(s containerState, reason string, code int) bool {
		return s.Terminated != nil && s.Terminated.Reason == reason && s.Terminated.ExitCode == code
	}
	checks := []check{
		{"rp-always", func(p *pod) (bool, error) {
			cs := p.container("c")
			if p.Status.Phase == "Succeeded" || p.Status.Phase == "Failed" {
				return false, fmt.Errorf("phase %s with restartPolicy Always", p.Status.Phase)
			}
			return cs != nil && cs.RestartCount >= 2 && terminatedWith(cs.LastState, "Completed", 0), nil
		}},
		{"rp-onfailure-fail", func(p *pod) (bool, error) {
			cs := p.container("c")
			return cs != nil && cs.RestartCount >= 2 && terminatedWith(cs.LastState, "Error", 3), nil
		}},
		{"rp-onfailure-ok", func(p *pod) (bool, error) {
			cs := p.container("c")
			if cs != nil && cs.RestartCount > 0 {
				return false, fmt.Errorf("restarted a container that exited 0 under OnFailure")
			}
			return p.Status.Phase == "Succeeded" && cs != nil && terminatedWith(cs.State, "Completed", 0), nil
		}},
		{"rp-never", func(p *pod) (bool, error) {
			cs := p.container("c")
			if cs != nil && cs.RestartCount > 0 {
				return false, fmt.Errorf("restarted under Never")
			}
			return p.Status.Phase == "Failed" && cs != nil && terminatedWith(cs.State, "Error", 2), nil
		}},
	}
	errs := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = t.waitPod(c.name, 120*time.Second, "in its expected state", c.cond)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	// The finished ones stay finished.
	time.Sleep(3 * time.Second)
	for _, c := range checks[2:] {
		p, err := t.getPod(c.name)
		if err != nil {
			return err
		}
		if ok, err := c.cond(p); !ok || err != nil {
			return fmt.Errorf("pod %s changed after finishing: %s", c.name, p.summary())
		}
	}
	p, _ := t.getPod("rp-always")
	t.note("Always: %s", p.summary())
	return nil
}

// guaranteedQoS: requests == limits makes a Guaranteed pod; its memory
// and CPU limits are visible inside the container (cgroup files) and on
// the pod's cgroup.
func guaranteedQoS(t *T) error {
	const name = "guaranteed"
	if err := t.createPod(name, `
terminationGracePeriodSeconds: 1
containers:
- name: c
  image: `+busyboxImage+`
  command: [sleep, "3600"]
  resources:
    requests: {cpu: 500m, memory: 128Mi}
    limits: {cpu: 500m, memory: 128Mi}
`); err != nil {
		return err
	}
	p, err := t.running(name, false)
	if err != nil {
		return err
	}
	if p.Status.QOSClass != "Guaranteed" {
		return fmt.Errorf("qosClass %q, want Guaranteed", p.Status.QOSClass)
	}
	// cgroup v1 inside the container, else cgroup v2.
	out, err := t.kubectlOK("exec", name, "--", "sh", "-c", `
if [ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
  echo mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)
  echo cpu=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)/$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)
  echo shares=$(cat /sys/fs/cgroup/cpu/cpu.shares)
else
  echo mem=$(cat /sys/fs/cgroup/memory.max)
  echo cpu=$(cat /sys/fs/cgroup/cpu.max | tr ' ' /)
fi`)
	if err != nil {
		return err
	}
	got := strings.Fields(out)
	want := []string{"mem=134217728", "cpu=50000/100000"}
	if len(got) == 3 {
		want = append(want, "shares=512")
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		return fmt.Errorf("limits seen in the container: %q, want %q", got, want)
	}
	t.note("inside: %s", strings.Join(got, " "))
	// The pod-level cgroup kubelet made (cgroupfs driver, Guaranteed pods
	// directly under kubepods).
	dir, v2 := hostcgroup.Dir("memory", filepath.Join(t.c.cgroupRoot, "kubepods", "pod"+p.Metadata.UID))
	podCg := filepath.Join(dir, "memory.limit_in_bytes")
	if v2 {
		podCg = filepath.Join(dir, "memory.max")
	}
	b, err := os.ReadFile(podCg)
	if err != nil {
		return fmt.Errorf("pod cgroup: %w", err)
	}
	if v := strings.TrimSpace(string(b)); v != "134217728" {
		return fmt.Errorf("%s = %s, want 134217728", podCg, v)
	}
	return nil
}

// oomKilled: a container that allocates past its memory limit is killed
// by the kernel and reported as OOMKilled (exit 137).
func oomKilled(t *T) error {
	const name = "oom"
	if err := t.createPod(name, `
terminationGracePeriodSeconds: 1
restartPolicy: Never
containers:
- name: c
  image: `+busyboxImage+`
  command: [sh, -c, 'echo allocating; exec dd if=/dev/zero of=/dev/null bs=256M count=4']
  resources:
    limits: {memory: 48Mi}
`); err != nil {
		return err
	}
	_, err := t.waitPod(name, 90*time.Second, "OOMKilled", func(p *pod) (bool, error) {
		cs := p.container("c")
		if cs == nil || cs.State.Terminated == nil {
			return false, nil
		}
		if cs.State.Terminated.Reason != "OOMKilled" || cs.State.Terminated.ExitCode != 137 {
			return false, fmt.Errorf("terminated as %s, want OOMKilled, exit 137", cs.State)
		}
		return p.Status.Phase == "Failed", nil
	})
	return err
}

// hostNamespaces: a hostNetwork + hostPID pod shares the host's network
// and PID namespaces (not its IPC or mount namespace) and reports the node
// IP; a normal pod does not share them.
func hostNamespaces(t *T) error {
	if err := t.createPod("hostns", `
terminationGracePeriodSeconds: 1
hostNetwork: true
hostPID: true
containers:`+sleeper); err != nil {
		return err
	}
	if err := t.createPod("podns", "terminationGracePeriodSeconds: 1\ncontainers:"+sleeper); err != nil {
		return err
	}
	p, err := t.running("hostns", false)
	if err != nil {
		return err
	}
	if _, err := t.running("podns", false); err != nil {
		return err
	}
	if p.Status.PodIP != "127.0.0.1" {
		return fmt.Errorf("hostNetwork pod IP %q, want the node IP 127.0.0.1", p.Status.PodIP)
	}
	host := map[string]string{}
	for _, ns := range []string{"net", "pid", "ipc", "mnt"} {
		l, err := os.Readlink("/proc/self/ns/" + ns)
		if err != nil {
			return err
		}
		host[ns] = l
	}
	nsOf := func(podName string) (map[string]string, error) {
		out, err := t.kubectlOK("exec", podName, "--", "sh", "-c", "for n in net pid ipc mnt; do readlink /proc/self/ns/$n; done")
		if err != nil {
			return nil, err
		}
		f := strings.Fields(out)
		if len(f) != 4 {
			return nil, fmt.Errorf("readlink in %s: %q", podName, out)
		}
		return map[string]string{"net": f[0], "pid": f[1], "ipc": f[2], "mnt": f[3]}, nil
	}
	h, err := nsOf("hostns")
	if err != nil {
		return err
	}
	if h["net"] != host["net"] || h["pid"] != host["pid"] || h["ipc"] == host["ipc"] || h["mnt"] == host["mnt"] {
		return fmt.Errorf("hostNetwork+hostPID pod namespaces %v, host %v: want net and pid shared, ipc and mnt not", h, host)
	}
	n, err := nsOf("podns")
	if err != nil {
		return err
	}
	if n["net"] == host["net"] || n["pid"] == host["pid"] {
		return fmt.Errorf("normal pod namespaces %v share the host's %v", n, host)
	}
	// hostPID: the host's processes are visible, this one among them.
	out, err := t.kubectlOK("exec", "hostns", "--", "cat", fmt.Sprintf("/proc/%d/comm", os.Getpid()))
	if err != nil {
		return err
	}
	t.note("hostPID pod sees this harness as %q", strings.TrimSpace(out))
	return nil
}

// runtimeClassFly: pods selecting runclet's flavors through RuntimeClass.
// runclet-fly (handler fly, enabled in the harness's config: host network,
// PID and IPC, only a mount namespace of its own) in a pod that says
// hostNetwork, hostPID and hostIPC must run steadily (kubelet compares the
// sandbox's namespace modes with the pod's); a plain pod with that
// RuntimeClass, which asks for isolation fly cannot give, must be refused
// (FailedCreatePodSandBox) and never run. runclet-runc (handler runc) gets
// the pod's own namespaces.
func runtimeClassFly(t *T) error {
	if err := t.createPod("fly-host", `
terminationGracePeriodSeconds: 1
runtimeClassName: runclet-fly
hostNetwork: true
hostPID: true
hostIPC: true
containers:
- name: main
  image: `+busyboxImage+`
  command: [sh, -c, 'echo fly-ok; exec sleep 3600']
`); err != nil {
		return err
	}
	if err := t.createPod("fly", "terminationGracePeriodSeconds: 1\nruntimeClassName: runclet-fly\ncontainers:"+sleeper); err != nil {
		return err
	}
	if err := t.createPod("flyrunc", "terminationGracePeriodSeconds: 1\nruntimeClassName: runclet-runc\ncontainers:"+sleeper); err != nil {
		return err
	}
	if _, err := t.running("flyrunc", false); err != nil {
		return err
	}
	hostNet, _ := os.Readlink("/proc/self/ns/net")
	hostPID, _ := os.Readlink("/proc/self/ns/pid")
	hostMnt, _ := os.Readlink("/proc/self/ns/mnt")
	out, err := t.kubectlOK("exec", "flyrunc", "--", "readlink", "/proc/self/ns/net")
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) == hostNet {
		return fmt.Errorf("runclet-runc pod shares the host network namespace")
	}
	var errs []string
	if err := t.flyRefused("fly"); err != nil {
		errs = append(errs, err.Error())
	}
	for _, name := range []string{"fly-host"} {
		if err := t.steady(name, 8*time.Second); err != nil {
			errs = append(errs, err.Error())
			continue
		}
		out, err := t.kubectlOK("exec", name, "--", "sh", "-c", "for n in net pid mnt; do readlink /proc/self/ns/$n; done")
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		f := strings.Fields(out)
		if len(f) != 3 || f[0] != hostNet || f[1] != hostPID || f[2] == hostMnt {
			errs = append(errs, fmt.Sprintf("pod %s namespaces net/pid/mnt %q; host %s %s %s: want net and pid shared, mnt not", name, f, hostNet, hostPID, hostMnt))
		}
	}
	if _, err := t.waitLogs("fly-host", "main", "fly-ok"); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// flyRefused checks that the runclet-fly pod name, which did not ask for
// the host's namespaces, gets FailedCreatePodSandBox events naming the
// flavor and never runs.
func (t *T) flyRefused(name string) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, err := t.kubectlOK("get", "events", "--field-selector", "involvedObject.name="+name,
			"-o", `jsonpath={range .items[*]}{.reason}{" "}{.message}{"\n"}{end}`)
		if err != nil {
			return err
		}
		if p, err := t.getPod(name); err == nil && p.Status.Phase == "Running" {
			return fmt.Errorf("runclet-fly pod %s without host namespaces runs", name)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "FailedCreatePodSandBox") && strings.Contains(line, "flavor fly") {
				t.note("plain runclet-fly pod refused: %s", line)
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("runclet-fly pod %s without host namespaces: no FailedCreatePodSandBox event naming the fly flavor; events:\n%s", name, out)
		}
		time.Sleep(2 * time.Second)
	}
}

// steady waits until pod name runs, then checks for d that its
// containers keep their IDs and are not restarted.
func (t *T) steady(name string, d time.Duration) error {
	p, err := t.running(name, false)
	if err != nil {
		return err
	}
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		time.Sleep(500 * time.Millisecond)
		q, err := t.getPod(name)
		if err != nil {
			return err
		}
		for _, cs := range q.Status.ContainerStatuses {
			old := p.container(cs.Name)
			if old == nil || cs.ContainerID != old.ContainerID || cs.RestartCount != 0 || cs.State.Running == nil {
				return fmt.Errorf("pod %s does not run steadily: %s (container was %s)", name, q.summary(), old.ContainerID)
			}
		}
	}
	return nil
}

// dottedPodName: a pod name is a DNS subdomain and may contain dots;
// kubelet passes it as the sandbox hostname (static pods' names end in
// the node name, often an FQDN). The pod must run, with that hostname.
func dottedPodName(t *T) error {
	const name = "dotted.pod.name"
	if err := t.createPod(name, "terminationGracePeriodSeconds: 1\ncontainers:"+sleeper); err != nil {
		return err
	}
	if _, err := t.running(name, false); err != nil {
		return err
	}
	out, err := t.kubectlOK("exec", name, "--", "hostname")
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) != name {
		return fmt.Errorf("hostname in the pod %q, want %q", strings.TrimSpace(out), name)
	}
	return nil
}

// gracefulDelete: deleting a pod sends SIGTERM and waits up to the grace
// period: a container that exits 2 s after SIGTERM goes in about 2 s (and
// its handler ran to the end); one that ignores SIGTERM is killed when a
// 4 s grace period given at deletion runs out.
func gracefulDelete(t *T) error {
	out := filepath.Join(t.c.hostPathDir, "grace")
	if err := os.MkdirAll(out, 0o777); err != nil {
		return err
	}
	spec := func(script string) string {
		return `
terminationGracePeriodSeconds: 30
volumes: [{name: out, hostPath: {path: ` + out + `, type: Directory}}]
containers:
- name: c
  image: ` + busyboxImage + `
  volumeMounts: [{name: out, mountPath: /out}]
  command:
  - sh
  - -c
  - |
` + indent(dedent(script), "    ")
	}
	if err := t.createPod("grace-term", spec(`
trap 'echo TERM >> /out/term; sleep 2; echo done >> /out/term; exit 0' TERM
echo started > /out/term
while true; do sleep 0.2; done
`)); err != nil {
		return err
	}
	if err := t.createPod("grace-ignore", spec(`
trap '' TERM
echo started > /out/ignore
while true; do sleep 0.2; done
`)); err != nil {
		return err
	}
	for _, n := range []string{"grace-term", "grace-ignore"} {
		if _, err := t.running(n, false); err != nil {
			return err
		}
	}
	time.Sleep(time.Second) // the traps are set
	type res struct {
		took time.Duration
		err  error
	}
	del := func(name string, grace int) res {
		t0 := time.Now()
		if err := t.c.api.delete(t.ctx, podsPath+"/"+name, grace); err != nil {
			return res{err: err}
		}
		err := t.gone(name, 60*time.Second)
		return res{time.Since(t0), err}
	}
	var term, ignore res
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); term = del("grace-term", -1) }()
	go func() { defer wg.Done(); ignore = del("grace-ignore", 4) }()
	wg.Wait()
	if term.err != nil {
		return term.err
	}
	if ignore.err != nil {
		return ignore.err
	}
	t.note("SIGTERM handler of 2 s: gone in %v; SIGTERM ignored, grace 4 s: gone in %v", term.took.Round(100*time.Millisecond), ignore.took.Round(100*time.Millisecond))
	b, _ := os.ReadFile(filepath.Join(out, "term"))
	if string(b) != "started\nTERM\ndone\n" {
		return fmt.Errorf("the SIGTERM handler did not run to its end: /out/term = %q", b)
	}
	if term.took < 2*time.Second || term.took > 12*time.Second {
		return fmt.Errorf("pod with a 2 s SIGTERM handler took %v to go", term.took)
	}
	if ignore.took < 4*time.Second || ignore.took > 15*time.Second {
		return fmt.Errorf("pod ignoring SIGTERM with grace 4 s took %v to go", ignore.took)
	}
	return nil
}

// logRotation: a container writes 8000 numbered lines over about 20 s
// while kubelet rotates its log at containerLogMaxSize (64 KiB, checked
// every 3 s). kubectl logs -f, started at once, must show every line
// exactly once and in order; the log files on disk (rotated, compressed
// and current) hold a gap-free tail of the sequence.
func logRotation(t *T) error {
	const name = "log-rotation"
	const lines = 8000
	if err := t.createPod(name, `
terminationGracePeriodSeconds: 1
containers:
- name: c
  image: `+busyboxImage+`
  command:
  - sh
  - -c
  - |
    i=1
    while [ $i -le `+strconv.Itoa(lines)+` ]; do
      j=0
      while [ $j -lt 40 ]; do echo "line $i padding-padding-padding-padding-padding-padding-padding-padding"; i=$((i+1)); j=$((j+1)); done
      sleep 0.1
    done
    echo END
    exec sleep 3600
`); err != nil {
		return err
	}
	p, err := t.running(name, false)
	if err != nil {
		return err
	}
	follow, err := t.kubectlBG(false, "logs", "-f", name)
	if err != nil {
		return err
	}
	dir := filepath.Join(t.podLogDir(p), "c")
	rotated := map[string]bool{}
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(follow.out.String(), "\nEND\n") {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.Name() != "0.log" {
				rotated[strings.TrimSuffix(e.Name(), ".gz")] = true
			}
		}
		if time.Now().After(deadline) || t.ctx.Err() != nil {
			return fmt.Errorf("kubectl logs -f: no END after 90 s; last output: %s", clip(follow.out.String(), 300))
		}
		select {
		case <-follow.done:
			if !strings.Contains(follow.out.String(), "\nEND\n") {
				return fmt.Errorf("kubectl logs -f exited (%v) before END: %s", follow.err, clip(follow.out.String(), 300))
			}
		case <-time.After(200 * time.Millisecond):
		}
	}
	follow.stop()
	if len(rotated) < 2 {
		return fmt.Errorf("kubelet rotated the log %d times, want at least 2 (files seen: %v)", len(rotated), rotated)
	}
	if err := checkSequence(follow.out.String(), 1, lines, true); err != nil {
		return fmt.Errorf("kubectl logs -f across %d rotations: %w", len(rotated), err)
	}
	// On disk: rotated files (oldest first, .gz ones decompressed) and the
	// current one, as CRI records.
	var all strings.Builder
	names, err := logFiles(dir)
	if err != nil {
		return err
	}
	for _, f := range names {
		data, err := readMaybeGzip(filepath.Join(dir, f))
		if err != nil {
			return err
		}
		recs, err := parseCRILog(data)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		for _, r := range recs {
			all.WriteString(r.msg + "\n")
		}
	}
	if err := checkSequence(all.String(), 0, lines, false); err != nil {
		return fmt.Errorf("log files %v: %w", names, err)
	}
	t.note("%d rotations seen; logs -f complete (%d lines); files now: %s", len(rotated), lines, strings.Join(names, " "))
	return nil
}

// checkSequence checks that out is "line N ..." for N = from..to, each
// once and in order, then END. from 0 means: whatever the first line is
// (older files may have been deleted by rotation).
func checkSequence(out string, from, to int, exact bool) error {
	ls := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	next := from
	for i, l := range ls {
		if l == "END" {
			if next != to+1 {
				return fmt.Errorf("END after line %d, want after %d", next-1, to)
			}
			if i != len(ls)-1 && exact {
				return fmt.Errorf("%d lines after END", len(ls)-1-i)
			}
			return nil
		}
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "line" {
			return fmt.Errorf("unexpected line %d: %q", i+1, clip(l, 100))
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			return fmt.Errorf("unexpected line %d: %q", i+1, clip(l, 100))
		}
		if next == 0 {
			next = n
		}
		if n != next {
			return fmt.Errorf("line %d is number %d, want %d (lost or repeated lines)", i+1, n, next)
		}
		next++
	}
	return fmt.Errorf("no END (last line number %d)", next-1)
}

// daemonRestart: while pods run (one with probes and a line a second, one
// of the fly flavor), the runclet daemon is stopped and started again.
// kubelet must see no container restart: same container IDs, restart
// counts 0, pods Ready, and logs, exec and new pods keep working.
func daemonRestart(t *T) error {
	rt, ok := t.c.rt.(*runcletRuntime)
	if !ok {
		return fmt.Errorf("not a runclet node")
	}
	if err := t.createPod("restart-a", `
terminationGracePeriodSeconds: 1
containers:
- name: ticker
  image: `+busyboxImage+`
  command: [sh, -c, 'i=0; while true; do echo tick-$i; i=$((i+1)); sleep 1; done']
  livenessProbe: {exec: {command: ["true"]}, periodSeconds: 2}
  readinessProbe: {exec: {command: ["true"]}, periodSeconds: 2}
- name: web
  image: `+busyboxImage+`
  command: [httpd, -f, -p, "8080", -h, /tmp]
  livenessProbe: {tcpSocket: {port: 8080}, periodSeconds: 2}
`); err != nil {
		return err
	}
	if err := t.createPod("restart-fly", "terminationGracePeriodSeconds: 1\nruntimeClassName: runclet-fly\nhostNetwork: true\nhostPID: true\nhostIPC: true\ncontainers:"+sleeper); err != nil {
		return err
	}
	before := map[string]*pod{}
	for _, n := range []string{"restart-a", "restart-fly"} {
		p, err := t.running(n, true)
		if err != nil {
			return err
		}
		before[n] = p
	}
	time.Sleep(3 * time.Second)
	t0 := time.Now()
	if err := rt.restart(3 * time.Second); err != nil {
		return fmt.Errorf("restarting the runclet daemon: %w", err)
	}
	t.note("daemon down %v (stop, 3 s pause, start)", time.Since(t0).Round(100*time.Millisecond))
	// Watch for 20 s: the node stays Ready (or is Ready again), nothing restarts.
	end := time.Now().Add(20 * time.Second)
	for time.Now().Before(end) {
		for n, b := range before {
			p, err := t.getPod(n)
			if err != nil {
				return err
			}
			for _, cs := range p.Status.ContainerStatuses {
				old := b.container(cs.Name)
				if cs.RestartCount != 0 || cs.ContainerID != old.ContainerID {
					return fmt.Errorf("pod %s container %s restarted across the daemon restart: %s (was %s)", n, cs.Name, p.summary(), old.ContainerID)
				}
			}
		}
		time.Sleep(time.Second)
	}
	var nd node
	if err := t.c.api.get(t.ctx, "/api/v1/nodes/"+nodeName, &nd); err != nil {
		return err
	}
	if ok, why := nd.ready(); !ok {
		return fmt.Errorf("node not Ready 20 s after the daemon restart: %s", why)
	}
	for n := range before {
		if _, err := t.running(n, true); err != nil {
			return fmt.Errorf("after the daemon restart: %w", err)
		}
	}
	// Logs continue, exec works, and a new pod starts.
	since := time.Now()
	a, err := t.kubectlBG(false, "logs", "-f", "restart-a", "-c", "ticker", "--since", "1s")
	if err != nil {
		return err
	}
	if _, err := a.waitOutput(t.ctx, regexp.MustCompile(`tick-\d+\n(.|\n)*tick-\d+\n`), 15*time.Second); err != nil {
		return fmt.Errorf("logs -f after the restart: %w", err)
	}
	a.stop()
	if out, err := t.kubectlOK("exec", "restart-a", "-c", "web", "--", "echo", "exec-ok"); err != nil || out != "exec-ok\n" {
		return fmt.Errorf("exec after the restart: %q %v", out, err)
	}
	if err := t.createPod("restart-new", "terminationGracePeriodSeconds: 1\ncontainers:"+sleeper); err != nil {
		return err
	}
	if _, err := t.running("restart-new", false); err != nil {
		return fmt.Errorf("new pod after the restart: %w", err)
	}
	t.note("after 20 s without restarts: logs -f, exec and a new pod worked (%v)", time.Since(since).Round(100*time.Millisecond))
	return nil
}

// supervisorKilled: the pod's stage1 supervisor is killed from the host.
// The sandbox must turn NOTREADY so that kubelet makes a new one and
// restarts the container in it, as it does when containerd's sandbox dies.
func supervisorKilled(t *T) error {
	rt, ok := t.c.rt.(*runcletRuntime)
	if !ok {
		return fmt.Errorf("not a runclet node")
	}
	const name = "sup-killed"
	if err := t.createPod(name, "terminationGracePeriodSeconds: 1\ncontainers:"+sleeper); err != nil {
		return err
	}
	p, err := t.running(name, true)
	if err != nil {
		return err
	}
	out, err := rt.cli("list", "-o", "json").Output()
	if err != nil {
		return fmt.Errorf("runclet list: %w", err)
	}
	var pods []struct{ ID, Name, Namespace, State string }
	if err := json.Unmarshal(out, &pods); err != nil {
		return err
	}
	var sandbox string
	for _, sp := range pods {
		if sp.Name == name && sp.Namespace == "default" && sp.State == "ready" {
			sandbox = sp.ID
		}
	}
	if sandbox == "" {
		return fmt.Errorf("no ready runclet pod for %s in %s", name, out)
	}
	b, err := os.ReadFile(filepath.Join(rt.runRoot, "pods", sandbox, "supervisor.pid"))
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("killing supervisor %d: %w", pid, err)
	}
	t0 := time.Now()
	old := p.container("main").ContainerID
	if _, err := t.waitPod(name, 90*time.Second, "the container restarted in a new sandbox", func(p *pod) (bool, error) {
		cs := p.container("main")
		return cs != nil && cs.RestartCount >= 1 && cs.ContainerID != old && cs.State.Running != nil && cs.Ready, nil
	}); err != nil {
		return err
	}
	t.note("running again %v after the kill", time.Since(t0).Round(100*time.Millisecond))
	return nil
}
