package jsonx

// stringByte classifies the bytes inside a JSON string, one character per
// byte value, so that the loops over strings (most of what the codecs read
// and write) take one look-up per byte: several times faster than testing
// each byte against the special ones. A constant, so nothing can change it.
//
//	.  itself: needs nothing, in or out
//	"  ends the string
//	\  starts an escape
//	c  a control byte: invalid in a string, escaped by Marshal
//	h  <, > or &: escaped by Marshal (HTML safety)
//	u  part of a multi-byte UTF-8 sequence (or invalid UTF-8)
const stringByte = "" +
	"cccccccccccccccccccccccccccccccc" + // 0x00-0x1f
	`.."...h.........` + `............h.h.` + // 0x20-0x3f: " & < >
	`................` + `............\...` + // 0x40-0x5f: \
	"................................" + // 0x60-0x7f
	"uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu" + // 0x80-0xff
	"uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu" +
	"uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu" +
	"uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu"
