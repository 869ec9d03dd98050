{{/*
API versions from the cluster's capabilities, as bitnami's `common` chart chooses them: by the
Kubernetes version Helm reports (.Capabilities.KubeVersion: the API server's version at install,
the --kube-version / SDK option offline), overridable with global.kubeVersion for renderers that
cannot ask the cluster (Argo CD passes the destination's version itself).
The version decides, not .Capabilities.APIVersions.Has: offline, Helm's API list is its client
library's full scheme (it always "has" policy/v1, whatever kube version is asked for), so only the
version gives the same answer offline and on the cluster. Boundaries are Kubernetes' own:
  PodDisruptionBudget  policy/v1 from 1.21          (policy/v1beta1 1.5 .. 1.24)
  HorizontalPodAutoscaler autoscaling/v2 from 1.23  (autoscaling/v2beta2 1.12 .. 1.25)
  CronJob              batch/v1 from 1.21           (batch/v1beta1 1.8 .. 1.24)
  Ingress              networking.k8s.io/v1 from 1.19 (networking.k8s.io/v1beta1 1.14 .. 1.21)
*/}}

{{/* The Kubernetes version the manifests are for ("v1.20.2"). Arg: root. */}}
{{- define "clinops.capabilities.kubeVersion" -}}
{{- default .Capabilities.KubeVersion.Version .Values.global.kubeVersion -}}
{{- end -}}

{{/* "true" when the target Kubernetes is older than the given minor version. Args: list $ "1.21". */}}
{{- define "clinops.capabilities.olderThan" -}}
{{- $root := index . 0 -}}{{- $minor := index . 1 -}}
{{- if semverCompare (printf "<%s-0" $minor) (include "clinops.capabilities.kubeVersion" $root) -}}true{{- end -}}
{{- end -}}

{{- define "clinops.capabilities.policy.apiVersion" -}}
{{- if include "clinops.capabilities.olderThan" (list . "1.21") -}}policy/v1beta1{{- else -}}policy/v1{{- end -}}
{{- end -}}

{{- define "clinops.capabilities.hpa.apiVersion" -}}
{{- if include "clinops.capabilities.olderThan" (list . "1.23") -}}autoscaling/v2beta2{{- else -}}autoscaling/v2{{- end -}}
{{- end -}}

{{- define "clinops.capabilities.cronjob.apiVersion" -}}
{{- if include "clinops.capabilities.olderThan" (list . "1.21") -}}batch/v1beta1{{- else -}}batch/v1{{- end -}}
{{- end -}}

{{- define "clinops.capabilities.ingress.apiVersion" -}}
{{- if include "clinops.capabilities.olderThan" (list . "1.19") -}}networking.k8s.io/v1beta1{{- else -}}networking.k8s.io/v1{{- end -}}
{{- end -}}

{{/* Refuses a Kubernetes older than the charts' kubeVersion floor (offline renders do not check
Chart.yaml's kubeVersion; installs do). Arg: root. */}}
{{- define "clinops.capabilities.check" -}}
{{- if include "clinops.capabilities.olderThan" (list . "1.20") -}}
{{- fail (printf "Kubernetes %s is older than 1.20, the oldest version these charts support" (include "clinops.capabilities.kubeVersion" .)) -}}
{{- end -}}
{{- end -}}
