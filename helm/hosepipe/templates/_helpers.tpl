{{/* Names and labels. */}}
{{- define "hosepipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hosepipe.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "hosepipe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hosepipe.labels" -}}
helm.sh/chart: {{ include "hosepipe.chart" . }}
app.kubernetes.io/name: {{ include "hosepipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hosepipe
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "ingest") */}}
{{- define "hosepipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hosepipe.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "hosepipe.componentLabels" -}}
{{ include "hosepipe.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "hosepipe.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "hosepipe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hosepipe.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "hosepipe.secretName" -}}
{{- default (printf "%s-secret" (include "hosepipe.fullname" .)) .Values.existingSecret -}}
{{- end -}}

{{- define "hosepipe.pipelineConfigMapName" -}}
{{- default (printf "%s-pipeline" (include "hosepipe.fullname" .)) .Values.pipeline.existingConfigMap -}}
{{- end -}}

{{/* True ("true") when the pipeline declares at least one pull source. */}}
{{- define "hosepipe.hasPullSources" -}}
{{- $found := false -}}
{{- range $name, $source := (get (fromYaml .Values.pipeline.yaml) "sources" | default dict) -}}
{{- if eq (toString $source.kind) "pull" -}}{{- $found = true -}}{{- end -}}
{{- end -}}
{{- if or $found .Values.pipeline.existingConfigMap -}}true{{- end -}}
{{- end -}}

{{/* Non-secret HOSEPIPE_* settings, shared by the env ConfigMap and the hook copy. */}}
{{- define "hosepipe.envData" -}}
HOSEPIPE_CONFIG_FILE: /etc/hosepipe/hosepipe.yaml
HOSEPIPE_DATA_DIR: /var/lib/hosepipe
HOSEPIPE_BIND_HOST: 0.0.0.0
HOSEPIPE_INGEST_PORT: {{ .Values.ingest.port | quote }}
HOSEPIPE_API_PORT: {{ .Values.api.port | quote }}
HOSEPIPE_METRICS_PORT: {{ .Values.metrics.port | quote }}
HOSEPIPE_KAFKA_BOOTSTRAP: {{ .Values.kafka.bootstrap | quote }}
{{- with .Values.schemaRegistry.url }}
HOSEPIPE_SCHEMA_REGISTRY_URL: {{ . | quote }}
{{- end }}
HOSEPIPE_LAKE_URL: {{ .Values.s3.lakeUrl | quote }}
{{- with .Values.s3.endpointUrl }}
HOSEPIPE_S3_ENDPOINT_URL: {{ . | quote }}
{{- end }}
HOSEPIPE_S3_REGION: {{ .Values.s3.region | quote }}
HOSEPIPE_LOG_LEVEL: {{ .Values.logLevel | quote }}
HOSEPIPE_LOG_FORMAT: {{ .Values.logFormat | quote }}
{{- end -}}

{{/* Secret keys from values; API keys are generated once and kept (lookup) when empty. */}}
{{- define "hosepipe.secretData" -}}
{{- $existing := (lookup "v1" "Secret" .Release.Namespace (include "hosepipe.secretName" .)) | default dict -}}
{{- $old := $existing.data | default dict -}}
{{- with .Values.postgres.url }}
HOSEPIPE_DATABASE_URL: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.kafka.options }}
HOSEPIPE_KAFKA_OPTIONS: {{ toJson . | b64enc | quote }}
{{- end }}
{{- with .Values.schemaRegistry.options }}
HOSEPIPE_SCHEMA_REGISTRY_OPTIONS: {{ toJson . | b64enc | quote }}
{{- end }}
{{- with .Values.s3.accessKeyId }}
HOSEPIPE_S3_ACCESS_KEY_ID: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.s3.secretAccessKey }}
HOSEPIPE_S3_SECRET_ACCESS_KEY: {{ . | b64enc | quote }}
{{- end }}
INGEST_API_KEY: {{ .Values.auth.ingestApiKey | b64enc | default (get $old "INGEST_API_KEY") | default (randAlphaNum 32 | b64enc) | quote }}
GRAPHQL_API_KEY: {{ .Values.auth.graphqlApiKey | b64enc | default (get $old "GRAPHQL_API_KEY") | default (randAlphaNum 32 | b64enc) | quote }}
{{- end -}}

{{/*
A hosepipe container. Arguments (dict):
  root: $, component: name, args: list, values: the component's values,
  httpPort: port of an HTTP service (ingest, api) or 0 for a consumer, hook: bool
*/}}
{{- define "hosepipe.container" -}}
{{- $root := .root -}}
{{- $port := int (default 0 .httpPort) -}}
{{- $healthPort := ternary $port (int $root.Values.metrics.port) (gt $port 0) -}}
- name: {{ .component }}
  image: {{ include "hosepipe.image" $root | quote }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  args:
    {{- toYaml .args | nindent 4 }}
  envFrom:
    - configMapRef:
        name: {{ include "hosepipe.fullname" $root }}-env{{ if .hook }}-hook{{ end }}
    - secretRef:
        name: {{ if and .hook (not $root.Values.existingSecret) }}{{ include "hosepipe.fullname" $root }}-secret-hook{{ else }}{{ include "hosepipe.secretName" $root }}{{ end }}
    {{- with $root.Values.extraEnvFrom }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $root.Values.extraEnv }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if not .hook }}
  ports:
    {{- if gt $port 0 }}
    - name: http
      containerPort: {{ $port }}
      protocol: TCP
    {{- else }}
    - name: metrics
      containerPort: {{ $root.Values.metrics.port }}
      protocol: TCP
    {{- end }}
  {{- if .probes }}
  startupProbe:
    httpGet: {path: /healthz, port: {{ $healthPort }}}
    periodSeconds: 5
    failureThreshold: 60
  livenessProbe:
    httpGet: {path: /healthz, port: {{ $healthPort }}}
    periodSeconds: 15
    timeoutSeconds: 5
    failureThreshold: 4
  readinessProbe:
    httpGet: {path: /healthz, port: {{ $healthPort }}}
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 3
  {{- end }}
  {{- end }}
  resources:
    {{- toYaml (.values.resources | default dict) | nindent 4 }}
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: pipeline
      mountPath: /etc/hosepipe
      readOnly: true
    - name: tmp
      mountPath: /tmp
    - name: data
      mountPath: /var/lib/hosepipe
{{- end -}}

{{/* Pod spec around hosepipe.container; same arguments plus restartPolicy. */}}
{{- define "hosepipe.podSpec" -}}
{{- $root := .root -}}
{{- $values := .values -}}
serviceAccountName: {{ include "hosepipe.serviceAccountName" $root }}{{ if and .hook $root.Values.serviceAccount.create }}-hook{{ end }}
automountServiceAccountToken: false
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .restartPolicy }}
restartPolicy: {{ . }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: 60
containers:
  {{- include "hosepipe.container" . | nindent 2 }}
volumes:
  - name: pipeline
    configMap:
      name: {{ if .hook }}{{ include "hosepipe.fullname" $root }}-pipeline-hook{{ else }}{{ include "hosepipe.pipelineConfigMapName" $root }}{{ end }}
  - name: tmp
    emptyDir:
      sizeLimit: {{ $root.Values.scratchSizeLimit }}
  - name: data
    emptyDir:
      sizeLimit: {{ $values.dataSizeLimit | default $root.Values.scratchSizeLimit }}
{{- with ($values.nodeSelector | default $root.Values.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($values.tolerations | default $root.Values.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($values.affinity | default $root.Values.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Pod metadata annotations: config checksums (roll pods on change) and scrape hints. */}}
{{- define "hosepipe.podAnnotations" -}}
{{- $root := .root -}}
checksum/pipeline: {{ toYaml $root.Values.pipeline | sha256sum }}
checksum/env: {{ include "hosepipe.envData" $root | sha256sum }}
{{- if $root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/path: /metrics
prometheus.io/port: {{ (int (default $root.Values.metrics.port .httpPort)) | quote }}
{{- end }}
{{- with $root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- with .values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
A component Deployment. Arguments: root, component, args, values, httpPort,
replicas (omit when an autoscaler owns it), probes.
*/}}
{{- define "hosepipe.deployment" -}}
{{- $root := .root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "hosepipe.fullname" $root }}-{{ .component }}
  labels:
    {{- include "hosepipe.componentLabels" . | nindent 4 }}
spec:
  {{- if not .autoscaled }}
  replicas: {{ .values.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "hosepipe.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "hosepipe.selectorLabels" . | nindent 8 }}
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        {{- include "hosepipe.podAnnotations" . | nindent 8 }}
    spec:
      {{- include "hosepipe.podSpec" . | nindent 6 }}
{{- end -}}

{{/* PodDisruptionBudget for a component: root, component, values. */}}
{{- define "hosepipe.pdb" -}}
{{- if and .values.enabled .values.pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "hosepipe.fullname" .root }}-{{ .component }}
  labels:
    {{- include "hosepipe.componentLabels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .values.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "hosepipe.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}
