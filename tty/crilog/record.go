package crilog

import (
	"bytes"
	"fmt"
	"time"

	"github.com/runclet/runclet/internal/errdefs"
)

// Record is one parsed line of a CRI log file.
type Record struct {
	Time    time.Time
	Stream  Stream
	Partial bool
	// Content aliases the line passed to ParseRecord; copy it to keep it.
	Content []byte
}

// ParseRecord parses one record line without its trailing newline. Tags may
// carry ':'-separated extensions after P or F (the CRI format reserves them);
// only the first is interpreted. A missing space after the tag is accepted as
// empty content, since some writers drop it for empty lines.
func ParseRecord(line []byte) (Record, error) {
	var r Record
	i := bytes.IndexByte(line, ' ')
	if i < 0 {
		return r, errdefs.InvalidArgument("crilog: malformed record %.40q: no timestamp delimiter", line)
	}
	t, err := parseTime(line[:i])
	if err != nil {
		return r, errdefs.InvalidArgument("crilog: malformed record %.40q: %w", line, err)
	}
	r.Time = t
	rest := line[i+1:]
	switch {
	case bytes.HasPrefix(rest, []byte("stdout ")):
		r.Stream = Stdout
		rest = rest[len("stdout "):]
	case bytes.HasPrefix(rest, []byte("stderr ")):
		r.Stream = Stderr
		rest = rest[len("stderr "):]
	default:
		return Record{}, errdefs.InvalidArgument("crilog: malformed record %.40q: stream is not stdout or stderr", line)
	}
	tag := rest
	if j := bytes.IndexByte(rest, ' '); j >= 0 {
		tag, r.Content = rest[:j], rest[j+1:]
	}
	if k := bytes.IndexByte(tag, ':'); k >= 0 {
		tag = tag[:k]
	}
	switch string(tag) {
	case "P":
		r.Partial = true
	case "F":
	default:
		return Record{}, errdefs.InvalidArgument("crilog: malformed record %.40q: tag is not P or F", line)
	}
	return r, nil
}

// parseTime reads the timestamp. Our own writer's fixed layout
// (YYYY-MM-DDTHH:MM:SS.fffffffffZ) is parsed by hand, without allocating;
// anything else RFC 3339 (containerd writes local time with an offset) goes
// through time.Parse.
func parseTime(b []byte) (time.Time, error) {
	if t, ok := parseUTC(b); ok {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return time.Time{}, fmt.Errorf("timestamp: %w", err)
	}
	return t, nil
}

func parseUTC(b []byte) (time.Time, bool) {
	// 2006-01-02T15:04:05Z is the shortest form handled here.
	if len(b) < 20 || b[len(b)-1] != 'Z' || b[4] != '-' || b[7] != '-' ||
		b[10] != 'T' || b[13] != ':' || b[16] != ':' {
		return time.Time{}, false
	}
	num := func(s []byte) (int, bool) {
		n := 0
		for _, c := range s {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	year, ok1 := num(b[0:4])
	mon, ok2 := num(b[5:7])
	day, ok3 := num(b[8:10])
	hh, ok4 := num(b[11:13])
	mm, ok5 := num(b[14:16])
	ss, ok6 := num(b[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) ||
		mon < 1 || mon > 12 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 59 {
		return time.Time{}, false
	}
	nsec := 0
	frac := b[19 : len(b)-1]
	if len(frac) > 0 {
		if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
			return time.Time{}, false
		}
		digits := frac[1:]
		n, ok := num(digits)
		if !ok {
			return time.Time{}, false
		}
		for i := len(digits); i < 9; i++ {
			n *= 10
		}
		nsec = n
	}
	t := time.Date(year, time.Month(mon), day, hh, mm, ss, nsec, time.UTC)
	if t.Day() != day { // Feb 30 and the like normalise; reject them
		return time.Time{}, false
	}
	return t, true
}
