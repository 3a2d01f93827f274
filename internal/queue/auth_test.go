package queue_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/internal/queue"
)

// Each auth method of queue.Config is tested against a real nats-server
// configured for exactly that method: the right credentials connect and reach
// the server (a flush is a round trip after authentication); each kind of
// wrong credentials fails fast with an error that says what is wrong and that
// is not ErrNoServer (the worker retries ErrNoServer forever: a wrong
// password must not look like a server that is not up yet).

// badAuth is one way to fail authentication.
type badAuth struct {
	name string
	cfg  queue.Config
	want string // in the error's text, lower case
}

// startServer runs a nats-server with opts on a free loopback port until the
// test ends and returns its client URL.
func startServer(t *testing.T, opts *server.Options) string {
	t.Helper()
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.NoLog, opts.NoSigs = true, true
	opts.HTTPPort = 0
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		s.WaitForShutdown()
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL()
}

// connectOK connects with cfg and proves the session works with a round trip.
func connectOK(t *testing.T, cfg queue.Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := queue.Connect(ctx, cfg)
	if err != nil {
		t.Fatalf("connect with the right credentials: %v", err)
	}
	defer c.Close()
	if err := c.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if !c.Connected() {
		t.Fatal("not connected after a flush")
	}
}

// connectFails checks that each bad configuration is refused with a clear
// error, well before the context's deadline, and not as ErrNoServer.
func connectFails(t *testing.T, bad []badAuth) {
	t.Helper()
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			// The deadline is a bound on a hang, not a timing assertion:
			// a refused connection returns long before it.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cfg := b.cfg
			cfg.ConnectTimeout = 5 * time.Second
			c, err := queue.Connect(ctx, cfg)
			if err == nil {
				c.Close()
				t.Fatal("connected with wrong credentials")
			}
			t.Logf("refused: %v", err)
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				t.Fatalf("connect hung until the context ended: %v", err)
			}
			if errors.Is(err, queue.ErrNoServer) {
				t.Errorf("wrong credentials reported as ErrNoServer (the worker would retry forever): %v", err)
			}
			if !strings.Contains(strings.ToLower(err.Error()), b.want) {
				t.Errorf("error %q does not say %q", err, b.want)
			}
			if !strings.HasPrefix(err.Error(), "queue: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func urls(u string) []string { return []string{u} }

func TestAuthUserPassword(t *testing.T) {
	t.Parallel()
	u := startServer(t, &server.Options{Username: "orderly", Password: "s3cret-pw"})
	connectOK(t, queue.Config{URLs: urls(u), User: "orderly", Password: "s3cret-pw"})
	connectFails(t, []badAuth{
		{"wrong password", queue.Config{URLs: urls(u), User: "orderly", Password: "nope"}, "authorization violation"},
		{"wrong user", queue.Config{URLs: urls(u), User: "mallory", Password: "s3cret-pw"}, "authorization violation"},
		{"none", queue.Config{URLs: urls(u)}, "authorization violation"},
	})
}

// TestAuthEmbeddedUserPassword: the embedded server the worker starts
// requires the user and password it is given, listens on loopback when no
// host is named, and runs JetStream for the authenticated client.
func TestAuthEmbeddedUserPassword(t *testing.T) {
	t.Parallel()
	s, err := embedded.Start(embedded.Config{Listen: ":-1", DataDir: t.TempDir(), User: "orderly", Password: "s3cret-pw"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	pu, err := url.Parse(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(pu.Hostname()); ip == nil || !ip.IsLoopback() {
		t.Errorf("embedded server with no host listens on %s, want loopback", pu.Host)
	}
	u := s.ClientURL()
	connectOK(t, queue.Config{URLs: urls(u), User: "orderly", Password: "s3cret-pw"})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := queue.Connect(ctx, queue.Config{URLs: urls(u), User: "orderly", Password: "s3cret-pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Provision(ctx, queue.Spec{Workflow: "auth", Partitions: 1}); err != nil {
		t.Fatalf("provision as an authenticated user: %v", err)
	}
	connectFails(t, []badAuth{
		{"wrong password", queue.Config{URLs: urls(u), User: "orderly", Password: "nope"}, "authorization violation"},
		{"none", queue.Config{URLs: urls(u)}, "authorization violation"},
	})
}

func TestAuthToken(t *testing.T) {
	t.Parallel()
	u := startServer(t, &server.Options{Authorization: "t0ken-for-orderly"})
	connectOK(t, queue.Config{URLs: urls(u), Token: "t0ken-for-orderly"})
	connectFails(t, []badAuth{
		{"wrong token", queue.Config{URLs: urls(u), Token: "t0ken-for-mallory"}, "authorization violation"},
		{"none", queue.Config{URLs: urls(u)}, "authorization violation"},
	})
}

func TestAuthNKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good, goodPub := userKey(t)
	other, _ := userKey(t)
	u := startServer(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: goodPub}}})
	goodFile := writeFile(t, dir, "good.nk", seed(t, good))
	otherFile := writeFile(t, dir, "other.nk", seed(t, other))
	notASeed := writeFile(t, dir, "garbage.nk", []byte("not a seed\n"))
	connectOK(t, queue.Config{URLs: urls(u), NKeySeedFile: goodFile})
	connectFails(t, []badAuth{
		{"unknown key", queue.Config{URLs: urls(u), NKeySeedFile: otherFile}, "authorization violation"},
		{"missing file", queue.Config{URLs: urls(u), NKeySeedFile: filepath.Join(dir, "absent.nk")}, "no such file"},
		{"not a seed", queue.Config{URLs: urls(u), NKeySeedFile: notASeed}, "nkey"},
		{"none", queue.Config{URLs: urls(u)}, "authorization violation"},
	})
}

// TestAuthCredsFile runs the server in operator (decentralized JWT) mode: it
// trusts one operator, whose account signs the user in the creds file.
func TestAuthCredsFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	operator, opPub := newKey(t, nkeys.CreateOperator)
	account, accPub := newKey(t, nkeys.CreateAccount)
	opJWT, err := jwt.NewOperatorClaims(opPub).Encode(operator)
	if err != nil {
		t.Fatal(err)
	}
	opClaims, err := jwt.DecodeOperatorClaims(opJWT)
	if err != nil {
		t.Fatal(err)
	}
	accJWT, err := jwt.NewAccountClaims(accPub).Encode(operator)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	if err := resolver.Store(accPub, accJWT); err != nil {
		t.Fatal(err)
	}
	u := startServer(t, &server.Options{TrustedOperators: []*jwt.OperatorClaims{opClaims}, AccountResolver: resolver})

	// A good user, signed by the trusted account; a user signed by an account
	// the server does not know; a user whose JWT has expired.
	goodCreds := creds(t, dir, "good.creds", account, nil)
	stranger, _ := newKey(t, nkeys.CreateAccount)
	strangerCreds := creds(t, dir, "stranger.creds", stranger, nil)
	expiredCreds := creds(t, dir, "expired.creds", account, func(uc *jwt.UserClaims) {
		uc.Expires = time.Now().Add(-time.Hour).Unix()
	})
	connectOK(t, queue.Config{URLs: urls(u), CredsFile: goodCreds})
	connectFails(t, []badAuth{
		{"unknown account", queue.Config{URLs: urls(u), CredsFile: strangerCreds}, "authorization violation"},
		{"expired", queue.Config{URLs: urls(u), CredsFile: expiredCreds}, "authorization violation"},
		{"missing file", queue.Config{URLs: urls(u), CredsFile: filepath.Join(dir, "absent.creds")}, "no such file"},
		{"none", queue.Config{URLs: urls(u)}, "authorization violation"},
	})
}

// TestAuthTLS runs a server that requires TLS and verifies client
// certificates, all issued by a CA made in the test.
func TestAuthTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newCA(t, "orderly test CA")
	otherCA := newCA(t, "someone else's CA")
	srvCert, srvKey := ca.issue(t, dir, "server", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := ca.issue(t, dir, "client", x509.ExtKeyUsageClientAuth)
	strangerCert, strangerKey := otherCA.issue(t, dir, "stranger", x509.ExtKeyUsageClientAuth)
	caFile := ca.write(t, dir, "ca.pem")
	otherCAFile := otherCA.write(t, dir, "other-ca.pem")

	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: srvCert, KeyFile: srvKey, CaFile: caFile, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	u := startServer(t, &server.Options{TLS: true, TLSVerify: true, TLSConfig: tc, TLSTimeout: 2})

	connectOK(t, queue.Config{URLs: urls(u), CAFile: caFile, CertFile: cliCert, KeyFile: cliKey})
	// A nats:// URL is upgraded to TLS as the server asks.
	connectOK(t, queue.Config{URLs: urls(strings.Replace(u, "tls://", "nats://", 1)), CAFile: caFile, CertFile: cliCert, KeyFile: cliKey})
	connectFails(t, []badAuth{
		{"untrusted server certificate", queue.Config{URLs: urls(u), CAFile: otherCAFile, CertFile: cliCert, KeyFile: cliKey}, "certificate"},
		{"client certificate from another CA", queue.Config{URLs: urls(u), CAFile: caFile, CertFile: strangerCert, KeyFile: strangerKey}, "tls"},
		{"no client certificate", queue.Config{URLs: urls(u), CAFile: caFile}, "tls"},
		// The server's INFO asks for TLS, so the client upgrades even
		// without files, and then cannot verify the server with the
		// system's roots.
		{"no TLS files", queue.Config{URLs: urls(strings.Replace(u, "tls://", "nats://", 1))}, "certificate"},
		{"missing CA file", queue.Config{URLs: urls(u), CAFile: filepath.Join(dir, "absent.pem"), CertFile: cliCert, KeyFile: cliKey}, "no such file"},
	})
}

// --- keys and certificates made in the test ---

func newKey(t *testing.T, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := create()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return kp, pub
}

func userKey(t *testing.T) (nkeys.KeyPair, string) { return newKey(t, nkeys.CreateUser) }

func seed(t *testing.T, kp nkeys.KeyPair) []byte {
	t.Helper()
	s, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return append(s, '\n')
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// creds writes a credentials file for a new user signed by account.
func creds(t *testing.T, dir, name string, account nkeys.KeyPair, edit func(*jwt.UserClaims)) string {
	t.Helper()
	user, userPub := userKey(t)
	uc := jwt.NewUserClaims(userPub)
	if edit != nil {
		edit(uc)
	}
	userJWT, err := uc.Encode(account)
	if err != nil {
		t.Fatal(err)
	}
	data, err := jwt.FormatUserConfig(userJWT, seed(t, user))
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, name, data)
}

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	der  []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key := ecKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, der: der}
}

func (ca *testCA) write(t *testing.T, dir, name string) string {
	t.Helper()
	return writeFile(t, dir, name, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.der}))
}

// issue writes a certificate and key for 127.0.0.1 signed by ca and returns
// their paths.
func (ca *testCA) issue(t *testing.T, dir, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key := ecKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writeFile(t, dir, name+".pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	keyFile = writeFile(t, dir, name+"-key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	return certFile, keyFile
}

func ecKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func serial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
