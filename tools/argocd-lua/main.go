// Command argocd-lua runs Argo CD's own Lua health-check runtime (argo-cd util/lua, on
// gopher-lua) on Kubernetes objects, with the health checks read from an argocd-cm ConfigMap
// by Argo CD's own settings code, as `argocd admin settings resource-overrides health` does.
//
//	argocd-lua --argocd-cm deploy/argocd/argocd-cm.yaml obj1.yaml [obj2.yaml ...]
//
// For each object file it prints one JSON line:
//
//	{"path": "...", "script": {"status": "...", "message": "..."}, "argocd": {...}}
//
// "script" is what the configured health.lua returned (Argo CD's TestLuaHealthScript compares
// this with health_test.yaml); "argocd" is the health Argo CD assigns the resource
// (gitops-engine's GetResourceHealth, which for example reports an object being deleted as
// Progressing before any script runs). A script error is reported as {"error": "..."}.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"

	appv1 "github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
	"github.com/argoproj/argo-cd/v3/util/lua"
	"github.com/argoproj/argo-cd/v3/util/settings"
	"github.com/argoproj/gitops-engine/pkg/health"
	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"
)

type result struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

type line struct {
	Path   string `json:"path"`
	Script result `json:"script"`
	ArgoCD result `json:"argocd"`
}

func toResult(status *health.HealthStatus, err error) result {
	switch {
	case err != nil:
		return result{Error: err.Error()}
	case status == nil:
		return result{Error: "no health check is configured for this kind"}
	default:
		return result{Status: string(status.Status), Message: status.Message}
	}
}

func main() {
	cmPath := flag.String("argocd-cm", "", "path of an argocd-cm ConfigMap manifest carrying the health checks")
	flag.Parse()
	if *cmPath == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: argocd-lua --argocd-cm ARGOCD_CM_YAML OBJECT_YAML...")
		os.Exit(2)
	}
	// Argo CD's settings code logs at info level; the output is the JSON lines only.
	log.SetOutput(io.Discard)
	logrus.SetLevel(logrus.WarnLevel)

	overrides, err := resourceOverrides(*cmPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "argocd-lua: reading %s: %v\n", *cmPath, err)
		os.Exit(1)
	}
	out := json.NewEncoder(os.Stdout)
	for _, path := range flag.Args() {
		obj, err := readObject(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "argocd-lua: reading %s: %v\n", path, err)
			os.Exit(1)
		}
		healthOverrides := lua.ResourceHealthOverrides(overrides)
		l := line{Path: path}
		l.Script = toResult(healthOverrides.GetResourceHealth(obj))
		l.ArgoCD = toResult(health.GetResourceHealth(obj, healthOverrides))
		if err := out.Encode(l); err != nil {
			fmt.Fprintf(os.Stderr, "argocd-lua: %v\n", err)
			os.Exit(1)
		}
	}
}

// resourceOverrides reads the resource customizations of an argocd-cm manifest through Argo CD's
// SettingsManager, backed by a fake clientset holding that ConfigMap (as the argocd admin command
// does for --argocd-cm-path).
func resourceOverrides(path string) (map[string]appv1.ResourceOverride, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal(data, &cm); err != nil {
		return nil, err
	}
	const namespace = "argocd"
	cm.Namespace = namespace
	if cm.Labels == nil {
		cm.Labels = map[string]string{}
	}
	cm.Labels["app.kubernetes.io/part-of"] = "argocd"
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      "argocd-secret",
			Namespace: namespace,
			Labels:    map[string]string{"app.kubernetes.io/part-of": "argocd"},
		},
		Data: map[string][]byte{"admin.password": []byte("unused"), "server.secretkey": []byte("unused")},
	}
	ctx := context.Background()
	manager := settings.NewSettingsManager(ctx, fake.NewClientset(secret, &cm), namespace)
	if err := manager.ResyncInformers(); err != nil {
		return nil, err
	}
	return manager.GetResourceOverrides()
}

func readObject(path string) (*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	obj := map[string]any{}
	if err := yaml.Unmarshal(data, &obj); err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: obj}, nil
}
