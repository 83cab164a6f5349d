package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// etcdServer is a running etcd, in-process or as a child process.
type etcdServer struct {
	clientURL string
	stop      func()
}

// startEtcd starts etcd with its data under dir, listening on free loopback ports.
// With bin == "" etcd runs in-process (go.etcd.io/etcd/server/v3/embed); otherwise bin is
// executed with the equivalent flags.
func startEtcd(ctx context.Context, dir, bin string, logs io.Writer) (*etcdServer, error) {
	var lastErr error
	// Free ports are picked by binding :0 and closing the listener, so another process can
	// take one in between; retry a few times with new ports when that happens.
	for attempt := 0; attempt < 3; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			return nil, err
		}
		clientURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		dataDir := filepath.Join(dir, fmt.Sprintf("etcd-%d", attempt))
		var srv *etcdServer
		if bin == "" {
			srv, err = startEmbeddedEtcd(dataDir, clientURL, peerURL)
		} else {
			srv, err = startEtcdProcess(ctx, bin, dataDir, clientURL, peerURL, logs)
		}
		if err == nil {
			return srv, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, lastErr
}

func startEmbeddedEtcd(dataDir, clientURL, peerURL string) (*etcdServer, error) {
	cu, _ := url.Parse(clientURL)
	pu, _ := url.Parse(peerURL)
	cfg := embed.NewConfig()
	cfg.Name = "testenv"
	cfg.Dir = dataDir
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// Test data is thrown away on exit; skipping fsync makes writes much cheaper.
	cfg.UnsafeNoFsync = true
	// kube-apiserver relies on progress notifications for consistent reads from its watch
	// cache; etcd's default interval is 10 minutes, real clusters use a few seconds.
	setWatchProgressNotifyInterval(cfg, 5*time.Second)
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"stderr"}

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("starting embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd failed: %w", err)
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("embedded etcd did not become ready within 60s")
	}
	return &etcdServer{clientURL: clientURL, stop: e.Close}, nil
}

func startEtcdProcess(ctx context.Context, bin, dataDir, clientURL, peerURL string, logs io.Writer) (*etcdServer, error) {
	args := []string{
		"--name=testenv",
		"--data-dir=" + dataDir,
		"--listen-client-urls=" + clientURL,
		"--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=testenv=" + peerURL,
		"--unsafe-no-fsync=true",
		"--log-level=error",
	}
	proc, err := startChild(bin, args, logs)
	if err != nil {
		return nil, fmt.Errorf("starting etcd %s: %w", bin, err)
	}
	healthURL := clientURL + "/health"
	deadline := time.Now().Add(60 * time.Second)
	for {
		if exited, err := proc.exited(); exited {
			return nil, fmt.Errorf("etcd %s exited before becoming healthy: %v", bin, err)
		}
		resp, err := http.Get(healthURL)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"true"`) {
				return &etcdServer{clientURL: clientURL, stop: func() { proc.stop(10 * time.Second) }}, nil
			}
		}
		if time.Now().After(deadline) {
			proc.stop(time.Second)
			return nil, fmt.Errorf("etcd %s was not healthy at %s within 60s", bin, healthURL)
		}
		select {
		case <-ctx.Done():
			proc.stop(time.Second)
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
