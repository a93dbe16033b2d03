package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// selfCPU is the CPU time, user and system, this process has used, in
// seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// cpuTimes are the machine's busy and idle CPU times from /proc/stat, in
// clock ticks over all cores.
type cpuTimes struct{ busy, idle float64 }

func machineIdle() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var t cpuTimes
	for i, v := range f[1:] {
		n, _ := strconv.ParseFloat(v, 64)
		switch i {
		case 3, 4: // idle, iowait
			t.idle += n
		case 8, 9: // guest, guest_nice: already counted in user and nice
		default:
			t.busy += n
		}
	}
	return t
}

// sub is the busy and idle ticks from t0 to t.
func (t cpuTimes) sub(t0 cpuTimes) (busy, idle float64) {
	return t.busy - t0.busy, t.idle - t0.idle
}
