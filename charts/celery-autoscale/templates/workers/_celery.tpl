{{/*
What every container running the app image shares (workers, Flower, the helm test): its
settings, the Redis password from the Secret, a writable /tmp, and the security context.
*/}}

{{- define "celery-autoscale.celeryEnvFrom" -}}
- configMapRef:
    name: {{ include "celery-autoscale.fullname" . }}-celery
{{- end }}

{{/* Environment items after the ConfigMap: the password from its Secret, the CA, extraEnv. */}}
{{- define "celery-autoscale.celeryEnvVars" -}}
{{- if .Values.redis.auth.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "celery-autoscale.redisSecretName" . }}
      key: {{ .Values.redis.auth.existingSecretPasswordKey }}
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
{{- if and (include "celery-autoscale.redisTLS" .) .Values.redis.external.tls.caSecret }}
- name: redis-ca
  mountPath: /etc/celery-autoscale/redis-ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "celery-autoscale.celeryVolumes" -}}
- name: tmp
  emptyDir: {}
{{- if and (include "celery-autoscale.redisTLS" .) .Values.redis.external.tls.caSecret }}
- name: redis-ca
  secret:
    secretName: {{ .Values.redis.external.tls.caSecret }}
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
