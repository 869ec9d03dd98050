{{/*
Objects every online service and batch job repeats. Each takes a dict with "root" (the chart's
top context) and what differs: "name" (the component), "ns" (its namespace) and the component's
own values where needed.
*/}}

{{/* A dedicated ServiceAccount. Args: root, name, ns, optional automount (default false) and comment. */}}
{{- define "clinops.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .name }}
  namespace: {{ .ns }}
  labels:
    {{- include "clinops.labels" .root | nindent 4 }}
{{- with .comment }}
# {{ . }}
{{- end }}
automountServiceAccountToken: {{ .automount | default false }}
{{- end -}}

{{/* The two AnalysisTemplates (success rate, latency p95) a service's Rollout references; their
numbers and PromQL come from global.analysis, the same values the drill judge reads.
Args: root, ns. */}}
{{- define "clinops.analysisTemplates" -}}
{{- $a := .root.Values.global.analysis -}}
{{- $root := .root -}}{{- $ns := .ns -}}
{{- range $t := list (dict "name" "success-rate" "query" $a.queries.successRate "ok" (printf ">= %v" $a.successRateMin) "bad" (printf "< %v" $a.successRateMin)) (dict "name" "latency-p95" "query" $a.queries.latencyP95 "ok" (printf "<= %v" $a.latencyP95MaxSeconds) "bad" (printf "> %v" $a.latencyP95MaxSeconds)) }}
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: {{ $t.name }}
  namespace: {{ $ns }}
  labels:
    {{- include "clinops.labels" $root | nindent 4 }}
spec:
  args:
    - name: service
    - name: version
  metrics:
    - name: {{ $t.name }}
      interval: {{ $a.interval }}
      count: {{ $a.count }}
      failureLimit: {{ $a.failureLimit }}
      inconclusiveLimit: {{ $a.inconclusiveLimit }}
      # No samples (NaN or empty) is neither success nor failure: inconclusive.
      successCondition: len(result) > 0 && result[0] {{ $t.ok }}
      failureCondition: len(result) > 0 && result[0] {{ $t.bad }}
      provider:
        prometheus:
          address: {{ $root.Values.global.prometheus.address }}
          query: {{ $t.query | quote }}
{{- end }}
{{- end -}}

{{/* The analysis reference a Rollout carries (templates + args). Args: name, version. */}}
{{- define "clinops.analysisRef" -}}
templates:
  - templateName: success-rate
  - templateName: latency-p95
args:
  - {name: service, value: {{ .name }}}
  - {name: version, value: {{ .version | toString | quote }}}
{{- end -}}

{{/* HorizontalPodAutoscaler on a service's Rollout (autoscaling/v2, or v2beta2 before 1.23: the
same fields). Skipped when autoscaling.enabled is false (a cluster without metrics-server).
Args: root, name, ns, autoscaling. */}}
{{- define "clinops.hpa" -}}
{{- if .autoscaling.enabled }}
---
apiVersion: {{ include "clinops.capabilities.hpa.apiVersion" .root }}
kind: HorizontalPodAutoscaler
metadata:
  name: {{ .name }}
  namespace: {{ .ns }}
  labels:
    {{- include "clinops.labels" .root | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: argoproj.io/v1alpha1
    kind: Rollout
    name: {{ .name }}
  minReplicas: {{ .autoscaling.minReplicas }}
  maxReplicas: {{ .autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target: {type: Utilization, averageUtilization: {{ .autoscaling.targetCPUUtilizationPercentage }}}
{{- end }}
{{- end -}}

{{/* PodDisruptionBudget of a service (policy/v1, or v1beta1 before 1.21). Args: root, name, ns, pdb. */}}
{{- define "clinops.pdb" }}
---
apiVersion: {{ include "clinops.capabilities.policy.apiVersion" .root }}
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  namespace: {{ .ns }}
  labels:
    {{- include "clinops.labels" .root | nindent 4 }}
spec:
  minAvailable: {{ .pdb.minAvailable }}
  selector:
    matchLabels:
      {{- include "clinops.selectorLabels" .name | nindent 6 }}
{{- end -}}

{{/* ServiceMonitor for the Prometheus operator; skipped when global.prometheus.operator is false
(then Prometheus finds the pods itself, e.g. kubernetes_sd_configs). Args: root, name, ns. */}}
{{- define "clinops.serviceMonitor" -}}
{{- if .root.Values.global.prometheus.operator }}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ .name }}
  namespace: {{ .ns }}
  labels:
    {{- include "clinops.labels" .root | nindent 4 }}
    release: {{ .root.Values.global.prometheus.release }}
spec:
  selector:
    matchLabels:
      {{- include "clinops.selectorLabels" .name | nindent 6 }}
  endpoints:
    - {port: http, path: /metrics, interval: 15s}
{{- end }}
{{- end -}}

{{/* Credentials of a component, Secret "<name>-credentials". With global.externalSecrets.enabled an
ExternalSecret fills it from AWS Secrets Manager (never from values); without (a cluster with no
External Secrets operator) the Secret is created out of band with the same name and keys.
Args: root, name, ns, optional keys (properties of the remote secret; none = every property). */}}
{{- define "clinops.credentials" -}}
{{- $g := .root.Values.global -}}
{{- if $g.externalSecrets.enabled }}
---
# Credentials come from AWS Secrets Manager, never from values.
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: {{ .name }}-credentials
  namespace: {{ .ns }}
  labels:
    {{- include "clinops.labels" .root | nindent 4 }}
spec:
  refreshInterval: {{ $g.externalSecrets.refreshInterval }}
  secretStoreRef:
    kind: ClusterSecretStore
    name: {{ $g.externalSecrets.storeName }}
  target:
    name: {{ .name }}-credentials
    creationPolicy: Owner
  {{- $remote := printf "%s/%s" $g.aws.secretsPrefix .name }}
  {{- if .keys }}
  data:
    {{- range $k := .keys }}
    - secretKey: {{ $k }}
      remoteRef: {key: {{ $remote }}, property: {{ $k }}}
    {{- end }}
  {{- else }}
  dataFrom:
    - extract:
        key: {{ $remote }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* AWS environment of a container: the region, and with global.externalLocalstack enabled the
LocalStack endpoint (through its selector-less Service) and LocalStack's credentials from the
component's Secret. ``externalLocalstack.endpoint`` replaces the Service's DNS name on a cluster
without cluster DNS (the Debian cluster: the kubeconfig target sets the Service's ClusterIP).
Args: root, name. */}}
{{- define "clinops.awsEnv" -}}
{{- $g := .root.Values.global -}}
- {name: AWS_DEFAULT_REGION, value: {{ $g.aws.region }}}
{{- if $g.externalLocalstack.enabled }}
- {name: AWS_ENDPOINT_URL, value: {{ $g.externalLocalstack.endpoint | default (printf "http://localstack.%s.svc:%v" $g.namespaces.infrastructure $g.externalLocalstack.servicePort) | quote }}}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ .name }}-credentials, key: aws-access-key-id}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ .name }}-credentials, key: aws-secret-access-key}
{{- end }}
{{- end -}}
