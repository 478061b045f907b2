package dsl

import "github.com/betracehq/betrace/host/abi"

// Pos is a 1-based line and column (columns count runes).
type Pos struct {
	Line, Column int
}

// Rule is one parsed rule: `when { When }` followed by `always { Always }`
// and/or `never { Never }`. At least one of Always and Never is non-nil.
type Rule struct {
	Pos    Pos
	When   Expr
	Always Expr
	Never  Expr
}

// Expr is a node of a condition (trace level) or of a where predicate (span
// level). Condition nodes are *And, *Or, *Not, *Exists and *Count; predicate
// nodes are *And, *Or, *Not, *Compare and *Truthy.
type Expr interface {
	Position() Pos
	expr()
}

// And holds when all of its terms hold (two or more terms).
type And struct {
	Pos   Pos
	Terms []Expr
}

// Or holds when any of its terms holds (two or more terms).
type Or struct {
	Pos   Pos
	Terms []Expr
}

// Not negates X.
type Not struct {
	Pos Pos
	X   Expr
}

// Exists holds when some span of the trace matches Pattern.
type Exists struct {
	Pos     Pos
	Pattern *Pattern
}

// Count compares the number of spans matching Left with either the number of
// spans matching Right (when Right is non-nil) or the whole number N.
type Count struct {
	Pos   Pos
	Left  *Pattern
	Op    Op
	Right *Pattern
	N     int64
}

// Pattern selects spans by exact name and then by filters that must all hold
// on the same span.
type Pattern struct {
	Pos     Pos
	Name    string
	Filters []Expr // predicate nodes, one per .where(...)
}

// Compare is `Attr Op Value` inside a where predicate. For OpIn, Value is a
// list; for OpMatches, Re is the compiled regular expression of Value.Str.
type Compare struct {
	Pos   Pos
	Attr  Attr
	Op    Op
	Value Value
	Re    *abi.Regex // compiled once at parse time; safe for concurrent use
}

// Truthy is a bare attribute inside a where predicate: it holds when the
// attribute is the boolean true or the string "true".
type Truthy struct {
	Pos  Pos
	Attr Attr
}

func (n *And) Position() Pos     { return n.Pos }
func (n *Or) Position() Pos      { return n.Pos }
func (n *Not) Position() Pos     { return n.Pos }
func (n *Exists) Position() Pos  { return n.Pos }
func (n *Count) Position() Pos   { return n.Pos }
func (n *Compare) Position() Pos { return n.Pos }
func (n *Truthy) Position() Pos  { return n.Pos }
func (*And) expr()               {}
func (*Or) expr()                {}
func (*Not) expr()               {}
func (*Exists) expr()            {}
func (*Count) expr()             {}
func (*Compare) expr()           {}
func (*Truthy) expr()            {}

// AttrKind says where an attribute is read from.
type AttrKind uint8

const (
	AttrSpan      AttrKind = iota // a span attribute, Key as written
	AttrResource                  // resource.<Key>
	AttrIntrinsic                 // span.<Key>: name, service, kind, status, duration
)

// Attr names an attribute or an intrinsic field of a span.
type Attr struct {
	Pos  Pos
	Kind AttrKind
	Key  string
}

// Intrinsic field names (Attr.Key when Kind is AttrIntrinsic).
const (
	IntrinsicName     = "name"
	IntrinsicService  = "service"
	IntrinsicKind     = "kind"
	IntrinsicStatus   = "status"
	IntrinsicDuration = "duration"
)

// Op is a comparison operator.
type Op uint8

const (
	OpEq Op = iota + 1
	OpNe
	OpLt
	OpLe
	OpGt
	OpGe
	OpIn
	OpMatches
	OpContains
)

var opText = map[Op]string{OpEq: "==", OpNe: "!=", OpLt: "<", OpLe: "<=", OpGt: ">", OpGe: ">=",
	OpIn: "in", OpMatches: "matches", OpContains: "contains"}

func (o Op) String() string { return opText[o] }

// ValueKind is the type of a literal.
type ValueKind uint8

const (
	ValString   ValueKind = iota + 1 // quoted string or bare word
	ValNumber                        // integer or fractional number
	ValBool                          // true or false
	ValDuration                      // 250ms, 2s: Int holds nanoseconds
	ValList                          // [a, b]: List holds the items
)

// Value is a literal. Numbers keep IsInt/Int when written without a fraction
// or exponent, and always carry Float.
type Value struct {
	Pos   Pos
	Kind  ValueKind
	Str   string
	Float float64
	Int   int64
	IsInt bool
	Bool  bool
	List  []Value
}
