// Command signimage signs images in a registry the way cosign does, with
// sigstore's libraries (the same code runclet's tests sign with), so the
// trust walk-through in docs/images.md needs no other tool:
//
//	signimage keygen [-type ecdsa-p256|ecdsa-p384|ed25519|rsa] [-out cosign]
//	    writes cosign.key (PKCS#8 PEM, unencrypted: for tests and demos)
//	    and cosign.pub
//	signimage sign -key cosign.key IMAGE
//	    signs the manifest IMAGE resolves to: cosign's tag scheme
//	    (sha256-<digest>.sig, simple-signing payload)
//	signimage keyless -subject me@example.com -issuer https://issuer.example -root trusted_root.json IMAGE
//	    signs keylessly with a throwaway test CA and transparency log
//	    (sigstore-go's virtual sigstore), attaches a sigstore bundle as an
//	    OCI referrer, and writes that CA's trusted root for runclet
//
// Registries on loopback are spoken to over plain HTTP; -insecure allows
// it for others. Credentials come from ~/.docker/config.json.
package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"flag"
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/runclet/runclet/integration/testsign"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "keygen":
		err = keygen(os.Args[2:])
	case "sign":
		err = sign(os.Args[2:])
	case "keyless":
		err = keyless(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "signimage:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: signimage keygen [-type T] [-out PREFIX] | sign -key FILE IMAGE | keyless -subject S -issuer I -root FILE IMAGE")
	os.Exit(2)
}

func keygen(args []string) error {
	fs := flag.NewFlagSet("keygen", flag.ExitOnError)
	typ := fs.String("type", "ecdsa-p256", "ecdsa-p256, ecdsa-p384, ed25519 or rsa")
	out := fs.String("out", "cosign", "write OUT.key and OUT.pub")
	fs.Parse(args)
	var priv crypto.Signer
	var err error
	switch *typ {
	case "ecdsa-p256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ecdsa-p384":
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ed25519":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case "rsa":
		priv, err = rsa.GenerateKey(rand.Reader, 3072)
	default:
		return fmt.Errorf("-type %q: want ecdsa-p256, ecdsa-p384, ed25519 or rsa", *typ)
	}
	if err != nil {
		return err
	}
	privPEM, err := cryptoutils.MarshalPrivateKeyToPEM(priv)
	if err != nil {
		return err
	}
	pubPEM, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out+".key", privPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(*out+".pub", pubPEM, 0o644); err != nil {
		return err
	}
	fmt.Printf("wrote %s.key and %s.pub (%s)\n", *out, *out, *typ)
	return nil
}

// resolve is the repository and manifest digest IMAGE names.
func resolve(image string, insecure bool) (name.Repository, v1.Hash, []remote.Option, error) {
	var nopts []name.Option
	if insecure {
		nopts = append(nopts, name.Insecure)
	}
	ref, err := name.ParseReference(image, nopts...)
	if err != nil {
		return name.Repository{}, v1.Hash{}, nil, err
	}
	opts := []remote.Option{remote.WithAuthFromKeychain(authn.DefaultKeychain)}
	desc, err := remote.Head(ref, opts...)
	if err != nil {
		return name.Repository{}, v1.Hash{}, nil, fmt.Errorf("resolving %s: %w", image, err)
	}
	return ref.Context(), desc.Digest, opts, nil
}

func sign(args []string) error {
	fs := flag.NewFlagSet("sign", flag.ExitOnError)
	keyFile := fs.String("key", "cosign.key", "private key (PEM, unencrypted)")
	insecure := fs.Bool("insecure", false, "plain HTTP to a registry that is not on loopback")
	fs.Parse(args)
	if fs.NArg() != 1 {
		usage()
	}
	data, err := os.ReadFile(*keyFile)
	if err != nil {
		return err
	}
	priv, err := cryptoutils.UnmarshalPEMToPrivateKey(data, cryptoutils.SkipPassword)
	if err != nil {
		return fmt.Errorf("%s: %w", *keyFile, err)
	}
	s, err := testsign.Signer(priv)
	if err != nil {
		return err
	}
	repo, d, opts, err := resolve(fs.Arg(0), *insecure)
	if err != nil {
		return err
	}
	if err := testsign.SignAndAttach(repo, d, s, opts...); err != nil {
		return err
	}
	fmt.Printf("signed %s@%s (tag %s)\n", repo, d, testsign.SigTag(repo, d).TagStr())
	return nil
}

func keyless(args []string) error {
	fs := flag.NewFlagSet("keyless", flag.ExitOnError)
	subject := fs.String("subject", "", "the signer's identity (an email or URI) in the certificate")
	issuer := fs.String("issuer", "", "the OIDC issuer in the certificate")
	rootOut := fs.String("root", "trusted_root.json", "write the test CA's trusted root here")
	insecure := fs.Bool("insecure", false, "plain HTTP to a registry that is not on loopback")
	fs.Parse(args)
	if fs.NArg() != 1 || *subject == "" || *issuer == "" {
		usage()
	}
	repo, d, opts, err := resolve(fs.Arg(0), *insecure)
	if err != nil {
		return err
	}
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		return err
	}
	b, err := testsign.KeylessBundle(vs, *subject, *issuer, repo, d)
	if err != nil {
		return err
	}
	if err := testsign.AttachBundle(repo, d, b, opts...); err != nil {
		return err
	}
	rootJSON, err := testsign.TrustedRootJSON(vs)
	if err != nil {
		return err
	}
	if err := os.WriteFile(*rootOut, rootJSON, 0o644); err != nil {
		return err
	}
	fmt.Printf("signed %s@%s as %s (%s); trusted root of the test CA in %s\n", repo, d, *subject, *issuer, *rootOut)
	return nil
}
