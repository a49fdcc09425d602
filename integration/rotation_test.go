package integration

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/rebell-gateway/caddy-rebell/internal/redistest"
)

// TestClusterEncryptionKeyRotation follows docs/key-rotation.md on three
// instances sharing one Redis: phase 1 adds the new key to
// previous_encryption_keys instance by instance, phase 2 makes it the
// encryption_key (the old one in previous_encryption_keys) instance by
// instance. After every reload, every session (those from before the
// change, and those created on either side of it meanwhile) works on every
// instance, with the ids issued before the change. Last, the control: an
// instance given the new key without the old one cannot read the sessions
// still sealed with the old key.
func TestClusterEncryptionKeyRotation(t *testing.T) {
	rs := redistest.Start(t)
	m := startMulti(t, []string{rs.Addr}, "", "")
	oldKey := m.storeKey
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	newKey := base64.StdEncoding.EncodeToString(b)

	type sess struct{ id, customer string }
	var sessions []sess
	n := 0
	login := func(nd int) {
		n++
		customer := fmt.Sprintf("21880000000010%02d", n)
		sessions = append(sessions, sess{m.mustLogin(m.nodes[nd], customer).SessionID, customer})
	}
	checkAll := func(when string) {
		t.Helper()
		for _, s := range sessions {
			for _, nd := range m.nodes {
				if r := m.get(nd, s.id); r.Status != http.StatusOK || r.CustomerID != s.customer {
					t.Fatalf("%s: instance %d: session of %s: %v", when, nd.n, s.customer, r)
				}
			}
		}
	}
	// setStore reloads instance i with encryption_key cur and, if prev is
	// not "", previous_encryption_keys prev.
	sites := make([]string, len(m.nodes))
	for i, nd := range m.nodes {
		sites[i] = nd.site
	}
	setStore := func(i int, cur, prev string) {
		t.Helper()
		line := "encryption_key " + cur
		if prev != "" {
			line += "\n\t\t\tprevious_encryption_keys " + prev
		}
		site := strings.Replace(sites[i], "encryption_key "+oldKey, line, 1)
		if site == sites[i] && cur != oldKey {
			t.Fatal("the store block was not found in the site")
		}
		m.nodes[i].caddy.reload(site)
	}

	for i := range m.nodes {
		login(i)
	}
	checkAll("before")

	for i := range m.nodes {
		setStore(i, oldKey, newKey)
		login(i)
		checkAll(fmt.Sprintf("phase 1, instance %d reloaded", i+1))
	}
	for i := range m.nodes {
		setStore(i, newKey, oldKey)
		login(i) // sealed with the new key, read by instances still in phase 1
		checkAll(fmt.Sprintf("phase 2, instance %d reloaded", i+1))
	}

	// Control: without the old key, a session sealed with it (the first
	// one, never refreshed) does not open.
	setStore(2, newKey, "")
	if r := m.get(m.nodes[2], sessions[0].id); r.Status != http.StatusUnauthorized {
		t.Fatalf("an instance without the old key served a session sealed with it: %v", r)
	}
}
