package auth

import (
	"bufio"
	"bytes"
	"io"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// The helper's protocol, over pipes, without a process.
func TestBcryptWorkerProtocol(t *testing.T) {
	defer lowerProcessPriorityDisabled()()
	reqR, reqW := io.Pipe()
	respR, respW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- ServeBcryptWorker(reqR, respW) }()
	h := &helper{in: reqW, out: bufio.NewReader(respR)}

	status, hash, err := h.roundTrip('H', 10, nil, []byte("correct horse"))
	if err != nil || status != 1 || bcrypt.CompareHashAndPassword(hash, []byte("correct horse")) != nil {
		t.Fatalf("hash: %d %q %v", status, hash, err)
	}
	if status, _, err := h.roundTrip('C', 0, hash, []byte("correct horse")); err != nil || status != 1 {
		t.Fatalf("compare right password: %d %v", status, err)
	}
	if status, _, err := h.roundTrip('C', 0, hash, []byte("wrong horse")); err != nil || status != 0 {
		t.Fatalf("compare wrong password: %d %v", status, err)
	}
	if status, _, err := h.roundTrip('H', 99, nil, []byte("x")); err != nil || status != 0 {
		t.Fatalf("hash at an impossible cost: %d %v, want status 0", status, err)
	}
	if _, _, err := h.roundTrip('C', 0, bytes.Repeat([]byte("a"), maxField+1), nil); err == nil {
		t.Fatal("an oversized field was sent")
	}
	reqW.Close() // a clean end between messages
	if err := <-done; err != nil {
		t.Fatalf("worker ended with %v", err)
	}
}

func TestBcryptWorkerRefusesGarbage(t *testing.T) {
	defer lowerProcessPriorityDisabled()()
	for name, in := range map[string][]byte{
		"unknown op":           {'X', 10, 0, 0, 0, 0},
		"oversized field":      {'C', 10, 0xff, 0xff},
		"cut inside a message": {'C', 10, 0, 5, 'a'},
	} {
		if err := ServeBcryptWorker(bytes.NewReader(in), io.Discard); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// lowerProcessPriorityDisabled keeps ServeBcryptWorker from lowering this
// test process; call the result to restore.
func lowerProcessPriorityDisabled() func() {
	saved := workerSetup
	workerSetup = func() {}
	return func() { workerSetup = saved }
}
