// Package deploy holds Orderly's deployment files: the Kubernetes manifests
// in k8s/ (a kustomize base, components for autoscaling with KEDA or an HPA,
// and example overlays), a Grafana dashboard and Prometheus alerting rules
// in monitoring/ (installed by k8s/components/monitoring), Helm values for
// the official NATS chart in helm/, and, at the repository root, the
// Dockerfile.
//
// The package has no code. Its tests decode every manifest strictly into the
// Kubernetes API types, build every overlay with kustomize, and cross-check
// the result against the real worker binary (probe paths and ports, the
// environment variables it reads, its shutdown timeout, the consumers KEDA
// watches) and against the Dockerfile. They parse every PromQL expression of
// the dashboard and the rules and check the metric names against a real
// worker's /metrics.
//
// It is a module of its own, github.com/orderly-dev/orderly/deploy, so that
// the Kubernetes and kustomize libraries its tests use stay out of the root
// go.mod and out of the builds of services that import Orderly. go.mod
// replaces the root module with this checkout, and the worker binary is
// built in the root module, as the Dockerfile builds it. make test runs
// these tests with the root module's.
package deploy
