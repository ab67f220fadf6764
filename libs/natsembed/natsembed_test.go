package natsembed_test

import (
	"context"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"quantfleet.dev/libs/natsembed"
)

func TestRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	s, err := natsembed.Start(natsembed.Options{Dir: dir, HTTPPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	url := s.ClientURL()
	if url == "" {
		t.Fatal("no client URL")
	}
	resp, err := http.Get(s.MonitorURL() + "/healthz?js-enabled-only=true")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reconnected := make(chan struct{}, 1)
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "s.one", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "B"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}

	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.ClientURL() != url {
		t.Fatalf("URL changed across restart: %s → %s", url, s.ClientURL())
	}
	select {
	case <-reconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("client did not reconnect after restart")
	}
	st, err := js.Stream(ctx, "S")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetLastMsgForSubject(ctx, "s.one")
	if err != nil || string(msg.Data) != "hello" {
		t.Fatalf("stream data after restart: %v %v", msg, err)
	}
	kv, err = js.KeyValue(ctx, "B")
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(ctx, "k"); err != nil || string(e.Value()) != "v" {
		t.Fatalf("KV after restart: %v", err)
	}
}

func TestDontListenInProcess(t *testing.T) {
	s, err := natsembed.Start(natsembed.Options{DontListen: true})
	if err != nil {
		t.Fatal(err)
	}
	dir := s.Dir()
	if s.ClientURL() != "" {
		t.Fatalf("ClientURL %q with DontListen", s.ClientURL())
	}
	nc, err := s.Connect()
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s"}}); err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, "s", []byte("x"))
	if err != nil || ack.Sequence != 1 {
		t.Fatalf("publish: %v %v", ack, err)
	}
	nc.Close()
	s.Shutdown()
	s.Shutdown() // idempotent
	if _, err := s.Connect(); err == nil {
		t.Fatal("Connect after Shutdown succeeded")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("temporary store dir %s not removed: %v", dir, err)
	}
}

// TestTwoServers checks that servers are independent: separate stores, separate ports.
func TestTwoServers(t *testing.T) {
	a, err := natsembed.Start(natsembed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	b, err := natsembed.Start(natsembed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown()
	if a.ClientURL() == b.ClientURL() || a.Dir() == b.Dir() {
		t.Fatalf("servers share %s / %s", a.ClientURL(), a.Dir())
	}
}
