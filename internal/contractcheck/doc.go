// Package contractcheck has no code, only tests: they hold what producers in
// other languages read, docs/contract.md and the JSON Schemas in
// docs/schemas, to package contract and to what a running worker really
// writes. They live here rather than in package contract so that contract's
// own test binary, which CI fuzzes target by target, stays small.
package contractcheck
