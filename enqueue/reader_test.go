package enqueue_test

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/tasks"
)

const testProject = "6f1c3a52-1d8e-4b55-9c1e-0d9a7e3f2b11"

// readAll drains src and returns its rows, checking what holds for any
// input: no error but EOF, and line numbers that only grow.
func readAll(t *testing.T, src enqueue.RowSource) []enqueue.Row {
	t.Helper()
	var rows []enqueue.Row
	for {
		row, err := src.Next()
		if err == io.EOF {
			return rows
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if len(rows) > 0 && row.Line <= rows[len(rows)-1].Line {
			t.Fatalf("line %d after line %d", row.Line, rows[len(rows)-1].Line)
		}
		rows = append(rows, row)
	}
}

func TestCSVReader(t *testing.T) {
	t.Parallel()
	in := "\xef\xbb\xbfUsername , Project_ID,created_at,login_url\r\n" +
		"alice@example.com," + testProject + ",2024-01-01,https://a.example/cb\r\n" +
		"\r\n" + // blank: skipped, but counted as a line
		`"bob ""the builder""",,x,` + "\n" +
		`"carol,with comma",` + testProject + ",y,\n" +
		`bad"quote,` + testProject + ",z,\n" +
		`"unclosed,` + testProject + ",z,\n" +
		"too,many,fields,here,now\n" +
		`"closed"x,a,b,c` + "\n" +
		"last@example.com," + testProject + ",no newline,"
	r, err := enqueue.NewCSVReader(strings.NewReader(in), tasks.Resend{ProjectID: "default-project", Payload: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if w := r.Warnings(); len(w) != 1 || !strings.Contains(w[0], "created_at") {
		t.Errorf("Warnings() = %q, want one naming created_at", w)
	}
	rows := readAll(t, r)
	type want struct {
		line      int
		username  string
		project   string
		loginURL  string
		errSubstr string
	}
	wants := []want{
		{line: 2, username: "alice@example.com", project: testProject, loginURL: "https://a.example/cb"},
		{line: 4, username: `bob "the builder"`, project: "default-project"},
		{line: 5, username: "carol,with comma", project: testProject},
		{line: 6, errSubstr: "quote inside field 1"},
		{line: 7, errSubstr: "not closed"},
		{line: 8, errSubstr: "5 fields where the header has 4"},
		{line: 9, errSubstr: "after the closing quote"},
		{line: 10, username: "last@example.com", project: testProject},
	}
	if len(rows) != len(wants) {
		t.Fatalf("got %d rows, want %d: %+v", len(rows), len(wants), rows)
	}
	for i, w := range wants {
		got := rows[i]
		if got.Line != w.line {
			t.Errorf("row %d: line %d, want %d", i, got.Line, w.line)
		}
		if w.errSubstr != "" {
			if got.Err == nil || !strings.Contains(got.Err.Error(), w.errSubstr) {
				t.Errorf("line %d: Err = %v, want one containing %q", got.Line, got.Err, w.errSubstr)
			}
			if got.Raw == "" {
				t.Errorf("line %d: Raw is empty", got.Line)
			}
			continue
		}
		if got.Err != nil {
			t.Errorf("line %d: unexpected Err %v", got.Line, got.Err)
		}
		if got.Resend.Username != w.username || got.Resend.ProjectID != w.project || got.Resend.LoginURL != w.loginURL {
			t.Errorf("line %d: got %+v, want username %q project %q login_url %q", got.Line, got.Resend, w.username, w.project, w.loginURL)
		}
		if got.Resend.Payload != "p" {
			t.Errorf("line %d: payload %q, want the default", got.Line, got.Resend.Payload)
		}
	}
}

func TestCSVReaderSemicolons(t *testing.T) {
	t.Parallel()
	r, err := enqueue.NewCSVReader(strings.NewReader("username;project_id\nann;"+testProject+"\n"), tasks.Resend{})
	if err != nil {
		t.Fatal(err)
	}
	rows := readAll(t, r)
	if len(rows) != 1 || rows[0].Resend.Username != "ann" || rows[0].Resend.ProjectID != testProject {
		t.Errorf("rows = %+v", rows)
	}
}

func TestCSVReaderHeaderErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in string
		defaults tasks.Resend
		want     string
	}{
		{"empty", "", tasks.Resend{}, "empty"},
		{"no username", "email,project_id\n", tasks.Resend{}, "no username column"},
		{"no project", "username\nann\n", tasks.Resend{}, "no project_id column"},
		{"twice", "username,USERNAME,project_id\n", tasks.Resend{}, "appears twice"},
		{"malformed", "\"username,project_id\n", tasks.Resend{}, "not closed"},
	} {
		_, err := enqueue.NewCSVReader(strings.NewReader(tc.in), tc.defaults)
		var he *enqueue.HeaderError
		if !errors.As(err, &he) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want a *HeaderError containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := enqueue.NewCSVReader(strings.NewReader("username\nann\n"), tasks.Resend{ProjectID: testProject}); err != nil {
		t.Errorf("username only with a default project: %v", err)
	}
}

func TestLongLines(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", enqueue.MaxLineLen+10)
	in := "username,project_id\n" + long + "\nann," + testProject + "\n"
	r, err := enqueue.NewCSVReader(strings.NewReader(in), tasks.Resend{})
	if err != nil {
		t.Fatal(err)
	}
	rows := readAll(t, r)
	if len(rows) != 2 {
		t.Fatalf("got %d rows, want 2", len(rows))
	}
	if rows[0].Line != 2 || rows[0].Err == nil || !strings.Contains(rows[0].Err.Error(), "longer than") || len(rows[0].Raw) > 1024 {
		t.Errorf("long line: line %d, err %v, raw of %d bytes", rows[0].Line, rows[0].Err, len(rows[0].Raw))
	}
	if rows[1].Line != 3 || rows[1].Err != nil || rows[1].Resend.Username != "ann" {
		t.Errorf("line after the long one: %+v", rows[1])
	}
}

func TestJSONLReader(t *testing.T) {
	t.Parallel()
	in := `{"username":"ann@example.com","project_id":"` + testProject + `","extra":1}` + "\n" +
		"\n" +
		`{"username":"bob"}` + "\n" +
		`{"username": 42}` + "\n" +
		`["not", "an object"]` + "\n" +
		`{"username":"cut` + "\n" +
		`{"username":"x"} trailing` + "\n" +
		`  {"username":"carol","login_url":"https://a.example/cb","payload":"{\"k\":1}"}  `
	r := enqueue.NewJSONLReader(strings.NewReader(in), tasks.Resend{ProjectID: "dflt"})
	rows := readAll(t, r)
	if len(rows) != 7 {
		t.Fatalf("got %d rows, want 7: %+v", len(rows), rows)
	}
	if w := r.Warnings(); len(w) != 1 || !strings.Contains(w[0], "extra") {
		t.Errorf("Warnings() = %q, want one naming extra", w)
	}
	check := func(i, line int, username, project, errSubstr string) {
		t.Helper()
		got := rows[i]
		if got.Line != line {
			t.Errorf("row %d: line %d, want %d", i, got.Line, line)
		}
		if errSubstr != "" {
			if got.Err == nil || !strings.Contains(got.Err.Error(), errSubstr) {
				t.Errorf("line %d: Err = %v, want one containing %q", line, got.Err, errSubstr)
			}
			return
		}
		if got.Err != nil || got.Resend.Username != username || got.Resend.ProjectID != project {
			t.Errorf("line %d: %+v, want username %q project %q", line, got, username, project)
		}
	}
	check(0, 1, "ann@example.com", testProject, "")
	check(1, 3, "bob", "dflt", "")
	check(2, 4, "", "", "username must be a string")
	check(3, 5, "", "", "not a JSON object")
	check(4, 6, "", "", "malformed JSON")
	check(5, 7, "", "", "malformed JSON")
	check(6, 8, "carol", "dflt", "")
	if rows[6].Resend.LoginURL != "https://a.example/cb" || rows[6].Resend.Payload != `{"k":1}` {
		t.Errorf("line 8: %+v", rows[6].Resend)
	}
}

func TestContentBatchID(t *testing.T) {
	t.Parallel()
	a, err := enqueue.ContentBatchID(strings.NewReader("username\nann\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := enqueue.ContentBatchID(strings.NewReader("username\nann\n"))
	c, _ := enqueue.ContentBatchID(strings.NewReader("username\nbob\n"))
	if a != b || a == c || enqueue.CheckBatchID(a) != nil {
		t.Errorf("ContentBatchID: %q %q %q", a, b, c)
	}
	for _, bad := range []string{"", "-x", "a b", "a:b", strings.Repeat("a", 65)} {
		if enqueue.CheckBatchID(bad) == nil {
			t.Errorf("CheckBatchID(%q) = nil, want an error", bad)
		}
	}
}
