package jsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StoredMsg is a message read from a stream.
type StoredMsg struct {
	Subject  string
	Sequence uint64
	Header   nats.Header
	Data     []byte
	Time     time.Time
}

// GetLastMsg reads the last message of stream stored under subject (which
// may hold wildcards) with one request that needs no stream look-up first,
// so that a role allowed only $JS.API.STREAM.MSG.GET.<stream> may make it;
// jetstream.ErrMsgNotFound if there is none.
func GetLastMsg(ctx context.Context, nc *nats.Conn, stream, subject string) (StoredMsg, error) {
	req, _ := json.Marshal(struct {
		LastFor string `json:"last_by_subj"`
	}{subject})
	return getMsg(ctx, nc, stream, req)
}

func getMsg(ctx context.Context, nc *nats.Conn, stream string, req []byte) (StoredMsg, error) {
	resp, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, req)
	if errors.Is(err, nats.ErrNoResponders) {
		return StoredMsg{}, fmt.Errorf("stream %s: %w", stream, ErrNotProvisioned)
	}
	if err != nil {
		return StoredMsg{}, err
	}
	var r struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Subject string    `json:"subject"`
			Seq     uint64    `json:"seq"`
			Header  []byte    `json:"hdrs"`
			Data    []byte    `json:"data"`
			Time    time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return StoredMsg{}, fmt.Errorf("%w: %q", jetstream.ErrInvalidJSAck, resp.Data)
	}
	switch {
	case r.Error != nil && r.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return StoredMsg{}, jetstream.ErrMsgNotFound
	case r.Error != nil && r.Error.ErrorCode == jetstream.JSErrCodeStreamNotFound:
		return StoredMsg{}, fmt.Errorf("stream %s: %w", stream, ErrNotProvisioned)
	case r.Error != nil:
		return StoredMsg{}, r.Error
	case r.Message == nil:
		return StoredMsg{}, fmt.Errorf("%w: %q", jetstream.ErrInvalidJSAck, resp.Data)
	}
	m := StoredMsg{Subject: r.Message.Subject, Sequence: r.Message.Seq, Data: r.Message.Data, Time: r.Message.Time, Header: nats.Header{}}
	if len(r.Message.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(r.Message.Header)
		if err != nil {
			return StoredMsg{}, fmt.Errorf("stream %s message %d: headers: %w", stream, m.Sequence, err)
		}
		m.Header = h
	}
	return m, nil
}

// The server's answers to deleting a message that is not there: "sequence
// not found", or a failed delete whose reason is that there was no message.
const (
	errCodeSequenceNotFound jetstream.ErrorCode = 10043
	errCodeDeleteFailed     jetstream.ErrorCode = 10057
)

// DeleteMsg deletes the message at seq from stream, with one request;
// jetstream.ErrMsgNotFound if it is not there (any more).
func DeleteMsg(ctx context.Context, nc *nats.Conn, stream string, seq uint64) error {
	resp, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.DELETE."+stream, []byte(`{"seq":`+strconv.FormatUint(seq, 10)+`,"no_erase":true}`))
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("stream %s: %w", stream, ErrNotProvisioned)
	}
	if err != nil {
		return err
	}
	var r struct {
		Error   *jetstream.APIError `json:"error"`
		Success bool                `json:"success"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return fmt.Errorf("%w: %q", jetstream.ErrInvalidJSAck, resp.Data)
	}
	switch {
	case r.Error != nil && (r.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound || r.Error.ErrorCode == errCodeSequenceNotFound ||
		r.Error.ErrorCode == errCodeDeleteFailed && (strings.Contains(r.Error.Description, "no message found") || strings.Contains(r.Error.Description, "deleted message"))):
		return jetstream.ErrMsgNotFound
	case r.Error != nil && r.Error.ErrorCode == jetstream.JSErrCodeStreamNotFound:
		return fmt.Errorf("stream %s: %w", stream, ErrNotProvisioned)
	case r.Error != nil:
		return r.Error
	case !r.Success:
		return fmt.Errorf("%w: %q", jetstream.ErrInvalidJSAck, resp.Data)
	}
	return nil
}
