{{- define "kubehero.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{ else }}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{ end }}
{{- end }}

{{- define "kubehero.labels" -}}
app.kubernetes.io/name: kubehero
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "kubehero.selector" -}}
app.kubernetes.io/name: kubehero
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: control-plane
{{- end }}

{{/* KUBEHERO_GROUP_ROLES from auth.rbac.mapping (operator is rendered as a scoped binding instead). */}}
{{- define "kubehero.groupRoles" -}}
{{- $pairs := list -}}
{{- range $role := list "owner" "admin" "auditor" "member" "viewer" -}}
{{- range $group := (index $.Values.auth.rbac.mapping $role | default list) -}}
{{- $pairs = append $pairs (printf "%s=%s" $group $role) -}}
{{- end -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end }}

{{- define "kubehero.issuer" -}}
{{- if .Values.auth.dex.embedded -}}{{ required "auth.dex.issuerURL is required with auth.dex.embedded" .Values.auth.dex.issuerURL }}
{{- else if .Values.auth.workos.enabled -}}https://api.workos.com/user_management/$(WORKOS_CLIENT_ID)
{{- else if .Values.auth.dex.issuerURL -}}{{ .Values.auth.dex.issuerURL }}
{{- else -}}{{ .Values.auth.oidc.issuerURL }}
{{- end -}}
{{- end }}
