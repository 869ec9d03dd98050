{{/* Resolve a namespace key of global.namespaces; anything else is taken literally. */}}
{{- define "clinops.ns" -}}
{{- $root := index . 0 -}}{{- $key := index . 1 -}}
{{- default $key (index $root.Values.global.namespaces $key) -}}
{{- end -}}

{{- define "clinops.managed" -}}
{{- $root := index . 0 -}}{{- $key := index . 1 -}}
{{- if hasKey $root.Values.global.namespaces $key }}true{{ end -}}
{{- end -}}

{{- define "clinops.labels" -}}
app.kubernetes.io/part-of: clinical-mlops
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
clinops.io/environment: {{ .Values.global.environment }}
{{- end -}}
