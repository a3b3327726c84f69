{{/*
What every container running the app image shares (workers, Flower, the helm test): its
settings, the Redis password as a file from its Secret, a writable /tmp, and the security
context.
*/}}

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

{{- define "celery-autoscale.podSpecCommon" -}}
serviceAccountName: {{ include "celery-autoscale.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- include "celery-autoscale.podSecurityContext" . | nindent 2 }}
{{- end }}
