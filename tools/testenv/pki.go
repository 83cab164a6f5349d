package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki holds the files the control plane needs: a CA that signs the apiserver's serving
// certificate and every client certificate, and the service-account signing key pair.
type pki struct {
	caFile       string // CA certificate (PEM); --client-ca-file, kubeconfig CA, --root-ca-file
	servingCert  string // apiserver serving certificate
	servingKey   string
	adminCert    string // CN=testenv-admin, O=system:masters
	adminKey     string
	kcmCert      string // CN=system:kube-controller-manager, O=system:masters
	kcmKey       string
	saPrivateKey string // RSA key that signs service-account tokens
	saPublicKey  string // its public half, used to verify them
	caPEM        []byte
	adminCertPEM []byte
	adminKeyPEM  []byte
	kcmCertPEM   []byte
	kcmKeyPEM    []byte
}

// caBundle is a CA certificate together with the key that signs leaves.
type caBundle struct {
	cert *x509.Certificate
	key  crypto.Signer
}

const certValidity = 7 * 24 * time.Hour

// newPKI writes a fresh CA, serving and client certificates and a service-account key pair
// into dir. Keys are ECDSA P-256 (CA and leaves) and RSA-2048 (service accounts).
func newPKI(dir string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &pki{
		caFile:       filepath.Join(dir, "ca.crt"),
		servingCert:  filepath.Join(dir, "apiserver.crt"),
		servingKey:   filepath.Join(dir, "apiserver.key"),
		adminCert:    filepath.Join(dir, "admin.crt"),
		adminKey:     filepath.Join(dir, "admin.key"),
		kcmCert:      filepath.Join(dir, "kube-controller-manager.crt"),
		kcmKey:       filepath.Join(dir, "kube-controller-manager.key"),
		saPrivateKey: filepath.Join(dir, "sa.key"),
		saPublicKey:  filepath.Join(dir, "sa.pub"),
	}

	ca, caPEM, caKeyPEM, err := newCA("testenv-ca")
	if err != nil {
		return nil, fmt.Errorf("creating CA: %w", err)
	}
	p.caPEM = caPEM
	if err := writeFile(p.caFile, caPEM); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, "ca.key"), caKeyPEM); err != nil {
		return nil, err
	}

	servingCertPEM, servingKeyPEM, err := ca.issue(leafSpec{
		commonName: "kube-apiserver",
		dnsNames:   []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		ips:        []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("10.0.0.1")},
		usage:      x509.ExtKeyUsageServerAuth,
	})
	if err != nil {
		return nil, fmt.Errorf("creating serving certificate: %w", err)
	}
	if err := writeFile(p.servingCert, servingCertPEM); err != nil {
		return nil, err
	}
	if err := writeFile(p.servingKey, servingKeyPEM); err != nil {
		return nil, err
	}

	p.adminCertPEM, p.adminKeyPEM, err = ca.issue(leafSpec{
		commonName:    "testenv-admin",
		organizations: []string{"system:masters"},
		usage:         x509.ExtKeyUsageClientAuth,
	})
	if err != nil {
		return nil, fmt.Errorf("creating admin client certificate: %w", err)
	}
	if err := writeFile(p.adminCert, p.adminCertPEM); err != nil {
		return nil, err
	}
	if err := writeFile(p.adminKey, p.adminKeyPEM); err != nil {
		return nil, err
	}

	// The controller manager runs with --use-service-account-credentials=false, so all its
	// controllers act as this user; system:masters lets the garbage collector and the
	// namespace controller delete every kind of object, custom resources included.
	p.kcmCertPEM, p.kcmKeyPEM, err = ca.issue(leafSpec{
		commonName:    "system:kube-controller-manager",
		organizations: []string{"system:masters"},
		usage:         x509.ExtKeyUsageClientAuth,
	})
	if err != nil {
		return nil, fmt.Errorf("creating controller-manager client certificate: %w", err)
	}
	if err := writeFile(p.kcmCert, p.kcmCertPEM); err != nil {
		return nil, err
	}
	if err := writeFile(p.kcmKey, p.kcmKeyPEM); err != nil {
		return nil, err
	}

	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("creating service-account key: %w", err)
	}
	saPriv := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)})
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	saPub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER})
	if err := writeFile(p.saPrivateKey, saPriv); err != nil {
		return nil, err
	}
	if err := writeFile(p.saPublicKey, saPub); err != nil {
		return nil, err
	}
	return p, nil
}

type leafSpec struct {
	commonName    string
	organizations []string
	dnsNames      []string
	ips           []net.IP
	usage         x509.ExtKeyUsage
}

func newCA(name string) (*caBundle, []byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	return &caBundle{cert: cert, key: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// issue signs a new leaf certificate and returns it and its key, PEM encoded.
func (ca *caBundle) issue(spec leafSpec) ([]byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: spec.commonName, Organization: spec.organizations},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{spec.usage},
		BasicConstraintsValid: true,
		DNSNames:              spec.dnsNames,
		IPAddresses:           spec.ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func writeFile(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
