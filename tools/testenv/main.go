// Command testenv runs a real, throw-away Kubernetes control plane on loopback for tests
// and local runs: etcd, kube-apiserver and kube-controller-manager built from the upstream
// sources pinned in go.mod.
//
// It writes an admin kubeconfig, prints exactly one JSON line on stdout once the control
// plane is ready, e.g.
//
//	{"ready":true,"kubeconfig":"/tmp/testenv-1/kubeconfig","server":"https://127.0.0.1:41235","version":"v1.36.3"}
//
// and runs until SIGTERM/SIGINT or until its stdin reaches end of file (so it dies with the
// process that started it). It then stops everything and removes its files. Everything
// else goes to stderr; component logs go to a log file unless --verbose is given.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

type config struct {
	kubeconfig   string
	dir          string
	keep         bool
	verbose      bool
	verbosity    int
	logFile      string
	noStdinWatch bool
	apiserverBin string
	etcdBin      string
	kcmBin       string
	noKCM        bool
	readyTimeout time.Duration
}

// say prints testenv's own messages; component logs may be redirected elsewhere.
var say = log.New(os.Stderr, "testenv: ", 0)

func main() {
	if len(os.Args) > 1 && os.Args[1] == kcmSubcommand {
		runControllerManagerSubcommand(os.Args[2:])
		return
	}
	os.Exit(run())
}

func parseFlags() *config {
	c := &config{}
	fs := flag.NewFlagSet("testenv", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: testenv [flags]\n\nRuns etcd, kube-apiserver and kube-controller-manager on loopback until SIGTERM or stdin EOF.\n\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "where to write the admin kubeconfig (default DIR/kubeconfig); an existing file is only replaced if testenv wrote it")
	fs.StringVar(&c.dir, "dir", "", "work directory for certificates, etcd data and logs (default: a new temporary directory)")
	fs.BoolVar(&c.keep, "keep", false, "keep the work directory and kubeconfig on exit")
	fs.BoolVar(&c.verbose, "verbose", false, "send component logs to stderr instead of the log file")
	fs.IntVar(&c.verbosity, "v", 0, "klog verbosity of kube-apiserver and kube-controller-manager")
	fs.StringVar(&c.logFile, "log-file", "", "append component logs to this file (default DIR/testenv.log)")
	fs.BoolVar(&c.noStdinWatch, "no-stdin-watch", false, "do not exit when stdin closes (for running in the background with stdin at /dev/null)")
	fs.StringVar(&c.apiserverBin, "apiserver-bin", "", "run this kube-apiserver binary instead of the built-in one")
	fs.StringVar(&c.etcdBin, "etcd-bin", "", "run this etcd binary instead of the built-in one")
	fs.StringVar(&c.kcmBin, "controller-manager-bin", "", "run this kube-controller-manager binary instead of the built-in one")
	fs.BoolVar(&c.noKCM, "no-controller-manager", false, "do not run kube-controller-manager (no garbage collection, namespace deletion or default ServiceAccounts)")
	fs.DurationVar(&c.readyTimeout, "ready-timeout", 3*time.Minute, "give up if the control plane is not ready within this time")
	_ = fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "testenv: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		os.Exit(2)
	}
	return c
}

func run() int {
	cfg := parseFlags()
	started := time.Now()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-sigs
		say.Printf("received %v, shutting down", s)
		cancel()
	}()
	if !cfg.noStdinWatch {
		exitOnStdinEOF(func() { cancel() })
	}

	dir, cleanupDir, err := workDir(cfg)
	if err != nil {
		say.Print(err)
		return 1
	}
	defer cleanupDir()

	// Components log through klog/zap to os.Stderr. Unless --verbose, point os.Stderr at
	// the log file; testenv's own messages keep going to the real stderr.
	logPath := cfg.logFile
	if logPath == "" {
		logPath = filepath.Join(dir, "testenv.log")
	}
	var logs io.Writer = os.Stderr
	if !cfg.verbose {
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			say.Printf("opening log file: %v", err)
			return 1
		}
		defer f.Close()
		os.Stderr = f
		logs = f
	}
	fail := func(format string, args ...any) int {
		say.Printf(format, args...)
		if !cfg.verbose {
			say.Printf("component logs: %s (last lines follow)\n%s", logPath, tail(logPath, 40))
		}
		return 1
	}

	p, err := newPKI(filepath.Join(dir, "pki"))
	if err != nil {
		return fail("creating certificates: %v", err)
	}

	etcd, err := startEtcd(ctx, dir, cfg.etcdBin, logs)
	if err != nil {
		return fail("%v", err)
	}
	defer etcd.stop()

	api, err := startAPIServer(ctx, p, dir, etcd.clientURL, cfg.apiserverBin, cfg.verbosity, logs)
	if err != nil {
		return fail("%v", err)
	}
	defer api.stop()
	server := fmt.Sprintf("https://127.0.0.1:%d", api.port)

	kubeconfigPath := cfg.kubeconfig
	if kubeconfigPath == "" {
		kubeconfigPath = filepath.Join(dir, "kubeconfig")
	}
	if err := writeKubeconfig(kubeconfigPath, server, p.caPEM, p.adminCertPEM, p.adminKeyPEM); err != nil {
		return fail("%v", err)
	}
	if !cfg.keep {
		defer os.Remove(kubeconfigPath)
	}
	kcmKubeconfig := filepath.Join(dir, "kube-controller-manager.kubeconfig")
	if err := writeKubeconfig(kcmKubeconfig, server, p.caPEM, p.kcmCertPEM, p.kcmKeyPEM); err != nil {
		return fail("%v", err)
	}

	client, err := newAdminClient(kubeconfigPath)
	if err != nil {
		return fail("%v", err)
	}
	readyCtx, readyCancel := context.WithTimeout(ctx, cfg.readyTimeout)
	defer readyCancel()
	if err := waitAPIServerReady(readyCtx, client, api); err != nil {
		if ctx.Err() != nil {
			return 1
		}
		return fail("kube-apiserver did not become ready: %v", err)
	}

	if !cfg.noKCM {
		kcm, err := startControllerManager(p, kcmKubeconfig, cfg.kcmBin, cfg.verbosity, logs)
		if err != nil {
			return fail("%v", err)
		}
		defer kcm.stop()
		if err := waitControllerManagerReady(readyCtx, client, kcm); err != nil {
			if ctx.Err() != nil {
				return 1
			}
			return fail("kube-controller-manager did not become ready: %v", err)
		}
	}

	version, err := serverVersion(readyCtx, client)
	if err != nil {
		return fail("reading /version: %v", err)
	}
	line, _ := json.Marshal(map[string]any{
		"ready":      true,
		"kubeconfig": kubeconfigPath,
		"server":     server,
		"version":    version,
	})
	if _, err := fmt.Fprintln(os.Stdout, string(line)); err != nil {
		return fail("writing the ready line: %v", err)
	}
	say.Printf("ready in %.1fs: %s (kube-apiserver %s)", time.Since(started).Seconds(), server, version)

	select {
	case <-ctx.Done():
	case <-api.done:
		return fail("kube-apiserver stopped unexpectedly: %v", api.err)
	}
	say.Printf("stopping")
	return 0
}

// workDir returns the directory to use and a function that removes it (unless --keep or
// the user chose the directory).
func workDir(cfg *config) (string, func(), error) {
	if cfg.dir != "" {
		if err := os.MkdirAll(cfg.dir, 0o700); err != nil {
			return "", nil, fmt.Errorf("creating --dir: %w", err)
		}
		abs, err := filepath.Abs(cfg.dir)
		if err != nil {
			return "", nil, err
		}
		return abs, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "testenv-")
	if err != nil {
		return "", nil, fmt.Errorf("creating a temporary directory: %w", err)
	}
	return dir, func() {
		if cfg.keep {
			say.Printf("keeping %s", dir)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			say.Printf("removing %s: %v", dir, err)
		}
	}, nil
}

// tail returns the last n lines of a file, for error reports.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
