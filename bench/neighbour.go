package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

// neighbourPeriod is the cycle of the busy neighbour: busy for its share of
// it, asleep for the rest.
const neighbourPeriod = 10 * time.Millisecond

// startNeighbour starts this driver again as a busy neighbour (-busy): a
// process that keeps share of one core busy, in cycles of 10 ms, until
// stopped. It makes the busy machine a worker shares in production
// repeatable, so that a change can be measured (-vs) where cores are
// scarce as well as on a quiet machine.
func startNeighbour(share float64) (stop func(), err error) {
	if share <= 0 || share > 1 {
		return nil, fmt.Errorf("-neighbour %g: want a share of one core above 0 and at most 1", share)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-busy", strconv.FormatFloat(share, 'f', -1, 64))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// Killed with the driver, even by SIGKILL: no spinning orphan.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the busy neighbour: %w", err)
	}
	return func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }, nil
}

// busy is the neighbour's body: it spins for share of every period and
// sleeps for the rest, on one core, until killed.
func busy(share float64) {
	runtime.GOMAXPROCS(1)
	on := time.Duration(share * float64(neighbourPeriod))
	for {
		start := time.Now()
		for time.Since(start) < on {
		}
		time.Sleep(neighbourPeriod - on)
	}
}
