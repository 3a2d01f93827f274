package deploy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"go.uber.org/goleak"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	sjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/orderly-dev/orderly/internal/memlimit"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/roles"
	orderlyworker "github.com/orderly-dev/orderly/worker"
)

var binDir string // where the worker binary is built, removed after the tests

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, append(natstest.LeakOptions(), goleak.Cleanup(func(int) {
		if binDir != "" {
			os.RemoveAll(binDir)
		}
	}))...)
}

const (
	k8sDir       = "k8s"
	workerName   = "orderly-worker"
	workerImage  = "ghcr.io/orderly-dev/orderly"
	workflow     = "order"
	workerBinary = "/usr/local/bin/worker"
)

// ---------------------------------------------------------------------------
// Strict decoding

// The scheme knows every built-in kind the manifests use, and the Prometheus
// Operator's (PodMonitor, PrometheusRule); the codec factory
// in strict mode fails on unknown and duplicate fields, as the API server's
// strict field validation does.
var (
	scheme = runtime.NewScheme()
	codecs = func() serializer.CodecFactory {
		for _, add := range []func(*runtime.Scheme) error{
			corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme,
			networkingv1.AddToScheme, autoscalingv2.AddToScheme, monitoringv1.AddToScheme,
		} {
			utilruntime.Must(add(scheme))
		}
		return serializer.NewCodecFactory(scheme, serializer.EnableStrict)
	}()
)

// scaledObject mirrors the fields of KEDA's ScaledObject (keda.sh/v1alpha1)
// that the manifests use. KEDA's Go types live in github.com/kedacore/keda,
// a large module with the whole operator behind it; k8s.io/api has no such
// type. Decoding strictly into this mirror still fails on any field it does
// not know, so a typo cannot pass: adding a field to the manifest means
// adding it here, checked against KEDA's documentation.
type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		PollingInterval *int32 `json:"pollingInterval"`
		CooldownPeriod  *int32 `json:"cooldownPeriod"`
		Fallback        *struct {
			FailureThreshold int32 `json:"failureThreshold"`
			Replicas         int32 `json:"replicas"`
		} `json:"fallback"`
		Advanced *struct {
			HorizontalPodAutoscalerConfig *struct {
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior"`
			} `json:"horizontalPodAutoscalerConfig"`
		} `json:"advanced"`
		Triggers []struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// strictJSON decodes YAML into v, failing on unknown or duplicate fields, with
// case-sensitive field names (unlike encoding/json): the decoder the API
// machinery's strict mode uses.
func strictJSON(data []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	strict, err := sjson.UnmarshalStrict(j, v, sjson.DisallowDuplicateFields, sjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// decode decodes one YAML document strictly into its Go type: a built-in
// kind, a KEDA ScaledObject, or a kustomization.
func decode(doc []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	switch {
	case tm.Kind == "Kustomization" || tm.Kind == "Component":
		var k types.Kustomization
		return &k, strictJSON(doc, &k)
	case tm.APIVersion == "keda.sh/v1alpha1" && tm.Kind == "ScaledObject":
		var so scaledObject
		return &so, strictJSON(doc, &so)
	}
	obj, _, err := codecs.UniversalDeserializer().Decode(doc, nil, nil)
	return obj, err
}

// documents splits a YAML stream into its non-empty documents.
func documents(t *testing.T, data []byte) [][]byte {
	t.Helper()
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			docs = append(docs, doc)
		}
	}
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for line := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			b.Write(line)
		}
	}
	return b.Bytes()
}

func TestEveryManifestDecodesStrictly(t *testing.T) {
	t.Parallel()
	n := 0
	walk := func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || (filepath.Ext(path) != ".yaml" && filepath.Ext(path) != ".yml") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, doc := range documents(t, data) {
			if _, err := decode(doc); err != nil {
				t.Errorf("%s, document %d: %v", path, i+1, err)
			}
			n++
		}
		return nil
	}
	for _, dir := range []string{k8sDir, monitoringDir} {
		if err := filepath.WalkDir(dir, walk); err != nil {
			t.Fatal(err)
		}
	}
	if n < 15 {
		t.Errorf("decoded only %d documents under %s and %s", n, k8sDir, monitoringDir)
	}
}

// TestStrictDecodingRefusesUnknownFields shows the decoding above is strict,
// for each of its three decoders.
func TestStrictDecodingRefusesUnknownFields(t *testing.T) {
	t.Parallel()
	for name, doc := range map[string]string{
		"built-in kind":  "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {selektor: {a: b}}\n",
		"wrong case":     "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {Selector: {a: b}}\n",
		"duplicate":      "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {selector: {a: b}, selector: {a: c}}\n",
		"nested":         "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x}\nspec: {template: {spec: {containers: [{name: a, image: b, imagePullPolicyy: Always}]}}}\n",
		"ScaledObject":   "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: x}\nspec: {scaleTargetRef: {name: x}, triggerz: []}\n",
		"Kustomization":  "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresourcez: [a]\n",
		"unknown kind":   "apiVersion: v1\nkind: Servise\nmetadata: {name: x}\n",
		"ScaledObject 2": "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: x}\nspec: {fallback: {failureTreshold: 3}}\n",
		"PodMonitor":     "apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\nmetadata: {name: x}\nspec: {selector: {}, podMetricsEndpoints: [{port: http, pathh: /metrics}]}\n",
		"PrometheusRule": "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata: {name: x}\nspec: {groups: [{name: a, rules: [{alert: A, expr: up, annotation: {}}]}]}\n",
	} {
		if _, err := decode([]byte(doc)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

// ---------------------------------------------------------------------------
// Kustomize builds

type built struct {
	dir  string
	kust *types.Kustomization
	objs []any
}

// build runs kustomize on dir, as `kubectl apply -k dir` would, and decodes
// each resulting object strictly.
func build(t *testing.T, dir string) built {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	b := built{dir: dir}
	for _, r := range rm.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj, err := decode(y)
		if err != nil {
			t.Fatalf("%s: %s/%s: %v", dir, r.GetKind(), r.GetName(), err)
		}
		b.objs = append(b.objs, obj)
	}
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := decode(data)
	if err != nil {
		t.Fatal(err)
	}
	b.kust = obj.(*types.Kustomization)
	return b
}

// buildWith builds an overlay of the test's own: resource (a directory
// under deploy/k8s) with component added, as a user's overlay would.
func buildWith(t *testing.T, resource, component string) built {
	t.Helper()
	dir := t.TempDir()
	rel := func(p string) string { // kustomize takes no absolute paths
		a, err := filepath.Abs(filepath.Join(k8sDir, p))
		if err != nil {
			t.Fatal(err)
		}
		r, err := filepath.Rel(dir, a)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	k := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [%s]\ncomponents: [%s]\n",
		rel(resource), rel(component))
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	return build(t, dir)
}

func all[T any](b built) []T {
	var out []T
	for _, o := range b.objs {
		if v, ok := o.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func find[T interface{ GetName() string }](b built, name string) (T, bool) {
	for _, v := range all[T](b) {
		if v.GetName() == name {
			return v, true
		}
	}
	var zero T
	return zero, false
}

// overlays lists every overlay directory.
func overlays(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(k8sDir, "overlays"))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join(k8sDir, "overlays", e.Name()))
		}
	}
	if len(dirs) == 0 {
		t.Fatal("no overlays")
	}
	return dirs
}

func TestBaseBuilds(t *testing.T) {
	t.Parallel()
	b := build(t, filepath.Join(k8sDir, "base"))
	if _, ok := find[*appsv1.StatefulSet](b, workerName); !ok {
		t.Error("base has no worker StatefulSet")
	}
	if _, ok := find[*appsv1.StatefulSet](b, "nats"); !ok {
		t.Error("base has no NATS StatefulSet")
	}
}

// TestOverlays builds each overlay and checks that its objects agree with
// each other, with the worker binary and with the Dockerfile.
func TestOverlays(t *testing.T) {
	t.Parallel()
	w := workerInfo(t)
	df := parseDockerfile(t)
	for _, dir := range overlays(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			t.Parallel()
			b := build(t, dir)
			checkLabels(t, b)
			checkSelectors(t, b)
			checkReferences(t, b)
			checkWorker(t, b, w, df)
			checkConsoleCredentials(t, b)
			checkNATS(t, b)
			checkNetworkPolicy(t, b)
			checkAutoscaling(t, b)
		})
	}
}

func checkLabels(t *testing.T, b built) {
	t.Helper()
	for _, o := range b.objs {
		m, ok := o.(metav1.Object)
		if !ok {
			continue
		}
		if _, isNS := o.(*corev1.Namespace); isNS {
			continue
		}
		if m.GetLabels()["app.kubernetes.io/part-of"] != "orderly" {
			t.Errorf("%T %s lacks app.kubernetes.io/part-of=orderly", o, m.GetName())
		}
		if b.kust.Namespace != "" && m.GetNamespace() != b.kust.Namespace {
			t.Errorf("%T %s in namespace %q, want %q", o, m.GetName(), m.GetNamespace(), b.kust.Namespace)
		}
	}
}

// podTemplates maps each workload's name to its pod template.
func podTemplates(b built) map[string]*corev1.PodTemplateSpec {
	m := map[string]*corev1.PodTemplateSpec{}
	for _, s := range all[*appsv1.StatefulSet](b) {
		m[s.Name] = &s.Spec.Template
	}
	for _, d := range all[*appsv1.Deployment](b) {
		m[d.Name] = &d.Spec.Template
	}
	return m
}

func selector(t *testing.T, ls *metav1.LabelSelector) labels.Selector {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		t.Fatal(err)
	}
	if s.Empty() {
		t.Errorf("empty selector selects everything")
	}
	return s
}

// matching names the workloads whose pods sel selects.
func matching(b built, sel labels.Selector) []string {
	var names []string
	for name, tmpl := range podTemplates(b) {
		if sel.Matches(labels.Set(tmpl.Labels)) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

func checkSelectors(t *testing.T, b built) {
	t.Helper()
	for _, s := range all[*appsv1.StatefulSet](b) {
		if !selector(t, s.Spec.Selector).Matches(labels.Set(s.Spec.Template.Labels)) {
			t.Errorf("StatefulSet %s: selector does not match its pods", s.Name)
		}
		if _, ok := find[*corev1.Service](b, s.Spec.ServiceName); !ok {
			t.Errorf("StatefulSet %s: serviceName %q is no Service", s.Name, s.Spec.ServiceName)
		}
	}
	tmpls := podTemplates(b)
	for _, svc := range all[*corev1.Service](b) {
		names := matching(b, selector(t, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}))
		if len(names) != 1 {
			t.Errorf("Service %s selects the pods of %v, want one workload", svc.Name, names)
			continue
		}
		for _, p := range svc.Spec.Ports {
			if containerPort(tmpls[names[0]], p.TargetPort.String()) != p.Port {
				t.Errorf("Service %s port %s: target %s is not container port %d of %s", svc.Name, p.Name, p.TargetPort.String(), p.Port, names[0])
			}
		}
	}
	for _, pdb := range all[*policyv1.PodDisruptionBudget](b) {
		if names := matching(b, selector(t, pdb.Spec.Selector)); len(names) != 1 {
			t.Errorf("PodDisruptionBudget %s selects %v, want one workload", pdb.Name, names)
		}
		if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
			t.Errorf("PodDisruptionBudget %s: want maxUnavailable 1", pdb.Name)
		}
	}
}

// containerPort resolves a port name or number in a pod template.
func containerPort(tmpl *corev1.PodTemplateSpec, port string) int32 {
	if n, err := strconv.Atoi(port); err == nil {
		return int32(n)
	}
	for _, c := range tmpl.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == port {
				return p.ContainerPort
			}
		}
	}
	return -1
}

// checkReferences: every Secret, ConfigMap and ServiceAccount a pod names
// is in the build, with the keys it reads.
func checkReferences(t *testing.T, b built) {
	t.Helper()
	for name, tmpl := range podTemplates(b) {
		spec := tmpl.Spec
		if spec.ServiceAccountName != "" {
			sa, ok := find[*corev1.ServiceAccount](b, spec.ServiceAccountName)
			if !ok {
				t.Errorf("%s: ServiceAccount %s missing", name, spec.ServiceAccountName)
			} else if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
				t.Errorf("ServiceAccount %s automounts its token", sa.Name)
			}
		}
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("%s: pods automount a service account token", name)
		}
		for _, c := range spec.Containers {
			for _, e := range c.Env {
				if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
					continue
				}
				ref := e.ValueFrom.SecretKeyRef
				if _, err := secretValue(b, ref); err != nil {
					t.Errorf("%s: env %s: %v", name, e.Name, err)
				}
			}
		}
		for _, v := range spec.Volumes {
			if v.ConfigMap != nil {
				if _, ok := find[*corev1.ConfigMap](b, v.ConfigMap.Name); !ok {
					t.Errorf("%s: volume %s: ConfigMap %s missing", name, v.Name, v.ConfigMap.Name)
				}
			}
			if v.Secret != nil {
				if _, ok := find[*corev1.Secret](b, v.Secret.SecretName); !ok {
					t.Errorf("%s: volume %s: Secret %s missing", name, v.Name, v.Secret.SecretName)
				}
			}
		}
	}
}

func secretValue(b built, ref *corev1.SecretKeySelector) (string, error) {
	s, ok := find[*corev1.Secret](b, ref.Name)
	if !ok {
		return "", fmt.Errorf("Secret %s is not in the build", ref.Name)
	}
	if v, ok := s.Data[ref.Key]; ok {
		return string(v), nil
	}
	if v, ok := s.StringData[ref.Key]; ok {
		return v, nil
	}
	return "", fmt.Errorf("Secret %s has no key %s", ref.Name, ref.Key)
}

func container(t *testing.T, tmpl *corev1.PodTemplateSpec, name string) *corev1.Container {
	t.Helper()
	for i := range tmpl.Spec.Containers {
		if tmpl.Spec.Containers[i].Name == name {
			return &tmpl.Spec.Containers[i]
		}
	}
	t.Fatalf("no container %s", name)
	return nil
}

func workerPod(t *testing.T, b built) (*appsv1.StatefulSet, *corev1.Container) {
	t.Helper()
	sts, ok := find[*appsv1.StatefulSet](b, workerName)
	if !ok {
		t.Fatalf("%s: no StatefulSet %s", b.dir, workerName)
	}
	return sts, container(t, &sts.Spec.Template, "worker")
}

func env(c *corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

func checkWorker(t *testing.T, b built, w worker, df dockerfile) {
	t.Helper()
	sts, c := workerPod(t, b)
	spec := sts.Spec.Template.Spec

	// Image: the overlay's images entry, the base's image name.
	want := workerImage + ":latest"
	for _, img := range b.kust.Images {
		if img.Name == workerImage {
			name := workerImage
			if img.NewName != "" {
				name = img.NewName
			}
			want = name + ":" + img.NewTag
		}
	}
	if c.Image != want {
		t.Errorf("worker image %s, want %s (the overlay's images entry)", c.Image, want)
	}
	if len(c.Command) > 0 && c.Command[0] != df.entrypoint {
		t.Errorf("worker command %v, the Dockerfile's entrypoint is %s", c.Command, df.entrypoint)
	}

	// Environment: only variables the worker reads.
	for _, e := range c.Env {
		if !w.reads(e.Name) {
			t.Errorf("worker env %s: the worker reads no such variable (flags: %v)", e.Name, w.flags)
		}
	}
	if e, ok := env(c, "NATS_URL"); !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
		t.Error("NATS_URL does not come from a Secret")
	}
	for _, name := range []string{"ORDERLY_USER", "ORDERLY_PASSWORD", "ORDERLY_TOKEN", "ORDERLY_NKEY", "ORDERLY_CREDS"} {
		if e, ok := env(c, name); ok && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
			t.Errorf("credential %s is not read from a Secret", name)
		}
	}

	// Probes: on the port the worker serves HTTP on.
	httpPort := -1
	if e, ok := env(c, "ORDERLY_HTTP"); ok {
		_, p, err := net.SplitHostPort(e.Value)
		if err != nil {
			t.Fatalf("ORDERLY_HTTP=%q: %v", e.Value, err)
		}
		httpPort, _ = strconv.Atoi(p)
	} else {
		t.Error("ORDERLY_HTTP unset: the worker's default listens on loopback, out of the kubelet's reach")
	}
	// A startup probe on /healthz could never fail, and one on /readyz
	// would restart a worker that waits, as it should, for a forming
	// cluster within --connect-timeout.
	if c.StartupProbe != nil {
		t.Errorf("worker: a startup probe %+v: /healthz cannot fail and /readyz must be allowed --connect-timeout", c.StartupProbe.ProbeHandler)
	}
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("worker: no HTTP %s probe", name)
			continue
		}
		if got := containerPort(&sts.Spec.Template, p.HTTPGet.Port.String()); int(got) != httpPort {
			t.Errorf("worker %s probe on port %d, ORDERLY_HTTP port is %d", name, got, httpPort)
		}
	}
	if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness probe on %s, want /readyz", c.ReadinessProbe.HTTPGet.Path)
	}
	if c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil && c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("liveness probe on %s, want /healthz", c.LivenessProbe.HTTPGet.Path)
	}
	if df.exposes != httpPort {
		t.Errorf("the Dockerfile exposes %d, the manifest serves HTTP on %d", df.exposes, httpPort)
	}

	// Shutdown: the kubelet must not kill the worker while it drains. The
	// worker gives Stop shutdown-timeout plus 5s, then drains NATS.
	shutdown := w.shutdownDefault
	if e, ok := env(c, "ORDERLY_SHUTDOWN_TIMEOUT"); ok {
		d, err := time.ParseDuration(e.Value)
		if err != nil {
			t.Fatalf("ORDERLY_SHUTDOWN_TIMEOUT=%q: %v", e.Value, err)
		}
		shutdown = d
	}
	if spec.TerminationGracePeriodSeconds == nil {
		t.Fatal("no terminationGracePeriodSeconds")
	}
	if grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second; grace < shutdown+10*time.Second {
		t.Errorf("terminationGracePeriodSeconds %s, want at least the shutdown timeout %s + 10s", grace, shutdown)
	}

	// Resources and GOMEMLIMIT.
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[r]; !ok {
			t.Errorf("worker: no %s request", r)
		}
		if _, ok := c.Resources.Limits[r]; !ok {
			t.Errorf("worker: no %s limit", r)
		}
	}
	checkWorkerMemory(t, &sts.Spec.Template, c)

	// Hardening; the user is the Dockerfile's.
	psc, sc := spec.SecurityContext, c.SecurityContext
	switch {
	case psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot:
		t.Error("worker pod: runAsNonRoot not set")
	case psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Error("worker pod: seccomp profile is not RuntimeDefault")
	case psc.RunAsUser == nil || *psc.RunAsUser != df.uid:
		t.Errorf("worker pod runs as %v, the Dockerfile's USER is %d", psc.RunAsUser, df.uid)
	}
	checkContainerHardening(t, "worker", sc)
}

// checkConsoleCredentials: the worker's web console acts as the operator
// (ORDERLY_CONSOLE_USER, ORDERLY_CONSOLE_PASSWORD), from the Secret keys
// that NATS reads for its user with the operator role: as the worker's own
// user it could not send events, replay dead letters or follow statuses.
func checkConsoleCredentials(t *testing.T, b built) {
	t.Helper()
	_, c := workerPod(t, b)
	user, password := operatorRefs(t, b)
	for _, want := range []struct {
		name string
		ref  corev1.SecretKeySelector
	}{{"ORDERLY_CONSOLE_USER", user}, {"ORDERLY_CONSOLE_PASSWORD", password}} {
		e, ok := env(c, want.name)
		if !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			t.Errorf("worker: %s is not read from a Secret: the console would act as the worker's user", want.name)
			continue
		}
		if got := e.ValueFrom.SecretKeyRef; got.Name != want.ref.Name || got.Key != want.ref.Key {
			t.Errorf("worker %s from Secret %s key %s; NATS reads its operator user's from Secret %s key %s",
				want.name, got.Name, got.Key, want.ref.Name, want.ref.Key)
		}
	}
}

// operatorRefs are the Secret keys of the name and password of the user
// with the operator role, as NATS reads them: from the nats.conf of the
// build's NATS or, where NATS is the Helm chart's, from
// helm/nats-values.yaml.
func operatorRefs(t *testing.T, b built) (user, password corev1.SecretKeySelector) {
	t.Helper()
	var userVar, passwordVar string
	from := map[string]*corev1.EnvVarSource{} // the NATS container's environment
	if sts, ok := find[*appsv1.StatefulSet](b, "nats"); ok {
		cm, ok := find[*corev1.ConfigMap](b, "nats-config")
		if !ok {
			t.Fatal("no ConfigMap nats-config")
		}
		m := regexp.MustCompile(`user:\s*\$(\w+),\s*password:\s*\$(\w+),\s*permissions:\s*\$OPERATOR\b`).FindStringSubmatch(cm.Data["nats.conf"])
		if m == nil {
			t.Fatal("nats.conf has no user with permissions $OPERATOR")
		}
		userVar, passwordVar = m[1], m[2]
		for _, e := range container(t, &sts.Spec.Template, "nats").Env {
			from[e.Name] = e.ValueFrom
		}
	} else {
		v := readHelmNATSValues(t)
		want, err := roles.For(roles.Operator, workflow)
		if err != nil {
			t.Fatal(err)
		}
		variable := regexp.MustCompile(`^<< \$(\w+) >>$`)
		for _, u := range v.Config.Merge.Authorization.Users {
			mu, mp := variable.FindStringSubmatch(u.User), variable.FindStringSubmatch(u.Password)
			if mu != nil && mp != nil && slices.Equal(u.Permissions.Publish, want.Publish) && slices.Equal(u.Permissions.Subscribe, want.Subscribe) {
				userVar, passwordVar = mu[1], mp[1]
			}
		}
		if userVar == "" {
			t.Fatal("helm/nats-values.yaml has no user with the operator role's permissions")
		}
		for name, e := range v.Container.Env {
			from[name] = e.ValueFrom
		}
	}
	ref := func(name string) corev1.SecretKeySelector {
		if s := from[name]; s != nil && s.SecretKeyRef != nil {
			return *s.SecretKeyRef
		}
		t.Fatalf("NATS reads $%s, which does not come from a Secret", name)
		return corev1.SecretKeySelector{}
	}
	return ref(userVar), ref(passwordVar)
}

func checkContainerHardening(t *testing.T, name string, sc *corev1.SecurityContext) {
	t.Helper()
	switch {
	case sc == nil:
		t.Errorf("%s: no securityContext", name)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("%s: root filesystem is writable", name)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("%s: privilege escalation allowed", name)
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		t.Errorf("%s: capabilities %+v, want all dropped and none added", name, sc.Capabilities)
	}
}

// checkWorkerMemory: the worker's memory limit (ORDERLY_MEMORY_LIMIT, or
// by default GOMEMLIMIT or the container's limit) is within the container's
// limit, GOMEMLIMIT if set leaves room below it, and the bounds the
// environment sets explicitly fit in what that limit sizes: the sizing the
// worker does at start-up finds nothing to warn of.
func checkWorkerMemory(t *testing.T, tmpl *corev1.PodTemplateSpec, c *corev1.Container) {
	t.Helper()
	limit := c.Resources.Limits[corev1.ResourceMemory]
	if limit.IsZero() {
		t.Error("worker: no memory limit")
		return
	}
	mem := limit.Value() // the cgroup's limit, read by default
	// GOMEMLIMIT follows the container's limit through the downward API, so
	// that changing the limit cannot leave a stale soft limit behind; the
	// worker lowers the runtime's soft limit to 90 % of its memory limit.
	if e, ok := env(c, "GOMEMLIMIT"); !ok || e.ValueFrom == nil || e.ValueFrom.ResourceFieldRef == nil ||
		e.ValueFrom.ResourceFieldRef.Resource != "limits.memory" || !e.ValueFrom.ResourceFieldRef.Divisor.IsZero() && e.ValueFrom.ResourceFieldRef.Divisor.Value() != 1 {
		t.Errorf("worker: GOMEMLIMIT %+v: want the container's limits.memory in bytes through resourceFieldRef", e)
	}
	if e, ok := env(c, "ORDERLY_MEMORY_LIMIT"); ok {
		v, err := envValue(tmpl, c, e)
		if err != nil {
			t.Fatal(err)
		}
		if mem, err = memlimit.Parse(v); err != nil {
			t.Fatalf("ORDERLY_MEMORY_LIMIT=%q: %v", v, err)
		}
		if mem <= 0 || mem > limit.Value() {
			t.Errorf("worker: ORDERLY_MEMORY_LIMIT %d bytes, the container's memory limit is %d", mem, limit.Value())
		}
	}
	cfg := orderlyworker.Config{MemoryLimit: mem}
	for name, dst := range map[string]*int{
		"ORDERLY_MAX_ACTORS": &cfg.MaxActors, "ORDERLY_BATCH": &cfg.Batch,
		"ORDERLY_CONCURRENCY": &cfg.Concurrency, "ORDERLY_PARTITIONS": &cfg.Queue.Partitions,
	} {
		if e, ok := env(c, name); ok {
			n, err := strconv.Atoi(e.Value)
			if err != nil {
				t.Fatalf("%s=%q: %v", name, e.Value, err)
			}
			*dst = n
		}
	}
	_, plan := cfg.Sized(1)
	for _, w := range plan.Warnings {
		t.Errorf("worker: %s", w)
	}
}

// envValue resolves an environment variable of container c the way the
// kubelet would: a literal, or a resource of a container (the downward API).
func envValue(tmpl *corev1.PodTemplateSpec, c *corev1.Container, e corev1.EnvVar) (string, error) {
	if e.ValueFrom == nil {
		return e.Value, nil
	}
	ref := e.ValueFrom.ResourceFieldRef
	if ref == nil {
		return "", fmt.Errorf("env %s: only literals and resourceFieldRef are resolved here", e.Name)
	}
	target := c
	if ref.ContainerName != "" && ref.ContainerName != c.Name {
		target = nil
		for i := range tmpl.Spec.Containers {
			if tmpl.Spec.Containers[i].Name == ref.ContainerName {
				target = &tmpl.Spec.Containers[i]
			}
		}
		if target == nil {
			return "", fmt.Errorf("env %s: no container %s", e.Name, ref.ContainerName)
		}
	}
	kind, res, ok := strings.Cut(ref.Resource, ".")
	list := map[string]corev1.ResourceList{"limits": target.Resources.Limits, "requests": target.Resources.Requests}[kind]
	q, set := list[corev1.ResourceName(res)]
	if !ok || !set {
		return "", fmt.Errorf("env %s: container %s has no %s", e.Name, target.Name, ref.Resource)
	}
	div := int64(1)
	if !ref.Divisor.IsZero() {
		div = ref.Divisor.Value()
	}
	// The kubelet rounds up.
	return strconv.FormatInt((q.Value()+div-1)/div, 10), nil
}

// checkMemLimit: GOMEMLIMIT, in the Go runtime's syntax, is below the
// container's memory limit and leaves it some room.
func checkMemLimit(t *testing.T, name, gomemlimit string, limit resource.Quantity) {
	t.Helper()
	m := regexp.MustCompile(`^(\d+)(B|KiB|MiB|GiB|TiB)?$`).FindStringSubmatch(gomemlimit)
	if m == nil {
		t.Errorf("%s: GOMEMLIMIT=%q is not in the Go runtime's syntax", name, gomemlimit)
		return
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	n <<= map[string]int{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	if l := limit.Value(); l == 0 || n >= l*95/100 || n < l*70/100 {
		t.Errorf("%s: GOMEMLIMIT %d bytes, memory limit %d: want 70-95%% of the limit", name, n, l)
	}
}

func checkNATS(t *testing.T, b built) {
	t.Helper()
	_, c := workerPod(t, b)
	natsURL := ""
	if e, ok := env(c, "NATS_URL"); ok && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
		v, err := secretValue(b, e.ValueFrom.SecretKeyRef)
		if err != nil {
			t.Fatal(err)
		}
		natsURL = v
	}
	u, err := url.Parse(natsURL)
	if err != nil || u.Scheme != "nats" || u.Port() == "" {
		t.Fatalf("NATS_URL %q: want nats://HOST:PORT", natsURL)
	}

	sts, ok := find[*appsv1.StatefulSet](b, "nats")
	if !ok {
		// NATS comes from elsewhere (the Helm chart): only the port is ours to check.
		if u.Port() != "4222" {
			t.Errorf("NATS_URL %s: want the client port 4222", natsURL)
		}
		return
	}
	tmpl := &sts.Spec.Template
	nc := container(t, tmpl, "nats")

	// NATS_URL names the client Service and its port.
	svc, ok := find[*corev1.Service](b, u.Hostname())
	if !ok {
		t.Errorf("NATS_URL %s: no Service %s", natsURL, u.Hostname())
	} else if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == u.Port() }) {
		t.Errorf("NATS_URL %s: Service %s has no port %s", natsURL, svc.Name, u.Port())
	}

	// The official image, at the nats-server version the tests run against.
	if want := "nats:" + strings.TrimPrefix(moduleVersion(t, "github.com/nats-io/nats-server/v2"), "v") + "-alpine"; nc.Image != want {
		t.Errorf("NATS image %s, want %s (the nats-server version in go.mod)", nc.Image, want)
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Errorf("NATS replicas %v, want 3", sts.Spec.Replicas)
	}
	headless, ok := find[*corev1.Service](b, sts.Spec.ServiceName)
	if !ok || headless.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("NATS serviceName %s is not a headless Service", sts.Spec.ServiceName)
	}

	// The configuration, parsed by nats-server itself.
	cm, ok := find[*corev1.ConfigMap](b, "nats-config")
	if !ok {
		t.Fatal("no ConfigMap nats-config")
	}
	conf := cm.Data["nats.conf"]
	vars := map[string]string{}
	defined := map[string]bool{} // variables of the file itself, such as the roles
	for _, m := range regexp.MustCompile(`(?m)^\s*([A-Z_][A-Z0-9_]*)\s*[=:]`).FindAllStringSubmatch(conf, -1) {
		defined[m[1]] = true
	}
	unquoted := regexp.MustCompile(`"[^"\n]*"`).ReplaceAllString(conf, `""`) // "$JS.API..." is a subject
	for _, m := range regexp.MustCompile(`\$([A-Z_][A-Z0-9_]*)`).FindAllStringSubmatch(unquoted, -1) {
		if defined[m[1]] {
			continue
		}
		if _, ok := env(nc, m[1]); !ok {
			t.Errorf("nats.conf reads $%s, which the NATS container does not set", m[1])
		}
		vars["$"+m[1]] = "test-" + strings.ToLower(m[1])
	}
	var pairs []string
	for k, v := range vars {
		pairs = append(pairs, k, v)
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(strings.NewReplacer(pairs...).Replace(conf)); err != nil {
		t.Fatalf("nats.conf: %v", err)
	}
	mounts := map[string]string{}
	for _, m := range nc.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	port := func(name string) int { return int(containerPort(tmpl, name)) }
	switch {
	case !opts.JetStream:
		t.Error("nats.conf: JetStream off")
	case opts.StoreDir != mounts["data"]:
		t.Errorf("JetStream store_dir %s, the data volume is mounted on %s", opts.StoreDir, mounts["data"])
	case opts.Port != port("client") || opts.HTTPPort != port("monitor") || opts.Cluster.Port != port("cluster"):
		t.Errorf("nats.conf ports %d/%d/%d differ from the container's", opts.Port, opts.HTTPPort, opts.Cluster.Port)
	case !strings.HasPrefix(opts.PidFile, mounts["pid"]+"/"):
		t.Errorf("pid_file %s is not on the pid volume %s", opts.PidFile, mounts["pid"])
	}
	checkRoles(t, opts)
	var routes []string
	for _, r := range opts.Routes {
		routes = append(routes, r.Host)
	}
	var want []string
	for i := range int(*sts.Spec.Replicas) {
		want = append(want, fmt.Sprintf("%s-%d.%s:%d", sts.Name, i, sts.Spec.ServiceName, opts.Cluster.Port))
	}
	if !slices.Equal(routes, want) {
		t.Errorf("routes %v, want %v", routes, want)
	}
	var pvc *corev1.PersistentVolumeClaim
	for i := range sts.Spec.VolumeClaimTemplates {
		if sts.Spec.VolumeClaimTemplates[i].Name == "data" {
			pvc = &sts.Spec.VolumeClaimTemplates[i]
		}
	}
	if pvc == nil {
		t.Fatal("NATS: no volumeClaimTemplate data")
	}
	if size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; opts.JetStreamMaxStore <= 0 || opts.JetStreamMaxStore >= size.Value() {
		t.Errorf("max_file_store %d must be set and below the volume's %s", opts.JetStreamMaxStore, size.String())
	}

	// Probes, lame duck, grace.
	for name, p := range map[string]*corev1.Probe{"startup": nc.StartupProbe, "readiness": nc.ReadinessProbe, "liveness": nc.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz?js-enabled-only=true" || port(p.HTTPGet.Port.String()) != opts.HTTPPort {
			t.Errorf("NATS %s probe: want GET /healthz?js-enabled-only=true on the monitor port", name)
		}
	}
	if nc.Lifecycle == nil || nc.Lifecycle.PreStop == nil || nc.Lifecycle.PreStop.Exec == nil ||
		!slices.Equal(nc.Lifecycle.PreStop.Exec.Command, []string{"nats-server", "--signal", "ldm=" + opts.PidFile}) {
		t.Errorf("NATS preStop: want lame-duck mode through the pid file %s", opts.PidFile)
	}
	if grace := time.Duration(*tmpl.Spec.TerminationGracePeriodSeconds) * time.Second; grace <= opts.LameDuckDuration+opts.LameDuckGracePeriod {
		t.Errorf("NATS grace %s, lame duck takes %s + %s", grace, opts.LameDuckDuration, opts.LameDuckGracePeriod)
	}
	if e, ok := env(nc, "GOMEMLIMIT"); ok {
		checkMemLimit(t, "nats", e.Value, nc.Resources.Limits[corev1.ResourceMemory])
	}
	checkContainerHardening(t, "nats", nc.SecurityContext)
	for _, pdb := range all[*policyv1.PodDisruptionBudget](b) {
		if slices.Equal(matching(b, selector(t, pdb.Spec.Selector)), []string{"nats"}) {
			return
		}
	}
	t.Error("no PodDisruptionBudget for NATS")
}

// checkRoles: nats.conf has one user per role, by the variables it reads,
// each with exactly the permissions of package roles.
func checkRoles(t *testing.T, opts *server.Options) {
	t.Helper()
	byUser := map[string]roles.Role{
		"test-nats_user": roles.Worker, "test-nats_producer_user": roles.Producer, "test-nats_operator_user": roles.Operator,
	}
	if len(opts.Users) != len(byUser) {
		t.Errorf("nats.conf has %d users, want one per role", len(opts.Users))
	}
	for _, u := range opts.Users {
		r, ok := byUser[u.Username]
		if !ok {
			t.Errorf("nats.conf user %s has no role", u.Username)
			continue
		}
		want, err := roles.For(r, workflow)
		if err != nil {
			t.Fatal(err)
		}
		if p := u.Permissions; p == nil || p.Publish == nil || p.Subscribe == nil ||
			!slices.Equal(p.Publish.Allow, want.Publish) || !slices.Equal(p.Subscribe.Allow, want.Subscribe) {
			t.Errorf("nats.conf user %s (%s): permissions differ from package roles", u.Username, r)
		}
	}
}

func checkNetworkPolicy(t *testing.T, b built) {
	t.Helper()
	np, ok := find[*networkingv1.NetworkPolicy](b, workerName)
	if !ok {
		t.Fatal("no NetworkPolicy for the worker")
	}
	sts, _ := workerPod(t, b)
	if !selector(t, &np.Spec.PodSelector).Matches(labels.Set(sts.Spec.Template.Labels)) {
		t.Error("NetworkPolicy does not select the worker's pods")
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}) {
		t.Errorf("policyTypes %v, want Ingress and Egress", np.Spec.PolicyTypes)
	}
	// Ingress: the HTTP (metrics) port only.
	httpPort := containerPort(&sts.Spec.Template, "http")
	for _, r := range np.Spec.Ingress {
		if len(r.Ports) == 0 {
			t.Error("an ingress rule allows every port")
		}
		for _, p := range r.Ports {
			if p.Port == nil || p.Port.IntValue() != int(httpPort) {
				t.Errorf("ingress to port %v, want only %d", p.Port, httpPort)
			}
		}
	}
	// Egress: NATS's client port, and DNS.
	natsPods := false
	for _, r := range np.Spec.Egress {
		if len(r.To) == 0 || len(r.Ports) == 0 {
			t.Error("an egress rule allows every destination or every port")
		}
		for _, p := range r.Ports {
			if n := p.Port.IntValue(); n != 4222 && n != 53 {
				t.Errorf("egress to port %d, want only NATS (4222) and DNS (53)", n)
			}
		}
		for _, to := range r.To {
			if to.IPBlock != nil {
				t.Error("egress to an IP block")
			}
			if to.PodSelector != nil && to.NamespaceSelector == nil {
				if _, ok := find[*appsv1.StatefulSet](b, "nats"); ok {
					if got := matching(b, selector(t, to.PodSelector)); !slices.Equal(got, []string{"nats"}) {
						t.Errorf("egress to pods of %v, want the NATS pods", got)
					}
				}
				natsPods = true
			}
		}
	}
	if !natsPods {
		t.Error("no egress to the NATS pods")
	}
	checkActionEgress(t, b)
}

// checkActionEgress: components/action-egress, where an overlay uses it,
// only widens egress to HTTPS outside the cluster's private ranges, and
// never to the cloud metadata address.
func checkActionEgress(t *testing.T, b built) {
	t.Helper()
	np, ok := find[*networkingv1.NetworkPolicy](b, workerName+"-action-egress")
	if !ok {
		return
	}
	sts, _ := workerPod(t, b)
	workerEgressOnly(t, "action-egress", np, sts, 443)
	for _, r := range np.Spec.Egress {
		for _, to := range r.To {
			if to.IPBlock == nil {
				t.Errorf("action-egress to %+v, want an ipBlock", to)
				continue
			}
			for _, closed := range []string{"169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} {
				if !slices.Contains(to.IPBlock.Except, closed) {
					t.Errorf("action-egress to %s does not except %s", to.IPBlock.CIDR, closed)
				}
			}
		}
	}
}

// TestTracingComponent: components/tracing, on the base in an overlay of
// the test's own, points the workers' OTLP exporter at a collector (an
// endpoint the SDK reads, on OTLP's HTTP port) and widens their egress to
// the collector's pods on OTLP's two ports, and nothing else.
func TestTracingComponent(t *testing.T) {
	t.Parallel()
	b := buildWith(t, "base", "components/tracing")
	sts, c := workerPod(t, b)
	e, ok := env(c, "OTEL_EXPORTER_OTLP_ENDPOINT")
	if !ok {
		t.Fatal("the worker has no OTEL_EXPORTER_OTLP_ENDPOINT: tracing stays off")
	}
	u, err := url.Parse(e.Value)
	if err != nil || u.Scheme != "http" || u.Port() != "4318" {
		t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT %q: want an http URL on OTLP's HTTP port 4318 (%v)", e.Value, err)
	}
	if e, ok := env(c, "OTEL_SERVICE_NAME"); !ok || e.Value == "" {
		t.Error("no OTEL_SERVICE_NAME")
	}
	np, ok := find[*networkingv1.NetworkPolicy](b, workerName+"-tracing-egress")
	if !ok {
		t.Fatal("no tracing NetworkPolicy")
	}
	workerEgressOnly(t, "tracing", np, sts, 4317, 4318)
	for _, r := range np.Spec.Egress {
		for _, to := range r.To {
			if to.IPBlock != nil || to.PodSelector == nil || len(to.PodSelector.MatchLabels) == 0 {
				t.Errorf("tracing egress to %+v, want the collector's pods by label", to)
			}
		}
	}
}

func checkAutoscaling(t *testing.T, b built) {
	t.Helper()
	_, c := workerPod(t, b)
	partitions := 16
	if e, ok := env(c, "ORDERLY_PARTITIONS"); ok {
		partitions, _ = strconv.Atoi(e.Value)
	}
	target := func(kind, apiVersion, name string) {
		if kind != "StatefulSet" || apiVersion != "apps/v1" || name != workerName {
			t.Errorf("autoscaler targets %s %s %s, want apps/v1 StatefulSet %s", apiVersion, kind, name, workerName)
		}
	}
	sos, hpas := all[*scaledObject](b), all[*autoscalingv2.HorizontalPodAutoscaler](b)
	// Whoever owns the replica count sets it alone: a count in the
	// StatefulSet next to an autoscaler is reset by every `kubectl apply`.
	sts, _ := workerPod(t, b)
	switch n := len(sos) + len(hpas); {
	case n > 1:
		t.Fatalf("%d ScaledObjects and %d HPAs: want one autoscaler at most", len(sos), len(hpas))
	case n == 1 && sts.Spec.Replicas != nil:
		t.Errorf("the StatefulSet sets replicas %d next to an autoscaler: each apply resets the autoscaler's count", *sts.Spec.Replicas)
	case n == 0 && (sts.Spec.Replicas == nil || *sts.Spec.Replicas < 1 || int(*sts.Spec.Replicas) > partitions):
		t.Errorf("no autoscaler and replicas %v: want a count of 1 to %d partitions", sts.Spec.Replicas, partitions)
	}
	for _, h := range hpas {
		target(h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.APIVersion, h.Spec.ScaleTargetRef.Name)
		if int(h.Spec.MaxReplicas) > partitions {
			t.Errorf("HPA maxReplicas %d > %d partitions", h.Spec.MaxReplicas, partitions)
		}
	}
	for _, so := range sos {
		s := so.Spec
		target(s.ScaleTargetRef.Kind, s.ScaleTargetRef.APIVersion, s.ScaleTargetRef.Name)
		if s.MaxReplicaCount == nil || int(*s.MaxReplicaCount) > partitions {
			t.Errorf("ScaledObject maxReplicaCount %v: want at most %d partitions", s.MaxReplicaCount, partitions)
		}
		if s.Fallback == nil || s.Fallback.FailureThreshold <= 0 || s.Fallback.Replicas <= 0 {
			t.Error("ScaledObject: no fallback")
		}
		stream, consumers := kedaConsumers(t, so)
		if stream != "ORDERLY_EVENTS_"+strings.ToUpper(workflow) {
			t.Errorf("KEDA watches stream %s", stream)
		}
		var want []string
		for p := range partitions {
			want = append(want, fmt.Sprintf("orderly_%s_p%d", workflow, p))
		}
		if !slices.Equal(consumers, want) {
			t.Errorf("KEDA watches consumers %v, want one per partition %v", consumers, want)
		}
		for _, tr := range s.Triggers {
			host, port, err := net.SplitHostPort(tr.Metadata["natsServerMonitoringEndpoint"])
			if err != nil {
				t.Fatal(err)
			}
			if want := "nats-headless." + b.kust.Namespace + ".svc.cluster.local"; host != want {
				t.Errorf("KEDA monitoring endpoint host %s, want %s (the headless service in the overlay's namespace)", host, want)
			}
			if port != "8222" {
				t.Errorf("KEDA monitoring endpoint port %s, want NATS's monitor port 8222", port)
			}
			if tr.Metadata["account"] != "$G" {
				t.Errorf("KEDA account %q, want $G (users in nats.conf's authorization block)", tr.Metadata["account"])
			}
			if _, err := strconv.Atoi(tr.Metadata["lagThreshold"]); err != nil {
				t.Errorf("lagThreshold %q", tr.Metadata["lagThreshold"])
			}
		}
	}
}

// kedaConsumers returns the stream and the consumers (sorted by partition)
// the ScaledObject's nats-jetstream triggers watch.
func kedaConsumers(t *testing.T, so *scaledObject) (stream string, consumers []string) {
	t.Helper()
	for _, tr := range so.Spec.Triggers {
		if tr.Type != "nats-jetstream" {
			t.Errorf("trigger type %s", tr.Type)
			continue
		}
		if stream != "" && tr.Metadata["stream"] != stream {
			t.Errorf("triggers watch streams %s and %s", stream, tr.Metadata["stream"])
		}
		stream = tr.Metadata["stream"]
		consumers = append(consumers, tr.Metadata["consumer"])
	}
	slices.SortFunc(consumers, func(a, b string) int {
		return cmpPartition(a) - cmpPartition(b)
	})
	return stream, consumers
}

func cmpPartition(consumer string) int {
	n, _ := strconv.Atoi(consumer[strings.LastIndex(consumer, "_p")+2:])
	return n
}

// moduleVersion is the version of module path that go.mod requires (test
// binaries carry no dependency list in their build info).
func moduleVersion(t *testing.T, path string) string {
	t.Helper()
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*(?:require\s+)?` + regexp.QuoteMeta(path) + `\s+(v\S+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatalf("go.mod does not require %s", path)
	}
	return string(m[1])
}

// ---------------------------------------------------------------------------
// The worker binary

type worker struct {
	path              string
	flags             []string // every flag name, from worker --help
	shutdownDefault   time.Duration
	queueLimitDefault int64
}

// reads reports whether the worker reads the environment variable name.
func (w worker) reads(name string) bool {
	switch name {
	case "NATS_URL", "GOMEMLIMIT":
		return true // --nats-url's alias; the Go runtime's
	}
	for _, f := range w.flags {
		if name == "ORDERLY_"+strings.ToUpper(strings.ReplaceAll(f, "-", "_")) {
			return true
		}
	}
	return false
}

var buildWorker = sync.OnceValues(func() (worker, error) {
	dir, err := os.MkdirTemp("", "orderly-deploy-bin")
	if err != nil {
		return worker{}, err
	}
	binDir = dir
	bin := filepath.Join(dir, "worker")
	// Built in the root module, with its go.mod, as the Dockerfile builds
	// it: not with this module's versions of the worker's dependencies.
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/worker")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		return worker{}, fmt.Errorf("go build: %v\n%s", err, out)
	}
	var help bytes.Buffer
	cmd = exec.Command(bin, "--help")
	cmd.Env = []string{}
	cmd.Stdout, cmd.Stderr = &help, &help
	if err := cmd.Run(); err != nil {
		return worker{}, fmt.Errorf("worker --help: %v\n%s", err, help.String())
	}
	w := worker{path: bin}
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`).FindAllStringSubmatch(help.String(), -1) {
		w.flags = append(w.flags, m[1])
	}
	m := regexp.MustCompile(`(?m)--shutdown-timeout \S+.*\(default (\S+)\)`).FindStringSubmatch(help.String())
	if m == nil {
		return worker{}, fmt.Errorf("worker --help shows no --shutdown-timeout default:\n%s", help.String())
	}
	if w.shutdownDefault, err = time.ParseDuration(m[1]); err != nil {
		return worker{}, err
	}
	m = regexp.MustCompile(`(?m)--queue-limit \S+.*\(default (\d+)\)`).FindStringSubmatch(help.String())
	if m == nil {
		return worker{}, fmt.Errorf("worker --help shows no --queue-limit default:\n%s", help.String())
	}
	if w.queueLimitDefault, err = strconv.ParseInt(m[1], 10, 64); err != nil {
		return worker{}, err
	}
	if len(w.flags) < 10 || !slices.Contains(w.flags, "http") {
		return worker{}, fmt.Errorf("worker --help: found flags %v in\n%s", w.flags, help.String())
	}
	return w, nil
})

func workerInfo(t *testing.T) worker {
	t.Helper()
	w, err := buildWorker()
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestWorkerRunsWithManifestEnvironment starts the real worker with the
// environment of the example overlay's worker container (credentials from
// its Secret), an embedded NATS server instead of NATS_URL, and one replica
// instead of three; then the manifest's probe paths must answer 200, the
// consumers KEDA watches must exist, and SIGTERM must end it with status 0.
func TestWorkerRunsWithManifestEnvironment(t *testing.T) {
	t.Parallel()
	w := workerInfo(t)
	b := build(t, filepath.Join(k8sDir, "overlays", "example"))
	_, c := workerPod(t, b)

	var environ []string
	vals := map[string]string{}
	sts, _ := workerPod(t, b)
	for _, e := range c.Env {
		v := e.Value
		var err error
		switch {
		case e.ValueFrom == nil:
		case e.ValueFrom.SecretKeyRef != nil:
			v, err = secretValue(b, e.ValueFrom.SecretKeyRef)
		default:
			v, err = envValue(&sts.Spec.Template, c, e)
		}
		if err != nil {
			t.Fatal(err)
		}
		vals[e.Name] = v
		if e.Name == "NATS_URL" {
			continue // the embedded server instead
		}
		environ = append(environ, e.Name+"="+v)
	}
	if vals["ORDERLY_USER"] == "" || vals["ORDERLY_PASSWORD"] == "" {
		t.Fatal("the example's worker has no user and password")
	}

	// The embedded server stands in for NATS, with the Secret's operator
	// user as well, as whom the console acts.
	if vals["ORDERLY_CONSOLE_USER"] == "" || vals["ORDERLY_CONSOLE_PASSWORD"] == "" {
		t.Fatal("the example's worker gives its console no user and password")
	}
	cmd := exec.Command(w.path, "--listen", "127.0.0.1:-1", "--data-dir", t.TempDir(), "--http", "127.0.0.1:0", "--replicas", "1",
		"--operator-user", vals["ORDERLY_CONSOLE_USER"], "--operator-password", vals["ORDERLY_CONSOLE_PASSWORD"])
	cmd.Env = environ
	var out natstest.Output
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("worker output:\n%s", out.String())
		}
	})

	// Each listener picks its port; the log says which.
	natsAddr := natstest.LoggedAddr(t, &out, "start-up: embedded NATS server listening", "url", natstest.Timeout)
	base := "http://" + natstest.LoggedAddr(t, &out, "start-up: http listening", "addr", natstest.Timeout)
	probe := func(p *corev1.Probe) string { return base + p.HTTPGet.Path }
	// Readiness has no event to wait on: poll it, as the kubelet does.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		code, body := natstest.HTTPGet(probe(c.ReadinessProbe))
		if code == http.StatusOK {
			break
		}
		if code != 0 && code != http.StatusServiceUnavailable {
			t.Fatalf("readiness probe %s: %d %s (want 503 until ready, then 200)", c.ReadinessProbe.HTTPGet.Path, code, body)
		}
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("worker exited before it was ready: %v", err)
		case <-ctx.Done():
			t.Fatalf("%s never answered 200", probe(c.ReadinessProbe))
		case <-tick.C:
		}
	}
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe} {
		if code, body := natstest.HTTPGet(probe(p)); code != http.StatusOK {
			t.Errorf("%s probe %s: %d %s", name, p.HTTPGet.Path, code, body)
		}
	}
	if code, body := natstest.HTTPGet(base + "/metrics"); code != http.StatusOK || !strings.Contains(body, "orderly_") {
		t.Errorf("/metrics: %d %s", code, body)
	}
	// The worker took its memory limit from the manifest, lowered the
	// runtime's soft limit below it (GOMEMLIMIT is the whole limit) and
	// sized its bounds to it without a warning.
	if mem := c.Resources.Limits[corev1.ResourceMemory]; !strings.Contains(out.String(), `"memory_limit":"`+memlimit.Format(mem.Value())+`"`) ||
		!strings.Contains(out.String(), `"go_soft_limit":"`+memlimit.Format(memlimit.SoftLimit(mem.Value()))+`"`) ||
		!strings.Contains(out.String(), "bounds sized to the memory limit") || strings.Contains(out.String(), "more than the") {
		t.Errorf("the worker's log does not show its bounds sized to the manifest's memory limit %s without a warning", mem.String())
	}

	// The console sends an event as the operator (the worker's user may
	// not), from loopback, where it needs no token.
	page, err := http.Get(base + "/w/order/keys/manifest-1")
	if err != nil {
		t.Fatal(err)
	}
	pageBody, _ := io.ReadAll(page.Body)
	page.Body.Close()
	csrf := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindSubmatch(pageBody)
	if csrf == nil {
		t.Fatalf("no write form on the console's key page:\n%s", pageBody)
	}
	noRedirect := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	sent, err := noRedirect.PostForm(base+"/w/order/keys/manifest-1/events", url.Values{"csrf": {string(csrf[1])}, "event": {"start_processing"}})
	if err != nil {
		t.Fatal(err)
	}
	sentBody, _ := io.ReadAll(sent.Body)
	sent.Body.Close()
	if sent.StatusCode != http.StatusSeeOther {
		t.Errorf("an event sent through the console: %d, want 303\n%s", sent.StatusCode, sentBody)
	}

	// The consumers the KEDA triggers watch exist, with the user and
	// password of the Secret (the embedded server requires them, and gives
	// them the worker's role).
	if sos := all[*scaledObject](b); len(sos) == 1 {
		stream, want := kedaConsumers(t, sos[0])
		nc, err := nats.Connect("nats://"+natsAddr, nats.UserInfo(vals["ORDERLY_USER"], vals["ORDERLY_PASSWORD"]), nats.CustomInboxPrefix(roles.WorkerInbox))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		s, err := js.Stream(ctx, stream)
		if err != nil {
			t.Fatalf("stream %s that KEDA watches: %v", stream, err)
		}
		// The worker's role may read each consumer, not list them.
		for _, name := range want {
			if _, err := js.Consumer(ctx, stream, name); err != nil {
				t.Errorf("consumer %s that KEDA watches: %v", name, err)
			}
		}
		if n := s.CachedInfo().State.Consumers; n != len(want) {
			t.Errorf("the worker made %d consumers, KEDA watches %v", n, want)
		}
		nc.Close()
	} else {
		t.Error("the example overlay has no ScaledObject")
	}

	// SIGTERM, as the kubelet sends it: a clean exit.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("worker after SIGTERM: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("worker did not exit after SIGTERM")
	}
}

// ---------------------------------------------------------------------------
// The Dockerfile

type dockerfile struct {
	stages     []stage
	entrypoint string
	uid        int64
	exposes    int
}

type stage struct {
	from, name string
	lines      [][2]string // instruction, arguments
}

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	data, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var df dockerfile
	var logical strings.Builder
	for line := range strings.Lines(string(data)) {
		line = strings.TrimRight(line, "\r\n")
		if strings.HasPrefix(strings.TrimSpace(line), "#") || strings.TrimSpace(line) == "" {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			logical.WriteString(strings.TrimSuffix(line, `\`) + " ")
			continue
		}
		logical.WriteString(line)
		instr, args, _ := strings.Cut(strings.TrimSpace(logical.String()), " ")
		logical.Reset()
		instr = strings.ToUpper(instr)
		args = strings.TrimSpace(args)
		if instr == "FROM" {
			f := strings.Fields(args)
			f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "--platform=") })
			s := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			df.stages = append(df.stages, s)
			continue
		}
		if len(df.stages) == 0 {
			if instr != "ARG" {
				t.Fatalf("Dockerfile: %s before FROM", instr)
			}
			continue
		}
		last := &df.stages[len(df.stages)-1]
		last.lines = append(last.lines, [2]string{instr, args})
	}
	if len(df.stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a multi-stage build", len(df.stages))
	}
	final := df.stages[len(df.stages)-1]
	for _, l := range final.lines {
		switch l[0] {
		case "ENTRYPOINT":
			var ep []string
			if err := yaml.Unmarshal([]byte(l[1]), &ep); err != nil || len(ep) == 0 {
				t.Fatalf("ENTRYPOINT %s: want the exec (JSON) form", l[1])
			}
			df.entrypoint = ep[0]
		case "USER":
			user, _, _ := strings.Cut(l[1], ":")
			if df.uid, err = strconv.ParseInt(user, 10, 64); err != nil {
				t.Fatalf("USER %s: want a numeric user, so that runAsNonRoot can verify it", l[1])
			}
		case "EXPOSE":
			df.exposes, _ = strconv.Atoi(strings.TrimSuffix(l[1], "/tcp"))
		}
	}
	return df
}

// envPairs parses the arguments of an ENV instruction (KEY=VALUE ...).
func envPairs(args string) map[string]string {
	m := map[string]string{}
	for _, f := range strings.Fields(args) {
		k, v, _ := strings.Cut(f, "=")
		m[k] = v
	}
	return m
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	w := workerInfo(t)
	df := parseDockerfile(t)
	build, final := df.stages[0], df.stages[len(df.stages)-1]

	// The build stage: Go as go.mod says, CGO off, both binaries.
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	if want := "golang:" + string(m[1]); build.from != want && !strings.HasPrefix(build.from, want+"-") && !strings.HasPrefix(build.from, want+".") {
		t.Errorf("build stage FROM %s, want %s (go.mod's go %s)", build.from, want, m[1])
	}
	cgoOff, built := false, ""
	for _, l := range build.lines {
		if (l[0] == "ENV" && envPairs(l[1])["CGO_ENABLED"] == "0") || (l[0] == "RUN" && strings.Contains(l[1], "CGO_ENABLED=0 ")) {
			cgoOff = true
		}
		if l[0] == "RUN" && strings.Contains(l[1], "go build") {
			built = l[1]
		}
	}
	if !cgoOff {
		t.Error("the build stage does not set CGO_ENABLED=0")
	}
	for _, cmd := range []string{"./cmd/worker", "./cmd/enqueue"} {
		if !strings.Contains(built, cmd) {
			t.Errorf("go build does not build %s: %q", cmd, built)
		}
	}

	// The final stage: distroless or scratch, both binaries, non-root.
	if !strings.HasPrefix(final.from, "gcr.io/distroless/") && final.from != "scratch" {
		t.Errorf("final stage FROM %s, want distroless or scratch", final.from)
	}
	if final.from == "scratch" {
		t.Error("scratch has no CA certificates: copy them in or use distroless/static")
	}
	copied := map[string]bool{}
	for _, l := range final.lines {
		if l[0] != "COPY" || !strings.Contains(l[1], "--from="+build.name) {
			continue
		}
		f := slices.DeleteFunc(strings.Fields(l[1]), func(s string) bool { return strings.HasPrefix(s, "--") })
		dst := f[len(f)-1]
		for _, src := range f[:len(f)-1] {
			if strings.HasSuffix(dst, "/") {
				copied[dst+filepath.Base(src)] = true
			} else {
				copied[dst] = true
			}
		}
	}
	for _, bin := range []string{workerBinary, "/usr/local/bin/enqueue"} {
		if !copied[bin] {
			t.Errorf("the final stage lacks %s (copied: %v)", bin, copied)
		}
	}
	if df.entrypoint != workerBinary {
		t.Errorf("ENTRYPOINT %s, want %s", df.entrypoint, workerBinary)
	}
	if df.uid == 0 {
		t.Error("USER is root")
	}

	// Every variable the image sets is one the worker reads.
	for _, l := range final.lines {
		if l[0] != "ENV" {
			continue
		}
		for k, v := range envPairs(l[1]) {
			if !w.reads(k) {
				t.Errorf("Dockerfile ENV %s: the worker reads no such variable", k)
			}
			if k == "ORDERLY_HTTP" {
				if _, p, _ := net.SplitHostPort(v); p != strconv.Itoa(df.exposes) {
					t.Errorf("ORDERLY_HTTP=%s, EXPOSE %d", v, df.exposes)
				}
			}
		}
	}

	// .dockerignore keeps the context small and keeps what the build needs.
	ignore, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(stripComments(ignore)))
	for _, want := range []string{".git", "bin/", "orderly-data/"} {
		if !slices.Contains(lines, want) {
			t.Errorf(".dockerignore lacks %s", want)
		}
	}
	for _, needed := range []string{"go.mod", "go.sum", "cmd", "queue", "worker", "internal", "embedded", "order", "statemachine"} {
		for _, l := range lines {
			if ok, _ := filepath.Match(l, needed); ok || strings.TrimSuffix(l, "/") == needed {
				t.Errorf(".dockerignore pattern %s excludes %s, which the build needs", l, needed)
			}
		}
	}
}

// workerEgressOnly checks that np, the NetworkPolicy of a component (name),
// selects the worker's pods (those of sts) and only widens their egress, to
// ports alone.
func workerEgressOnly(t *testing.T, name string, np *networkingv1.NetworkPolicy, sts *appsv1.StatefulSet, ports ...int) {
	t.Helper()
	if !selector(t, &np.Spec.PodSelector).Matches(labels.Set(sts.Spec.Template.Labels)) {
		t.Errorf("the %s NetworkPolicy does not select the worker's pods", name)
	}
	if len(np.Spec.Ingress) > 0 || !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}) {
		t.Errorf("%s: policyTypes %v with %d ingress rules, want Egress alone", name, np.Spec.PolicyTypes, len(np.Spec.Ingress))
	}
	for _, r := range np.Spec.Egress {
		for _, p := range r.Ports {
			if p.Port == nil || !slices.Contains(ports, p.Port.IntValue()) {
				t.Errorf("%s egress to port %v, want ports %v only", name, p.Port, ports)
			}
		}
	}
}
