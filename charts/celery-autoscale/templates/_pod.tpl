{{/*
Pod parts every component shares: images, security contexts, and what every container running
the app image needs (workers, Flower, the reconciler, beat, the canary, the helm test): its
settings, the Redis password as a file from its Secret, a writable /tmp.
*/}}

{{/* An image reference: include with (dict "image" .Values.redis.image "tag" "7.4"); a digest wins over the tag,
"tag" is the default when image.tag is empty. */}}
{{- define "celery-autoscale.imageRef" -}}
{{- $tag := default .tag .image.tag }}
{{- if .image.digest }}{{ .image.repository }}@{{ .image.digest }}{{ else }}{{ .image.repository }}:{{ $tag }}{{ end }}
{{- end }}

{{/* The app image (workers, Flower, reconciler, beat, canary, helm test); its tag defaults to the appVersion. */}}
{{- define "celery-autoscale.image" -}}
{{ include "celery-autoscale.imageRef" (dict "image" .Values.image "tag" .Chart.AppVersion) }}
{{- end }}
{{/* Where a pod runs: include with (dict "own" $component "root" $). Each of nodeSelector,
tolerations and affinity is the component's own where it is not empty, else the chart's top-level one. */}}
{{- define "celery-autoscale.placement" -}}
{{- range $key := list "nodeSelector" "tolerations" "affinity" }}
{{- with (get $.own $key) | default (get $.root.Values $key) }}
{{ $key }}:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}

{{- define "celery-autoscale.celeryEnvFrom" -}}
- configMapRef:
    name: {{ include "celery-autoscale.fullname" . }}-celery
{{- with .Values.celery.extraEnvFrom }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Environment items after the ConfigMap: where the password and CA files are, extraEnv. */}}
{{- define "celery-autoscale.celeryEnvVars" -}}
{{- if .Values.redis.auth.enabled }}
- name: REDIS_PASSWORD_FILE
  value: /etc/celery-autoscale/redis-auth/password
{{- end }}
{{- if and (include "celery-autoscale.redisTLS" .) .Values.redis.external.tls.caSecret }}
- name: REDIS_TLS_CA_FILE
  value: /etc/celery-autoscale/redis-ca/ca.crt
{{- end }}
{{- with .Values.celery.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "celery-autoscale.celeryVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.redis.auth.enabled }}
- name: redis-auth
  mountPath: /etc/celery-autoscale/redis-auth
  readOnly: true
{{- end }}
{{- if and (include "celery-autoscale.redisTLS" .) .Values.redis.external.tls.caSecret }}
- name: redis-ca
  mountPath: /etc/celery-autoscale/redis-ca
  readOnly: true
{{- end }}
{{- with .Values.celery.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "celery-autoscale.celeryVolumes" -}}
- name: tmp
  emptyDir: {}
{{- if .Values.redis.auth.enabled }}
- name: redis-auth
  secret:
    secretName: {{ include "celery-autoscale.redisSecretName" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.redis.auth.existingSecretPasswordKey }}
        path: password
{{- end }}
{{- if and (include "celery-autoscale.redisTLS" .) .Values.redis.external.tls.caSecret }}
- name: redis-ca
  secret:
    secretName: {{ .Values.redis.external.tls.caSecret }}
{{- end }}
{{- with .Values.celery.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "celery-autoscale.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "celery-autoscale.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
{{- end }}

{{- /* shareProcessNamespace: the pod's pause process is PID 1, not the app. The kernel drops a
signal to a PID namespace's init that has no handler for it, and Celery installs its SIGTERM
handler late in its start: a worker pod deleted while starting (KEDA scales every new Deployment
to zero within seconds) would go on to consume tasks while Terminating, until its SIGKILL at the end
of terminationGracePeriodSeconds killed them mid-run. Not PID 1, it ends at once (pid_namespaces(7)). */ -}}
{{- define "celery-autoscale.podSpecCommon" -}}
serviceAccountName: {{ include "celery-autoscale.serviceAccountName" . }}
automountServiceAccountToken: false
shareProcessNamespace: true
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- include "celery-autoscale.podSecurityContext" . | nindent 2 }}
{{- end }}

{{/* The round-trip container of the helm test and the canary: sends the probe task to every
queue and waits for each answer, exiting non-zero naming the queues that did not answer; with
"record", writes each result to Redis for the reconciler's metrics.
Include with (dict "root" $ "name" "canary" "timeout" 300 "record" true "resources" $resources). */}}
{{- define "celery-autoscale.roundtripContainer" -}}
{{- $root := .root -}}
- name: {{ .name }}
  image: {{ include "celery-autoscale.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  command: [python, -m, celery_autoscale.roundtrip]
  args:
    - --queues={{ include "celery-autoscale.celeryQueues" $root }}
    - --timeout={{ .timeout }}
    {{- if .record }}
    - --record
    {{- end }}
  envFrom:
    {{- include "celery-autoscale.celeryEnvFrom" $root | nindent 4 }}
  env:
    - name: CELERY_METRICS_PORT
      value: "0"
    {{- include "celery-autoscale.celeryEnvVars" $root | trim | nindent 4 }}
  resources:
    {{- toYaml .resources | nindent 4 }}
  securityContext:
    {{- include "celery-autoscale.containerSecurityContext" $root | nindent 4 }}
  volumeMounts:
    {{- include "celery-autoscale.celeryVolumeMounts" $root | nindent 4 }}
{{- end }}
