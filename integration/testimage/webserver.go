package testimage

// WebServerSource is a static-file web server standing in for nginx and
// Apache httpd in test images. Flags:
//
//	-listen ADDR    address to serve on (default ":80")
//	-root DIR       directory served; "/" gets DIR/index.html
//	-name NAME      server name for the startup line on stderr and the
//	                Server header (default: the executable's base name)
//	-pidfile PATH   where to write the PID once listening (removed on exit)
//	-title PREFIX   if set, the program first re-executes itself with
//	                argv[0] = PREFIX + " " + argv[0], the way nginx renames
//	                its master process ("nginx: master process nginx"), so
//	                /proc/PID/cmdline and ps show that title; the kernel's
//	                process name (comm) stays the executable's base name
//
// Once listening it writes "<name>: serving <root> on <addr> (pid N)" to
// stderr, then one access-log line per request to stdout. SIGTERM, SIGINT
// and SIGQUIT make it exit 0.
const WebServerSource = `package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type recorder struct {
	http.ResponseWriter
	status, size int
}

func (r *recorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.size += n
	return n, err
}

// dash is s, or "-" for an empty access-log field.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func main() {
	listen := flag.String("listen", ":80", "address to serve on")
	root := flag.String("root", ".", "directory to serve")
	name := flag.String("name", "", "server name (default: the executable's base name)")
	pidfile := flag.String("pidfile", "", "file to write the PID to")
	title := flag.String("title", "", "process title prefix")
	flag.Parse()
	if *name == "" {
		exe, _ := os.Executable()
		*name = filepath.Base(exe)
	}

	if *title != "" && !strings.HasPrefix(os.Args[0], *title+" ") {
		exe, err := os.Executable()
		if err == nil {
			argv := append([]string{*title + " " + os.Args[0]}, os.Args[1:]...)
			err = syscall.Exec(exe, argv, os.Environ())
		}
		fmt.Fprintf(os.Stderr, "%s: setting the process title: %v\n", *name, err)
		os.Exit(1)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", *name, err)
		os.Exit(1)
	}
	if *pidfile != "" {
		os.MkdirAll(filepath.Dir(*pidfile), 0o755)
		if err := os.WriteFile(*pidfile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", *name, err)
			os.Exit(1)
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "%s: exiting on %v\n", *name, s)
		if *pidfile != "" {
			os.Remove(*pidfile)
		}
		os.Exit(0)
	}()

	files := http.FileServer(http.Dir(*root))
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", *name)
		rec := &recorder{ResponseWriter: w}
		files.ServeHTTP(rec, r)
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Printf("%s - - [%s] %q %d %d %q %q\n", host, time.Now().Format("02/Jan/2006:15:04:05 -0700"),
			r.Method+" "+r.RequestURI+" "+r.Proto, rec.status, rec.size, dash(r.Referer()), dash(r.UserAgent()))
	})
	fmt.Fprintf(os.Stderr, "%s: serving %s on %s (pid %d)\n", *name, *root, ln.Addr(), os.Getpid())
	err = http.Serve(ln, handler)
	fmt.Fprintf(os.Stderr, "%s: %v\n", *name, err)
	os.Exit(1)
}
`
