// Command hallpass-demo is the reference application of hallpass: sign
// up, log in and out, a per-session visit counter, an account page with
// the user's devices (revocable) and a password change behind a fresh
// re-authentication, with users and sessions in one SQLite file. It
// needs no JavaScript.
//
//	go run ./cmd/hallpass-demo
//
// then open http://localhost:8080. Run it with -h for its flags; each has
// an environment variable too, which the flag overrides.
package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hallpass/hallpass/secure"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, a second one kills at once instead of
		// waiting for the graceful shutdown.
		<-ctx.Done()
		stop()
	}()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		slog.Error("hallpass-demo", "err", err)
		os.Exit(1)
	}
}

// errUsage reports bad flags or environment; the message has been printed.
var errUsage = errors.New("usage")

// run parses args and the environment, then serves until ctx ends. It
// logs to stderr.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("hallpass-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "localhost:8080", "listen on `host:port` ($HALLPASS_ADDR)")
	dbPath := fs.String("db", "hallpass-demo.db", "SQLite `file` for users, and for sessions unless -store says otherwise ($HALLPASS_DB)")
	store := fs.String("store", "", "session `store`: empty for the -db file, a SQLite file path, memory, redis://host:port/db, or postgres://user@host/db?sslmode=disable ($HALLPASS_STORE)")
	idle := fs.Duration("idle-timeout", 0, "end sessions after this long without a request; 0 means hallpass's default, 30m ($HALLPASS_IDLE_TIMEOUT)")
	lifetime := fs.Duration("lifetime", 0, "end sessions this long after they start or sign in, whatever their activity; 0 means hallpass's default, 12h ($HALLPASS_LIFETIME)")
	rotateEvery := fs.Duration("rotate-every", 0, "give signed-in sessions a new token when theirs is this old; 0 means hallpass's default, 15m; negative turns rotation off ($HALLPASS_ROTATE_EVERY)")
	rotateGrace := fs.Duration("rotate-grace", 0, "keep a rotated-out token working this long, for requests already under way; 0 means hallpass's default, 1m ($HALLPASS_ROTATE_GRACE)")
	tlsCert := fs.String("tls-cert", "", "serve HTTPS with this certificate `file` (PEM), with -tls-key ($HALLPASS_TLS_CERT)")
	tlsKey := fs.String("tls-key", "", "the private key `file` (PEM) of -tls-cert ($HALLPASS_TLS_KEY)")
	tlsSelfSigned := fs.Bool("tls-self-signed", false, "serve HTTPS with a certificate for localhost made at start ($HALLPASS_TLS_SELF_SIGNED)")
	redirectHTTP := fs.String("redirect-http", "", "also listen on `host:port` for plain HTTP that only redirects to HTTPS ($HALLPASS_REDIRECT_HTTP)")
	var proxies listFlag
	fs.Var(&proxies, "trusted-proxy", "believe X-Forwarded-For and X-Forwarded-Proto only from this `CIDR` or address; repeatable ($HALLPASS_TRUSTED_PROXY, comma-separated)")
	logFile := fs.String("log-file", "", "also append every session event to this `file`, one JSON object per line ($HALLPASS_LOG_FILE)")
	metricsAddr := fs.String("metrics-addr", "", "also serve Prometheus metrics on `host:port` (only /metrics; they are on /metrics for admins anyway) ($HALLPASS_METRICS_ADDR)")
	admin := fs.String("admin", "", "the `username` that gets the admin role (/admin) once signed up ($HALLPASS_ADMIN)")
	accessTTL := fs.Duration("access-ttl", 0, "lifetime of API access tokens; 0 means 10m ($HALLPASS_ACCESS_TTL)")
	rememberFor := fs.Duration("remember-for", 0, "\"keep me signed in\" lasts this long after the last visit; 0 means 30 days ($HALLPASS_REMEMBER_FOR)")
	maxSessions := fs.Int("max-sessions", 0, "most sessions one user may be signed in with; a login over it signs out the user's oldest session; 0 means no limit ($HALLPASS_MAX_SESSIONS)")
	reauthWindow := fs.Duration("reauth-window", defaultReauthWindow, "ask for the password again before a password change unless it was typed within this long ($HALLPASS_REAUTH_WINDOW)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: hallpass-demo [flags]\n\nServes the hallpass demo app.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	// The environment sets the flags' starting values, so that a flag on
	// the command line still wins.
	for name, env := range map[string]string{
		"addr": "HALLPASS_ADDR", "db": "HALLPASS_DB", "store": "HALLPASS_STORE",
		"idle-timeout": "HALLPASS_IDLE_TIMEOUT", "lifetime": "HALLPASS_LIFETIME",
		"rotate-every": "HALLPASS_ROTATE_EVERY", "rotate-grace": "HALLPASS_ROTATE_GRACE",
		"reauth-window": "HALLPASS_REAUTH_WINDOW", "max-sessions": "HALLPASS_MAX_SESSIONS",
		"tls-cert": "HALLPASS_TLS_CERT", "tls-key": "HALLPASS_TLS_KEY", "tls-self-signed": "HALLPASS_TLS_SELF_SIGNED",
		"remember-for": "HALLPASS_REMEMBER_FOR", "access-ttl": "HALLPASS_ACCESS_TTL", "admin": "HALLPASS_ADMIN", "metrics-addr": "HALLPASS_METRICS_ADDR", "redirect-http": "HALLPASS_REDIRECT_HTTP", "trusted-proxy": "HALLPASS_TRUSTED_PROXY", "log-file": "HALLPASS_LOG_FILE",
	} {
		if v := getenv(env); v != "" {
			if err := fs.Set(name, v); err != nil {
				fmt.Fprintf(stderr, "invalid $%s: %v\n", env, err)
				return errUsage
			}
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected arguments: %q\n", fs.Args())
		fs.Usage()
		return errUsage
	}
	// Values the flag package accepts but the app must not run with. Each
	// message names both the flag and its variable, as either may have
	// set it.
	for _, c := range []struct {
		bad       bool
		name, env string
		why       string
	}{
		{*rotateGrace < 0, "rotate-grace", "HALLPASS_ROTATE_GRACE", "must not be negative"},
		{*reauthWindow <= 0, "reauth-window", "HALLPASS_REAUTH_WINDOW", "must be positive"},
		{*maxSessions < 0, "max-sessions", "HALLPASS_MAX_SESSIONS", "must not be negative"},
		{*rememberFor < 0, "remember-for", "HALLPASS_REMEMBER_FOR", "must not be negative"},
		{*accessTTL < 0, "access-ttl", "HALLPASS_ACCESS_TTL", "must not be negative"},
		{(*tlsCert == "") != (*tlsKey == ""), "tls-cert", "HALLPASS_TLS_CERT", "needs -tls-key, and the other way round"},
		{*tlsSelfSigned && *tlsCert != "", "tls-self-signed", "HALLPASS_TLS_SELF_SIGNED", "is instead of -tls-cert, not with it"},
		{*redirectHTTP != "" && *tlsCert == "" && !*tlsSelfSigned, "redirect-http", "HALLPASS_REDIRECT_HTTP", "needs HTTPS to redirect to: -tls-cert or -tls-self-signed"},
	} {
		if c.bad {
			v := fs.Lookup(c.name).Value
			fmt.Fprintf(stderr, "invalid -%s (or $%s) %v: %s\n", c.name, c.env, v, c.why)
			return errUsage
		}
	}

	if _, err := secure.New(&secure.Options{TrustedProxies: proxies}); err != nil {
		fmt.Fprintf(stderr, "invalid -trusted-proxy (or $HALLPASS_TRUSTED_PROXY): %v\n", err)
		return errUsage
	}

	logger := slog.New(slog.NewTextHandler(stderr, nil))
	var eventLog io.Writer
	if *logFile != "" {
		f, err := os.OpenFile(*logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("-log-file: %w", err)
		}
		defer f.Close()
		eventLog = f
	}
	useTLS := *tlsCert != "" || *tlsSelfSigned
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	httpsPort := 0 // plain HTTP: redirects, if any, go to 443
	if useTLS {
		httpsPort = ln.Addr().(*net.TCPAddr).Port
	}
	db, err := openDB(*dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	a, err := newApp(ctx, db, options{
		Store: *store, IdleTimeout: *idle, Lifetime: *lifetime,
		RotateEvery: *rotateEvery, RotateGrace: *rotateGrace, ReauthWindow: *reauthWindow,
		MaxSessions: *maxSessions, TrustedProxies: proxies, HTTPSPort: httpsPort,
		EventLog: eventLog, RememberFor: *rememberFor, AccessTTL: *accessTTL, Admin: *admin,
		Logger: logger,
	})
	if err != nil {
		return err
	}
	defer a.Close()

	scheme := "http"
	if useTLS {
		scheme = "https"
	}
	srv := &http.Server{
		Handler: a.Handler(),
		// Slow clients must not hold connections open for free.
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	switch {
	case *tlsSelfSigned:
		cert, err := selfSigned(time.Now())
		if err != nil {
			return fmt.Errorf("-tls-self-signed: %w", err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	case *tlsCert != "":
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			return fmt.Errorf("-tls-cert/-tls-key: %w", err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	logger.Info("hallpass-demo listening", "url", scheme+"://"+ln.Addr().String(), "db", *dbPath, "store", cmp.Or(redact(*store), *dbPath))

	errc := make(chan error, 2)
	go func() {
		if useTLS {
			errc <- srv.ServeTLS(ln, "", "")
			return
		}
		errc <- srv.Serve(ln)
	}()
	if *metricsAddr != "" {
		mln, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			srv.Close()
			return fmt.Errorf("-metrics-addr: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", a.MetricsHandler())
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: srv.ErrorLog}
		defer msrv.Close()
		go func() {
			if err := msrv.Serve(mln); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("-metrics-addr: %w", err)
			}
		}()
		logger.Info("hallpass-demo serving metrics", "addr", mln.Addr().String())
	}
	if *redirectHTTP != "" {
		rln, err := net.Listen("tcp", *redirectHTTP)
		if err != nil {
			srv.Close()
			return err
		}
		redirect := &http.Server{Handler: a.RedirectHandler(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: srv.ErrorLog}
		defer redirect.Close()
		go func() {
			if err := redirect.Serve(rln); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("-redirect-http: %w", err)
			}
		}()
		logger.Info("hallpass-demo redirecting plain HTTP", "addr", rln.Addr().String())
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Info("hallpass-demo shutting down")
	// Requests under way get a while to finish, so none is cut off
	// between saving its session and answering.
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
