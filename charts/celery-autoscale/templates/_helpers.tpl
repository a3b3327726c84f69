{{/* Names and labels only. */}}

{{- define "celery-autoscale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "celery-autoscale.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of every object (app.kubernetes.io/*, the Kubernetes recommended labels). */}}
{{- define "celery-autoscale.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "celery-autoscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: celery-autoscale
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: include with (dict "root" $ "component" "redis"). */}}
{{- define "celery-autoscale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "celery-autoscale.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "celery-autoscale.workerName" -}}
{{ include "celery-autoscale.fullname" .root }}-worker-{{ .queue }}
{{- end }}

{{- define "celery-autoscale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "celery-autoscale.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "celery-autoscale.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}{{ .Values.image.repository }}@{{ .Values.image.digest }}{{ else }}{{ .Values.image.repository }}:{{ $tag }}{{ end }}
{{- end }}

{{/* The Redis host as every client resolves it: the chart's own Redis by its Service's
namespace-qualified name (KEDA's operator runs in another namespace, where the short name would
resolve to nothing), else redis.external.host. */}}
{{- define "celery-autoscale.redisHost" -}}
{{- if .Values.redis.enabled }}{{ include "celery-autoscale.fullname" . }}-redis.{{ .Release.Namespace }}.svc{{ else }}{{ required "redis.external.host is required when redis.enabled is false" .Values.redis.external.host }}{{ end }}
{{- end }}

{{- define "celery-autoscale.redisPort" -}}
{{- if .Values.redis.enabled }}{{ .Values.redis.port }}{{ else }}{{ .Values.redis.external.port }}{{ end }}
{{- end }}

{{/* "true" when the workers and KEDA reach an external Redis through Sentinel. */}}
{{- define "celery-autoscale.redisSentinel" -}}
{{- if and (not .Values.redis.enabled) .Values.redis.external.sentinel.enabled }}
{{- if .Values.redis.external.tls.enabled }}{{ fail "redis.external.sentinel and redis.external.tls cannot be combined: TLS to Sentinel is not supported" }}{{ end }}
{{- true }}
{{- end }}
{{- end }}

{{- define "celery-autoscale.redisTLS" -}}
{{- if and (not .Values.redis.enabled) .Values.redis.external.tls.enabled }}true{{ end }}
{{- end }}

{{- define "celery-autoscale.redisSecretName" -}}
{{- default (printf "%s-redis" (include "celery-autoscale.fullname" .)) .Values.redis.auth.existingSecret }}
{{- end }}

{{- define "celery-autoscale.flowerSecretName" -}}
{{- default (printf "%s-flower" (include "celery-autoscale.fullname" .)) .Values.flower.auth.existingSecret }}
{{- end }}

{{/* The Celery queue names of every queue entry, comma-separated (for --queues). */}}
{{- define "celery-autoscale.celeryQueues" -}}
{{- $queues := list }}
{{- range $queue, $cfg := .Values.queues }}{{ if kindIs "map" $cfg }}{{ $queues = append $queues (get $cfg "queue" | default $queue) }}{{ end }}{{ end }}
{{- join "," $queues }}
{{- end }}
