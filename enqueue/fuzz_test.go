package enqueue_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/tasks"
)

// FuzzCSVRows: a row written by encoding/csv is read back field for field,
// and any bytes after the header read without a panic, one row a line.
// Seeds: testdata/fuzz/FuzzCSVRows.
func FuzzCSVRows(f *testing.F) {
	f.Add("6f1c3a52-1d8e-4b55-9c1e-0d9a7e3f2b11", "john@example.com", "https://example.com/cb", `{"a":1}`, []byte("p,u,,\n\"q\"\"x\",\"a,b\",,"))
	f.Fuzz(func(t *testing.T, project, user, url, payload string, raw []byte) {
		const header = "project_id,username,login_url,payload\n"
		fields := []string{project, user, url, payload}
		var b bytes.Buffer
		w := csv.NewWriter(&b)
		if err := w.Write(fields); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		if !strings.ContainsAny(strings.Join(fields, ""), "\r\n") && strings.TrimSpace(b.String()) != "" {
			r, err := enqueue.NewCSVReader(strings.NewReader(header+b.String()), tasks.Resend{})
			if err != nil {
				t.Fatal(err)
			}
			rows := readAll(t, r)
			if len(rows) != 1 || rows[0].Err != nil {
				t.Fatalf("%q read as %+v", b.String(), rows)
			}
			got := rows[0].Resend
			if got.ProjectID != project || got.Username != user || got.LoginURL != url || got.Payload != payload {
				t.Fatalf("%q read as %+v, want %q", b.String(), got, fields)
			}
		}
		r, err := enqueue.NewCSVReader(bytes.NewReader(append([]byte(header), raw...)), tasks.Resend{})
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range readAll(t, r) {
			if row.Line < 2 || row.Err == nil && row.Raw == "" {
				t.Fatalf("row %+v", row)
			}
		}
	})
}

// FuzzJSONLRows: an object written by encoding/json is read back field for
// field, and any bytes read without a panic, one row a line.
// Seeds: testdata/fuzz/FuzzJSONLRows.
func FuzzJSONLRows(f *testing.F) {
	f.Add("6f1c3a52-1d8e-4b55-9c1e-0d9a7e3f2b11", "john@example.com", "", "", []byte("{\"username\":1}\n[]\n{\"username\":\"x\"}"))
	f.Fuzz(func(t *testing.T, project, user, url, payload string, raw []byte) {
		type jsonRow struct {
			ProjectID string `json:"project_id"`
			Username  string `json:"username"`
			LoginURL  string `json:"login_url"`
			Payload   string `json:"payload"`
		}
		line, err := json.Marshal(jsonRow{ProjectID: project, Username: user, LoginURL: url, Payload: payload})
		if err != nil {
			t.Fatal(err)
		}
		var want jsonRow // what JSON keeps of the strings (invalid UTF-8 becomes U+FFFD)
		if err := json.Unmarshal(line, &want); err != nil {
			t.Fatal(err)
		}
		rows := readAll(t, enqueue.NewJSONLReader(bytes.NewReader(line), tasks.Resend{}))
		if len(rows) != 1 || rows[0].Err != nil {
			t.Fatalf("%s read as %+v", line, rows)
		}
		got := rows[0].Resend
		if got.ProjectID != want.ProjectID || got.Username != want.Username || got.LoginURL != want.LoginURL || got.Payload != want.Payload {
			t.Fatalf("%s read as %+v", line, got)
		}
		for _, row := range readAll(t, enqueue.NewJSONLReader(bytes.NewReader(raw), tasks.Resend{})) {
			if row.Line < 1 {
				t.Fatalf("row %+v", row)
			}
		}
	})
}
