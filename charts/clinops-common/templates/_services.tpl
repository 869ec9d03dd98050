{{/*
The online services (clinical-gateway, model-serving): one pod template, one Service shape, one
pair of mesh policies. Each service's template adds only what differs (module, environment,
rollout strategy, callers).
*/}}

{{/* A ClusterIP Service on port 80 -> the pods' "http" port. Args: root, name (the Service),
ns, selector (the component name), optional comment. */}}
{{- define "clinops.httpService" }}
---
{{- with .comment }}
# {{ . }}
{{- end }}
apiVersion: v1
kind: Service
metadata:
  name: {{ .name }}
  namespace: {{ .ns }}
  labels:
    {{- include "clinops.labels" .root | nindent 4 }}
    {{- include "clinops.selectorLabels" .selector | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "clinops.selectorLabels" .selector | nindent 4 }}
  ports:
    - {name: http, port: 80, targetPort: http, protocol: TCP}
{{- end -}}

{{/* The pod template of an online service (uvicorn app, the service contract's environment,
probes, hardening, a writable /tmp). Args: root, svc (name, image, port, resources), app
("clinops_lib.services.gateway:app"), env (extra plain variables: list of name/value dicts),
secretEnv (variable -> key of the "<name>-credentials" Secret), tmpSize. */}}
{{- define "clinops.servicePodTemplate" -}}
{{- $root := .root -}}{{- $svc := .svc -}}
metadata:
  labels:
    {{- include "clinops.labels" $root | nindent 4 }}
    {{- include "clinops.selectorLabels" $svc.name | nindent 4 }}
    version: {{ $svc.image.tag | toString | quote }}
    clinops.io/aws-egress: "true"
  annotations:
    {{- /* a Prometheus without the operator (the host's, on the Debian cluster) discovers the pods
    by these (kubernetes_sd_configs, role pod: clinops_lib/clusters/debian/metrics.py) */}}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ $svc.port | toString | quote }}
    prometheus.io/path: /metrics
spec:
  serviceAccountName: {{ include "clinops.serviceAccountName" $svc }}
  automountServiceAccountToken: false
  securityContext:
    {{- include "clinops.podSecurityContext" $root | nindent 4 }}
  containers:
    - name: {{ $svc.name }}
      image: {{ include "clinops.image" (dict "image" $svc.image "root" $root) }}
      imagePullPolicy: {{ include "clinops.imagePullPolicy" $root }}
      # The images have no ENTRYPOINT (services/*/Dockerfile: CMD ["python", "-m", "uvicorn", ...]):
      # args alone would replace CMD and exec "-m" (found on the first real cluster).
      command: ["python"]
      args: ["-m", "uvicorn", {{ .app | quote }}, "--host", "0.0.0.0",
             "--port", "{{ $svc.port }}", "--no-access-log"]
      # A terminating pod leaves the Service's endpoints a moment after it is told to stop, and
      # kube-proxy's rules (or the mesh) later still: keep serving meanwhile, so a scale-down or a
      # blue-green switch refuses no connection (seen on the first real cluster: ~30 per step).
      lifecycle:
        preStop:
          exec:
            command: ["python", "-c", "import time; time.sleep({{ $root.Values.global.preStopSeconds | default 5 }})"]
      ports:
        - {name: http, containerPort: {{ $svc.port }}, protocol: TCP}
      env:
        - {name: CLINOPS_SERVICE_NAME, value: {{ $svc.name }}}
        - {name: CLINOPS_SERVICE_VERSION, value: {{ $svc.image.tag | toString | quote }}}
        {{- include "clinops.awsEnv" (dict "root" $root "name" $svc.name) | nindent 8 }}
        - {name: CLINOPS_MODEL_BUCKET, value: {{ $root.Values.global.buckets.artifacts }}}
        {{- range .env }}
        - {name: {{ .name }}, value: {{ .value | toString | quote }}}
        {{- end }}
        {{- range $var, $key := .secretEnv }}
        - name: {{ $var }}
          valueFrom:
            secretKeyRef: {name: {{ $svc.name }}-credentials, key: {{ $key }}}
        {{- end }}
      livenessProbe:
        httpGet: {path: /healthz, port: http}
        periodSeconds: 10
      readinessProbe:
        httpGet: {path: /readyz, port: http}
        periodSeconds: 5
      resources:
        {{- toYaml $svc.resources | nindent 8 }}
      securityContext:
        {{- include "clinops.containerSecurityContext" $root | nindent 8 }}
      volumeMounts:
        - {name: tmp, mountPath: /tmp}
  volumes:
    - name: tmp
      emptyDir: {sizeLimit: {{ .tmpSize }}}
{{- end -}}

{{/* Istio: mutual TLS to the service (DestinationRule, with the canary/stable subsets Argo Rollouts
routes between when "subsets" is set) and who may call it (AuthorizationPolicy: "callers" may use
"methods" on the API and probes; Prometheus may scrape /metrics). Rendered with global.istio.enabled.
Args: root, name, ns, callers (principals), methods, subsets (bool). */}}
{{- define "clinops.meshPolicies" -}}
{{- $g := .root.Values.global -}}
{{- if $g.istio.enabled }}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {{ .name }}
  namespace: {{ .ns }}
  labels:
    {{- include "clinops.labels" .root | nindent 4 }}
spec:
  host: {{ .name }}.{{ .ns }}.svc.cluster.local
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
  {{- if .subsets }}
  # Argo Rollouts injects rollouts-pod-template-hash into each subset's labels.
  subsets:
    {{- range $subset := list "stable" "canary" }}
    - name: {{ $subset }}
      labels:
        {{- include "clinops.selectorLabels" $.name | nindent 8 }}
    {{- end }}
  {{- end }}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: {{ .name }}
  namespace: {{ .ns }}
  labels:
    {{- include "clinops.labels" .root | nindent 4 }}
spec:
  selector:
    matchLabels:
      {{- include "clinops.selectorLabels" .name | nindent 6 }}
  action: ALLOW
  rules:
    - from:
        - source:
            principals:
              {{- toYaml .callers | nindent 14 }}
      to:
        - operation:
            methods: {{ toJson .methods }}
            paths: ["/v1/*", /healthz, /readyz]
    - from:
        - source:
            principals:
              - {{ printf "%s/ns/%s/sa/%s" $g.istio.trustDomain $g.namespaces.observability $g.prometheus.serviceAccount }}
      to:
        - operation:
            methods: [GET]
            paths: [/metrics]
{{- end }}
{{- end -}}
