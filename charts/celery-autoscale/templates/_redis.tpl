{{/* Where every client (workers, KEDA's triggers, the helm test) finds Redis, and one KEDA Redis trigger. */}}

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

{{/* One KEDA trigger reading one Redis key (KEDA's redis scaler: LLEN of a list, ZCARD of a sorted
set), or through Sentinel. Include with (dict "root" $ "name" "queued_0" "key" "emails" "target" 4
"cached" true). */}}
{{- define "celery-autoscale.redisTrigger" -}}
{{- $root := .root }}
{{- $sentinel := include "celery-autoscale.redisSentinel" $root }}
{{- $tls := include "celery-autoscale.redisTLS" $root }}
- type: {{ ternary "redis-sentinel" "redis" (eq $sentinel "true") }}
  name: {{ .name }}
  useCachedMetrics: {{ .cached }}
  metadata:
    {{- if $sentinel }}
    addresses: {{ join "," $root.Values.redis.external.sentinel.addresses | quote }}
    sentinelMaster: {{ $root.Values.redis.external.sentinel.masterName | quote }}
    {{- else }}
    address: {{ printf "%s:%v" (include "celery-autoscale.redisHost" $root) (include "celery-autoscale.redisPort" $root) | quote }}
    {{- end }}
    listName: {{ .key | quote }}
    listLength: {{ .target | quote }}
    databaseIndex: {{ $root.Values.redis.database | quote }}
    {{- if eq $tls "true" }}
    enableTLS: "true"
    {{- end }}
  {{- if or $root.Values.redis.auth.enabled (and $tls $root.Values.redis.external.tls.caSecret) }}
  authenticationRef:
    name: {{ include "celery-autoscale.fullname" $root }}-redis
  {{- end }}
{{- end }}

{{/* A key the runtime writes (src/celery_autoscale/keys.py names them all), after kombu's
global_keyprefix: include with (dict "prefix" "shop:" "part" "in-flight" "queue" "emails"). */}}
{{- define "celery-autoscale.runtimeKey" -}}
{{ .prefix }}celery-autoscale:{{ .part }}:{{ .queue }}
{{- end }}
