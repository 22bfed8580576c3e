package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"github.com/runclet/runclet/internal/testutil"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/runclet/runclet/integration/testimage"
	"github.com/runclet/runclet/integration/testregistry"
	"github.com/runclet/runclet/integration/testsign"
)

// signingKey is a fresh P-256 key; its public half is written to a file
// for `runclet trust add --key`.
type signingKey struct {
	priv    *ecdsa.PrivateKey
	pubFile string
}

func newSigningKey(t *testing.T) signingKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "cosign.pub")
	if err := os.WriteFile(f, pem, 0o644); err != nil {
		t.Fatal(err)
	}
	return signingKey{priv: priv, pubFile: f}
}

// sign signs the image at reg/repo@d with k, cosign's tag scheme.
func (k signingKey) sign(t *testing.T, reg *testregistry.Registry, repo string, d v1.Hash) {
	t.Helper()
	r, err := name.NewRepository(reg.Host()+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	s, err := testsign.Signer(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := testsign.SignAndAttach(r, d, s); err != nil {
		t.Fatal(err)
	}
}

// distinctImage is a small image whose digest no other call shares.
func distinctImage(t *testing.T, label string) v1.Image {
	t.Helper()
	img, err := testimage.Random(1, 4096)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Labels = map[string]string{"org.runclet.test.distinct": label + "-" + time.Now().Format(time.RFC3339Nano)}
	out, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func push(t *testing.T, reg *testregistry.Registry, repoTag string, img v1.Image) v1.Hash {
	t.Helper()
	d, err := reg.Push(repoTag, img)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// noBlobs fails when the instance's store holds any blob or image.
func (in *instance) noBlobs(t *testing.T) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(in.root, "images", "blobs", "sha256"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Fatalf("a refused pull left %d blobs", len(ents))
	}
	if out := in.run("image", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("a refused pull left images: %q", out)
	}
}

// TestTrustCLI is the walk-through of docs/images.md, "Trust and
// signatures", at a shell: the default refuses an unsigned image and says
// how to proceed; trust add makes signed images pull, and unsigned ones
// under the prefix stay refused; --insecure-options=image skips the check
// once; image verify and image ls say who signed; trust rm undoes.
func TestTrustCLI(t *testing.T) {
	testutil.RequiresRoot(t, "runclet unpacks images with their owners and device nodes")
	reg := testregistry.StartTB(t)
	key := newSigningKey(t)
	signedImg, unsignedImg := distinctImage(t, "signed"), distinctImage(t, "unsigned")
	sd := push(t, reg, "app/signed:v1", signedImg)
	push(t, reg, "app/unsigned:v1", unsignedImg)
	key.sign(t, reg, "app/signed", sd)
	signed, unsigned := reg.Ref("app/signed:v1"), reg.Ref("app/unsigned:v1")
	in := newInstance(t, "[trust]\ndefault = \"reject\"\n")

	// No rule: refused, with the way out in the message.
	_, errOut, err := in.try("image", "pull", "-q", signed)
	if err == nil {
		t.Fatal("pull from a prefix with no rule succeeded")
	}
	for _, want := range []string{"no-rule", "runclet trust add " + reg.Host() + "/app/signed", "--insecure-options=image"} {
		if !strings.Contains(errOut, want) {
			t.Fatalf("refusal does not say %q:\n%s", want, errOut)
		}
	}
	in.noBlobs(t)

	out := in.run("trust", "add", reg.Host()+"/app", "--key", key.pubFile)
	if !strings.Contains(out, "signed by 1 of: key SHA256:") {
		t.Fatalf("trust add said %q", out)
	}
	if out := in.run("trust", "ls"); !strings.Contains(out, reg.Host()+"/app") || !strings.Contains(out, "signed") || !regexp.MustCompile(`\(anything else\) +reject`).MatchString(out) {
		t.Fatalf("trust ls:\n%s", out)
	}

	_, errOut, err = in.try("image", "pull", "-q", unsigned)
	if err == nil || !strings.Contains(errOut, "unsigned") || !strings.Contains(errOut, `trust rule "`+reg.Host()+`/app"`) {
		t.Fatalf("unsigned image under a signed rule: err %v\n%s", err, errOut)
	}
	in.noBlobs(t)

	in.run("image", "pull", "-q", signed)
	ls := in.run("image", "ls")
	if !strings.Contains(ls, "VERIFIED") || !strings.Contains(ls, "key SHA256:") {
		t.Fatalf("image ls:\n%s", ls)
	}
	out = in.run("image", "verify", signed)
	if !strings.Contains(out, "verified") || !strings.Contains(out, "key SHA256:") || !strings.Contains(out, sd.String()) {
		t.Fatalf("image verify:\n%s", out)
	}
	var rec struct {
		Image struct {
			Verification struct {
				Status  string `json:"status"`
				Rule    string `json:"rule"`
				Signers []struct {
					Key string `json:"key"`
				} `json:"signers"`
			} `json:"verification"`
		} `json:"image"`
	}
	if err := json.Unmarshal([]byte(in.run("image", "inspect", "--full", signed)), &rec); err != nil {
		t.Fatal(err)
	}
	if v := rec.Image.Verification; v.Status != "verified" || v.Rule != reg.Host()+"/app" || len(v.Signers) != 1 {
		t.Fatalf("image inspect --full verification: %+v", v)
	}

	// Skipped once, said on stderr, recorded as such.
	_, errOut, err = in.try("--insecure-options=image", "image", "pull", "-q", unsigned)
	if err != nil || !strings.Contains(errOut, "skipped") {
		t.Fatalf("--insecure-options=image: %v\n%s", err, errOut)
	}
	if ls := in.run("image", "ls"); !strings.Contains(ls, "no (skipped)") {
		t.Fatalf("image ls after a skipped check:\n%s", ls)
	}

	// An imported file is accepted: the user handed it over.
	archive := filepath.Join(t.TempDir(), "img.tar")
	if err := testimage.WriteOCIArchive(archive, map[string]v1.Image{reg.Host() + "/app/imported:v1": distinctImage(t, "imported")}); err != nil {
		t.Fatal(err)
	}
	in.run("image", "import", archive)
	// With --verify, an import is checked at the registry by its names:
	// an unsigned image under the signed rule is refused and removed.
	unsignedArchive := filepath.Join(t.TempDir(), "unsigned.tar")
	if err := testimage.WriteOCIArchive(unsignedArchive, map[string]v1.Image{reg.Host() + "/app/unsigned-copy:v1": unsignedImg}); err != nil {
		t.Fatal(err)
	}
	if _, errOut, err := in.try("image", "import", "--verify", unsignedArchive); err == nil || !strings.Contains(errOut, "unsigned") {
		t.Fatalf("import --verify of an unsigned image: %v\n%s", err, errOut)
	}
	if ls := in.run("image", "ls"); strings.Contains(ls, "unsigned-copy") {
		t.Fatalf("refused import left the image:\n%s", ls)
	}
	signedArchive := filepath.Join(t.TempDir(), "signed.tar")
	if err := testimage.WriteOCIArchive(signedArchive, map[string]v1.Image{signed: signedImg}); err != nil {
		t.Fatal(err)
	}
	in.run("image", "import", "--verify", signedArchive)

	in.run("trust", "rm", reg.Host()+"/app")
	in.run("image", "rm", signed)
	if _, errOut, err := in.try("image", "pull", "-q", signed); err == nil || !strings.Contains(errOut, "no-rule") {
		t.Fatalf("after trust rm: %v\n%s", err, errOut)
	}
}

// TestTrustRunImplicitPull: `runclet run` pulls through the same policy.
func TestTrustRunImplicitPull(t *testing.T) {
	pi := newPodInstance(t)
	key := newSigningKey(t)
	bb, err := testimage.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	d := push(t, pi.reg, "guarded/busybox:v1", bb)
	push(t, pi.reg, "guarded/unsigned:v1", distinctImage(t, "run-unsigned"))
	pi.run("trust", "add", pi.reg.Host()+"/guarded", "--key", key.pubFile)

	_, errOut, err := pi.try("run", "--rm", pi.reg.Ref("guarded/unsigned:v1"), "--", "true")
	if err == nil || !strings.Contains(errOut, "refused by trust rule") || !strings.Contains(errOut, "unsigned") {
		t.Fatalf("run of an unsigned image: %v\n%s", err, errOut)
	}
	pi.noBlobs(t)

	key.sign(t, pi.reg, "guarded/busybox", d)
	out := pi.run("run", "--rm", pi.reg.Ref("guarded/busybox:v1"), "--", "echo", "signed and running")
	if !strings.Contains(out, "signed and running") {
		t.Fatalf("run of a signed image printed %q", out)
	}
}

// TestTrustCRIPullImage: PullImage obeys the daemon's policy, which
// follows the policy file while the daemon runs; a refusal is
// PermissionDenied naming the image, the rule and the reason, and leaves
// nothing; ImageStatus verbose carries the verification.
func TestTrustCRIPullImage(t *testing.T) {
	ci := newCRIInstance(t)
	key := newSigningKey(t)
	d := push(t, ci.reg, "kube/app:v1", distinctImage(t, "cri-signed"))
	push(t, ci.reg, "kube/unsigned:v1", distinctImage(t, "cri-unsigned"))
	ci.startDaemon()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pull := func(ref string) (*runtimeapi.PullImageResponse, error) {
		return ci.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	}

	// The policy changes under the running daemon.
	ci.run("trust", "add", ci.reg.Host()+"/kube", "--key", key.pubFile)
	_, err := pull(ci.reg.Ref("kube/unsigned:v1"))
	st, _ := status.FromError(err)
	if st.Code() != codes.PermissionDenied {
		t.Fatalf("PullImage of an unsigned image: %v (code %v), want PermissionDenied", err, st.Code())
	}
	for _, want := range []string{ci.reg.Ref("kube/unsigned:v1"), `trust rule "` + ci.reg.Host() + `/kube"`, "unsigned"} {
		if !strings.Contains(st.Message(), want) {
			t.Fatalf("refusal %q does not name %q", st.Message(), want)
		}
	}
	ci.noBlobs(t)

	_, err = pull(ci.reg.Ref("kube/app:v1"))
	if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "unsigned") {
		t.Fatalf("PullImage before signing: %v", err)
	}
	key.sign(t, ci.reg, "kube/app", d)
	if _, err := pull(ci.reg.Ref("kube/app:v1")); err != nil {
		t.Fatalf("PullImage of a signed image: %v", err)
	}
	is, err := ci.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ci.reg.Ref("kube/app:v1")}, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	if info := is.Info["info"]; !strings.Contains(info, `"verification"`) || !strings.Contains(info, `"status":"verified"`) {
		t.Fatalf("ImageStatus verbose info: %s", info)
	}

	// A rule removed while the daemon runs: back to the instance's
	// loopback accept rule.
	ci.run("trust", "rm", ci.reg.Host()+"/kube")
	if _, err := pull(ci.reg.Ref("kube/unsigned:v1")); err != nil {
		t.Fatalf("PullImage after trust rm: %v", err)
	}
}

// TestTrustSignimageWalkthrough runs the walk-through of docs/images.md
// ("Trust and signatures") with the signimage tool: a key pair, a keyed
// signature, a keyless one with a throwaway CA, rules for both, pulls.
func TestTrustSignimageWalkthrough(t *testing.T) {
	testutil.RequiresRoot(t, "runclet unpacks images with their owners and device nodes")
	dir := t.TempDir()
	signimage := filepath.Join(dir, "signimage")
	build := exec.Command("go", "build", "-o", signimage, "github.com/runclet/runclet/integration/cmd/signimage")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building signimage: %v\n%s", err, out)
	}
	tool := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(signimage, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("signimage %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	reg := testregistry.StartTB(t)
	push(t, reg, "demo/app:v1", distinctImage(t, "walk-keyed"))
	push(t, reg, "demo/keyless:v1", distinctImage(t, "walk-keyless"))
	in := newInstance(t, "[trust]\ndefault = \"reject\"\n")
	confDir := filepath.Dir(in.config)

	tool("keygen", "-out", "cosign")
	tool("sign", "-key", "cosign.key", reg.Ref("demo/app:v1"))
	in.run("trust", "add", reg.Host()+"/demo/app", "--key", filepath.Join(dir, "cosign.pub"))
	in.run("image", "pull", "-q", reg.Ref("demo/app:v1"))

	// Keyless: the tool's CA goes where the config looks for the root.
	tool("keyless", "-subject", "dev@example.com", "-issuer", "https://issuer.example", "-root", filepath.Join(confDir, "trusted_root.json"), reg.Ref("demo/keyless:v1"))
	in.run("trust", "add", reg.Host()+"/demo/keyless", "--identity", "https://issuer.example", "someone-else@example.com")
	if _, errOut, err := in.try("image", "pull", "-q", reg.Ref("demo/keyless:v1")); err == nil || !strings.Contains(errOut, "identity-mismatch") {
		t.Fatalf("keyless pull by another identity: %v\n%s", err, errOut)
	}
	in.run("trust", "add", reg.Host()+"/demo/keyless", "--identity", "https://issuer.example", "dev@example.com")
	in.run("image", "pull", "-q", reg.Ref("demo/keyless:v1"))
	if out := in.run("image", "verify", reg.Ref("demo/keyless:v1")); !strings.Contains(out, "keyless https://issuer.example dev@example.com") {
		t.Fatalf("image verify of the keyless image:\n%s", out)
	}
	if ls := in.run("image", "ls"); !strings.Contains(ls, "keyless dev@example.com") {
		t.Fatalf("image ls:\n%s", ls)
	}
}

// TestTrustDaemonStart: the daemon warns once at start when its default
// is accept, and does not start on a policy file that does not parse.
func TestTrustDaemonStart(t *testing.T) {
	ci := newCRIInstance(t)
	policy := filepath.Join(filepath.Dir(ci.config), "trust.toml")
	if err := os.WriteFile(policy, []byte("default = \"accept\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ci.startDaemon()
	ci.stopDaemon()
	if n := strings.Count(ci.out.String(), "trust policy's default is accept"); n != 1 {
		t.Fatalf("%d warnings about the accept default, want 1:\n%s", n, ci.out)
	}

	if err := os.WriteFile(policy, []byte("[[rules]]\nprefix = \"a.io\"\naction = \"signed\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(runcletBin, "--config", ci.config, "--root", ci.root, "--run-root", ci.runRoot,
		"daemon", "--listen", "unix://"+ci.sock)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "a signed rule needs at least one key or identity") {
		t.Fatalf("daemon with a broken policy: %v\n%s", err, out)
	}
}
