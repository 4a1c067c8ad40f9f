{{/* Names and labels, as `helm create` lays them out. */}}
{{- define "ugate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ugate.fullname" -}}
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

{{- define "ugate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ugate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ugate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ugate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end }}

{{- define "ugate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ugate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ugate.adminSecretName" -}}
{{- default (printf "%s-admin" (include "ugate.fullname" .)) .Values.admin.existingSecret }}
{{- end }}

{{/* Fixed paths inside the pod. */}}
{{- define "ugate.paths" -}}
config: /etc/ugate
data: /var/lib/ugate
identity: /var/run/ugate/identity
admin: /var/run/ugate/admin
workload: /var/run/ugate/workload
istio: /var/run/secrets/workload-spiffe-credentials
{{- end }}

{{/*
The ugate.yaml this release runs: the mode's defaults with .Values.config laid over them (maps merge,
lists replace, null replaces). Returned as YAML: use `include "ugate.config" . | fromYaml` for a map.
*/}}
{{- define "ugate.config" -}}
{{- if not (has .Values.mode (list "node" "gateway")) }}
{{- fail (printf "mode must be node or gateway, not %q" (toString .Values.mode)) }}
{{- end }}
{{- $p := include "ugate.paths" . | fromYaml }}
{{- $base := dict
  "dataDir" (ternary $p.identity $p.data (not (empty .Values.identity.secretName)))
  "log" (dict "format" "json")
  "ssh" (dict "listen" "0.0.0.0:15022")
  "hbone" (dict "listen" "0.0.0.0:15008")
  "admin" (dict "listen" "0.0.0.0:15000" "tokenFile" (printf "%s/token" $p.admin))
}}
{{- if eq .Values.mode "node" }}
{{- $_ := set $base "socks" (dict "listen" "0.0.0.0:15080") }}
{{- $_ := set $base "http" (dict "listen" "0.0.0.0:15081") }}
{{- else }}
{{- $_ := set $base "socks" nil }}
{{- $_ := set $base "http" nil }}
{{- end }}
{{- if .Values.workload.secretName }}
{{- $_ := set $base "workload" (dict "certDir" $p.workload) }}
{{- end }}
{{- $user := deepCopy (default (dict) .Values.config) }}
{{- $cfg := mustMergeOverwrite $base $user }}
{{- /* mergeOverwrite skips nulls; in ugate.yaml a null turns a listener off, so nulls win here. */}}
{{- range $k, $v := $user }}
{{- if kindIs "invalid" $v }}
{{- $_ := set $cfg $k nil }}
{{- else if kindIs "map" $v }}
{{- range $k2, $v2 := $v }}
{{- if kindIs "invalid" $v2 }}
{{- $_ := set (get $cfg $k) $k2 nil }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
The listeners of the config, as container ports: name, port (from `listen`, host:port), protocol.
Returned as YAML {ports: [...]}.
*/}}
{{- define "ugate.ports" -}}
{{- $cfg := include "ugate.config" . | fromYaml }}
{{- $out := list }}
{{- range $l := list (list "ssh" "ssh" "TCP") (list "hbone" "hbone" "TCP") (list "hbonec" "hbonec" "TCP") (list "sni" "sni" "TCP") (list "socks" "socks" "TCP") (list "http" "proxy" "TCP") (list "dns" "dns" "UDP") (list "dns" "dns-tcp" "TCP") (list "admin" "admin" "TCP") }}
{{- $section := get $cfg (index $l 0) }}
{{- if and (kindIs "map" $section) (get $section "listen") }}
{{- $listen := toString (get $section "listen") }}
{{- $port := regexFind "[0-9]+$" $listen }}
{{- if not $port }}
{{- fail (printf "config.%s.listen %q: expected host:port" (index $l 0) $listen) }}
{{- end }}
{{- $out = append $out (dict "name" (index $l 1) "containerPort" (atoi $port) "protocol" (index $l 2)) }}
{{- end }}
{{- end }}
{{- toYaml (dict "ports" $out) }}
{{- end }}

{{/* The pod template shared by the DaemonSet (node mode) and the Deployment (gateway mode). */}}
{{- define "ugate.podTemplate" -}}
{{- $p := include "ugate.paths" . | fromYaml }}
{{- $cfg := include "ugate.config" . | fromYaml }}
{{- $ports := (include "ugate.ports" . | fromYaml).ports }}
{{- $admin := get $cfg "admin" }}
{{- $adminPort := "" }}
{{- range $ports }}{{ if eq .name "admin" }}{{ $adminPort = "admin" }}{{ end }}{{ end }}
{{- $hostData := and (eq .Values.mode "node") (not .Values.identity.secretName) .Values.identity.hostPath -}}
metadata:
  labels:
    {{- include "ugate.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # A new config rolls the pods.
    checksum/config: {{ include "ugate.config" . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "ugate.serviceAccountName" . }}
  # The API token only when the node reads the Kubernetes API (discovery.kubernetes).
  automountServiceAccountToken: {{ or .Values.rbac.create (hasKey (get $cfg "discovery" | default dict) "kubernetes") }}
  # SIGTERM drains live streams for limits.drainMs: the grace period outlasts it.
  terminationGracePeriodSeconds: {{ include "ugate.gracePeriod" . }}
  {{- if and (eq .Values.mode "node") .Values.hostNetwork }}
  hostNetwork: true
  dnsPolicy: ClusterFirstWithHostNet
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  {{- if $hostData }}
  initContainers:
    # The host folder is created by the kubelet, owned by root: hand it to the ugate user.
    - name: data-owner
      image: {{ include "ugate.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command: ["chown", "{{ .Values.podSecurityContext.runAsUser }}:{{ .Values.podSecurityContext.runAsGroup }}", {{ $p.data | quote }}]
      securityContext:
        runAsNonRoot: false
        runAsUser: 0
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: [ALL]
          add: [CHOWN]
      volumeMounts:
        - name: data
          mountPath: {{ $p.data }}
  {{- end }}
  containers:
    - name: ugate
      image: {{ include "ugate.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: ["run", "-c", "{{ $p.config }}/ugate.yaml"]
      {{- with .Values.extraEnv }}
      env:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        {{- range $ports }}
        - name: {{ .name }}
          containerPort: {{ .containerPort }}
          protocol: {{ .protocol }}
        {{- end }}
      {{- if $adminPort }}
      readinessProbe:
        httpGet:
          path: /healthz/ready
          port: admin
        periodSeconds: 5
        failureThreshold: 3
      livenessProbe:
        httpGet:
          path: /healthz/live
          port: admin
        initialDelaySeconds: 10
        periodSeconds: 10
        failureThreshold: 6
      {{- end }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: {{ $p.config }}
          readOnly: true
        - name: data
          mountPath: {{ $p.data }}
        - name: tmp
          mountPath: /tmp
        {{- if .Values.identity.secretName }}
        - name: identity
          mountPath: {{ $p.identity }}
          readOnly: true
        {{- end }}
        {{- if $admin }}
        - name: admin-token
          mountPath: {{ $p.admin }}
          readOnly: true
        {{- end }}
        {{- if .Values.workload.secretName }}
        - name: workload
          mountPath: {{ $p.workload }}
          readOnly: true
        {{- end }}
        {{- if .Values.workload.istio }}
        # Added to the pod by Istio's sidecar injector.
        - name: workload-certs
          mountPath: {{ $p.istio }}
          readOnly: true
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ default (include "ugate.fullname" .) .Values.existingConfigMap }}
    - name: data
      {{- if $hostData }}
      hostPath:
        path: {{ .Values.identity.hostPath }}
        type: DirectoryOrCreate
      {{- else }}
      emptyDir: {}
      {{- end }}
    - name: tmp
      emptyDir: {}
    {{- if .Values.identity.secretName }}
    - name: identity
      secret:
        secretName: {{ .Values.identity.secretName }}
        defaultMode: 288 # 0440: the owner and the fsGroup read
        items:
          - key: node.key
            path: node.key
    {{- end }}
    {{- if $admin }}
    - name: admin-token
      secret:
        secretName: {{ include "ugate.adminSecretName" . }}
        defaultMode: 288 # 0440: the owner and the fsGroup read
        items:
          - key: token
            path: token
    {{- end }}
    {{- if .Values.workload.secretName }}
    - name: workload
      secret:
        secretName: {{ .Values.workload.secretName }}
        defaultMode: 288 # 0440: the owner and the fsGroup read
        items:
          - key: tls.crt
            path: tls.crt
          - key: tls.key
            path: tls.key
          - key: ca.crt
            path: ca.crt
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{- define "ugate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion (toString .Values.image.tag)) | quote }}
{{- end }}

{{/* terminationGracePeriodSeconds: the value given, or drainMs (default 10 s) plus 5 s when that is longer. */}}
{{- define "ugate.gracePeriod" -}}
{{- $cfg := include "ugate.config" . | fromYaml }}
{{- $limits := get $cfg "limits" | default dict }}
{{- $drainMs := get $limits "drainMs" | default 10000 }}
{{- max (int64 .Values.terminationGracePeriodSeconds) (add (div (add $drainMs 999) 1000) 5) }}
{{- end }}
