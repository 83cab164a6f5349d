package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const clusterName = "testenv"

// writeKubeconfig writes a kubeconfig with one cluster, user and context, all named after
// testenv, using client-certificate authentication. It refuses to replace a file that
// testenv did not write, so a mistyped --kubeconfig cannot clobber a real one.
func writeKubeconfig(path, server string, caPEM, certPEM, keyPEM []byte) error {
	if existing, err := clientcmd.LoadFromFile(path); err == nil {
		if _, ours := existing.Clusters[clusterName]; !ours || len(existing.Clusters) != 1 {
			return fmt.Errorf("refusing to overwrite %s: it is not a kubeconfig written by testenv", path)
		}
	} else if !os.IsNotExist(err) {
		if _, statErr := os.Stat(path); statErr == nil {
			return fmt.Errorf("refusing to overwrite %s: %v", path, err)
		}
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[clusterName] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[clusterName] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts[clusterName] = &clientcmdapi.Context{Cluster: clusterName, AuthInfo: clusterName, Namespace: "default"}
	cfg.CurrentContext = clusterName
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := clientcmd.WriteToFile(*cfg, tmp); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
}

func newAdminClient(kubeconfig string) (*kubernetes.Clientset, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", kubeconfig, err)
	}
	rc.Timeout = 10 * time.Second
	return kubernetes.NewForConfig(rc)
}

// poll calls check every 250ms until it returns nil, ctx ends, or died reports that the
// component being waited for has stopped. The error names the last failure.
func poll(ctx context.Context, what string, died func() error, check func(context.Context) error) error {
	var last error
	for {
		if err := died(); err != nil {
			return err
		}
		last = check(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out waiting for %s; last error: %v", what, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// waitAPIServerReady waits for /readyz to answer 200 (all post-start hooks, RBAC bootstrap
// included, have run) and for the default namespace to exist.
func waitAPIServerReady(ctx context.Context, c *kubernetes.Clientset, api *apiServer) error {
	died := func() error {
		select {
		case <-api.done:
			return fmt.Errorf("kube-apiserver stopped: %v", api.err)
		default:
			return nil
		}
	}
	err := poll(ctx, "/readyz", died, func(ctx context.Context) error {
		var code int
		body, err := c.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).StatusCode(&code).Raw()
		if err != nil {
			return fmt.Errorf("%v: %s", err, body)
		}
		if code != http.StatusOK {
			return fmt.Errorf("/readyz returned %d", code)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return poll(ctx, "the default namespace", died, func(ctx context.Context) error {
		_, err := c.CoreV1().Namespaces().Get(ctx, metav1.NamespaceDefault, metav1.GetOptions{})
		return err
	})
}

// waitControllerManagerReady waits until the ServiceAccount controller has created the
// default ServiceAccount in the default namespace, which shows the controller manager
// is up, connected and running its controllers.
func waitControllerManagerReady(ctx context.Context, c *kubernetes.Clientset, kcm *controllerManager) error {
	died := func() error {
		if exited, err := kcm.proc.exited(); exited {
			return fmt.Errorf("kube-controller-manager exited: %v", err)
		}
		return nil
	}
	return poll(ctx, "the default ServiceAccount", died, func(ctx context.Context) error {
		_, err := c.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("serviceaccount default/default does not exist yet")
		}
		return err
	})
}

func serverVersion(ctx context.Context, c *kubernetes.Clientset) (string, error) {
	info, err := c.Discovery().ServerVersion()
	if err != nil {
		return "", err
	}
	return info.GitVersion, nil
}
