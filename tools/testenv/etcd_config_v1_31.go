//go:build k8s_v1_31

package main

import (
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// etcd 3.5, which Kubernetes 1.31 is built and tested with, still calls it experimental.
func setWatchProgressNotifyInterval(cfg *embed.Config, d time.Duration) {
	cfg.ExperimentalWatchProgressNotifyInterval = d
}
