package enqueue

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/resendq/resendq/tasks"
)

// MaxLineLen is the longest input line a reader accepts, in bytes. A longer
// line is rejected on its own and reading goes on with the next one.
const MaxLineLen = 1 << 20

// Row is one row of a batch input: a resend request as read, not yet
// validated, with where it came from.
type Row struct {
	// Line is the row's 1-based line number in the input (a CSV header is line 1).
	Line int
	// Resend holds the row's fields, with the reader's defaults filled in
	// for empty ones.
	Resend tasks.Resend
	// Raw is the line as read, without its line ending. It may hold an
	// email address: it is meant for the operator's rejects file, never logs.
	Raw string
	// Err, when not nil, says why the line could not be read as a row
	// (malformed CSV or JSON, too long); such a row is rejected.
	Err error
}

// RowSource yields the rows of a batch input in order. Next returns io.EOF
// after the last row; any other error ends the batch (the input could not
// be read). A line that is malformed is not an error of Next: it comes back
// as a Row whose Err is set.
type RowSource interface {
	Next() (Row, error)
}

// Columns lists the CSV columns and JSON keys the readers understand.
var Columns = []string{"project_id", "username", "login_url", "payload"}

// lineReader splits its input into lines, numbering them from 1.
type lineReader struct {
	br   *bufio.Reader
	line int
	eof  bool
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 64<<10)}
}

// errLineTooLong is the Err of a row whose line is over MaxLineLen.
var errLineTooLong = fmt.Errorf("line is longer than %d bytes", MaxLineLen)

// next returns the next line without its line ending, valid until the
// following call, and its number; io.EOF after the last line. A line over
// MaxLineLen comes back cut, with errLineTooLong.
func (l *lineReader) next(buf *[]byte) ([]byte, int, error) {
	if l.eof {
		return nil, l.line, io.EOF
	}
	*buf = (*buf)[:0]
	tooLong := false
	for {
		chunk, err := l.br.ReadSlice('\n')
		if !tooLong && len(*buf)+len(chunk) <= MaxLineLen+2 {
			*buf = append(*buf, chunk...)
		} else {
			tooLong = true
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err == io.EOF {
			l.eof = true
			if len(*buf) == 0 && !tooLong {
				return nil, l.line, io.EOF
			}
		} else if err != nil {
			return nil, l.line, err
		}
		break
	}
	l.line++
	b := bytes.TrimSuffix(bytes.TrimSuffix(*buf, []byte("\n")), []byte("\r"))
	if tooLong || len(b) > MaxLineLen {
		if len(b) > 1024 {
			b = b[:1024]
		}
		return b, l.line, errLineTooLong
	}
	return b, l.line, nil
}

// CSVReader reads rows from CSV with a header row, one record per line.
// Fields may be quoted ("a ""b"", c"); a quoted field cannot span lines, so
// that one broken line never swallows the ones after it. The delimiter is a
// comma, or a semicolon or tab when the header has that and no comma.
type CSVReader struct {
	lines    *lineReader
	buf      []byte
	fields   []string
	delim    byte
	ncols    int
	col      [4]int // index of project_id, username, login_url, payload; -1 if absent
	defaults tasks.Resend
	warnings []string
}

// HeaderError says why a CSV header row cannot be used; nothing was read
// past it.
type HeaderError struct{ Problem string }

func (e *HeaderError) Error() string { return "CSV header: " + e.Problem }

// NewCSVReader reads the header row of r and returns a reader of the rows
// after it. The header names columns among Columns, in any order and case;
// username is required, and project_id unless defaults.ProjectID is set.
// Other columns are ignored (see Warnings). Empty cells take their value
// from defaults (ProjectID, LoginURL, Payload). A header that cannot be used
// is a *HeaderError.
func NewCSVReader(r io.Reader, defaults tasks.Resend) (*CSVReader, error) {
	c := &CSVReader{lines: newLineReader(r), defaults: defaults, col: [4]int{-1, -1, -1, -1}}
	line, _, err := c.lines.next(&c.buf)
	if err == io.EOF {
		return nil, &HeaderError{"the input is empty"}
	}
	if errors.Is(err, errLineTooLong) {
		return nil, &HeaderError{"the first line is too long to be a header"}
	}
	if err != nil {
		return nil, err
	}
	line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf")) // a UTF-8 byte order mark
	c.delim = sniffDelimiter(line)
	names, err := splitCSV(line, c.delim, nil)
	if err != nil {
		return nil, &HeaderError{err.Error()}
	}
	if err := c.mapColumns(names); err != nil {
		return nil, err
	}
	return c, nil
}

func sniffDelimiter(header []byte) byte {
	if bytes.IndexByte(header, ',') < 0 {
		for _, d := range []byte{';', '\t'} {
			if bytes.IndexByte(header, d) >= 0 {
				return d
			}
		}
	}
	return ','
}

func (c *CSVReader) mapColumns(names []string) error {
	var unknown []string
	for i, name := range names {
		name = strings.ToLower(strings.TrimSpace(name))
		k := columnIndex(name)
		switch {
		case k < 0:
			if name == "" {
				name = fmt.Sprintf("(column %d, unnamed)", i+1)
			}
			unknown = append(unknown, name)
		case c.col[k] >= 0:
			return &HeaderError{fmt.Sprintf("column %s appears twice", name)}
		default:
			c.col[k] = i
		}
	}
	c.ncols = len(names)
	if c.col[1] < 0 {
		return &HeaderError{fmt.Sprintf("no username column (the header names: %s); want a header naming %s",
			strings.Join(trimAll(names), ", "), strings.Join(Columns, ", "))}
	}
	if c.col[0] < 0 && c.defaults.ProjectID == "" {
		return &HeaderError{"no project_id column: add one or give the project ID for every row (--project-id)"}
	}
	if len(unknown) > 0 {
		c.warnings = append(c.warnings, "ignoring CSV columns not used by resendq: "+strings.Join(unknown, ", "))
	}
	return nil
}

// defaultsOf keeps the fields of d that a row may leave empty.
func defaultsOf(d tasks.Resend) tasks.Resend {
	return tasks.Resend{ProjectID: d.ProjectID, LoginURL: d.LoginURL, Payload: d.Payload}
}

func columnIndex(name string) int {
	for k, col := range Columns {
		if name == col {
			return k
		}
	}
	return -1
}

func trimAll(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = strings.TrimSpace(v)
	}
	return out
}

// Warnings lists what the reader accepted but ignored, such as unknown columns.
func (c *CSVReader) Warnings() []string { return c.warnings }

// Next returns the next row; blank lines are skipped.
func (c *CSVReader) Next() (Row, error) {
	for {
		line, n, err := c.lines.next(&c.buf)
		if err != nil && !errors.Is(err, errLineTooLong) {
			return Row{}, err
		}
		row := Row{Line: n, Raw: string(line), Err: err}
		if err != nil {
			return row, nil
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		c.fields, err = splitCSV(line, c.delim, c.fields)
		switch {
		case err != nil:
			row.Err = fmt.Errorf("malformed CSV: %w", err)
		case len(c.fields) != c.ncols:
			row.Err = fmt.Errorf("malformed CSV: %d fields where the header has %d", len(c.fields), c.ncols)
		default:
			row.Resend = defaultsOf(c.defaults)
			c.set(&row.Resend.ProjectID, 0)
			c.set(&row.Resend.Username, 1)
			c.set(&row.Resend.LoginURL, 2)
			c.set(&row.Resend.Payload, 3)
		}
		return row, nil
	}
}

func (c *CSVReader) set(dst *string, k int) {
	if i := c.col[k]; i >= 0 && c.fields[i] != "" {
		*dst = c.fields[i]
	}
}

// splitCSV splits one CSV line into fields, appending them to dst[:0].
func splitCSV(line []byte, delim byte, dst []string) ([]string, error) {
	dst = dst[:0]
	var quoted []byte
	for i := 0; ; {
		if i < len(line) && line[i] == '"' {
			quoted = quoted[:0]
			i++
			for {
				j := bytes.IndexByte(line[i:], '"')
				if j < 0 {
					return dst, errors.New("a quoted field is not closed on its line")
				}
				quoted = append(quoted, line[i:i+j]...)
				i += j + 1
				if i < len(line) && line[i] == '"' { // "" is a quote inside a quoted field
					quoted = append(quoted, '"')
					i++
					continue
				}
				break
			}
			dst = append(dst, string(quoted))
			if i == len(line) {
				return dst, nil
			}
			if line[i] != delim {
				return dst, fmt.Errorf("%q after the closing quote of field %d", line[i], len(dst))
			}
			i++
			continue
		}
		field := line[i:]
		j := bytes.IndexByte(field, delim)
		if j >= 0 {
			field = field[:j]
		}
		if bytes.IndexByte(field, '"') >= 0 {
			return dst, fmt.Errorf("a quote inside field %d, which is not quoted", len(dst)+1)
		}
		dst = append(dst, string(field))
		if j < 0 {
			return dst, nil
		}
		i += j + 1
	}
}

// JSONLReader reads rows from JSON Lines: one JSON object per line with
// the keys of Columns, all strings. Other keys are ignored (see Warnings).
type JSONLReader struct {
	lines    *lineReader
	buf      []byte
	defaults tasks.Resend
	checked  bool
	warnings []string
}

// NewJSONLReader returns a reader of the JSON Lines in r. Empty or missing
// values take their value from defaults (ProjectID, LoginURL, Payload).
func NewJSONLReader(r io.Reader, defaults tasks.Resend) *JSONLReader {
	return &JSONLReader{lines: newLineReader(r), defaults: defaults}
}

// Warnings lists what the reader accepted but ignored: the unknown keys of
// the first object.
func (j *JSONLReader) Warnings() []string { return j.warnings }

type jsonRow struct {
	ProjectID string `json:"project_id"`
	Username  string `json:"username"`
	LoginURL  string `json:"login_url"`
	Payload   string `json:"payload"`
}

// Next returns the next row; blank lines are skipped.
func (j *JSONLReader) Next() (Row, error) {
	for {
		line, n, err := j.lines.next(&j.buf)
		if err != nil && !errors.Is(err, errLineTooLong) {
			return Row{}, err
		}
		row := Row{Line: n, Raw: string(line), Err: err}
		if err != nil {
			return row, nil
		}
		trimmed := bytes.TrimSpace(line)
		if len(trimmed) == 0 {
			continue
		}
		if trimmed[0] != '{' {
			row.Err = errors.New("malformed JSON: the line is not a JSON object")
			return row, nil
		}
		var v jsonRow
		if err := json.Unmarshal(trimmed, &v); err != nil {
			row.Err = jsonError(err)
			return row, nil
		}
		if !j.checked {
			j.checked = true
			j.checkKeys(trimmed)
		}
		row.Resend = defaultsOf(j.defaults)
		for _, f := range []struct{ dst, v *string }{
			{&row.Resend.ProjectID, &v.ProjectID}, {&row.Resend.Username, &v.Username},
			{&row.Resend.LoginURL, &v.LoginURL}, {&row.Resend.Payload, &v.Payload},
		} {
			if *f.v != "" {
				*f.dst = *f.v
			}
		}
		return row, nil
	}
}

// jsonError turns a decoding error into a reason that names the key.
func jsonError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("malformed JSON: %s must be a string, not a %s", te.Field, te.Value)
	}
	return fmt.Errorf("malformed JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
}

func (j *JSONLReader) checkKeys(obj []byte) {
	var keys map[string]json.RawMessage
	if json.Unmarshal(obj, &keys) != nil {
		return
	}
	var unknown []string
	for k := range keys {
		if columnIndex(strings.ToLower(k)) < 0 {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		j.warnings = append(j.warnings, "ignoring JSON keys not used by resendq: "+strings.Join(unknown, ", "))
	}
}
