package trust

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/runclet/runclet/runtime/config"
)

func pubPEM(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	b, err := cryptoutils.MarshalPublicKeyToPEM(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testKeys(t testing.TB) map[string]crypto.Signer {
	t.Helper()
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rs, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]crypto.Signer{"p256": p256, "p384": p384, "ed25519": ed, "rsa": rs}
}

func TestMatchLongestPrefixAtPathBoundary(t *testing.T) {
	p, err := Build(Reject, "", RuleSource{Name: "test", Rules: []config.TrustRule{
		{Prefix: "ghcr.io", Action: Reject},
		{Prefix: "ghcr.io/acme", Action: Accept},
		{Prefix: "ghcr.io/acme/secret/", Action: Reject},
		{Prefix: "localhost", Action: Accept},
		{Prefix: "https://index.docker.io/library", Action: Accept},
		{Prefix: "127.0.0.1:5000/ok", Action: Accept},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"ghcr.io/acme/app":            "ghcr.io/acme",
		"ghcr.io/acme":                "ghcr.io/acme",
		"ghcr.io/acmeco/app":          "ghcr.io",
		"ghcr.io/acme/secret/x":       "ghcr.io/acme/secret",
		"ghcr.io/acme/secretive":      "ghcr.io/acme",
		"localhost:5000/x":            "localhost",
		"localhost/x":                 "localhost",
		"localhostx:5000/x":           "",
		"docker.io/library/busybox":   "docker.io/library",
		"docker.io/other/busybox":     "",
		"127.0.0.1:5000/ok/app":       "127.0.0.1:5000/ok",
		"127.0.0.1:5001/ok/app":       "",
		"127.0.0.1:5000/okay":         "",
		"quay.io/ghcr.io/acme/secret": "",
	} {
		r := p.Match(name)
		got := ""
		if r != nil {
			got = r.Prefix
		}
		if got != want {
			t.Errorf("Match(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestBuildValidatesRules(t *testing.T) {
	dir := t.TempDir()
	keys := testKeys(t)
	keyFile := filepath.Join(dir, "k.pub")
	if err := os.WriteFile(keyFile, []byte(pubPEM(t, keys["p256"].Public())), 0o644); err != nil {
		t.Fatal(err)
	}
	id := config.TrustIdentity{Issuer: "https://issuer", Subject: "me@example.com"}
	good := []config.TrustRule{
		{Prefix: "a.io/x", Action: Signed, Keys: []string{"k.pub", pubPEM(t, keys["ed25519"].Public()), pubPEM(t, keys["rsa"].Public()), pubPEM(t, keys["p384"].Public())}},
		{Prefix: "b.io", Action: Signed, Identities: []config.TrustIdentity{id, {IssuerRegexp: "^https://", SubjectRegexp: "@example\\.com$"}}, Threshold: 2},
		{Prefix: "c.io", Action: Signed, Keys: []string{keyFile, keyFile}}, // the same key once
	}
	p, err := Build(Reject, dir, RuleSource{Name: "t", Rules: good})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(p.Rules[0].Keys); n != 4 {
		t.Errorf("rule a.io/x has %d keys, want 4", n)
	}
	if n := len(p.Rules[2].Keys); n != 1 {
		t.Errorf("a key listed twice counts once, got %d", n)
	}
	if !strings.HasPrefix(p.Rules[0].Keys[0].ID, "SHA256:") {
		t.Errorf("key ID %q", p.Rules[0].Keys[0].ID)
	}
	for name, bad := range map[string]config.TrustRule{
		"no signers":       {Prefix: "a.io", Action: Signed},
		"threshold high":   {Prefix: "a.io", Action: Signed, Keys: []string{keyFile}, Threshold: 2},
		"threshold neg":    {Prefix: "a.io", Action: Signed, Keys: []string{keyFile}, Threshold: -1},
		"missing key file": {Prefix: "a.io", Action: Signed, Keys: []string{"nope.pub"}},
		"not a key":        {Prefix: "a.io", Action: Signed, Keys: []string{"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}},
		"accept with key":  {Prefix: "a.io", Action: Accept, Keys: []string{keyFile}},
		"bad action":       {Prefix: "a.io", Action: "maybe"},
		"empty prefix":     {Prefix: "/", Action: Accept},
		"half identity":    {Prefix: "a.io", Action: Signed, Identities: []config.TrustIdentity{{Issuer: "x"}}},
		"both subjects":    {Prefix: "a.io", Action: Signed, Identities: []config.TrustIdentity{{Issuer: "x", Subject: "a", SubjectRegexp: "b"}}},
		"bad regexp":       {Prefix: "a.io", Action: Signed, Identities: []config.TrustIdentity{{Issuer: "x", SubjectRegexp: "("}}},
	} {
		if _, err := Build(Reject, dir, RuleSource{Name: "t", Rules: []config.TrustRule{bad}}); err == nil {
			t.Errorf("%s: accepted %+v", name, bad)
		}
	}
	if _, err := Build("signed", dir); err == nil {
		t.Error("default signed accepted")
	}
}

func TestSourceReloadsFileAndKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "trust.toml")
	cfg := config.Trust{Default: Reject, Rules: []config.TrustRule{{Prefix: "a.io", Action: Accept}}}
	src := NewSource(cfg, path)
	p, err := src.Policy()
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Match("b.io/x"); r != nil {
		t.Fatalf("no file yet, b.io matched %+v", r)
	}
	if err := Edit(cfg, path, func(f *File) error {
		AddRule(f, config.TrustRule{Prefix: "b.io", Action: Accept})
		AddRule(f, config.TrustRule{Prefix: "a.io", Action: Reject}) // the file wins
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	p, err = src.Policy()
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Match("b.io/x"); r == nil || r.Action != Accept {
		t.Fatalf("after trust add, b.io matched %+v", r)
	}
	if r := p.Match("a.io/x"); r == nil || r.Action != Reject {
		t.Fatalf("file rule should replace the config's on a.io, got %+v", r)
	}
	// A broken edit keeps the last good policy.
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(path, []byte("rules = 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err = src.Policy()
	if err != nil || p.Match("b.io/x") == nil {
		t.Fatalf("broken file: policy %v err %v, want the last good one", p, err)
	}
	// A fresh source (the CLI) reports the error.
	if _, err := NewSource(cfg, path).Policy(); err == nil {
		t.Fatal("fresh source read a broken file without error")
	}
	// Remove.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := Edit(cfg, path, func(f *File) error { return RemoveRule(f, "b.io") }); err == nil {
		t.Fatal("removing a rule the file does not have succeeded")
	}
}

func TestEditRefusesInvalidRule(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trust.toml")
	err := Edit(config.Trust{Default: Reject}, path, func(f *File) error {
		AddRule(f, config.TrustRule{Prefix: "a.io", Action: Signed})
		return nil
	})
	if err == nil {
		t.Fatal("a signed rule without signers was written")
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatal("file written despite the error")
	}
}
