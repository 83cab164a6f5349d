//go:build !k8s_v1_31

package main

import (
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func setWatchProgressNotifyInterval(cfg *embed.Config, d time.Duration) {
	cfg.WatchProgressNotifyInterval = d
}
