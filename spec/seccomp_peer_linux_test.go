package spec

import (
	"fmt"
	"slices"
	"testing"

	mobyseccomp "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// peerLooser names the syscalls RuntimeDefault may allow where moby's
// default profile does not, each with the reason. Empty: runclet's profile
// allows nothing moby's refuses. containerd 2.x's profile (not a Go module
// a test can import cheaply) is compared by hand in docs/spec.md.
var peerLooser = map[string]string{}

// ruleMatches reports whether r allows the syscall when argument r.Args'
// index holds v (the other arguments 0).
func ruleMatches(r specs.LinuxSyscall, index uint, v uint64) bool {
	for _, a := range r.Args {
		x := uint64(0)
		if a.Index == index {
			x = v
		}
		var ok bool
		switch a.Op {
		case specs.OpEqualTo:
			ok = x == a.Value
		case specs.OpNotEqual:
			ok = x != a.Value
		case specs.OpLessThan:
			ok = x < a.Value
		case specs.OpLessEqual:
			ok = x <= a.Value
		case specs.OpGreaterThan:
			ok = x > a.Value
		case specs.OpGreaterEqual:
			ok = x >= a.Value
		case specs.OpMaskedEqual:
			ok = x&a.Value == a.ValueTwo
		}
		if !ok {
			return false
		}
	}
	return true
}

// allowsWith reports whether profile p allows syscall name with argument
// index set to v.
func allowsWith(p *specs.LinuxSeccomp, name string, index uint, v uint64) bool {
	for _, r := range p.Syscalls {
		if r.Action == specs.ActAllow && slices.Contains(r.Names, name) && ruleMatches(r, index, v) {
			return true
		}
	}
	return false
}

// probeValues are the argument values tried against a filtered rule: its
// own comparison values and their neighbours, every socket family, every
// single bit, and the extremes.
func probeValues(r specs.LinuxSyscall) []uint64 {
	vals := []uint64{0, 0xffffffff, ^uint64(0)}
	for v := uint64(0); v < 64; v++ {
		vals = append(vals, v, 1<<v)
	}
	for _, a := range r.Args {
		vals = append(vals, a.Value, a.Value+1, a.Value-1, a.ValueTwo, a.Value|a.ValueTwo)
	}
	return vals
}

// looserThan returns, for the syscalls ours allows and peer does not (for
// some argument value), one example each.
func looserThan(ours, peer *specs.LinuxSeccomp) map[string]string {
	out := map[string]string{}
	for _, r := range ours.Syscalls {
		if r.Action != specs.ActAllow {
			continue
		}
		for _, name := range r.Names {
			if len(r.Args) == 0 {
				// Unconditional here: the peer must allow every value.
				for _, v := range probeValues(r) {
					if !allowsWith(peer, name, 0, v) {
						out[name] = "allowed for any arguments"
						break
					}
				}
				continue
			}
			for _, a := range r.Args {
				for _, v := range probeValues(r) {
					if ruleMatches(r, a.Index, v) && !allowsWith(peer, name, a.Index, v) {
						out[name] = fmt.Sprintf("allowed with argument %d = %#x", a.Index, v)
					}
				}
			}
		}
	}
	return out
}

// TestRuntimeDefaultWithinMoby fails on any syscall (or argument value) the
// RuntimeDefault profile allows and moby's default profile does not, for
// the default capabilities and for each capability added alone.
func TestRuntimeDefaultWithinMoby(t *testing.T) {
	capSets := [][]string{DefaultCapabilities(), AllCapabilities()}
	for _, c := range AllCapabilities() {
		if !slices.Contains(defaultCapabilities, c) {
			capSets = append(capSets, append(DefaultCapabilities(), c))
		}
	}
	for _, caps := range capSets {
		ours := buildProfile(runtimeDefaultRules, specs.ActErrno, errnoEPERM, targetArch, caps)
		peer, err := mobyseccomp.GetDefaultProfile(&specs.Spec{Process: &specs.Process{
			Capabilities: &specs.LinuxCapabilities{Bounding: caps},
		}})
		if err != nil {
			t.Fatal(err)
		}
		for name, how := range looserThan(ours, peer) {
			if _, ok := peerLooser[name]; !ok {
				t.Errorf("caps %v: %s is %s, which moby's default profile refuses", caps, name, how)
			}
		}
	}
}

// The comparison itself must see a difference: a profile that allows
// io_uring, every socket family and a plain clone is looser than moby's.
func TestLooserThanFindsDifferences(t *testing.T) {
	peer, err := mobyseccomp.GetDefaultProfile(&specs.Spec{Process: &specs.Process{
		Capabilities: &specs.LinuxCapabilities{Bounding: DefaultCapabilities()},
	}})
	if err != nil {
		t.Fatal(err)
	}
	loose := &specs.LinuxSeccomp{Syscalls: []specs.LinuxSyscall{
		{Names: []string{"read", "io_uring_setup", "socket"}, Action: specs.ActAllow},
		{Names: []string{"clone"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Value: 0x10000000, Op: specs.OpMaskedEqual, ValueTwo: 0}}},
	}}
	got := looserThan(loose, peer)
	for _, want := range []string{"io_uring_setup", "socket", "clone"} {
		if _, ok := got[want]; !ok {
			t.Errorf("%s not reported: %v", want, got)
		}
	}
	if _, ok := got["read"]; ok {
		t.Errorf("read reported: %v", got)
	}
}
