package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

// kcmSubcommand is the hidden first argument that makes this binary act as
// kube-controller-manager. It is not meant to be used by hand.
const kcmSubcommand = "__kube-controller-manager"

// controllers started by kube-controller-manager: what an operator's tests observe on a
// real cluster when objects and namespaces are deleted and ServiceAccounts are used.
var controllers = []string{
	"garbage-collector-controller",             // ownerReference cascading deletion
	"namespace-controller",                     // finishes namespace deletion
	"serviceaccount-controller",                // the "default" ServiceAccount in each namespace
	"serviceaccount-token-controller",          // token Secrets of type service-account-token
	"root-ca-certificate-publisher-controller", // kube-root-ca.crt ConfigMap in each namespace
	"clusterrole-aggregation-controller",       // admin/edit/view aggregated ClusterRoles
}

// runControllerManagerSubcommand runs upstream's kube-controller-manager command with args
// and never returns. It exits when stdin closes, so it cannot outlive testenv.
func runControllerManagerSubcommand(args []string) {
	exitOnStdinEOF(func() { os.Exit(0) })
	cmd := kcmapp.NewControllerManagerCommand()
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "kube-controller-manager: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func controllerManagerArgs(p *pki, kubeconfig string, verbosity int) []string {
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--controllers=" + strings.Join(controllers, ","),
		"--use-service-account-credentials=false",
		"--root-ca-file=" + p.caFile,
		"--service-account-private-key-file=" + p.saPrivateKey,
		"--leader-elect=false",
		// No serving endpoint: nothing scrapes it, and it would need delegated authn/authz.
		"--secure-port=0",
		"--v=" + strconv.Itoa(verbosity),
	}
}

// controllerManager is the running kube-controller-manager process.
type controllerManager struct {
	proc *child
}

// startControllerManager runs kube-controller-manager as a separate process: bin when
// given, else this executable's hidden subcommand. A separate process keeps its global
// state (feature gates, component registry, metrics, logging flags, signal handling)
// apart from the in-process kube-apiserver's.
func startControllerManager(p *pki, kubeconfig, bin string, verbosity int, logs io.Writer) (*controllerManager, error) {
	args := controllerManagerArgs(p, kubeconfig, verbosity)
	if bin == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("locating testenv's own executable: %w", err)
		}
		bin = self
		args = append([]string{kcmSubcommand}, args...)
	}
	proc, err := startChild(bin, args, logs)
	if err != nil {
		return nil, fmt.Errorf("starting kube-controller-manager: %w", err)
	}
	return &controllerManager{proc: proc}, nil
}

func (c *controllerManager) stop() { c.proc.stop(10 * time.Second) }
