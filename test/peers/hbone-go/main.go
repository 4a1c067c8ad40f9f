// hbone-go: an independent HBONE peer (HTTP/2 CONNECT over mTLS, as Istio ztunnel speaks it),
// written against the Go standard library only, for interoperability tests of ugate.
//
//	hbone-go server -listen 127.0.0.1:0 -cert tls.crt -key tls.key -ca ca.crt [-identity spiffe://td/ns/x/sa/y]
//	                [-upstream 127.0.0.1:PORT] [-hold-end]
//	hbone-go client -connect 127.0.0.1:PORT -authority host:port -ca ca.crt [-cert tls.crt -key tls.key]
//	                [-expect-identity spiffe://...] [-headers 'k: v']... [-method CONNECT] [-status-only]
//	                [-gen-bytes N | -opens N [-concurrency C] [-warmup W]]
//
// The client sends stdin as the request body and copies the response body to stdout. Benchmark modes:
// -gen-bytes N sends N bytes it generates itself instead of stdin, then prints one JSON line
// {"count":"<response body>","bytes":N,"seconds":S}; -opens N runs N short streams (CONNECT, 1 byte
// out, the 1-byte echo back, END_STREAM, the peer's END_STREAM), C at a time (after W unmeasured
// ones), and prints one JSON line {"streams","failed","seconds","perSecond","firstError","sessions","cpuSeconds"}.
//
// Build (offline, no module needed): GO111MODULE=off go build -o hbone-go main.go
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const dialTimeout = 10 * time.Second

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "server":
		os.Exit(runServer(os.Args[2:]))
	case "client":
		os.Exit(runClient(os.Args[2:]))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: hbone-go server|client [flags] (hbone-go server -h, hbone-go client -h)")
	os.Exit(2)
}

// ---------------------------------------------------------------------------------------------
// shared TLS helpers

func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificates", path)
	}
	return pool, nil
}

func hasURISAN(cert *x509.Certificate, want string) bool {
	for _, u := range cert.URIs {
		if u.String() == want {
			return true
		}
	}
	return false
}

func uriSANs(cert *x509.Certificate) []string {
	out := []string{}
	for _, u := range cert.URIs {
		out = append(out, u.String())
	}
	return out
}

// ---------------------------------------------------------------------------------------------
// server

type server struct {
	upstream string // if set, dial this instead of the authority
	holdEnd  bool   // on upstream EOF, wait for the client's END_STREAM before ending the response
	logMu    sync.Mutex
	nextID   int64
}

type streamLog struct {
	ID        int64               `json:"id"`
	Peer      []string            `json:"peer"`
	Remote    string              `json:"remote"`
	Proto     string              `json:"proto"`
	Method    string              `json:"method"`
	Authority string              `json:"authority"`
	Path      string              `json:"path,omitempty"`
	Headers   map[string][]string `json:"headers"`
	Status    int                 `json:"status"`
	Dialed    string              `json:"dialed,omitempty"`
	Up        int64               `json:"up"`   // bytes client -> upstream
	Down      int64               `json:"down"` // bytes upstream -> client
	ReqEnd    string              `json:"reqEnd,omitempty"`
	RespEnd   string              `json:"respEnd,omitempty"`
	Err       string              `json:"err,omitempty"`
	Ms        int64               `json:"ms"`
}

func (s *server) log(l *streamLog, start time.Time) {
	l.Ms = time.Since(start).Milliseconds()
	b, _ := json.Marshal(l)
	s.logMu.Lock()
	defer s.logMu.Unlock()
	fmt.Fprintf(os.Stderr, "STREAM %s\n", b)
}

func validAuthority(a string) bool {
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" {
		return false
	}
	p, err := strconv.Atoi(port)
	return err == nil && p > 0 && p < 65536 && strconv.Itoa(p) == port
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	l := &streamLog{
		ID:        atomic.AddInt64(&s.nextID, 1),
		Remote:    r.RemoteAddr,
		Proto:     r.Proto,
		Method:    r.Method,
		Authority: r.Host,
		Headers:   r.Header,
		Peer:      []string{},
	}
	if r.Method != http.MethodConnect {
		l.Path = r.URL.RequestURI()
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		l.Peer = uriSANs(r.TLS.PeerCertificates[0])
	}
	if r.Method != http.MethodConnect || !validAuthority(r.Host) {
		l.Status = http.StatusBadRequest
		w.WriteHeader(l.Status)
		s.log(l, start)
		return
	}
	target := r.Host
	if s.upstream != "" {
		target = s.upstream
	}
	l.Dialed = target
	conn, err := net.DialTimeout("tcp", target, dialTimeout)
	if err != nil {
		l.Status = http.StatusServiceUnavailable
		l.Err = err.Error()
		w.WriteHeader(l.Status)
		s.log(l, start)
		return
	}
	up := conn.(*net.TCPConn)
	l.Status = http.StatusOK
	w.WriteHeader(http.StatusOK)
	flusher := w.(http.Flusher)
	flusher.Flush() // HEADERS :status 200 now, before any data

	// client -> upstream: request body EOF (END_STREAM) becomes a TCP half-close.
	reqDone := make(chan struct{})
	go func() {
		defer close(reqDone)
		n, err := io.Copy(up, r.Body)
		atomic.AddInt64(&l.Up, n)
		if err != nil {
			l.ReqEnd = "error: " + err.Error()
			up.Close()
			return
		}
		l.ReqEnd = "eof"
		if err := up.CloseWrite(); err != nil {
			l.ReqEnd = "eof (closewrite: " + err.Error() + ")"
		}
	}()

	// upstream -> client: upstream EOF ends the response (the handler returns: END_STREAM).
	finish := func() {
		go func() {
			<-reqDone
			up.Close()
			s.log(l, start)
		}()
	}
	buf := make([]byte, 64<<10)
	for {
		n, rerr := up.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				l.RespEnd = "client gone: " + werr.Error()
				up.Close()
				finish()
				return
			}
			flusher.Flush()
			atomic.AddInt64(&l.Down, int64(n))
		}
		if rerr == nil {
			continue
		}
		if errors.Is(rerr, io.EOF) {
			if s.holdEnd {
				select {
				case <-reqDone:
				case <-r.Context().Done():
				}
			}
			l.RespEnd = "eof"
			finish()
			return // END_STREAM; Go adds RST_STREAM(NO_ERROR) if the client has not ended yet
		}
		// Upstream reset or other failure: reset the stream instead of a clean end.
		l.RespEnd = "reset: " + rerr.Error()
		up.Close()
		finish()
		panic(http.ErrAbortHandler) // RST_STREAM(INTERNAL_ERROR)
	}
}

func runServer(args []string) int {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:15008", "address to listen on (port 0 = any)")
	certFile := fs.String("cert", "", "server certificate chain (PEM)")
	keyFile := fs.String("key", "", "server private key (PEM)")
	caFile := fs.String("ca", "", "trust roots for client certificates (PEM)")
	identity := fs.String("identity", "", "required URI SAN of the client certificate (optional)")
	upstream := fs.String("upstream", "", "dial this address for every CONNECT instead of the authority (optional)")
	holdEnd := fs.Bool("hold-end", false, "on upstream EOF keep the stream open until the client's END_STREAM")
	fs.Parse(args)
	if *certFile == "" || *keyFile == "" || *caFile == "" {
		fmt.Fprintln(os.Stderr, "server: -cert, -key and -ca are required")
		return 2
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		return 1
	}
	pool, err := loadPool(*caFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		return 1
	}
	want := *identity
	cfg := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{cert},
		ClientAuth:             tls.RequireAndVerifyClientCert, // chain to -ca, EKU clientAuth
		ClientCAs:              pool,
		NextProtos:             []string{"h2"}, // exactly h2 (http.Server.ServeTLS would add http/1.1)
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.NegotiatedProtocol != "h2" {
				return fmt.Errorf("ALPN %q, want h2", cs.NegotiatedProtocol)
			}
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no client certificate")
			}
			if want != "" && !hasURISAN(cs.PeerCertificates[0], want) {
				return fmt.Errorf("client identity %v, want %s", uriSANs(cs.PeerCertificates[0]), want)
			}
			return nil
		},
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		return 1
	}
	srv := &http.Server{
		Handler:           &server{upstream: *upstream, holdEnd: *holdEnd},
		TLSConfig:         cfg, // NextProtos contains h2, so Serve enables the bundled HTTP/2 server
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(os.Stderr, "http: ", 0),
	}
	fmt.Printf("LISTENING %s\n", ln.Addr().String())
	if err := srv.Serve(tls.NewListener(ln, cfg)); err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		return 1
	}
	return 0
}

// ---------------------------------------------------------------------------------------------
// client

type headerList []string

func (h *headerList) String() string     { return strings.Join(*h, ", ") }
func (h *headerList) Set(v string) error { *h = append(*h, v); return nil }

type tlsError struct{ err error }

func (e *tlsError) Error() string { return e.err.Error() }
func (e *tlsError) Unwrap() error { return e.err }

// holdConn keeps the socket open when the HTTP/2 transport closes the connection, so that a TLS alert
// the server sent right after the handshake can still be read (see diagnose).
type holdConn struct {
	net.Conn
	closed int32
}

func (h *holdConn) Close() error {
	if atomic.CompareAndSwapInt32(&h.closed, 0, 1) {
		h.Conn.SetDeadline(time.Now().Add(2 * time.Second))
	}
	return nil
}

func (h *holdConn) reallyClose() error { return h.Conn.Close() }

// diagnose: with TLS 1.3 the client's handshake is complete before the server has checked the client
// certificate; a rejection arrives as an alert on the first read. The transport may first see a write
// error (the server closed, our preface drew a TCP RST) and report that instead. Read the connection
// once more: the alert is still queued in front of the reset.
func diagnose(tc *tls.Conn, raw *holdConn) error {
	defer raw.reallyClose()
	tc.SetReadDeadline(time.Now().Add(2 * time.Second))
	var b [1]byte
	_, err := tc.Read(b[:])
	if err != nil && strings.Contains(err.Error(), "remote error: tls:") {
		return err
	}
	return nil
}

// isTLSFailure: our own handshake failed, or (TLS 1.3) the server rejected our certificate after
// the client-side handshake had completed; that shows up as a TLS alert on the first read.
func isTLSFailure(err error) bool {
	var te *tlsError
	if errors.As(err, &te) {
		return true
	}
	var ue x509.UnknownAuthorityError
	var ce x509.CertificateInvalidError
	if errors.As(err, &ue) || errors.As(err, &ce) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "remote error: tls:") || strings.Contains(s, "tls: ")
}

func runClient(args []string) int {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	connect := fs.String("connect", "", "HBONE server address host:port (TCP)")
	authority := fs.String("authority", "", "CONNECT :authority host:port")
	certFile := fs.String("cert", "", "client certificate chain (PEM, optional: without it no client cert is sent)")
	keyFile := fs.String("key", "", "client private key (PEM)")
	caFile := fs.String("ca", "", "trust roots for the server certificate (PEM)")
	expect := fs.String("expect-identity", "", "required URI SAN of the server certificate (optional)")
	method := fs.String("method", http.MethodConnect, "request method")
	statusOnly := fs.Bool("status-only", false, "print STATUS <code> on stdout and exit 0, no body exchange")
	genBytes := fs.Int64("gen-bytes", -1, "benchmark: send N generated bytes instead of stdin, print a JSON line with the response and the seconds")
	opens := fs.Int("opens", 0, "benchmark: N short streams (open, 1-byte echo, close) over one connection, print a JSON line")
	concurrency := fs.Int("concurrency", 32, "with -opens: streams in flight at a time")
	warmup := fs.Int("warmup", 0, "with -opens: this many unmeasured streams first")
	var headers headerList
	fs.Var(&headers, "headers", "extra request header 'k: v' (repeatable)")
	fs.Parse(args)
	if *connect == "" || *authority == "" || *caFile == "" {
		fmt.Fprintln(os.Stderr, "client: -connect, -authority and -ca are required")
		return 2
	}
	pool, err := loadPool(*caFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		return 1
	}
	var clientCert *tls.Certificate
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "client:", err)
			return 1
		}
		clientCert = &cert
	}
	want := *expect
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		// Always present our certificate, like ztunnel: Go's default would silently send none when it
		// does not chain to one of the server's certificate_authorities.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if clientCert == nil {
				return &tls.Certificate{}, nil
			}
			return clientCert, nil
		},
		NextProtos: []string{"h2"},
		ServerName: "", // no SNI
		// No hostname verification: the chain and the URI SAN are checked in VerifyConnection.
		InsecureSkipVerify: true,
		ClientSessionCache: nil, // no resumption
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("server sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			leaf := cs.PeerCertificates[0]
			if _, err := leaf.Verify(x509.VerifyOptions{
				Roots:         pool,
				Intermediates: inter,
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}); err != nil {
				return err
			}
			if want != "" && !hasURISAN(leaf, want) {
				return fmt.Errorf("server identity %v, want %s", uriSANs(leaf), want)
			}
			if cs.NegotiatedProtocol != "h2" {
				return fmt.Errorf("ALPN %q, want h2", cs.NegotiatedProtocol)
			}
			return nil
		},
	}
	addr := *connect
	type dialed struct {
		tc  *tls.Conn
		raw *holdConn
	}
	var dialMu sync.Mutex
	var conns []dialed
	tr := &http.Transport{
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d := net.Dialer{Timeout: dialTimeout}
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			raw := &holdConn{Conn: c}
			tc := tls.Client(raw, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				raw.reallyClose()
				return nil, &tlsError{err}
			}
			dialMu.Lock()
			conns = append(conns, dialed{tc, raw})
			dialMu.Unlock()
			return tc, nil
		},
		ForceAttemptHTTP2:  true, // needed with a custom DialTLSContext
		DisableCompression: true, // no accept-encoding: gzip
	}

	newRequest := func(body io.Reader) (*http.Request, error) {
		req, err := http.NewRequest(*method, "https://"+addr+"/", body)
		if err != nil {
			return nil, err
		}
		req.Host = *authority // :authority
		req.Header.Set("User-Agent", "")
		for _, h := range headers {
			k, v, ok := strings.Cut(h, ":")
			if !ok {
				return nil, fmt.Errorf("bad header %q (want 'k: v')", h)
			}
			k = strings.TrimSpace(k)
			if strings.EqualFold(k, "user-agent") {
				req.Header.Del("User-Agent")
			}
			req.Header.Add(k, strings.TrimSpace(v))
		}
		return req, nil
	}
	if _, err := newRequest(nil); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		return 2
	}
	dials := func() int {
		dialMu.Lock()
		defer dialMu.Unlock()
		return len(conns)
	}
	if *opens > 0 {
		return runOpens(tr, newRequest, *opens, *concurrency, *warmup, dials)
	}

	var body io.Reader
	var gen *genReader
	var pw *io.PipeWriter
	if *genBytes >= 0 {
		gen = &genReader{left: *genBytes, buf: genChunk()}
		body = gen
	} else {
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		body = pr
	}
	req, err := newRequest(body)
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		return 1
	}

	if !*statusOnly && pw != nil {
		// stdin -> request body; EOF on stdin closes the pipe, the transport sends END_STREAM.
		go func() {
			_, err := io.Copy(pw, os.Stdin)
			pw.CloseWithError(err)
		}()
	}

	resp, err := tr.RoundTrip(req)
	if err != nil {
		if isTLSFailure(err) {
			fmt.Fprintf(os.Stderr, "TLSERROR %v\n", err)
			return 4
		}
		dialMu.Lock()
		list := conns
		dialMu.Unlock()
		for _, d := range list {
			if terr := diagnose(d.tc, d.raw); terr != nil {
				fmt.Fprintf(os.Stderr, "TLSERROR %v (transport reported: %v)\n", terr, err)
				return 4
			}
		}
		fmt.Fprintf(os.Stderr, "ERROR %v\n", err)
		return 1
	}
	if *statusOnly {
		fmt.Printf("STATUS %d\n", resp.StatusCode)
		return 0
	}
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(os.Stderr, "STATUS %d\n", resp.StatusCode)
		return 3
	}
	if gen != nil {
		// The response body is the sink's byte count, sent after our END_STREAM.
		reply, err := io.ReadAll(resp.Body)
		if err != nil {
			fmt.Fprintf(os.Stderr, "ERROR response body: %v\n", err)
			return 1
		}
		secs := 0.0
		if !gen.started.IsZero() {
			secs = time.Since(gen.started).Seconds()
		}
		out, _ := json.Marshal(map[string]interface{}{"count": strings.TrimSpace(string(reply)), "bytes": *genBytes, "seconds": secs})
		fmt.Printf("%s\n", out)
		return 0
	}
	// response body -> stdout, until END_STREAM (io.EOF).
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		fmt.Fprintf(os.Stderr, "ERROR response body: %v\n", err)
		return 1
	}
	return 0
}

// ---------------------------------------------------------------------------------------------
// benchmark modes

// genChunk is the fixed 64 KiB buffer the generating mode sends over and over.
func genChunk() []byte {
	b := make([]byte, 64<<10)
	for i := range b {
		b[i] = "hbone-bench "[i%12]
	}
	return b
}

// genReader yields `left` bytes from a fixed buffer; the clock starts at the transport's first read.
type genReader struct {
	left    int64
	buf     []byte
	off     int
	started time.Time
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.started.IsZero() {
		g.started = time.Now()
	}
	if g.left <= 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && g.left > 0 {
		c := copy(p[n:], g.buf[g.off:])
		if int64(c) > g.left {
			c = int(g.left)
		}
		n += c
		g.left -= int64(c)
		g.off = (g.off + c) % len(g.buf)
	}
	return n, nil
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// openOnce: CONNECT, one byte out, its echo back, END_STREAM, then the response to its END_STREAM.
func openOnce(tr *http.Transport, newRequest func(io.Reader) (*http.Request, error)) error {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := newRequest(pr)
	if err != nil {
		return err
	}
	resp, err := tr.RoundTrip(req.WithContext(ctx))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if _, err := pw.Write([]byte{'x'}); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	var b [1]byte
	if _, err := io.ReadFull(resp.Body, b[:]); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	pw.Close()
	if n, err := io.Copy(io.Discard, resp.Body); err != nil || n != 0 {
		return fmt.Errorf("end: %d more bytes, %v", n, err)
	}
	return nil
}

// openMany: n streams, c at a time; the count of failures and the first error.
func openMany(tr *http.Transport, newRequest func(io.Reader) (*http.Request, error), n, c int) (int64, string) {
	var next, failed int64
	var errMu sync.Mutex
	firstError := ""
	var wg sync.WaitGroup
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for atomic.AddInt64(&next, 1) <= int64(n) {
				if err := openOnce(tr, newRequest); err != nil {
					if atomic.AddInt64(&failed, 1) == 1 {
						errMu.Lock()
						firstError = err.Error()
						errMu.Unlock()
					}
				}
			}
		}()
	}
	wg.Wait()
	return failed, firstError
}

// runOpens: n short streams, c at a time, over the transport's HTTP/2 connection. One stream first
// sets the connection up (TLS handshake) and `warm` more run unmeasured before the clock starts;
// `sessions` is how many connections were dialed in all.
func runOpens(tr *http.Transport, newRequest func(io.Reader) (*http.Request, error), n, c, warm int, dials func() int) int {
	if err := openOnce(tr, newRequest); err != nil {
		fmt.Fprintf(os.Stderr, "ERROR first stream: %v\n", err)
		return 1
	}
	if warm > 0 {
		if failed, firstError := openMany(tr, newRequest, warm, c); failed > 0 {
			fmt.Fprintf(os.Stderr, "ERROR warm-up: %d of %d streams failed: %s\n", failed, warm, firstError)
			return 1
		}
	}
	cpu0 := cpuSeconds()
	t0 := time.Now()
	failed, firstError := openMany(tr, newRequest, n, c)
	secs := time.Since(t0).Seconds()
	cpu := cpuSeconds() - cpu0
	out := map[string]interface{}{
		"streams":    n,
		"failed":     failed,
		"seconds":    secs,
		"perSecond":  float64(int64(n)-failed) / secs,
		"sessions":   dials(),
		"cpuSeconds": cpu,
	}
	if firstError != "" {
		out["firstError"] = firstError
	}
	b, _ := json.Marshal(out)
	fmt.Printf("%s\n", b)
	if failed > 0 {
		return 2
	}
	return 0
}
