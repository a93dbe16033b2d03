package worker

import (
	"fmt"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/sirupsen/logrus"
)

// asynqLogger passes asynq's messages to logrus, less the ones that repeat
// what the handler already logged once per final outcome.
type asynqLogger struct{ *logrus.Logger }

var _ asynq.Logger = asynqLogger{}

func (l asynqLogger) Warn(args ...interface{}) {
	if strings.HasPrefix(fmt.Sprint(args...), "Retry exhausted for task") {
		return // the handler logged the dead letter with its reason
	}
	l.Logger.Warn(args...)
}
