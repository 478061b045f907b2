package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/betracehq/betrace/host/registry"
	"github.com/betracehq/betrace/host/sandbox"
	"github.com/betracehq/betrace/host/store"
)

// Error codes in bodies follow the gRPC numbering the earlier server used,
// so existing clients keep branching on them.
const (
	codeInvalidArgument    = 3
	codeDeadlineExceeded   = 4
	codeNotFound           = 5
	codeAlreadyExists      = 6
	codeResourceExhausted  = 8
	codePermissionDenied   = 7
	codeUnimplemented      = 12
	codeInternal           = 13
	codeUnavailable        = 14
	codeUnauthenticated    = 16
	codeFailedPrecondition = 9
)

// apiError is an error with its HTTP status and the text safe to show.
type apiError struct {
	status  int
	code    int
	message string
	details []string
}

func (e *apiError) Error() string { return e.message }

func badRequest(msg string, details ...string) *apiError {
	return &apiError{status: http.StatusBadRequest, code: codeInvalidArgument, message: msg, details: details}
}

// errorTable maps domain errors to a status and code. The message of these
// errors is written for callers, so it is shown as is.
var errorTable = []struct {
	err    error
	status int
	code   int
}{
	// First: a full disk fails a rule upload deep inside the module's
	// admission (the compilation cache) or its storage, and the upload
	// would succeed once space is freed, so it must not read as a bad
	// module. 507 Insufficient Storage says exactly that; clients treat
	// it like 503 and retry.
	{store.ErrFull, http.StatusInsufficientStorage, codeResourceExhausted},
	{registry.ErrNotFound, http.StatusNotFound, codeNotFound},
	{store.ErrNotFound, http.StatusNotFound, codeNotFound},
	{registry.ErrExists, http.StatusConflict, codeAlreadyExists},
	{registry.ErrInvalid, http.StatusBadRequest, codeInvalidArgument},
	// Before ErrRefused: the module is fine, the host has no room for it.
	{sandbox.ErrMemoryBudget, http.StatusInsufficientStorage, codeResourceExhausted},
	{registry.ErrRefused, http.StatusBadRequest, codeInvalidArgument},
	// A write the store sent but got no answer for may have landed: 504,
	// as gRPC's DEADLINE_EXCEEDED ("may be returned even if the operation
	// has completed"), so that 503 keeps meaning "not applied, retry".
	// Before ErrUnavailable, which these errors also wrap.
	{store.ErrMaybeApplied, http.StatusGatewayTimeout, codeDeadlineExceeded},
	{store.ErrUnavailable, http.StatusServiceUnavailable, codeUnavailable},
	{store.ErrConflict, http.StatusConflict, codeFailedPrecondition},
	{store.ErrBadCursor, http.StatusBadRequest, codeInvalidArgument},
}

// toAPIError classifies err; anything unknown is a 500 whose text is not
// shown (it is logged instead).
func toAPIError(err error) (*apiError, bool) {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae, true
	}
	if ae, ok := trialError(err); ok {
		return ae, true
	}
	for _, row := range errorTable {
		if errors.Is(err, row.err) {
			return &apiError{status: row.status, code: row.code, message: err.Error()}, true
		}
	}
	return &apiError{status: http.StatusInternalServerError, code: codeInternal, message: "internal error; the server log has the details"}, false
}

func (a *api) writeError(w http.ResponseWriter, r *http.Request, err error) {
	ae, known := toAPIError(err)
	if !known {
		a.logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeErrorBody(w, ae)
}

func writeErrorBody(w http.ResponseWriter, ae *apiError) {
	details := ae.details
	if details == nil {
		details = []string{}
	}
	writeJSON(w, ae.status, map[string]any{"code": ae.code, "message": ae.message, "details": details})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}
