{{/* Chart name, truncated to 63 characters. */}}
{{- define "upstash-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, with the chart name unless the release name contains it. */}}
{{- define "upstash-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "upstash-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "upstash-operator.labels" -}}
helm.sh/chart: {{ include "upstash-operator.chart" . }}
{{ include "upstash-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: upstash-operator
{{- end }}

{{/* Labels that select the operator pods. */}}
{{- define "upstash-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "upstash-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "upstash-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "upstash-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image: repository@digest, or repository:tag (default: appVersion). */}}
{{- define "upstash-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret with the Upstash credentials. */}}
{{- define "upstash-operator.credentialsSecret" -}}
{{- if .Values.upstash.credentials.create }}
{{- printf "%s-credentials" (include "upstash-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- required "upstash.credentials.existingSecret is required unless upstash.credentials.create is true" .Values.upstash.credentials.existingSecret }}
{{- end }}
{{- end }}

{{/* Name of the ConfigMap with extra CA certificates, empty when there is none. */}}
{{- define "upstash-operator.caConfigMap" -}}
{{- if .Values.upstash.caBundle.existingConfigMap }}
{{- .Values.upstash.caBundle.existingConfigMap }}
{{- else if .Values.upstash.caBundle.pem }}
{{- printf "%s-ca" (include "upstash-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "upstash-operator.lastReadsName" -}}
{{- printf "%s-last-reads" (include "upstash-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "upstash-operator.leaseName" -}}
{{- printf "%s-leader" (include "upstash-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* What the operator may do with the objects it manages, in a ClusterRole or a Role. */}}
{{- define "upstash-operator.managerRules" -}}
- apiGroups: ["cache.upstash-operator.dev"]
  resources: ["cacheinstances"]
  # patch: the cleanup finalizer and the pending-create record on the object.
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["cache.upstash-operator.dev"]
  # Status is written with server-side apply.
  resources: ["cacheinstances/status", "cachepolicies/status"]
  verbs: ["patch"]
- apiGroups: ["cache.upstash-operator.dev"]
  # Connection Secrets carry an ownerReference with blockOwnerDeletion.
  resources: ["cacheinstances/finalizers"]
  verbs: ["update"]
- apiGroups: ["cache.upstash-operator.dev"]
  resources: ["cachepolicies"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  # Connection Secrets (server-side apply; deleted and written again when their type changes)
  # and per-namespace or per-instance credentials Secrets (get).
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  # Restarts of the workloads named in spec.passwordRotation.restart.
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "patch"]
- apiGroups: ["events.k8s.io"]
  # kube's Recorder creates an Event, then patches it to count repeats.
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* A list as single-quoted CEL string literals, comma-separated: 'a', 'b'. */}}
{{- define "upstash-operator.quotedList" -}}
{{- $out := list }}
{{- range . }}{{ $out = append $out (printf "'%s'" .) }}{{ end }}
{{- join ", " $out }}
{{- end }}

{{/* Non-empty when the operator reads namespace labels: a selector that is not `{}`. */}}
{{- define "upstash-operator.readsNamespaceLabels" -}}
{{- $s := .Values.tenancy.adoptionNamespaceSelector }}
{{- if and (kindIs "map" $s) (or $s.matchLabels $s.matchExpressions) }}true{{ end }}
{{- end }}
