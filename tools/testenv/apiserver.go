package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"time"

	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
)

// apiServer is a running kube-apiserver, in-process or as a child process.
type apiServer struct {
	port int
	// done is closed when the server has stopped; err then holds why.
	done chan struct{}
	err  error
	stop func()
}

// apiserverArgs are kube-apiserver's flags for this control plane. Everything not listed
// keeps upstream's default, in particular the admission plugins (the default set,
// ServiceAccount included) and API priority and fairness.
func apiserverArgs(p *pki, dir, etcdURL string, port, verbosity int) []string {
	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	return []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
		"--tls-cert-file=" + p.servingCert,
		"--tls-private-key-file=" + p.servingKey,
		"--client-ca-file=" + p.caFile,
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=" + server,
		"--service-account-key-file=" + p.saPublicKey,
		"--service-account-signing-key-file=" + p.saPrivateKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--allow-privileged=true",
		// The lease reconciler would publish 127.0.0.1 as the endpoint of the `kubernetes`
		// Service, which nothing here can route to; the Service itself is still created.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
		"--v=" + strconv.Itoa(verbosity),
	}
}

// startAPIServer starts kube-apiserver. With bin == "" it runs in this process, serving
// on a listener opened here (no port race) and stopping when ctx is cancelled; otherwise
// bin is executed with the same flags.
func startAPIServer(ctx context.Context, p *pki, dir, etcdURL, bin string, verbosity int, logs io.Writer) (*apiServer, error) {
	if bin != "" {
		ports, err := freePorts(1)
		if err != nil {
			return nil, err
		}
		proc, err := startChild(bin, apiserverArgs(p, dir, etcdURL, ports[0], verbosity), logs)
		if err != nil {
			return nil, fmt.Errorf("starting kube-apiserver %s: %w", bin, err)
		}
		srv := &apiServer{port: ports[0], done: make(chan struct{})}
		go func() {
			<-proc.done
			srv.err = proc.err
			if srv.err == nil {
				srv.err = errors.New("kube-apiserver exited")
			}
			close(srv.done)
		}()
		srv.stop = func() { proc.stop(20 * time.Second) }
		return srv, nil
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("opening the kube-apiserver listener: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	completed, err := apiserverOptions(ctx, apiserverArgs(p, dir, etcdURL, port, verbosity), ln)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("kube-apiserver options: %w", err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	srv := &apiServer{port: port, done: make(chan struct{})}
	go func() {
		srv.err = apiserverapp.Run(runCtx, completed)
		if srv.err == nil && runCtx.Err() == nil {
			srv.err = errors.New("kube-apiserver stopped")
		}
		close(srv.done)
	}()
	srv.stop = func() {
		cancel()
		select {
		case <-srv.done:
		case <-time.After(20 * time.Second):
		}
	}
	return srv, nil
}
