package testimage

// ProcToolsSource is a small multi-call program for the applets Debian's
// busybox builds lack but container tests expect in a busybox image: it acts
// as pgrep or ipcs depending on the name it is run as (argv[0]'s base name).
//
//	pgrep [-f] [-x] [-l|-a] [-v] PATTERN
//	    prints the PIDs of the processes whose name (/proc/PID/comm; with -f
//	    the whole command line) matches the regular expression PATTERN, one
//	    a line, never its own; exits 0 if any matched, 1 if none, 2 on a
//	    usage error, like procps pgrep.
//	ipcs [-a] [-m] [-q] [-s]
//	    lists the System V IPC objects of the IPC namespace it runs in, read
//	    from /proc/sysvipc, in the table layout of util-linux ipcs (all
//	    three kinds without options).
//
// DynamicBusybox installs it as /usr/bin/ipcs and /usr/bin/pgrep.
const ProcToolsSource = `package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

func main() {
	switch filepath.Base(os.Args[0]) {
	case "pgrep":
		os.Exit(pgrep(os.Args[1:]))
	case "ipcs":
		os.Exit(ipcs(os.Args[1:]))
	}
	fmt.Fprintf(os.Stderr, "%s: run me as pgrep or ipcs\n", os.Args[0])
	os.Exit(2)
}

// flags splits args into single-letter options (clustered or not) and
// operands; "--" ends the options.
func flags(args []string) (map[byte]bool, []string) {
	opts := map[byte]bool{}
	for i, a := range args {
		if a == "--" {
			return opts, args[i+1:]
		}
		if len(a) < 2 || a[0] != '-' {
			return opts, args[i:]
		}
		for j := 1; j < len(a); j++ {
			opts[a[j]] = true
		}
	}
	return opts, nil
}

func pgrep(args []string) int {
	opts, rest := flags(args)
	for o := range opts {
		if !strings.ContainsRune("fxlav", rune(o)) {
			fmt.Fprintf(os.Stderr, "pgrep: invalid option -- '%c'\n", o)
			return 2
		}
	}
	if len(rest) != 1 {
		fmt.Fprintln(os.Stderr, "usage: pgrep [-f] [-x] [-l|-a] [-v] PATTERN")
		return 2
	}
	pat := rest[0]
	if opts['x'] {
		pat = "^(?:" + pat + ")$"
	}
	re, err := regexp.Compile(pat)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgrep: bad pattern %q: %v\n", rest[0], err)
		return 2
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgrep:", err)
		return 3
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid != self {
			pids = append(pids, pid)
		}
	}
	found := 1
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for _, pid := range pids {
		dir := "/proc/" + strconv.Itoa(pid)
		comm, err := os.ReadFile(dir + "/comm")
		if err != nil {
			continue // gone, or not ours to read
		}
		name := strings.TrimSuffix(string(comm), "\n")
		raw, _ := os.ReadFile(dir + "/cmdline")
		cmdline := strings.TrimSpace(strings.ReplaceAll(string(raw), "\x00", " "))
		subject := name
		if opts['f'] {
			subject = cmdline
		}
		if re.MatchString(subject) == opts['v'] {
			continue
		}
		found = 0
		switch {
		case opts['a'] && cmdline != "":
			fmt.Fprintf(w, "%d %s\n", pid, cmdline)
		case opts['a'] || opts['l']:
			fmt.Fprintf(w, "%d %s\n", pid, name)
		default:
			fmt.Fprintf(w, "%d\n", pid)
		}
	}
	return found
}

// sysvipc reads /proc/sysvipc/<kind> as one map per object, keyed by the
// column names of its header line.
func sysvipc(kind string) ([]map[string]string, error) {
	b, err := os.ReadFile("/proc/sysvipc/" + kind)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	head := strings.Fields(lines[0])
	var rows []map[string]string
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) < len(head) {
			continue
		}
		row := map[string]string{}
		for i, h := range head {
			row[h] = f[i]
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// users maps uids to names from /etc/passwd.
func users() map[string]string {
	m := map[string]string{}
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return m
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Split(l, ":"); len(f) > 2 {
			if _, ok := m[f[2]]; !ok {
				m[f[2]] = f[0]
			}
		}
	}
	return m
}

func ipcs(args []string) int {
	opts, rest := flags(args)
	for o := range opts {
		if !strings.ContainsRune("amqs", rune(o)) {
			fmt.Fprintf(os.Stderr, "ipcs: invalid option -- '%c'\n", o)
			return 1
		}
	}
	if len(rest) > 0 {
		fmt.Fprintln(os.Stderr, "usage: ipcs [-a] [-m] [-q] [-s]")
		return 1
	}
	all := opts['a'] || !(opts['m'] || opts['q'] || opts['s'])
	names := users()
	owner := func(r map[string]string) string {
		if n, ok := names[r["uid"]]; ok {
			return n
		}
		return r["uid"]
	}
	key := func(r map[string]string) string {
		k, _ := strconv.ParseInt(r["key"], 10, 64)
		return fmt.Sprintf("0x%08x", uint32(k))
	}
	perms := func(r map[string]string) (mode int64) {
		mode, _ = strconv.ParseInt(r["perms"], 8, 64)
		return mode
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	status := 0
	show := func(kind, title, head string, line func(map[string]string) string) {
		rows, err := sysvipc(kind)
		if err != nil {
			fmt.Fprintln(os.Stderr, "ipcs:", err)
			status = 1
			return
		}
		fmt.Fprintf(w, "\n------ %s --------\n%s\n", title, head)
		for _, r := range rows {
			fmt.Fprintln(w, line(r))
		}
		fmt.Fprintln(w)
	}
	if all || opts['q'] {
		show("msg", "Message Queues",
			fmt.Sprintf("%-10s %-10s %-10s %-10s %-12s %-12s", "key", "msqid", "owner", "perms", "used-bytes", "messages"),
			func(r map[string]string) string {
				return fmt.Sprintf("%-10s %-10s %-10.10s %-10o %-12s %-12s",
					key(r), r["msqid"], owner(r), perms(r)&0o777, r["cbytes"], r["qnum"])
			})
	}
	if all || opts['m'] {
		show("shm", "Shared Memory Segments",
			fmt.Sprintf("%-10s %-10s %-10s %-10s %-10s %-10s %-12s", "key", "shmid", "owner", "perms", "bytes", "nattch", "status"),
			func(r map[string]string) string {
				mode := perms(r)
				var st []string
				if mode&0o1000 != 0 {
					st = append(st, "dest")
				}
				if mode&0o2000 != 0 {
					st = append(st, "locked")
				}
				return fmt.Sprintf("%-10s %-10s %-10.10s %-10o %-10s %-10s %-12s",
					key(r), r["shmid"], owner(r), mode&0o777, r["size"], r["nattch"], strings.Join(st, " "))
			})
	}
	if all || opts['s'] {
		show("sem", "Semaphore Arrays",
			fmt.Sprintf("%-10s %-10s %-10s %-10s %-10s", "key", "semid", "owner", "perms", "nsems"),
			func(r map[string]string) string {
				return fmt.Sprintf("%-10s %-10s %-10.10s %-10o %-10s",
					key(r), r["semid"], owner(r), perms(r)&0o777, r["nsems"])
			})
	}
	return status
}
`
