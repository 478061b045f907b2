package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// client talks to one BeTrace server's HTTP API.
type client struct {
	base    *url.URL // scheme, host and an optional path prefix, without a trailing slash
	token   string
	timeout time.Duration
	hc      *http.Client
}

func newClient(server, token string, timeout time.Duration) (*client, error) {
	base, err := parseServer(server)
	if err != nil {
		return nil, err
	}
	return &client{base: base, token: token, timeout: timeout, hc: &http.Client{Timeout: timeout}}, nil
}

// parseServer reads --server: a URL, or host:port meaning http://host:port.
func parseServer(s string) (*url.URL, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, usageErrorf("--server is empty: give the API's address, such as http://localhost:12011")
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, usageErrorf("--server %q is not an http:// or https:// address such as http://localhost:12011", s)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// apiError is an error answer of the server: {"code","message","details"}
// when it sent one, otherwise the HTTP status and the start of the body.
type apiError struct {
	Status  int      `json:"-"`
	Code    int      `json:"code"`
	Message string   `json:"message"`
	Details []string `json:"details"`
}

func (e *apiError) Error() string {
	if len(e.Details) == 0 || (len(e.Details) == 1 && strings.HasSuffix(e.Message, e.Details[0])) {
		return e.Message
	}
	return e.Message + "\n  " + strings.Join(e.Details, "\n  ")
}

// unreachableError means no HTTP answer came back at all.
type unreachableError struct {
	server  string
	timeout time.Duration // non-zero when the request timed out
	err     error
}

func (e *unreachableError) Error() string {
	if e.timeout > 0 {
		return fmt.Sprintf("no answer from %s within %s (--timeout)", e.server, e.timeout)
	}
	return fmt.Sprintf("cannot reach the server at %s: %v", e.server, e.err)
}

func (e *unreachableError) Unwrap() error { return e.err }

// errInterrupted is returned when the command was cancelled (Ctrl-C).
var errInterrupted = errors.New("interrupted")

// request is one call; Query and Body are optional.
type request struct {
	Method, Path string
	Query        url.Values
	Body         []byte
	ContentType  string
}

// raw sends req and returns the status and body of any answer; only a
// failure to get an answer is an error.
func (c *client) raw(ctx context.Context, req request) (int, []byte, error) {
	u := *c.base
	u.Path = c.base.Path + req.Path
	if len(req.Query) > 0 {
		u.RawQuery = req.Query.Encode()
	}
	var body io.Reader
	if req.Body != nil {
		body = bytes.NewReader(req.Body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, u.String(), body)
	if err != nil {
		return 0, nil, err
	}
	if req.ContentType != "" {
		hr.Header.Set("Content-Type", req.ContentType)
	}
	if c.token != "" {
		hr.Header.Set("Authorization", "Bearer "+c.token)
	}
	hr.Header.Set("User-Agent", "betrace-cli/"+version)
	resp, err := c.hc.Do(hr)
	if err == nil {
		defer resp.Body.Close()
		var b []byte
		if b, err = io.ReadAll(resp.Body); err == nil {
			return resp.StatusCode, b, nil
		}
	}
	if ctx.Err() != nil {
		return 0, nil, errInterrupted
	}
	server := c.base.String()
	var ue *url.Error
	if errors.As(err, &ue) && ue.Timeout() {
		return 0, nil, &unreachableError{server: server, timeout: c.timeout, err: err}
	}
	if errors.As(err, &ue) {
		err = ue.Err // the URL is named already
	}
	return 0, nil, &unreachableError{server: server, err: err}
}

// call sends req and turns any status of 400 or more into an *apiError.
func (c *client) call(ctx context.Context, req request) ([]byte, error) {
	status, body, err := c.raw(ctx, req)
	if err != nil {
		return nil, err
	}
	if status >= 400 {
		return nil, decodeError(status, body)
	}
	return body, nil
}

// callJSON is call that also decodes the answer into out.
func (c *client) callJSON(ctx context.Context, req request, out any) ([]byte, error) {
	body, err := c.call(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(body, out); err != nil {
		return nil, fmt.Errorf("%s %s: the answer is not the JSON expected (%v): %.200s", req.Method, req.Path, err, body)
	}
	return body, nil
}

// decodeError reads an error answer.
func decodeError(status int, body []byte) *apiError {
	e := &apiError{Status: status}
	if json.Unmarshal(body, e) == nil && e.Message != "" {
		return e
	}
	e.Code, e.Details = 0, nil
	e.Message = fmt.Sprintf("HTTP %d %s", status, http.StatusText(status))
	if snippet := firstLine(body, 200); snippet != "" {
		e.Message += ": " + snippet
	}
	return e
}

func firstLine(b []byte, max int) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = strings.TrimSpace(s[:i])
	}
	return truncate(s, max)
}

// The API's resources, as far as the CLI reads them.

type ruleJSON struct {
	ID          string          `json:"id"`
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Severity    string          `json:"severity"`
	Tags        []string        `json:"tags"`
	Enabled     bool            `json:"enabled"`
	State       string          `json:"state"`
	StateReason string          `json:"stateReason"`
	Expression  *string         `json:"expression"`
	Quarantine  *quarantineJSON `json:"quarantine"`
	Module      moduleJSON      `json:"module"`
	Versions    []moduleJSON    `json:"versions"`
	Limits      struct {
		Fuel        uint64 `json:"fuel"`
		MemoryPages uint32 `json:"memoryPages"`
	} `json:"limits"`
	Version   int       `json:"version"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	Stats     struct {
		Evaluations uint64 `json:"evaluations"`
		Violations  uint64 `json:"violations"`
		Errors      uint64 `json:"errors"`
		FuelP99     uint64 `json:"fuelP99"`
	} `json:"stats"`
}

type moduleJSON struct {
	Version    int       `json:"version"`
	SHA256     string    `json:"sha256"`
	SizeBytes  int64     `json:"sizeBytes"`
	ABIVersion int       `json:"abiVersion"`
	Source     string    `json:"source"`
	CreatedAt  time.Time `json:"createdAt"`
}

type quarantineJSON struct {
	Reason    string    `json:"reason"`
	LastError string    `json:"lastError"`
	FuelUsed  uint64    `json:"fuelUsed"`
	TraceID   string    `json:"traceId"`
	Strikes   int       `json:"strikes"`
	At        time.Time `json:"at"`
}

type ruleListJSON struct {
	Rules      []ruleJSON `json:"rules"`
	TotalCount int        `json:"totalCount"`
}

type violationJSON struct {
	ID          string            `json:"id"`
	RuleID      string            `json:"ruleId"`
	RuleName    string            `json:"ruleName"`
	RuleVersion int               `json:"ruleVersion"`
	Severity    string            `json:"severity"`
	TraceID     string            `json:"traceId"`
	SpanID      string            `json:"spanId"`
	Message     string            `json:"message"`
	Attributes  map[string]string `json:"attributes"`
	Metadata    map[string]string `json:"metadata"`
	Trigger     string            `json:"trigger"`
	Timestamp   time.Time         `json:"timestamp"`
}

// violationPage keeps each violation as the server sent it, so --json
// prints the API's JSON even when several pages are joined.
type violationPage struct {
	Violations []json.RawMessage `json:"violations"`
	TotalCount int               `json:"totalCount"`
	NextCursor string            `json:"nextCursor"`
}

type readyJSON struct {
	Status  string            `json:"status"`
	Version string            `json:"version"`
	Checks  map[string]string `json:"checks"`
}

// metricValue finds a sample of the metric name in the Prometheus text
// exposition and sums its series; found is false when there is none.
func metricValue(exposition []byte, name string) (sum float64, found bool) {
	sc := bufio.NewScanner(bytes.NewReader(exposition))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{' && rest[0] != '\t') {
			continue
		}
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			rest = rest[end+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	return sum, found
}
