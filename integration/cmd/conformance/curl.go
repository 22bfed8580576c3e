package main

// curlSrc is a stand-in for curl in the agnhost image: upstream's image is
// alpine with curl, and specs run `curl URL` in agnhost containers (the
// exec lifecycle hooks call back to a handler pod). It fetches each URL
// with GET (or -X METHOD) and writes the body to stdout (or -o FILE),
// exits 7 when it cannot connect and, with -f, 22 on an HTTP status of
// 400 or more; -s, -S, -L, -v and -k are accepted, -m/--max-time and
// --connect-timeout bound the request, -w and -H are accepted and ignored.
const curlSrc = `package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	method, out, fail := "GET", "", false
	timeout := 2 * time.Minute
	var urls []string
	args := os.Args[1:]
	for i := 0; i < len(args); i++ {
		a := args[i]
		next := func() string {
			if i+1 < len(args) {
				i++
				return args[i]
			}
			return ""
		}
		switch a {
		case "-X", "--request":
			method = next()
		case "-o", "--output":
			out = next()
		case "-f", "--fail":
			fail = true
		case "-m", "--max-time", "--connect-timeout":
			if s, err := strconv.ParseFloat(next(), 64); err == nil {
				timeout = time.Duration(s * float64(time.Second))
			}
		case "-w", "--write-out", "-H", "--header", "-d", "--data":
			next()
		default:
			if len(a) > 1 && a[0] == '-' {
				continue
			}
			urls = append(urls, a)
		}
	}
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	w := io.Writer(os.Stdout)
	if out != "" && out != "-" {
		f, err := os.Create(out)
		if err != nil {
			fmt.Fprintln(os.Stderr, "curl:", err)
			os.Exit(23)
		}
		defer f.Close()
		w = f
	}
	for _, u := range urls {
		req, err := http.NewRequest(method, u, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, "curl:", err)
			os.Exit(3)
		}
		resp, err := c.Do(req)
		if err != nil {
			fmt.Fprintln(os.Stderr, "curl:", err)
			os.Exit(7)
		}
		io.Copy(w, resp.Body)
		resp.Body.Close()
		if fail && resp.StatusCode >= 400 {
			fmt.Fprintf(os.Stderr, "curl: (22) The requested URL returned error: %d\n", resp.StatusCode)
			os.Exit(22)
		}
	}
}
`
