package main

import "testing"

func TestSpliceDocKeepsOtherSections(t *testing.T) {
	t.Parallel()
	block := func(s string) string { return docBegin + "\n" + s + "\n" + docEnd + "\n" }
	theirs := "## Batch enqueue\n\nTheir figures.\n"
	cases := []struct{ doc, want string }{
		{"", "# Benchmarks\n\n" + block("new")},
		{"# Benchmarks\n\n" + theirs, "# Benchmarks\n\n" + block("new") + "\n" + theirs},
		{"# Benchmarks\n\n" + block("old") + "\n" + theirs, "# Benchmarks\n\n" + block("new") + "\n" + theirs},
		{theirs + "\n" + block("old") + "## Notes\n", theirs + "\n" + block("new") + "## Notes\n"},
		{theirs, block("new") + "\n" + theirs},
	}
	for i, c := range cases {
		if got := spliceDoc(c.doc, docBegin, docEnd, block("new")); got != c.want {
			t.Errorf("case %d:\n got %q\nwant %q", i, got, c.want)
		}
	}
}

func TestMedianAndRatios(t *testing.T) {
	t.Parallel()
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median = %v", m)
	}
	o := []drainResult{{rate: 110}, {rate: 90}, {rate: 200}}
	n := []drainResult{{rate: 100}, {rate: 100}, {rate: 100}}
	// The ratio is taken within each run: 1.1, 0.9, 2.0.
	if r := medianRatio(o, n, func(d drainResult) float64 { return d.rate }); r != 1.1 {
		t.Errorf("median ratio = %v, want 1.1", r)
	}
}
