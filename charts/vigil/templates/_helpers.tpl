{{- define "vigil.labels" -}}
app.kubernetes.io/part-of: vigil
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{- define "vigil.operatorImage" -}}
{{- if .Values.operator.image.digest -}}
{{ .Values.operator.image.repository }}@{{ .Values.operator.image.digest }}
{{- else -}}
{{ .Values.operator.image.repository }}:{{ .Values.operator.image.tag }}
{{- end -}}
{{- end }}

{{- /* The agent's config file, exactly as the ConfigMap holds it (its SHA-256 pins the revision). */}}
{{- define "vigil.agentConfig" -}}
{{- $cfg := deepCopy .Values.agent.config -}}
{{- if .Values.prometheus.podMonitors.enabled -}}
{{- /* Scraped by the PodMonitor: /metrics on the node's address, unless set otherwise. */ -}}
{{- $_ := merge $cfg (dict "exporters" (dict "prometheus" (dict "enabled" true "listen" (printf "0.0.0.0:%v" .Values.prometheus.podMonitors.agentPort)))) -}}
{{- end -}}
{{ toYaml $cfg }}
{{- end }}
