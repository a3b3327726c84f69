{{/*
One queue entry of .Values.queues, resolved once for every template: include with
(dict "root" $ "key" $queue "cfg" $cfg "out" $q), then read $q.settings (workerDefaults merged
with the entry), $q.name (the objects' name), $q.celeryQueue (the Celery queue it consumes) and
$q.target (tasks per replica: listLength, else concurrency). Renders nothing.
*/}}
{{- define "celery-autoscale.queue" -}}
{{- $w := mergeOverwrite (deepCopy .root.Values.workerDefaults) (deepCopy .cfg) }}
{{- $_ := set .out "settings" $w }}
{{- $_ := set .out "name" (include "celery-autoscale.workerName" (dict "root" .root "queue" .key)) }}
{{- $_ := set .out "celeryQueue" ($w.queue | default .key) }}
{{- $_ := set .out "target" ($w.autoscaling.listLength | default $w.concurrency | int) }}
{{- end }}

{{/* The Celery queue names of every queue entry, comma-separated (for --queues). */}}
{{- define "celery-autoscale.celeryQueues" -}}
{{- $queues := list }}
{{- range $queue, $cfg := .Values.queues }}{{ if kindIs "map" $cfg }}
{{- $q := dict }}{{ include "celery-autoscale.queue" (dict "root" $ "key" $queue "cfg" $cfg "out" $q) }}
{{- $queues = append $queues $q.celeryQueue }}{{ end }}{{ end }}
{{- join "," $queues }}
{{- end }}

{{/* The queue-wait targets of the autoscaled queues that have one, `<celery queue>=<seconds>,...`
(the reconciler's --wait-targets); empty with none. */}}
{{- define "celery-autoscale.waitTargets" -}}
{{- $targets := list }}
{{- range $queue, $cfg := .Values.queues }}{{ if kindIs "map" $cfg }}
{{- $q := dict }}{{ include "celery-autoscale.queue" (dict "root" $ "key" $queue "cfg" $cfg "out" $q) }}
{{- $a := $q.settings.autoscaling }}
{{- if and $a.enabled $a.targetQueueWaitSeconds }}
{{- $targets = append $targets (printf "%s=%v" $q.celeryQueue $a.targetQueueWaitSeconds) }}
{{- end }}{{ end }}{{ end }}
{{- join "," $targets }}
{{- end }}
