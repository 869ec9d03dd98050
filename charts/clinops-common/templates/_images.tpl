{{/*
Image references. The registry is global.imageRegistry unless an image sets its own registry;
the Debian-built cluster uses registry.local with imagePullPolicy Never (images imported into
containerd, no registry to pull from).
*/}}

{{/* A pinned image reference: refuses "latest" and empty tags. Args: dict "image" .. "root" $. */}}
{{- define "clinops.image" -}}
{{- $tag := toString (required (printf "image.tag of %s must be set" .image.repository) .image.tag) -}}
{{- if eq $tag "latest" -}}{{- fail (printf "image %s: tag latest is not allowed, pin a version" .image.repository) -}}{{- end -}}
{{- $registry := default .root.Values.global.imageRegistry .image.registry -}}
{{- printf "%s/%s:%s" $registry .image.repository $tag -}}
{{- end -}}

{{/* imagePullPolicy from global.imagePullPolicy (Always, IfNotPresent or Never). Arg: root. */}}
{{- define "clinops.imagePullPolicy" -}}
{{- $policy := default "IfNotPresent" .Values.global.imagePullPolicy -}}
{{- if not (has $policy (list "Always" "IfNotPresent" "Never")) -}}
{{- fail (printf "global.imagePullPolicy %q: expected Always, IfNotPresent or Never" $policy) -}}
{{- end -}}
{{- $policy -}}
{{- end -}}
