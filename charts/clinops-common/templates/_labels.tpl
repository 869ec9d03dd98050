{{/*
Names and labels. Named templates are global across a chart tree, so every helper here is
prefixed "clinops." (never "common.": the bitnami dependencies bring their own "common" library).
*/}}

{{/* Labels of every object of the platform (the umbrella's namespace baseline uses these). */}}
{{- define "clinops.labels.standard" -}}
app.kubernetes.io/part-of: clinical-mlops
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
clinops.io/environment: {{ .Values.global.environment }}
{{- end -}}

{{/* Labels of a level subchart's objects: the standard ones plus the level (= subchart name). */}}
{{- define "clinops.labels" -}}
{{ include "clinops.labels.standard" . }}
clinops.io/level: {{ .Chart.Name }}
{{- end -}}

{{/* Selector labels of one component. Arg: the component name. */}}
{{- define "clinops.selectorLabels" -}}
app.kubernetes.io/name: {{ . }}
{{- end -}}

{{/* The ServiceAccount a component runs as: serviceAccount.name when set, else the component name.
Arg: the component's values (name, optional serviceAccount.name). */}}
{{- define "clinops.serviceAccountName" -}}
{{- $sa := .serviceAccount | default dict -}}
{{- default .name $sa.name -}}
{{- end -}}
