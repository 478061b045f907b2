package rule

// EvaluateWith runs check over input like Evaluate, without registering it.
func EvaluateWith(check Check, input []byte) []byte { return evaluate(check, input) }

// ClearRegistration forgets the registered rule and returns a function that
// restores it, so tests can exercise Register.
func ClearRegistration() (restore func()) {
	info, fn, rec := registered, registeredFn, describeRec
	registered, registeredFn, describeRec = Info{}, nil, nil
	return func() { registered, registeredFn, describeRec = info, fn, rec }
}
