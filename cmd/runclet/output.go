package main

import (
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"text/template"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/runclet/runclet/internal/errdefs"
)

// listOutput is the output flags every list command takes: -q, -o
// table|wide|json|yaml, --format TEMPLATE and --filter KEY=VALUE.
type listOutput struct {
	format   string
	template string
	quiet    bool
	filters  []string
	keys     []string // the filter keys this list knows
}

func (o *listOutput) add(c *cobra.Command, what string, keys ...string) {
	c.Flags().StringVarP(&o.format, "output", "o", "table", "output format: table, wide, json or yaml")
	c.Flags().StringVar(&o.template, "format", "", "print each "+what+" with a Go template, e.g. '{{.ID}} {{.Name}}' ({{json .}} for JSON)")
	c.Flags().BoolVarP(&o.quiet, "quiet", "q", false, "print IDs only")
	if len(keys) > 0 {
		o.keys = keys
		c.Flags().StringArrayVarP(&o.filters, "filter", "f", nil, "keep only "+what+"s matching KEY=VALUE, KEY one of "+strings.Join(keys, ", ")+" (repeatable: one key's values are or'ed, different keys and'ed)")
		c.RegisterFlagCompletionFunc("filter", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			out := make([]string, len(keys))
			for i, k := range keys {
				out[i] = k + "="
			}
			return out, cobra.ShellCompDirectiveNoSpace
		})
	}
	c.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "wide", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
}

// check validates the flags before any work.
func (o *listOutput) check() error {
	switch o.format {
	case "table", "wide", "json", "yaml":
	default:
		return errdefs.InvalidArgument("--output %q: want table, wide, json or yaml", o.format)
	}
	if o.template != "" {
		if _, err := o.parse(); err != nil {
			return err
		}
	}
	for _, f := range o.filters {
		k, _, ok := strings.Cut(f, "=")
		if !ok && k != "label" {
			return errdefs.InvalidArgument("--filter %q: want KEY=VALUE", f)
		}
		known := false
		for _, key := range o.keys {
			known = known || key == k
		}
		if !known {
			return errdefs.InvalidArgument("--filter %q: unknown key %q; want one of %s", f, k, strings.Join(o.keys, ", "))
		}
	}
	return nil
}

func (o *listOutput) parse() (*template.Template, error) {
	t, err := template.New("format").Funcs(template.FuncMap{
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
		"join":  strings.Join,
		"upper": strings.ToUpper,
		"lower": strings.ToLower,
	}).Parse(o.template)
	if err != nil {
		return nil, errdefs.InvalidArgument("--format: %w", err)
	}
	return t, nil
}

// match applies the filters to one item: has answers one KEY=VALUE.
func (o *listOutput) match(has func(key, value string) bool) bool {
	byKey := map[string][]string{}
	for _, f := range o.filters {
		k, v, _ := strings.Cut(f, "=")
		byKey[k] = append(byKey[k], v)
	}
	for k, vals := range byKey {
		ok := false
		for _, v := range vals {
			ok = ok || has(k, v)
		}
		if !ok {
			return false
		}
	}
	return true
}

// render prints items as the flags ask; table draws the table (wide:
// with more columns).
func render[T any](w io.Writer, o *listOutput, items []T, id func(T) string, table func(wide bool) error) error {
	switch {
	case o.quiet:
		for _, it := range items {
			fmt.Fprintln(w, id(it))
		}
		return nil
	case o.template != "":
		t, err := o.parse()
		if err != nil {
			return err
		}
		for _, it := range items {
			if err := t.Execute(w, it); err != nil {
				return errdefs.InvalidArgument("--format: %w", err)
			}
			fmt.Fprintln(w)
		}
		return nil
	case o.format == "json":
		return printJSON(w, items)
	case o.format == "yaml":
		b, err := json.Marshal(items)
		if err != nil {
			return err
		}
		y, err := yaml.JSONToYAML(b)
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	}
	return table(o.format == "wide")
}

// globMatch matches a value against a filter value with globbing ("*"
// any characters, "/" included; "?" one), or as a plain substring when
// it has no glob characters.
func globMatch(pattern, value string) bool {
	if !strings.ContainsAny(pattern, "*?") {
		return strings.Contains(value, pattern)
	}
	re := regexp.QuoteMeta(pattern)
	re = strings.ReplaceAll(re, `\*`, ".*")
	re = strings.ReplaceAll(re, `\?`, ".")
	ok, _ := regexp.MatchString("^"+re+"$", value)
	return ok
}

// labelMatch is the filter label=KEY or label=KEY=VALUE.
func labelMatch(filter string, labels map[string]string) bool {
	k, v, hasValue := strings.Cut(filter, "=")
	got, ok := labels[k]
	return ok && (!hasValue || got == v)
}
