{{- define "kubehero-agent.labels" -}}
app.kubernetes.io/name: kubehero-agent
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "kubehero-agent.selector" -}}
app.kubernetes.io/name: kubehero-agent
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kubehero-agent.joinSecret" -}}
{{- default (printf "%s-join" .Release.Name) .Values.joinTokenSecret -}}
{{- end }}
