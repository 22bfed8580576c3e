package proto

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/runclet/runclet/internal/errdefs"
)

// endless is an endless line of 'a' that counts what was read of it.
type endless struct{ n int }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	e.n += len(p)
	return len(p), nil
}

// A request line without end is refused once past MaxRequestLine, having
// read no more than that (and one buffer) of it (issue 11, item 12).
func TestReadRequestRefusesHugeLine(t *testing.T) {
	src := &endless{}
	_, err := ReadRequest(bufio.NewReader(src))
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("err = %v, want InvalidArgument: line too long", err)
	}
	if src.n > MaxRequestLine+64<<10 {
		t.Fatalf("read %d bytes of an endless line; limit %d", src.n, MaxRequestLine)
	}
	// Just below the limit is fine.
	line := `{"version":1,"method":"Hello","params":{"pad":"` + strings.Repeat("x", MaxRequestLine-100) + `"}}` + "\n"
	if len(line) > MaxRequestLine {
		t.Fatal("test line too long")
	}
	req, err := ReadRequest(bufio.NewReader(strings.NewReader(line)))
	if err != nil || req.Method != "Hello" {
		t.Fatalf("request at the limit: %v %+v", err, req.Method)
	}
	// A partial line at EOF is a read error, not a request.
	if _, err := ReadRequest(bufio.NewReader(strings.NewReader(`{"version":1`))); err != io.EOF {
		t.Fatalf("partial line: %v", err)
	}
}

// FuzzReadRequest feeds the supervisor's request decoder arbitrary input:
// it never panics, never returns a line past its bound, and what it
// accepts survives a round trip.
func FuzzReadRequest(f *testing.F) {
	f.Add([]byte(`{"version":1,"method":"Hello"}` + "\n"))
	f.Add([]byte(`{"version":1,"method":"AddApp","params":{"name":"a","containerID":"c","bundle":"/b","exitFile":"/e"}}` + "\n"))
	f.Add([]byte(`{"version":1,"method":"Exec","params":{"name":"a","args":["sh","-c","x"],"tty":true,"width":80}}` + "\n"))
	f.Add([]byte("\n"))
	f.Add([]byte(`{"version":1,"method":"Stats","params":null}` + "\n{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 512
		line, err := ReadLine(bufio.NewReaderSize(bytes.NewReader(data), 16), max)
		if len(line) > max {
			t.Fatalf("ReadLine returned %d bytes, bound %d", len(line), max)
		}
		if err == nil && (len(line) == 0 || line[len(line)-1] != '\n') {
			t.Fatalf("ReadLine returned %q without error and without a newline", line)
		}
		req, err := ReadRequest(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			return
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("accepted request does not marshal: %v", err)
		}
		var again Request
		if err := json.Unmarshal(b, &again); err != nil || again.Method != req.Method || again.Version != req.Version {
			t.Fatalf("round trip: %v %+v %+v", err, req, again)
		}
		for _, p := range []any{&AddAppParams{}, &ExecParams{}, &StopAppParams{}, &UpdateAppParams{}, &AttachParams{}, &StatsParams{}} {
			json.Unmarshal(req.Params, p) // the handlers' decode: must not panic
		}
		var resp Response
		if json.Unmarshal(data, &resp) == nil && resp.Error != nil {
			_ = resp.Error.Err()
		}
	})
}
