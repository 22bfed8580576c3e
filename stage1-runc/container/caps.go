package container

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// boundingSet is this process's capability bounding set, by "CAP_X" name.
// A container can never hold a capability outside it: asking for one makes
// libcontainer fail with "can't apply capabilities: operation not
// permitted". Hosts and nested runtimes with a reduced set (no
// CAP_SYS_RESOURCE here) are common, and "all capabilities" (privileged,
// add ALL) must mean all that this host grants, as in containerd.
var boundingSet = sync.OnceValue(func() map[string]bool {
	caps, err := capability.NewPid2(0)
	if err == nil {
		err = caps.Load()
	}
	if err != nil {
		return nil // unknown: clamp nothing, libcontainer reports the real error
	}
	set := map[string]bool{}
	for _, c := range capability.ListKnown() {
		if caps.Get(capability.BOUNDING, c) {
			set["CAP_"+strings.ToUpper(c.String())] = true
		}
	}
	return set
})

var capClampLog sync.Once

// clampCapabilities drops from every capability set of the process the
// capabilities outside this process's bounding set; it reports whether
// it dropped any.
func clampCapabilities(p *specs.Process) bool {
	bound := boundingSet()
	if p == nil || p.Capabilities == nil || bound == nil {
		return false
	}
	var dropped []string
	keep := func(list []string) []string {
		return slices.DeleteFunc(list, func(c string) bool {
			if bound[c] {
				return false
			}
			if !slices.Contains(dropped, c) {
				dropped = append(dropped, c)
			}
			return true
		})
	}
	c := p.Capabilities
	c.Bounding, c.Effective, c.Permitted, c.Inheritable, c.Ambient = keep(c.Bounding), keep(c.Effective), keep(c.Permitted), keep(c.Inheritable), keep(c.Ambient)
	if len(dropped) > 0 {
		capClampLog.Do(func() {
			fmt.Fprintf(os.Stderr, "stage1-runc: capabilities %v are outside this host's bounding set; apps do not get them\n", dropped)
		})
	}
	return len(dropped) > 0
}
