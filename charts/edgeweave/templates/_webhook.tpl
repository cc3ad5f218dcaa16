{{- /* Webhooks (steering + semantic admission): names, and the operator Deployment's pieces for them. */ -}}
{{- define "edgeweave.webhookService" -}}{{ include "edgeweave.fullname" . }}-webhook{{- end -}}
{{- define "edgeweave.webhookSecret" -}}{{ include "edgeweave.fullname" . }}-webhook-tls{{- end -}}
{{- define "edgeweave.webhookCertManager" -}}
{{- if eq (toString .Values.webhook.certManager) "auto" -}}
{{- if .Capabilities.APIVersions.Has "cert-manager.io/v1" -}}true{{- end -}}
{{- else if eq (toString .Values.webhook.certManager) "enabled" -}}true{{- end -}}
{{- end -}}
{{- define "edgeweave.webhookNamespaceSelector" -}}
matchExpressions:
- key: kubernetes.io/metadata.name
  operator: NotIn
  values: {{- (concat (list "kube-system" .Release.Namespace) .Values.webhook.excludeNamespaces) | uniq | sortAlpha | toYaml | nindent 4 }}
{{- end -}}
{{- define "edgeweave.webhookArgs" -}}
{{- if .Values.webhook.enabled }}
- --webhook-port={{ .Values.webhook.port }}
- --webhook-bind=0.0.0.0
- --webhook-host={{ include "edgeweave.webhookService" . }}.{{ .Release.Namespace }}.svc
- --webhook-config={{ include "edgeweave.fullname" . }}
- --admission-config={{ include "edgeweave.fullname" . }}
- --webhook-cert-dir=/etc/edgeweave/webhook
- --no-webhook-manage
{{- end }}
{{- end -}}
{{- define "edgeweave.webhookEnv" -}}
- name: EDGEWEAVE_ADMISSION_ALLOWED_IMAGES
  value: {{ join "," .Values.admission.allowedImages | quote }}
- name: EDGEWEAVE_ADMISSION_MAX_GRID_BLOCKS
  value: {{ .Values.admission.maxGridBlocks | int64 | quote }}
- name: EDGEWEAVE_ADMISSION_MAX_OBJECT_BYTES
  value: {{ .Values.admission.maxObjectBytes | int64 | quote }}
{{- end -}}
{{- define "edgeweave.webhookVolumeMounts" -}}
{{- if .Values.webhook.enabled }}
- {name: webhook-tls, mountPath: /etc/edgeweave/webhook, readOnly: true}
{{- end }}
{{- end -}}
{{- define "edgeweave.webhookVolumes" -}}
{{- if .Values.webhook.enabled }}
- name: webhook-tls
  secret: {secretName: {{ include "edgeweave.webhookSecret" . }}}
{{- end }}
{{- end -}}
