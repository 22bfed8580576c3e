package network

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
)

// removeMasqRules deletes the per-pod masquerade rules the bridge and ptp
// plugins (ipMasq) put in the nat table's POSTROUTING chain, and the chains
// they jump to. Those plugins find the addresses to unmasquerade on the
// pod's interface, so a DEL without the namespace (the pod's namespace was
// already gone) leaves the rules behind. The rules carry the comment
// `name: "<network>" id: "<pod>"`; only rules with exactly that comment,
// and CNI-* chains they jump to, are touched. Tools that are not installed
// are skipped (then there are no such rules either).
func removeMasqRules(ctx context.Context, network, podID string) error {
	comment := fmt.Sprintf("name: %q id: %q", network, podID)
	var errs []error
	for _, fam := range [][2]string{{"iptables-save", "iptables"}, {"ip6tables-save", "ip6tables"}} {
		save, err1 := exec.LookPath(fam[0])
		tool, err2 := exec.LookPath(fam[1])
		if err1 != nil || err2 != nil {
			continue
		}
		out, err := exec.CommandContext(ctx, save, "-t", "nat").Output()
		if err != nil {
			// e.g. no IPv6 nat support in this kernel: nothing to clean there.
			slog.DebugContext(ctx, "cannot list nat rules", "tool", save, "err", err)
			continue
		}
		for _, line := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(line, "-A POSTROUTING ") || !strings.Contains(line, "id: \\\""+podID+"\\\"") {
				continue
			}
			args, err := splitRuleSpec(line)
			if err != nil || optionValue(args, "--comment") != comment {
				continue
			}
			target := optionValue(args, "-j")
			args[0] = "-D"
			if err := runIPTables(ctx, tool, append([]string{"-t", "nat"}, args...)...); err != nil {
				errs = append(errs, err)
				continue
			}
			if strings.HasPrefix(target, "CNI-") {
				if err := runIPTables(ctx, tool, "-t", "nat", "-F", target); err != nil {
					errs = append(errs, err)
					continue
				}
				if err := runIPTables(ctx, tool, "-t", "nat", "-X", target); err != nil {
					errs = append(errs, err)
				}
			}
			slog.DebugContext(ctx, "removed leftover masquerade rule", "pod", podID, "network", network, "chain", target)
		}
	}
	return errors.Join(errs...)
}

func runIPTables(ctx context.Context, tool string, args ...string) error {
	cmd := exec.CommandContext(ctx, tool, append([]string{"-w"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// optionValue returns the argument following opt in args, or "".
func optionValue(args []string, opt string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == opt {
			return args[i+1]
		}
	}
	return ""
}

// splitRuleSpec splits one line of iptables-save output into arguments:
// words are separated by spaces; a double-quoted word may contain spaces
// and backslash-escaped quotes and backslashes.
func splitRuleSpec(line string) ([]string, error) {
	var args []string
	var cur strings.Builder
	inWord, inQuote := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case inQuote && c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case c == '"':
			inQuote = !inQuote
			inWord = true
		case !inQuote && (c == ' ' || c == '\t'):
			if inWord {
				args = append(args, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inQuote {
		return nil, fmt.Errorf("unterminated quote in %q", line)
	}
	if inWord {
		args = append(args, cur.String())
	}
	return args, nil
}
