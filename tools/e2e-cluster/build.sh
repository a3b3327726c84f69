#!/usr/bin/env bash
# Build the real control plane and KEDA from their Go modules into a cache outside the
# repository, skipping whatever the cache already holds for the recorded versions.
#
#   tools/e2e-cluster/build.sh [component ...]     (default: all)
#   components: kube etcd kwok keda node coredns kube-router metrics-server
#
# node: the kubelet and kube-proxy (the real node of src/e2e_cluster/node.py), from kube's wrapper module;
# coredns: its cluster DNS; kube-router: its NetworkPolicy enforcement; metrics-server: resource metrics.
#
# Cache: $E2E_CACHE (default ~/.cache/celery-autoscale-e2e); binaries in $E2E_CACHE/bin/<version>/.
# Each component is built in a wrapper module of its own under $E2E_CACHE/src, so an
# interrupted build resumes from Go's module and build caches.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${E2E_CACHE:-$HOME/.cache/celery-autoscale-e2e}"
export GOFLAGS="${GOFLAGS:--mod=mod}" CGO_ENABLED=0
components=("$@")
[ ${#components[@]} -gt 0 ] || components=(kube etcd kwok keda node coredns kube-router metrics-server)

say() { printf '[e2e-build %(%H:%M:%S)T] %s\n' -1 "$*"; }
mkdir -p "$cache"
# One build at a time per cache: a second run waits here instead of replacing the binaries
# the first one is writing (each component is moved into place whole, so a run that waited
# then finds them cached).
exec 9>"$cache/.build.lock"
if ! flock -n 9; then say "another build holds $cache/.build.lock: waiting"; flock 9; fi
log="$cache/build.log"
# quiet CMD...: run CMD with its chatter in $log; on failure show the end of it.
quiet() { "$@" >>"$log" 2>&1 || { echo "failed: $*" >&2; tail -n 40 "$log" >&2; return 1; }; }

# wrapper DIR MODULE: a fresh go.mod named MODULE in DIR (kept if present, for resuming).
wrapper() {
  mkdir -p "$1"
  [ -f "$1/go.mod" ] || printf 'module %s\n\ngo 1.25.0\n' "$2" >"$1/go.mod"
}

build_kube() {
  local out="$cache/bin/kubernetes-$KUBERNETES_VERSION" dir="$cache/src/kubernetes-$KUBERNETES_VERSION"
  if [ -x "$out/kube-apiserver" ] && [ -x "$out/kube-controller-manager" ] && [ -x "$out/kube-scheduler" ] && [ -x "$out/kubectl" ]; then
    say "kubernetes $KUBERNETES_VERSION: cached"; return; fi
  say "kubernetes $KUBERNETES_VERSION: building"
  wrapper "$dir" e2e.local/kubernetes
  cd "$dir"
  # k8s.io/kubernetes points its staging modules at ./staging; map each to its published
  # version, generating the list from the module's own go.mod.
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" 2>>"$log" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
  grep -E '^\s*k8s.io/[^ ]+ => ./staging/' "$gomod" | awk '{print $1}' | while read -r mod; do
    go mod edit -replace "$mod=$mod@$KUBERNETES_STAGING_VERSION"
  done
  go mod edit -require "k8s.io/kubernetes@$KUBERNETES_VERSION"
  go mod edit -godebug default=go1.25 2>/dev/null || true
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    quiet go get "k8s.io/kubernetes/cmd/$cmd@$KUBERNETES_VERSION"
  done
  mkdir -p "$out.tmp"
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    say "  go build $cmd"
    quiet go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=35" \
      -o "$out.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd"
  done
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_etcd() {
  local out="$cache/bin/etcd-$ETCD_VERSION" dir="$cache/src/etcd-$ETCD_VERSION"
  if [ -x "$out/etcd" ]; then say "etcd $ETCD_VERSION: cached"; return; fi
  say "etcd $ETCD_VERSION: building"
  # go install refuses etcd's own module (it has replace directives): a wrapper main instead.
  wrapper "$dir" e2e.local/etcd
  cat >"$dir/main.go" <<'GO'
// The etcd server, built from go.etcd.io/etcd/server/v3 by a wrapper module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  cd "$dir"
  quiet go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  quiet go mod tidy
  mkdir -p "$out.tmp"
  quiet go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" .
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_kwok() {
  local out="$cache/bin/kwok-$KWOK_VERSION"
  if [ -x "$out/kwok" ] && [ -x "$out/kwokctl" ]; then say "kwok $KWOK_VERSION: cached"; return; fi
  say "kwok $KWOK_VERSION: building"
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" quiet go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_keda() {
  # The operator, the metrics adapter and the admission webhooks; a command already built is kept.
  local out="$cache/bin/keda-$KEDA_VERSION" dir="$cache/src/keda-$KEDA_VERSION" missing=()
  for cmd in operator adapter webhooks; do [ -x "$out/keda-$cmd" ] || missing+=("$cmd"); done
  if [ ${#missing[@]} -eq 0 ]; then say "keda $KEDA_VERSION: cached"; return; fi
  say "keda $KEDA_VERSION: building ${missing[*]}"
  wrapper "$dir" e2e.local/keda
  cd "$dir"
  local gomod
  gomod="$(go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" 2>>"$log" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
  # KEDA pins k8s.io and controller-runtime in a replace block: copy it.
  awk '/^replace \(/{f=1;next} f&&/^\)/{f=0} f&&/=>/{print $1"="$3"@"$4}' "$gomod" | while read -r rep; do
    go mod edit -replace "$rep"
  done
  go mod edit -require "github.com/kedacore/keda/v2@$KEDA_VERSION"
  for cmd in "${missing[@]}"; do
    quiet go get "github.com/kedacore/keda/v2/cmd/$cmd@$KEDA_VERSION"
  done
  mkdir -p "$out"
  for cmd in "${missing[@]}"; do
    say "  go build keda $cmd"
    # Each binary is moved into place whole: a reader never sees half of one.
    quiet go build -trimpath -ldflags "-s -w -X github.com/kedacore/keda/v2/version.Version=$KEDA_VERSION" \
      -o "$out/.keda-$cmd.tmp" "github.com/kedacore/keda/v2/cmd/$cmd"
    mv "$out/.keda-$cmd.tmp" "$out/keda-$cmd"
  done
}

build_node() {
  # The node's own Kubernetes commands (kubelet, kube-proxy), from the same wrapper module and
  # version as the control plane; a command already built is kept.
  local out="$cache/bin/kubernetes-$KUBERNETES_VERSION" dir="$cache/src/kubernetes-$KUBERNETES_VERSION" missing=()
  for cmd in kubelet kube-proxy; do [ -x "$out/$cmd" ] || missing+=("$cmd"); done
  if [ ${#missing[@]} -eq 0 ]; then say "kubelet, kube-proxy $KUBERNETES_VERSION: cached"; return; fi
  [ -f "$dir/go.mod" ] || { echo "build the kube component first (its wrapper module)" >&2; return 1; }
  say "${missing[*]} $KUBERNETES_VERSION: building"
  cd "$dir"
  for cmd in "${missing[@]}"; do
    quiet go get "k8s.io/kubernetes/cmd/$cmd@$KUBERNETES_VERSION"
    say "  go build $cmd"
    quiet go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=35" \
      -o "$out/.$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$out/.$cmd.tmp" "$out/$cmd"
  done
}

build_coredns() {
  # Cluster DNS for the real node's pods: CoreDNS with only the plugins its Corefile uses
  # (src/e2e_cluster/node.py), from the CoreDNS module through a wrapper main, as its own
  # coredns.go does with every plugin.
  local out="$cache/bin/coredns-$COREDNS_VERSION" dir="$cache/src/coredns-$COREDNS_VERSION"
  if [ -x "$out/coredns" ]; then say "coredns $COREDNS_VERSION: cached"; return; fi
  say "coredns $COREDNS_VERSION: building"
  wrapper "$dir" e2e.local/coredns
  cat >"$dir/main.go" <<'GO'
// CoreDNS with the plugins the e2e node's Corefile names.
package main

import (
	_ "github.com/coredns/coredns/plugin/bind"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() { coremain.Run() }
GO
  cd "$dir"
  quiet go get "github.com/coredns/coredns@$COREDNS_VERSION"
  quiet go mod tidy
  mkdir -p "$out.tmp"
  quiet go build -trimpath -ldflags "-s -w" -o "$out.tmp/coredns" .
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_kube-router() {
  # kube-router's NetworkPolicy controller (the node runs only that part of it): its module has
  # no replace directives, so go install builds it as released.
  local out="$cache/bin/kube-router-$KUBE_ROUTER_VERSION"
  if [ -x "$out/kube-router" ]; then say "kube-router $KUBE_ROUTER_VERSION: cached"; return; fi
  say "kube-router $KUBE_ROUTER_VERSION: building"
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" quiet go install -trimpath \
    -ldflags "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION" \
    "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_metrics-server() {
  # The resource metrics API (metrics.k8s.io) from the real node's kubelet: its module has no
  # replace directives, so go install builds it as released.
  local out="$cache/bin/metrics-server-$METRICS_SERVER_VERSION"
  if [ -x "$out/metrics-server" ]; then say "metrics-server $METRICS_SERVER_VERSION: cached"; return; fi
  say "metrics-server $METRICS_SERVER_VERSION: building"
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" quiet go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

start=$(date +%s)
for component in "${components[@]}"; do
  (  "build_$component" )
done
say "done in $(( $(date +%s) - start ))s; binaries under $cache/bin"
