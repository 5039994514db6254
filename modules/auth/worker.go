package auth

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"runtime"

	"golang.org/x/crypto/bcrypt"
)

// bcrypt in helper processes.
//
// A bcrypt computation in this process holds one of the Go scheduler's Ps
// for up to 10 ms at a time, whatever its thread's OS priority, and
// requests queued behind it wait (on one core, a login flood raised the
// p99 of authenticated requests more than tenfold). A helper process at
// nice 19 holds none of our Ps: the kernel runs it only with the CPU our
// threads leave, and preempts it when one of them wakes. So logins take
// all the CPU when the server is idle and almost none from busy requests.
//
// The helper is this same binary, started as `gatehouse bcrypt-worker`; it
// reads requests on stdin and answers on stdout, one at a time. A request
// is an op byte ('C' compare, 'H' hash), a cost byte, then the hash and the
// password, each a big-endian uint16 length and its bytes. A compare
// answers one byte: 1 match, 0 mismatch. A hash answers 1 and the hash as
// length and bytes, or 0 for an error.

// maxField bounds the fields of the protocol: hashes are 60 bytes and
// passwords at most 72.
const maxField = 256

// workerSetup readies the helper process: one request at a time, every
// thread at nice 19. A variable, so tests can run the protocol in their
// own process without lowering it.
var workerSetup = func() {
	runtime.GOMAXPROCS(1)
	lowerProcessPriority()
}

// ServeBcryptWorker is the helper process: it lowers its priority, then
// answers requests from r on w until r ends.
func ServeBcryptWorker(r io.Reader, w io.Writer) error {
	workerSetup()
	in, out := bufio.NewReader(r), bufio.NewWriter(w)
	for {
		op, cost, hash, password, err := readRequest(in)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch op {
		case 'C':
			ok := bcrypt.CompareHashAndPassword(hash, password) == nil
			out.WriteByte(boolByte(ok))
		case 'H':
			h, err := bcrypt.GenerateFromPassword(password, int(cost))
			if err != nil {
				out.WriteByte(0)
			} else {
				out.WriteByte(1)
				writeField(out, h)
			}
		default:
			return fmt.Errorf("bcrypt worker: unknown op %q", op)
		}
		if err := out.Flush(); err != nil {
			return err
		}
	}
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

func readRequest(r *bufio.Reader) (op, cost byte, hash, password []byte, err error) {
	var head [2]byte
	if _, err = io.ReadFull(r, head[:]); err != nil {
		return
	}
	if hash, err = readField(r); err != nil {
		return
	}
	password, err = readField(r)
	return head[0], head[1], hash, password, err
}

func readField(r *bufio.Reader) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, noEOF(err)
	}
	size := binary.BigEndian.Uint16(n[:])
	if size > maxField {
		return nil, fmt.Errorf("bcrypt worker: field of %d bytes", size)
	}
	b := make([]byte, size)
	_, err := io.ReadFull(r, b)
	return b, noEOF(err)
}

// noEOF turns an EOF inside a message into an error of its own: only an
// EOF between messages is a clean end.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func writeField(w *bufio.Writer, b []byte) {
	var n [2]byte
	binary.BigEndian.PutUint16(n[:], uint16(len(b)))
	w.Write(n[:])
	w.Write(b)
}

// helpers runs bcrypt requests on at most n helper processes, started on
// demand by start and kept for the next request.
type helpers struct {
	start func() *exec.Cmd
	idle  chan *helper
	slots chan struct{} // one per running helper
}

type helper struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func newHelpers(n int, start func() *exec.Cmd) *helpers {
	n = max(n, 1)
	return &helpers{start: start, idle: make(chan *helper, n), slots: make(chan struct{}, n)}
}

// do sends one request and returns the answer's first byte and, for a
// hash, the hash. A request whose context ends while it is computed kills
// its helper: a computation cannot be taken back, and the next request
// starts a fresh one.
func (p *helpers) do(ctx context.Context, op byte, cost int, hash, password []byte) (byte, []byte, error) {
	var h *helper
	select {
	case h = <-p.idle:
	case p.slots <- struct{}{}:
		var err error
		if h, err = p.spawn(); err != nil {
			<-p.slots
			return 0, nil, err
		}
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	}
	type answer struct {
		status byte
		hash   []byte
		err    error
	}
	done := make(chan answer, 1)
	go func() {
		status, out, err := h.roundTrip(op, byte(cost), hash, password)
		done <- answer{status, out, err}
	}()
	select {
	case a := <-done:
		if a.err != nil {
			h.stop()
			<-p.slots
			return 0, nil, a.err
		}
		p.idle <- h
		return a.status, a.hash, nil
	case <-ctx.Done():
		h.stop()
		<-done
		<-p.slots
		return 0, nil, ctx.Err()
	}
}

func (p *helpers) spawn() (*helper, error) {
	cmd := p.start()
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bcrypt worker: %w", err)
	}
	return &helper{cmd: cmd, in: in, out: bufio.NewReader(out)}, nil
}

func (h *helper) roundTrip(op, cost byte, hash, password []byte) (byte, []byte, error) {
	if len(hash) > maxField || len(password) > maxField {
		return 0, nil, errors.New("bcrypt worker: field too long")
	}
	msg := make([]byte, 0, 6+len(hash)+len(password))
	msg = append(msg, op, cost)
	msg = binary.BigEndian.AppendUint16(msg, uint16(len(hash)))
	msg = append(msg, hash...)
	msg = binary.BigEndian.AppendUint16(msg, uint16(len(password)))
	msg = append(msg, password...)
	if _, err := h.in.Write(msg); err != nil {
		return 0, nil, fmt.Errorf("bcrypt worker: %w", err)
	}
	status, err := h.out.ReadByte()
	if err != nil {
		return 0, nil, fmt.Errorf("bcrypt worker: %w", err)
	}
	if op != 'H' || status != 1 {
		return status, nil, nil
	}
	out, err := readField(h.out)
	if err != nil {
		return 0, nil, fmt.Errorf("bcrypt worker: %w", err)
	}
	return status, out, nil
}

func (h *helper) stop() {
	h.in.Close()
	h.cmd.Process.Kill()
	h.cmd.Wait()
}

// close stops the idle helpers; ones busy now stop when their request ends
// and finds no room (they are then left to exit with their stdin closed).
func (p *helpers) close() {
	for {
		select {
		case h := <-p.idle:
			h.stop()
			<-p.slots
		default:
			return
		}
	}
}
