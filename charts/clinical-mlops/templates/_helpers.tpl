{{/* Umbrella-only helpers; the shared ones are in the clinops-common library chart. */}}
{{/* Resolve a namespace key of global.namespaces; anything else is taken literally. */}}
{{- define "clinops.ns" -}}
{{- $root := index . 0 -}}{{- $key := index . 1 -}}
{{- default $key (index $root.Values.global.namespaces $key) -}}
{{- end -}}

{{- define "clinops.managed" -}}
{{- $root := index . 0 -}}{{- $key := index . 1 -}}
{{- if hasKey $root.Values.global.namespaces $key }}true{{ end -}}
{{- end -}}
