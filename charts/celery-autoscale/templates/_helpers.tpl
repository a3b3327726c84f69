{{/* Names and labels only: pod parts are in _pod.tpl, Redis in _redis.tpl, queues in _queues.tpl. */}}

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

{{- define "celery-autoscale.flowerSecretName" -}}
{{- default (printf "%s-flower" (include "celery-autoscale.fullname" .)) .Values.flower.auth.existingSecret }}
{{- end }}

{{- /*
A generated Secret value, base64: the kept Secret's (lookup), else one generated once per render.
Args: root, secret (name), key, length. Every include of a Secret's template (the pods'
checksum/secret) renders it again: a fresh randAlphaNum each time made the install's checksums
differ from every later one, so the first upgrade restarted Redis and every pod. The generated
value is kept in a dict on .Values for the rest of the render (Values is validated before).
*/}}
{{- define "celery-autoscale.generatedSecretValue" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret }}
{{- if and $existing (index $existing.data .key) }}
{{- index $existing.data .key }}
{{- else }}
{{- if not (hasKey .root.Values "__generated") }}{{- $_ := set .root.Values "__generated" dict }}{{- end }}
{{- $memo := index .root.Values "__generated" }}
{{- $id := printf "%s/%s" .secret .key }}
{{- if not (hasKey $memo $id) }}{{- $_ := set $memo $id (randAlphaNum (int .length) | b64enc) }}{{- end }}
{{- index $memo $id }}
{{- end }}
{{- end }}
