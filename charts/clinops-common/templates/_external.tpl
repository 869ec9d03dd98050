{{/*
External services: a selector-less Service whose endpoints are written by hand (the standard
pattern for a service outside the cluster), so pods reach e.g. the local target's PostgreSQL by the
same DNS name the bundled chart would have. The endpoints are an EndpointSlice
(discovery.k8s.io/v1, from 1.21) or, on 1.20, an Endpoints object that the control plane mirrors
into a slice. Kubernetes refuses loopback and link-local endpoint addresses: the target must listen
on an address pods can route to (on the Debian-built cluster, the cni0 bridge gateway 10.88.0.1).
*/}}

{{/* Args: root, name (Service name), ns, ext (enabled, host, port, servicePort), what (values key,
for messages). */}}
{{- define "clinops.externalService" -}}
{{- $host := toString (required (printf "global.%s.host: the IP address pods reach it at" .what) .ext.host) -}}
{{- if not (regexMatch "^([0-9]{1,3}\\.){3}[0-9]{1,3}$" $host) -}}
{{- fail (printf "global.%s.host %q must be an IPv4 address (Endpoints take no host names)" .what $host) -}}
{{- end -}}
{{- if or (hasPrefix "127." $host) (hasPrefix "169.254." $host) (eq $host "0.0.0.0") -}}
{{- fail (printf "global.%s.host %s: Kubernetes refuses loopback, link-local and unspecified endpoint addresses; use an address pods can route to" .what $host) -}}
{{- end -}}
{{- $port := int (required (printf "global.%s.port must be set" .what) .ext.port) -}}
{{- $servicePort := int (default $port .ext.servicePort) -}}
{{- $portName := printf "tcp-%s" .name }}
---
# {{ .name }} outside the cluster ({{ $host }}:{{ $port }}), global.{{ .what }}.
apiVersion: v1
kind: Service
metadata:
  name: {{ .name }}
  namespace: {{ .ns }}
  labels:
    {{- include "clinops.labels" .root | nindent 4 }}
    {{- include "clinops.selectorLabels" .name | nindent 4 }}
    clinops.io/external: "true"
spec:
  type: ClusterIP
  ports:
    - {name: {{ $portName }}, port: {{ $servicePort }}, targetPort: {{ $port }}, protocol: TCP}
{{- if include "clinops.capabilities.olderThan" (list .root "1.21") }}
---
apiVersion: v1
kind: Endpoints
metadata:
  name: {{ .name }}
  namespace: {{ .ns }}
  labels:
    {{- include "clinops.labels" .root | nindent 4 }}
subsets:
  - addresses:
      - ip: {{ $host }}
    ports:
      - {name: {{ $portName }}, port: {{ $port }}, protocol: TCP}
{{- else }}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {{ .name }}-external
  namespace: {{ .ns }}
  labels:
    {{- include "clinops.labels" .root | nindent 4 }}
    kubernetes.io/service-name: {{ .name }}
    endpointslice.kubernetes.io/managed-by: clinops.io-helm
addressType: IPv4
ports:
  - {name: {{ $portName }}, port: {{ $port }}, protocol: TCP}
endpoints:
  - addresses: [{{ $host | quote }}]
    conditions: {ready: true}
{{- end }}
{{- end -}}
