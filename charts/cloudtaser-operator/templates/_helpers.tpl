{{- define "cloudtaser.name" -}}cloudtaser-operator{{- end -}}
{{- define "cloudtaser.fullname" -}}{{ .Release.Name | trunc 40 | trimSuffix "-" }}-cloudtaser-operator{{- end -}}
{{- define "cloudtaser.labels" -}}
app.kubernetes.io/name: {{ include "cloudtaser.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "cloudtaser.selector" -}}
app.kubernetes.io/name: {{ include "cloudtaser.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "cloudtaser.tlsSecret" -}}
{{- if eq .Values.tls.mode "existingSecret" -}}{{ required "tls.existingSecret is required with tls.mode=existingSecret" .Values.tls.existingSecret }}{{- else -}}{{ include "cloudtaser.fullname" . }}-tls{{- end -}}
{{- end -}}
{{- define "cloudtaser.serviceName" -}}{{ include "cloudtaser.fullname" . }}{{- end -}}
{{- /* The operator image: by digest when image.digest is set. */ -}}
{{- define "cloudtaser.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}
{{- /* The controller's leader-election Lease (the certificate's is <this>-tls):
       per release, so two releases in one namespace elect apart. */ -}}
{{- define "cloudtaser.leaseName" -}}{{ include "cloudtaser.fullname" . }}{{- end -}}
{{- /* What both webhooks share. */ -}}
{{- define "cloudtaser.webhookCommon" -}}
{{- $v := .root.Values -}}
admissionReviewVersions: [v1]
sideEffects: None
failurePolicy: {{ $v.webhook.failurePolicy }}
timeoutSeconds: {{ $v.webhook.timeoutSeconds }}
reinvocationPolicy: {{ $v.webhook.reinvocationPolicy }}
clientConfig:
  service:
    name: {{ .svc }}
    namespace: {{ .root.Release.Namespace }}
    path: {{ .path }}
    port: {{ $v.webhook.servicePort }}
  {{- if .ca }}
  caBundle: {{ .ca }}
  {{- end }}
rules:
  - apiGroups: [""]
    apiVersions: [v1]
    operations: [CREATE]
    resources: [pods]
    scope: Namespaced
{{- end -}}
{{- define "cloudtaser.webhookNamespaces" -}}
- key: kubernetes.io/metadata.name
  operator: NotIn
  values: {{- toYaml (concat (list .Release.Namespace "kube-system") .Values.webhook.excludeNamespaces) | nindent 4 }}
# A namespace opts out with this label (as Linkerd's
# config.linkerd.io/admission-webhooks: disabled).
- key: cloudtaser.io/admission-webhooks
  operator: NotIn
  values: [disabled]
{{- end -}}
