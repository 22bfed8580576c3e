package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// apiClient is a minimal kube-apiserver client (plain REST with the admin
// token): the harness creates, reads and deletes objects itself and keeps
// kubectl for what the scenarios test (logs, exec, attach, port-forward).
type apiClient struct {
	base  string
	token string
	hc    *http.Client
}

func newAPIClient(base, caFile, token string) (*apiClient, error) {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &apiClient{base: base, token: token, hc: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}}, nil
}

type apiError struct {
	code int
	msg  string
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.code, e.msg) }

func isNotFound(err error) bool {
	e, ok := err.(*apiError)
	return ok && e.code == http.StatusNotFound
}

func (c *apiClient) do(ctx context.Context, method, path, ctype string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		var st struct{ Message string }
		if json.Unmarshal(b, &st) == nil && st.Message != "" {
			return nil, &apiError{resp.StatusCode, st.Message}
		}
		return nil, &apiError{resp.StatusCode, strings.TrimSpace(string(b))}
	}
	return b, nil
}

// create POSTs a YAML manifest to the collection at path.
func (c *apiClient) create(ctx context.Context, path, manifest string) error {
	_, err := c.do(ctx, http.MethodPost, path, "application/yaml", []byte(manifest))
	return err
}

func (c *apiClient) get(ctx context.Context, path string, out any) error {
	b, err := c.do(ctx, http.MethodGet, path, "", nil)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

// delete deletes the object at path; grace < 0 leaves the grace period to
// the object. A missing object is not an error.
func (c *apiClient) delete(ctx context.Context, path string, grace int) error {
	var body []byte
	if grace >= 0 {
		body = fmt.Appendf(nil, `{"kind":"DeleteOptions","apiVersion":"v1","gracePeriodSeconds":%d}`, grace)
	}
	_, err := c.do(ctx, http.MethodDelete, path, "application/json", body)
	if isNotFound(err) {
		return nil
	}
	return err
}

// The parts of API objects the harness reads.

type objectMeta struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace"`
	UID               string            `json:"uid"`
	DeletionTimestamp string            `json:"deletionTimestamp"`
	Annotations       map[string]string `json:"annotations"`
}

type pod struct {
	Metadata objectMeta `json:"metadata"`
	Spec     struct {
		NodeName         string `json:"nodeName"`
		RuntimeClassName string `json:"runtimeClassName"`
	} `json:"spec"`
	Status podStatus `json:"status"`
}

type podStatus struct {
	Phase                 string            `json:"phase"`
	Reason                string            `json:"reason"`
	Message               string            `json:"message"`
	PodIP                 string            `json:"podIP"`
	HostIP                string            `json:"hostIP"`
	QOSClass              string            `json:"qosClass"`
	Conditions            []condition       `json:"conditions"`
	InitContainerStatuses []containerStatus `json:"initContainerStatuses"`
	ContainerStatuses     []containerStatus `json:"containerStatuses"`
}

type condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

type containerStatus struct {
	Name         string         `json:"name"`
	Ready        bool           `json:"ready"`
	Started      *bool          `json:"started"`
	RestartCount int            `json:"restartCount"`
	ContainerID  string         `json:"containerID"`
	Image        string         `json:"image"`
	State        containerState `json:"state"`
	LastState    containerState `json:"lastState"`
}

type containerState struct {
	Waiting *struct {
		Reason  string `json:"reason"`
		Message string `json:"message"`
	} `json:"waiting"`
	Running *struct {
		StartedAt string `json:"startedAt"`
	} `json:"running"`
	Terminated *terminated `json:"terminated"`
}

type terminated struct {
	ExitCode   int    `json:"exitCode"`
	Signal     int    `json:"signal"`
	Reason     string `json:"reason"`
	Message    string `json:"message"`
	StartedAt  string `json:"startedAt"`
	FinishedAt string `json:"finishedAt"`
}

func (s containerState) String() string {
	switch {
	case s.Waiting != nil:
		return "waiting(" + s.Waiting.Reason + ")"
	case s.Running != nil:
		return "running"
	case s.Terminated != nil:
		return fmt.Sprintf("terminated(%s, exit %d)", s.Terminated.Reason, s.Terminated.ExitCode)
	}
	return "none"
}

func (p *pod) container(name string) *containerStatus {
	for i := range p.Status.ContainerStatuses {
		if p.Status.ContainerStatuses[i].Name == name {
			return &p.Status.ContainerStatuses[i]
		}
	}
	for i := range p.Status.InitContainerStatuses {
		if p.Status.InitContainerStatuses[i].Name == name {
			return &p.Status.InitContainerStatuses[i]
		}
	}
	return nil
}

func (p *pod) condition(typ string) string {
	for _, c := range p.Status.Conditions {
		if c.Type == typ {
			return c.Status
		}
	}
	return ""
}

// summary is a one-line description of the pod for failure messages.
func (p *pod) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "phase=%s", p.Status.Phase)
	if p.Status.Reason != "" {
		fmt.Fprintf(&b, " reason=%s", p.Status.Reason)
	}
	for _, cs := range append(append([]containerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		fmt.Fprintf(&b, " [%s: %s ready=%v restarts=%d", cs.Name, cs.State, cs.Ready, cs.RestartCount)
		if cs.LastState.Terminated != nil {
			fmt.Fprintf(&b, " last=%s", cs.LastState)
		}
		if cs.State.Waiting != nil && cs.State.Waiting.Message != "" {
			fmt.Fprintf(&b, " msg=%q", cs.State.Waiting.Message)
		}
		b.WriteString("]")
	}
	return b.String()
}

type node struct {
	Metadata objectMeta `json:"metadata"`
	Status   struct {
		Conditions []condition `json:"conditions"`
		Addresses  []struct {
			Type    string `json:"type"`
			Address string `json:"address"`
		} `json:"addresses"`
		NodeInfo struct {
			ContainerRuntimeVersion string `json:"containerRuntimeVersion"`
			KubeletVersion          string `json:"kubeletVersion"`
		} `json:"nodeInfo"`
	} `json:"status"`
}

func (n *node) ready() (bool, string) {
	for _, c := range n.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True", c.Reason + ": " + c.Message
		}
	}
	return false, "no Ready condition"
}

type event struct {
	Reason         string `json:"reason"`
	Message        string `json:"message"`
	Type           string `json:"type"`
	Count          int    `json:"count"`
	InvolvedObject struct {
		Name      string `json:"name"`
		FieldPath string `json:"fieldPath"`
	} `json:"involvedObject"`
}
