// Command helm-render renders a Helm chart the way `helm template` does, for tests on machines
// where helm itself cannot be installed: Go's text/template, the Sprig function library that helm
// uses (Debian: golang-github-masterminds-sprig-dev), helm's own functions (toYaml, fromYaml,
// toJson, fromJson, include, tpl, required, fail, lookup) written the way helm defines them on
// sigs.k8s.io/yaml (Debian: golang-k8s-sigs-yaml-dev), and helm's values rules (chart values,
// then -f files, then --set; a null in a later source removes a chart default).
//
// Not covered: subcharts, .Files, values.schema.json, hooks, the kubeVersion check, capabilities
// beyond a fixed Kubernetes version, and --set beyond one key=value per flag (no commas, no list
// indexes). The chart in deploy/helm/ugate needs none of them.
//
//	helm-render -chart deploy/helm/ugate [-f values.yaml]... [--set a.b=c]... [--set-json a.b=[1]]...
//	            [-name ugate] [-namespace default] [-notes] [-json]
//
// Output: the rendered manifests, each preceded by `---` and `# Source: <chart>/templates/<file>`,
// as `helm template` prints them; with -json, one JSON array of {"source", "object"} instead, each
// object converted the way Kubernetes reads YAML (sigs.k8s.io/yaml: YAML 1.1, so 0440 is octal).
// Exit 1 with the error on any failure (a template error, a `required` or `fail`, or a rendered
// file that is not valid YAML).
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"sigs.k8s.io/yaml"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	var valueFiles, sets, setJSON multi
	chartDir := flag.String("chart", "", "chart directory")
	name := flag.String("name", "ugate", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	notes := flag.Bool("notes", false, "also render templates/NOTES.txt")
	asJSON := flag.Bool("json", false, "print the objects as a JSON array")
	flag.Var(&valueFiles, "f", "values file (repeatable)")
	flag.Var(&sets, "set", "key.path=value (repeatable; value typed as helm --set does)")
	flag.Var(&setJSON, "set-json", "key.path=<JSON> (repeatable)")
	flag.Parse()
	if *chartDir == "" {
		fail(errors.New("-chart is required"))
	}
	docs, err := render(*chartDir, *name, *namespace, valueFiles, sets, setJSON, *notes)
	if err != nil {
		fail(err)
	}
	if *asJSON {
		type entry struct {
			Source string          `json:"source"`
			Object json.RawMessage `json:"object,omitempty"`
			Text   string          `json:"text,omitempty"`
		}
		var list []entry
		for _, d := range docs {
			if d.notes {
				list = append(list, entry{Source: d.source, Text: d.text})
				continue
			}
			j, err := yaml.YAMLToJSON([]byte(d.text))
			if err != nil {
				fail(fmt.Errorf("%s: %w", d.source, err))
			}
			list = append(list, entry{Source: d.source, Object: j})
		}
		b, _ := json.MarshalIndent(list, "", "  ")
		os.Stdout.Write(append(b, '\n'))
		return
	}
	for _, d := range docs {
		os.Stdout.WriteString("---\n# Source: " + d.source + "\n" + d.text + "\n")
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "Error: %v\n", err)
	os.Exit(1)
}

func readYAMLMap(file string) (map[string]interface{}, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	m := map[string]interface{}{}
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if m == nil {
		m = map[string]interface{}{}
	}
	return m, nil
}

// coalesce lays `over` onto `base` (both are changed/returned as helm's chartutil does): maps merge
// key by key, anything else replaces, and a null in `over` for a key `base` has deletes it.
func coalesce(base, over map[string]interface{}) map[string]interface{} {
	for k, v := range over {
		bv, exists := base[k]
		switch {
		case v == nil && exists:
			delete(base, k)
		case v == nil:
			base[k] = nil
		default:
			om, oIsMap := v.(map[string]interface{})
			bm, bIsMap := bv.(map[string]interface{})
			if oIsMap && bIsMap {
				base[k] = coalesce(bm, om)
			} else {
				base[k] = v
			}
		}
	}
	return base
}

// typed reads a --set value as helm's strvals does: integers, booleans and null are typed.
func typed(s string) interface{} {
	switch s {
	case "true":
		return true
	case "false":
		return false
	case "null":
		return nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && (s == "0" || !strings.HasPrefix(s, "0")) {
		return n
	}
	return s
}

func setPath(m map[string]interface{}, path string, v interface{}) {
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]interface{})
		if !ok {
			next = map[string]interface{}{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}

func values(chartDir string, files, sets, setJSON []string) (map[string]interface{}, error) {
	vals, err := readYAMLMap(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		over, err := readYAMLMap(f)
		if err != nil {
			return nil, err
		}
		vals = coalesce(vals, over)
	}
	over := map[string]interface{}{}
	for _, s := range sets {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("--set %q: expected key=value", s)
		}
		setPath(over, k, typed(v))
	}
	for _, s := range setJSON {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("--set-json %q: expected key=<JSON>", s)
		}
		var parsed interface{}
		if err := json.Unmarshal([]byte(v), &parsed); err != nil {
			return nil, fmt.Errorf("--set-json %q: %w", s, err)
		}
		setPath(over, k, parsed)
	}
	return coalesce(vals, over), nil
}

// Helm's own template functions, as pkg/engine defines them.
func toYAML(v interface{}) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(b), "\n")
}

func fromYAML(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := yaml.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromYAMLArray(s string) []interface{} {
	a := []interface{}{}
	if err := yaml.Unmarshal([]byte(s), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

func toJSON(v interface{}) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

func fromJSON(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func required(msg string, v interface{}) (interface{}, error) {
	if v == nil {
		return v, errors.New(msg)
	}
	if s, ok := v.(string); ok && s == "" {
		return v, errors.New(msg)
	}
	return v, nil
}

// doc is one rendered document (or the rendered NOTES.txt).
type doc struct {
	source string
	text   string
	notes  bool
}

func render(chartDir, release, namespace string, files, sets, setJSON []string, withNotes bool) ([]doc, error) {
	chart, err := readYAMLMap(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return nil, err
	}
	str := func(k string) string { s, _ := chart[k].(string); return s }
	chartName := str("name")
	if chartName == "" {
		return nil, errors.New("Chart.yaml has no name")
	}
	if str("apiVersion") != "v2" {
		return nil, fmt.Errorf("Chart.yaml apiVersion %q: helm 3 charts are v2", str("apiVersion"))
	}
	vals, err := values(chartDir, files, sets, setJSON)
	if err != nil {
		return nil, err
	}

	// Every file under templates/, named as helm names them: <chart>/templates/<path>.
	var names []string
	sources := map[string]string{}
	root := filepath.Join(chartDir, "templates")
	err = filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		n := chartName + "/templates/" + filepath.ToSlash(rel)
		names = append(names, n)
		sources[n] = string(b)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(names)

	t := template.New(chartName)
	funcs := sprig.TxtFuncMap()
	// helm removes these two: a chart must not read the environment of whoever renders it.
	delete(funcs, "env")
	delete(funcs, "expandenv")
	funcs["toYaml"] = toYAML
	funcs["fromYaml"] = fromYAML
	funcs["fromYamlArray"] = fromYAMLArray
	funcs["toJson"] = toJSON
	funcs["fromJson"] = fromJSON
	funcs["required"] = required
	funcs["fail"] = func(msg string) (string, error) { return "", errors.New(msg) }
	// As `helm template` (no cluster): lookup finds nothing.
	funcs["lookup"] = func(apiVersion, kind, namespace, name string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		if err := t.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		c, err := t.Clone()
		if err != nil {
			return "", err
		}
		inner, err := c.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var buf bytes.Buffer
		if err := inner.Execute(&buf, data); err != nil {
			return "", err
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	t.Funcs(funcs).Option("missingkey=zero")
	for _, n := range names {
		if _, err := t.New(n).Parse(sources[n]); err != nil {
			return nil, err
		}
	}

	top := map[string]interface{}{
		"Values": vals,
		"Release": map[string]interface{}{
			"Name": release, "Namespace": namespace, "Service": "Helm", "Revision": 1, "IsInstall": true, "IsUpgrade": false,
		},
		"Chart": map[string]interface{}{
			"Name": chartName, "Version": str("version"), "AppVersion": str("appVersion"), "Description": str("description"),
			"Type": str("type"), "APIVersion": str("apiVersion"), "KubeVersion": str("kubeVersion"),
		},
		"Capabilities": map[string]interface{}{
			"KubeVersion": map[string]interface{}{"Version": "v1.30.0", "Major": "1", "Minor": "30", "GitVersion": "v1.30.0"},
		},
	}

	var out []doc
	for _, n := range names {
		base := filepath.Base(n)
		isNotes := base == "NOTES.txt"
		if strings.HasPrefix(base, "_") || (isNotes && !withNotes) {
			continue
		}
		// Files starting with _ only hold defines; manifests are .yaml (helm also renders other
		// names, which this chart has none of).
		if !isNotes && !strings.HasSuffix(base, ".yaml") && !strings.HasSuffix(base, ".yml") {
			continue
		}
		scope := map[string]interface{}{}
		for k, v := range top {
			scope[k] = v
		}
		scope["Template"] = map[string]interface{}{"Name": n, "BasePath": chartName + "/templates"}
		var buf bytes.Buffer
		if err := t.ExecuteTemplate(&buf, n, scope); err != nil {
			return nil, err
		}
		text := strings.ReplaceAll(buf.String(), "<no value>", "")
		if isNotes {
			out = append(out, doc{source: n, text: text, notes: true})
			continue
		}
		// A file may hold several documents; empty ones are dropped, the rest must be YAML maps.
		for _, d := range splitDocs(text) {
			if strings.TrimSpace(stripComments(d)) == "" {
				continue
			}
			var m map[string]interface{}
			if err := yaml.Unmarshal([]byte(d), &m); err != nil {
				return nil, fmt.Errorf("YAML parse error in %s: %w\n%s", n, err, d)
			}
			out = append(out, doc{source: n, text: strings.TrimSpace(d)})
		}
	}
	return out, nil
}

func splitDocs(s string) []string {
	var docs []string
	var cur strings.Builder
	for _, line := range strings.SplitAfter(s, "\n") {
		if strings.TrimRight(line, " \t\r\n") == "---" {
			docs = append(docs, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteString(line)
	}
	return append(docs, cur.String())
}

func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}
