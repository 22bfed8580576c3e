// Command stage1-runc is the per-pod supervisor. The pods issue builds it
// out; until then it only reports its version so the build and install
// targets have both binaries.
package main

import (
	"fmt"
	"os"
)

var version = "dev"

func main() {
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Println("stage1-runc", version)
		return
	}
	fmt.Fprintln(os.Stderr, "stage1-runc: the pod supervisor is not implemented yet (see docs/stage1-contract.md)")
	os.Exit(2)
}
