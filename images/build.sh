#!/usr/bin/env bash
# make image: build the chart's images here with podman (runc), each rebuilt only when its inputs
# change, and print one JSON line per image (its reference, size in bytes, and whether it was built).
#
#   images/build.sh [image ...]     images: python-standin redis-standin pause app plainapp (default: all)
#
# - app: the repository's Dockerfile, tagged as the chart's default image
#   (ghcr.io/celery-autoscale/celery-autoscale:<appVersion>).
# - python-standin, redis-standin: no image registry is reachable here or in CI, so the official
#   python and redis images cannot be pulled. These stand-ins are made from Debian bookworm's own
#   packages (mmdebstrap) under the same contract (see images/README.md); the app image is built
#   FROM the python stand-in through the Dockerfile's PYTHON_IMAGE argument, and the e2e installs the
#   chart with redis.image set to the Redis stand-in. A user's docker build pulls the official image.
# - pause: the sandbox image the kubelet's container runtime needs for each pod (containerd's
#   sandbox_image): Kubernetes' own pause.c (build/pause/linux in the k8s.io/kubernetes module of
#   tools/e2e-cluster/versions.env), compiled statically with gcc, alone in its image as upstream's is.
# - plainapp: a user's own image for the e2e, tests/plainapp's Celery project beside the runtime
#   (tests/plainapp/Containerfile, FROM the app image).
#
# Each image carries the hash of its inputs as the label io.celery-autoscale.inputs; an image whose
# label matches is kept. Archives for a container runtime's import: $IMAGE_CACHE/<name>.tar.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${IMAGE_CACHE:-${E2E_CACHE:-$HOME/.cache/celery-autoscale-e2e}/images}"
mkdir -p "$cache"
images=("$@")
[ ${#images[@]} -gt 0 ] || images=(python-standin redis-standin pause app plainapp)

# shellcheck source=../tools/e2e-cluster/versions.env
source "$root/tools/e2e-cluster/versions.env"
app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$root/charts/celery-autoscale/Chart.yaml")"
APP_IMAGE="ghcr.io/celery-autoscale/celery-autoscale:$app_version"
PYTHON_STANDIN="localhost/celery-autoscale/python-standin:3.11-bookworm"
REDIS_STANDIN="localhost/celery-autoscale/redis-standin:bookworm"
PAUSE_IMAGE="localhost/celery-autoscale/pause:$KUBERNETES_VERSION"
PLAINAPP_IMAGE="localhost/celery-autoscale/plainapp:test"
# What the official python image gives that the Dockerfile relies on: python and pip on PATH in
# /usr/local/bin, pip allowed to install system-wide (no PEP 668 marker), groupadd/useradd, CA
# certificates. The official redis image: redis-server and redis-cli on PATH, sh and grep.
PYTHON_PACKAGES="python3,python3-pip,passwd,ca-certificates"
REDIS_PACKAGES="redis-server,redis-tools"
# Docs, man pages and translations are left out of every stand-in (dpkg path excludes).
DPKG_EXCLUDES=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
               --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias')
# This machine's hard limits are below podman's defaults (no CAP_SYS_RESOURCE): ask for less.
PODMAN=(podman --runtime runc)
LIMITS=(--ulimit nofile=16384:16384 --ulimit nproc=16384:16384)

say() { printf '[image %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
inputs_of() { "${PODMAN[@]}" image inspect --format '{{index .Labels "io.celery-autoscale.inputs"}}' "$1" 2>/dev/null || true; }
report() {  # report NAME REF BUILT: one JSON line
  local size
  size="$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$2")"
  printf '{"image": "%s", "ref": "%s", "size_bytes": %s, "built": %s}\n' "$1" "$2" "$size" "$3"
}
save() {  # save NAME REF: the archive a container runtime imports (rewritten only with the image)
  rm -f "$cache/$1.tar.tmp"
  "${PODMAN[@]}" save --quiet --format oci-archive -o "$cache/$1.tar.tmp" "$2"
  mv "$cache/$1.tar.tmp" "$cache/$1.tar"
}

# debian_image NAME REF PACKAGES CMD [HOOK...]: a bookworm minbase root filesystem with PACKAGES,
# imported as REF with CMD (exec form) and the official images' PATH and LANG.
debian_image() {
  local name="$1" ref="$2" packages="$3" cmd="$4"; shift 4
  local hooks=() hook key
  for hook in "$@"; do hooks+=(--customize-hook="$hook"); done
  key="$(printf '%s\n' "$packages" "$cmd" "$@" "${DPKG_EXCLUDES[@]}" | sha256sum | cut -c1-16)"
  if [ "$(inputs_of "$ref")" = "$key" ] && [ -f "$cache/$name.tar" ]; then report "$name" "$ref" false; return; fi
  say "$name: mmdebstrap bookworm (${packages})"
  mmdebstrap --quiet --variant=minbase --include="$packages" "${DPKG_EXCLUDES[@]}" "${hooks[@]}" \
    bookworm "$cache/$name.rootfs.tar" >&2
  "${PODMAN[@]}" import --quiet \
    --change "CMD $cmd" \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV LANG=C.UTF-8" \
    --change "LABEL io.celery-autoscale.inputs=$key" \
    --change "LABEL org.opencontainers.image.description=stand-in-from-debian-bookworm-packages" \
    "$cache/$name.rootfs.tar" "$ref" >/dev/null
  rm -f "$cache/$name.rootfs.tar"
  save "$name" "$ref"
  report "$name" "$ref" true
}

build_pause() {
  local src key dir
  src="$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')/build/pause/linux/pause.c"
  key="$({ sha256sum "$src"; gcc --version | head -1; } | sha256sum | cut -c1-16)"
  if [ "$(inputs_of "$PAUSE_IMAGE")" = "$key" ] && [ -f "$cache/pause.tar" ]; then report pause "$PAUSE_IMAGE" false; return; fi
  say "pause: gcc -static $src"
  dir="$(mktemp -d)"
  gcc -Os -Wall -Werror -static -DVERSION="$KUBERNETES_VERSION" -o "$dir/pause" "$src"
  strip "$dir/pause"
  tar -C "$dir" -cf "$dir/rootfs.tar" pause
  "${PODMAN[@]}" import --quiet --change 'ENTRYPOINT ["/pause"]' --change "LABEL io.celery-autoscale.inputs=$key" \
    "$dir/rootfs.tar" "$PAUSE_IMAGE" >/dev/null
  rm -rf "$dir"
  save pause "$PAUSE_IMAGE"
  report pause "$PAUSE_IMAGE" true
}

build_app() {
  local key base_id
  base_id="$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$PYTHON_STANDIN")"
  # The build context as the .dockerignore leaves it, and the base it builds on.
  key="$(cd "$root" && { echo "$base_id"; sha256sum Dockerfile .dockerignore;
         find pyproject.toml README.md src/celery_autoscale src/tasks -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
           -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-16)"
  if [ "$(inputs_of "$APP_IMAGE")" = "$key" ] && [ -f "$cache/app.tar" ]; then report app "$APP_IMAGE" false; return; fi
  say "app: podman build (FROM $PYTHON_STANDIN)"
  # The build's pip reaches PyPI through this machine's CA bundle, mounted for the build only.
  local ca=()
  [ -f /etc/ssl/certs/ca-certificates.crt ] && ca=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
  "${PODMAN[@]}" build --quiet --pull=never "${LIMITS[@]}" "${ca[@]}" \
    --build-arg "PYTHON_IMAGE=$PYTHON_STANDIN" --label "io.celery-autoscale.inputs=$key" \
    --tag "$APP_IMAGE" --file "$root/Dockerfile" "$root" >/dev/null
  save app "$APP_IMAGE"
  report app "$APP_IMAGE" true
}

build_plainapp() {
  local key base_id
  base_id="$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$APP_IMAGE")"
  key="$(cd "$root/tests/plainapp" && { echo "$base_id"; find . -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
         -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-16)"
  if [ "$(inputs_of "$PLAINAPP_IMAGE")" = "$key" ] && [ -f "$cache/plainapp.tar" ]; then report plainapp "$PLAINAPP_IMAGE" false; return; fi
  say "plainapp: podman build (FROM $APP_IMAGE)"
  "${PODMAN[@]}" build --quiet --pull=never "${LIMITS[@]}" --build-arg "BASE=$APP_IMAGE" \
    --label "io.celery-autoscale.inputs=$key" --tag "$PLAINAPP_IMAGE" \
    --file "$root/tests/plainapp/Containerfile" "$root/tests/plainapp" >/dev/null
  save plainapp "$PLAINAPP_IMAGE"
  report plainapp "$PLAINAPP_IMAGE" true
}

for image in "${images[@]}"; do
  case "$image" in
    python-standin)
      debian_image python-standin "$PYTHON_STANDIN" "$PYTHON_PACKAGES" '["python3"]' \
        'rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
        'ln -s /usr/bin/python3 "$1"/usr/local/bin/python' 'ln -s /usr/bin/pip3 "$1"/usr/local/bin/pip' ;;
    redis-standin) debian_image redis-standin "$REDIS_STANDIN" "$REDIS_PACKAGES" '["redis-server"]' ;;
    pause) build_pause ;;
    app) build_app ;;
    plainapp) build_plainapp ;;
    *) echo "images/build.sh: unknown image '$image' (python-standin redis-standin pause app plainapp)" >&2; exit 2 ;;
  esac
done
