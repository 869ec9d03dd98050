{{/* Helpers of the feature-engineering subchart (named templates are global in Helm: prefix "feature-engineering."). */}}
{{- define "feature-engineering.labels" -}}
app.kubernetes.io/part-of: clinical-mlops
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
clinops.io/level: {{ .Chart.Name }}
clinops.io/environment: {{ .Values.global.environment }}
{{- end -}}

{{/* A pinned image reference: refuses "latest" and empty tags. Arg: dict with image and root. */}}
{{- define "feature-engineering.image" -}}
{{- $tag := toString (required (printf "image.tag of %s must be set" .image.repository) .image.tag) -}}
{{- if eq $tag "latest" -}}{{- fail (printf "image %s: tag latest is not allowed, pin a version" .image.repository) -}}{{- end -}}
{{- printf "%s/%s:%s" .root.Values.global.imageRegistry .image.repository $tag -}}
{{- end -}}

{{/* Pod-level hardening (restricted Pod Security Standard). */}}
{{- define "feature-engineering.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level hardening. */}}
{{- define "feature-engineering.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
