package kube

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// PKI is the cluster's throw-away key material, all in one directory.
type PKI struct {
	Dir                   string
	CACert, CAKey         string // the cluster CA
	ServerCert, ServerKey string // kube-apiserver's serving certificate (127.0.0.1, localhost and the IPs and names asked for)
	ClientCert, ClientKey string // kube-apiserver's client certificate to kubelet
	SAKey, SAPub          string // service-account token signing key pair
	TokenFile, Token      string // static token file and the admin token in it
}

// NewPKI makes a CA, kube-apiserver's serving certificate (valid for
// loopback, 10.0.0.1, the given ips and dnsNames), its client certificate
// to kubelets, the service-account signing keys and a static token file
// with an admin token (group system:masters).
func NewPKI(dir string, ips []net.IP, dnsNames []string) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir}
	path := func(n string) string { return filepath.Join(dir, n) }
	p.CACert, p.CAKey = path("ca.crt"), path("ca.key")
	p.ServerCert, p.ServerKey = path("apiserver.crt"), path("apiserver.key")
	p.ClientCert, p.ClientKey = path("apiserver-kubelet-client.crt"), path("apiserver-kubelet-client.key")
	p.SAKey, p.SAPub = path("sa.key"), path("sa.pub")
	p.TokenFile = path("tokens.csv")

	now := time.Now().Add(-time.Hour)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "runclet-e2enode-ca"},
		NotBefore:             now,
		NotAfter:              now.Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	if err := writeCert(p.CACert, caDER); err != nil {
		return nil, err
	}
	if err := writeECKey(p.CAKey, caKey); err != nil {
		return nil, err
	}
	leaf := func(certPath, keyPath string, serial int64, tmpl x509.Certificate) error {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = now, now.Add(48*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			return err
		}
		if err := writeCert(certPath, der); err != nil {
			return err
		}
		return writeECKey(keyPath, k)
	}
	if err := leaf(p.ServerCert, p.ServerKey, 2, x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    append([]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}, dnsNames...),
		IPAddresses: append([]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")}, ips...),
	}); err != nil {
		return nil, err
	}
	if err := leaf(p.ClientCert, p.ClientKey, 3, x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, err
	}
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.SAKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(sa)}), 0o600); err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.SAPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return nil, err
	}
	b := make([]byte, 16)
	rand.Read(b)
	p.Token = "e2enode-" + big.NewInt(0).SetBytes(b).Text(36)
	// token,user,uid,"groups": the admin of this throw-away cluster.
	if err := os.WriteFile(p.TokenFile, []byte(p.Token+`,e2enode-admin,e2enode-admin,"system:masters"`+"\n"), 0o600); err != nil {
		return nil, err
	}
	return p, nil
}

func writeCert(path string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeECKey(path string, k *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

// AddToken adds a static token for user in groups to the token file (read
// by kube-apiserver at start) and returns it.
func (p *PKI) AddToken(user string, groups ...string) (string, error) {
	b := make([]byte, 16)
	rand.Read(b)
	tok := "tok-" + big.NewInt(0).SetBytes(b).Text(36)
	f, err := os.OpenFile(p.TokenFile, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return "", err
	}
	defer f.Close()
	line := tok + "," + user + "," + user
	if len(groups) > 0 {
		line += ",\"" + strings.Join(groups, ",") + "\""
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		return "", err
	}
	return tok, nil
}
