{{/* Chart name. */}}
{{- define "vm-import.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects (also the Service's DNS name). */}}
{{- define "vm-import.fullname" -}}
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

{{- define "vm-import.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades. */}}
{{- define "vm-import.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vm-import.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vm-import.labels" -}}
helm.sh/chart: {{ include "vm-import.chart" . }}
{{ include "vm-import.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: controller
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "vm-import.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vm-import.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "vm-import.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The base URL at which Harvester reaches the disk server. */}}
{{- define "vm-import.diskServerUrl" -}}
{{- $advertise := .Values.diskServer.advertise | default "auto" }}
{{- if not (has $advertise (list "auto" "service" "podIP")) }}
{{- fail (printf "diskServer.advertise %q: use auto, service or podIP" $advertise) }}
{{- end }}
{{- if .Values.diskServer.url }}
{{- .Values.diskServer.url | trimSuffix "/" }}
{{- else if or (eq $advertise "podIP") (and (eq $advertise "auto") (gt (int .Values.replicas) 1)) }}
{{- print "http://$(POD_IP):8080" }}
{{- else }}
{{- printf "http://%s.%s.svc:%d" (include "vm-import.fullname" .) .Release.Namespace (int .Values.service.ports.disk) }}
{{- end }}
{{- end }}

{{/* Name of the scratch PVC. */}}
{{- define "vm-import.scratchClaim" -}}
{{- default (printf "%s-scratch" (include "vm-import.fullname" .)) .Values.scratch.persistentVolumeClaim.existingClaim }}
{{- end }}

{{/* Whether the scratch volume is a PVC that one node at a time can mount. */}}
{{- define "vm-import.scratchIsRWO" -}}
{{- $pvc := .Values.scratch.persistentVolumeClaim }}
{{- if and $pvc.enabled (not $pvc.existingClaim) (not (has "ReadWriteMany" $pvc.accessModes)) }}true{{- end }}
{{- end }}

{{/* Refuses combinations that cannot work. */}}
{{- define "vm-import.validate" -}}
{{- $replicas := int .Values.replicas }}
{{- if lt $replicas 1 }}
{{- fail "replicas must be at least 1" }}
{{- end }}
{{- if and (gt $replicas 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicas > 1 needs leaderElection.enabled: true (only the leader may reconcile)" }}
{{- end }}
{{- if and (gt $replicas 1) (include "vm-import.scratchIsRWO" .) }}
{{- fail "replicas > 1 with a ReadWriteOnce scratch PVC: set scratch.persistentVolumeClaim.accessModes to [ReadWriteMany], or use the emptyDir (persistentVolumeClaim.enabled: false)" }}
{{- end }}
{{- if not (has .Values.imageBackend (list "auto" "backingimage" "cdi")) }}
{{- fail (printf "imageBackend %q: use auto, backingimage or cdi" .Values.imageBackend) }}
{{- end }}
{{- if not (has .Values.diskFormat (list "qcow2" "raw")) }}
{{- fail (printf "diskFormat %q: use qcow2 or raw" .Values.diskFormat) }}
{{- end }}
{{- if not (has .Values.logFormat (list "json" "text")) }}
{{- fail (printf "logFormat %q: use json or text" .Values.logFormat) }}
{{- end }}
{{- end }}
