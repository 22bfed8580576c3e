package supervisor

import (
	"bytes"
	"debug/elf"
	"testing"

	"golang.org/x/sys/unix"
)

// The holder program is a well-formed static executable whose one
// segment holds the whole file and whose entry is its code.
func TestHolderProgramIsStaticELF(t *testing.T) {
	prog := holderProgram()
	if holderCode == nil {
		t.Skip("no holder program for this architecture")
	}
	f, err := elf.NewFile(bytes.NewReader(prog))
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != elf.ET_EXEC || f.Machine != holderMachine || len(f.Progs) != 1 {
		t.Fatalf("type %v machine %v progs %d", f.Type, f.Machine, len(f.Progs))
	}
	p := f.Progs[0]
	if p.Type != elf.PT_LOAD || p.Off != 0 || p.Filesz != uint64(len(prog)) || p.Flags&elf.PF_W != 0 {
		t.Fatalf("segment %+v for %d bytes", p.ProgHeader, len(prog))
	}
	if f.Entry != p.Vaddr+64+56 || !bytes.Equal(prog[64+56:], holderCode) {
		t.Fatalf("entry %#x", f.Entry)
	}
	for _, ph := range f.Progs {
		if ph.Type == elf.PT_INTERP {
			t.Fatal("the holder program needs an interpreter")
		}
	}
}

// Every jump of the filter lands inside it, and it ends in the three
// returns: EPERM, allow, kill.
func TestHolderFilterShape(t *testing.T) {
	if holderCode == nil {
		t.Skip("no holder program for this architecture")
	}
	f := holderFilter()
	n := len(f)
	for i, ins := range f {
		if ins.Code&0x07 == unix.BPF_JMP {
			if i+1+int(ins.Jt) >= n || i+1+int(ins.Jf) >= n {
				t.Fatalf("instruction %d jumps out of the filter", i)
			}
		}
	}
	want := []uint32{unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM), unix.SECCOMP_RET_ALLOW, unix.SECCOMP_RET_KILL_PROCESS}
	for i, k := range want {
		if ins := f[n-3+i]; ins.Code != unix.BPF_RET|unix.BPF_K || ins.K != k {
			t.Fatalf("return %d is %+v", i, ins)
		}
	}
	// The arch check's false branch reaches the kill.
	if 1+1+int(f[1].Jf) != n-1 {
		t.Fatalf("foreign architecture jumps to %d, kill is %d", 2+int(f[1].Jf), n-1)
	}
	// Each allowed call's true branch reaches allow.
	for i := 3; i < n-3; i++ {
		if i+1+int(f[i].Jt) != n-2 {
			t.Fatalf("allowed call at %d jumps to %d, allow is %d", i, i+1+int(f[i].Jt), n-2)
		}
	}
}
