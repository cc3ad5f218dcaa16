{{- define "edgeweave.fullname" -}}{{ .Release.Name }}-edgeweave{{- end -}}
{{- define "edgeweave.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{- end -}}
{{- define "edgeweave.labels" -}}
app.kubernetes.io/name: edgeweave
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "edgeweave.agentMetricsSecret" -}}{{ .Values.agent.metricsAuth.existingSecret | default (printf "%s-agent-metrics" (include "edgeweave.fullname" .)) }}{{- end -}}
