package rebell

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestSecretNeverPrints(t *testing.T) {
	const value = "tok_5ecret-VALUE"
	s := NewSecret(value)
	if s.Reveal() != value || s.IsZero() || s.Len() != len(value) || !s.Equal(NewSecret(value)) {
		t.Fatal("Reveal/IsZero/Len/Equal do not give the value back")
	}
	wrapped := struct {
		Token  Secret
		Ptr    *Secret
		hidden Secret
		nested struct{ deep []Secret }
	}{Token: s, Ptr: &s, hidden: s}
	wrapped.nested.deep = []Secret{s}
	var outputs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T %v"} {
		outputs = append(outputs, fmt.Sprintf(verb, s), fmt.Sprintf(verb, wrapped), fmt.Sprintf(verb, &s))
	}
	outputs = append(outputs, fmt.Sprint(s), fmt.Sprintln(s), s.String(), s.GoString())
	js, err := json.Marshal(wrapped)
	if err != nil {
		t.Fatal(err)
	}
	outputs = append(outputs, string(js))
	txt, _ := s.MarshalText()
	outputs = append(outputs, string(txt))
	err = &Error{Kind: KindRetryable, Err: fmt.Errorf("wrapped %v", s)}
	outputs = append(outputs, err.Error())

	var buf bytes.Buffer
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&buf), zap.DebugLevel))
	logger.Info("x", zap.Any("any", s), zap.Stringer("stringer", s), zap.Reflect("reflect", wrapped), zap.Any("struct", wrapped))
	_ = logger.Sync()
	outputs = append(outputs, buf.String())

	for _, out := range outputs {
		if strings.Contains(out, value) || strings.Contains(out, "5ecret") {
			t.Errorf("secret leaked: %s", out)
		}
	}
	if !strings.Contains(buf.String(), Redacted) {
		t.Errorf("zap output lacks %s: %s", Redacted, buf.String())
	}
}

func TestSignerNeverPrintsKey(t *testing.T) {
	key := testKey(t, 0)
	s, err := NewSigner("CLIENT", key, 1, "")
	if err != nil {
		t.Fatal(err)
	}
	d := key.D.String()[:20]
	n := key.N.String()[:20]
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, s, s, s)} {
		if strings.Contains(out, d) || strings.Contains(out, n) {
			t.Fatalf("signer printed key material: %s", out)
		}
	}
}
