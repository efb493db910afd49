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
