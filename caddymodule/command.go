package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/rebell-gateway/caddy-rebell/onboard"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "rebell",
		Short: "Set-up helpers for the rebell_auth gateway (keygen, check)",
		Long: `
Helpers for a merchant setting up the rebell_auth gateway:

  caddy rebell keygen   writes a new merchant RSA key pair
  caddy rebell check    tests a config's Rebell credentials with one real call
`,
		CobraFunc: func(cmd *cobra.Command) {
			keygen := &cobra.Command{
				Use:   "keygen [--dir <path>] [--bits 2048|3072|4096]",
				Short: "Writes a new merchant RSA key pair for Rebell",
				Long: `
Generates an RSA key pair and writes three files into --dir (default: the
current directory; created with mode 0700 if missing):

  merchant-private.pem  PKCS#8 PEM, mode 0600: the gateway's private_key_file
  merchant-public.pem   PKIX PEM
  merchant-public.txt   the public key as one line of base64 DER: the form to
                        paste into Rebell's merchant console

It refuses to overwrite any of them.
`,
				Args: cobra.NoArgs,
				RunE: caddycmd.WrapCommandFuncForCobra(func(fl caddycmd.Flags) (int, error) {
					return runKeygen(os.Stdout, fl.String("dir"), fl.Int("bits"))
				}),
			}
			keygen.Flags().String("dir", ".", "Directory to write the key files into")
			keygen.Flags().Int("bits", 2048, "RSA key size: 2048, 3072 or 4096")
			cmd.AddCommand(keygen)

			check := &cobra.Command{
				Use:   "check [--config <path>] [--adapter <name>]",
				Short: "Checks each rebell_auth's Rebell settings with one real applyToken call",
				Long: `
Loads the config without serving it and, for each rebell_auth directive, makes
one real signed applyToken call with a made-up auth code. Rebell's answer
shows whether the client id, the merchant key and key version, the Rebell
public key and this machine's clock are right; the command says which is
wrong if one is. It prints no key, token or auth code.

Without --config it reads ./Caddyfile, as caddy validate does.

Exit status 0 when every rebell_auth passes, 1 otherwise.
`,
				Args: cobra.NoArgs,
				RunE: caddycmd.WrapCommandFuncForCobra(func(fl caddycmd.Flags) (int, error) {
					return runCheck(os.Stdout, fl.String("config"), fl.String("adapter"))
				}),
			}
			check.Flags().StringP("config", "c", "", "Configuration file (default: ./Caddyfile)")
			check.Flags().StringP("adapter", "a", "", "Name of config adapter to apply")
			cmd.AddCommand(check)
		},
	})
}

// runKeygen is `caddy rebell keygen`.
func runKeygen(w io.Writer, dir string, bits int) (int, error) {
	kp, err := onboard.GenerateKeyPair(dir, bits)
	if err != nil {
		return 1, err
	}
	abs := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	if kp.CreatedDir != "" {
		fmt.Fprintf(w, "Created the directory %s (mode 0700).\n", abs(kp.CreatedDir))
	}
	fmt.Fprintf(w, `Wrote a %d-bit RSA key pair:

  %s
      private key, PKCS#8 PEM, mode 0600: keep it secret; the gateway's private_key_file
  %s
      public key, PKIX PEM
  %s
      public key, one line of base64 DER: paste this into Rebell's console

Public key SHA-256 fingerprint: %s

Next steps:
  1. In Rebell's merchant console, register the contents of merchant-public.txt
     for your Client-Id, and note the key version Rebell gives it.
  2. Download Rebell's platform public key for the same environment
     (sandbox and production differ).
  3. In your Caddyfile's rebell_auth block:
       client_id              <your Client-Id>
       private_key_file       %s
       key_version            <the key version from step 1>
       rebell_public_key_file <Rebell's platform public key>
  4. Check it against Rebell, before serving:
       caddy rebell check --config Caddyfile
`, kp.Bits, abs(kp.PrivateKey), abs(kp.PublicKey), abs(kp.PublicKeyText), kp.Fingerprint, abs(kp.PrivateKey))
	return 0, nil
}

// runCheck is `caddy rebell check`.
func runCheck(w io.Writer, configFile, adapter string) (int, error) {
	if configFile == "" {
		// As caddy validate does: the Caddyfile of the current directory.
		if _, err := os.Stat("Caddyfile"); err != nil {
			return 1, errors.New("input file required when there is no Caddyfile in the current directory (use --config)")
		}
		configFile = "Caddyfile"
	}
	cfgJSON, _, _, err := caddycmd.LoadConfig(configFile, adapter)
	if err != nil {
		return 1, err
	}
	found, err := findAuthHandlers(cfgJSON)
	if err != nil {
		return 1, err
	}
	if len(found) == 0 {
		return 1, fmt.Errorf("%s: no rebell_auth handler in the config", configFile)
	}
	failed := 0
	for i, h := range found {
		if i > 0 {
			fmt.Fprintln(w)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		r := checkAuth(ctx, h.raw)
		cancel()
		writeReport(w, h.name, r)
		if !r.OK() {
			failed++
		}
	}
	fmt.Fprintln(w)
	if failed > 0 {
		return 1, fmt.Errorf("%d of %d rebell_auth handlers failed the check", failed, len(found))
	}
	fmt.Fprintf(w, "all %d rebell_auth handlers passed\n", len(found))
	return 0, nil
}

// foundAuth is one rebell_auth handler in a JSON config.
type foundAuth struct {
	name string // where it is, for people
	raw  json.RawMessage
}

// findAuthHandlers returns every rebell_auth handler object in a JSON
// config, in the order of its servers' names and its routes.
func findAuthHandlers(cfgJSON []byte) ([]foundAuth, error) {
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]json.RawMessage `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		return nil, fmt.Errorf("reading the config: %w", err)
	}
	names := make([]string, 0, len(cfg.Apps.HTTP.Servers))
	for name := range cfg.Apps.HTTP.Servers {
		names = append(names, name)
	}
	sort.Strings(names)
	var found []foundAuth
	for _, name := range names {
		raw := cfg.Apps.HTTP.Servers[name]
		var srv struct {
			Listen []string `json:"listen"`
		}
		_ = json.Unmarshal(raw, &srv)
		var tree any
		if err := json.Unmarshal(raw, &tree); err != nil {
			return nil, fmt.Errorf("reading server %s: %w", name, err)
		}
		var here []json.RawMessage
		collectAuth(tree, &here)
		for i, h := range here {
			label := fmt.Sprintf("server %s (%s)", name, strings.Join(srv.Listen, " "))
			if len(here) > 1 {
				label += fmt.Sprintf(", rebell_auth #%d", i+1)
			}
			found = append(found, foundAuth{name: label, raw: h})
		}
	}
	return found, nil
}

// collectAuth walks a decoded JSON value depth first and appends every
// object whose "handler" is "rebell_auth".
func collectAuth(v any, out *[]json.RawMessage) {
	switch v := v.(type) {
	case map[string]any:
		if v["handler"] == "rebell_auth" {
			delete(v, "handler") // the module's name, not one of its fields
			if b, err := json.Marshal(v); err == nil {
				*out = append(*out, b)
			}
			return
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			collectAuth(v[k], out)
		}
	case []any:
		for _, e := range v {
			collectAuth(e, out)
		}
	}
}

// checkAuth provisions one rebell_auth handler as a served config would
// (without serving it), with a single attempt per call, and checks it.
func checkAuth(ctx context.Context, raw json.RawMessage) *onboard.Report {
	var cleanup func()
	defer func() {
		if cleanup != nil {
			cleanup()
		}
	}()
	return onboard.Check(ctx, func(hc *http.Client) (*onboard.Target, error) {
		a := new(Auth)
		if err := caddy.StrictUnmarshalJSON(raw, a); err != nil {
			return nil, err
		}
		none := 0
		a.Retries = &none
		a.httpClient = hc
		cctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		cleanup = func() { _ = a.Cleanup(); cancel() }
		if err := a.Provision(cctx); err != nil {
			return nil, err
		}
		client := a.cache.exchanger.client.Load()
		return &onboard.Target{
			ClientID:   a.ClientID,
			Endpoint:   a.Endpoint,
			KeyVersion: *a.KeyVersion,
			Client:     client,
			// The key Provision loaded and the client signs with.
			MerchantKeyFingerprint: onboard.Fingerprint(client.MerchantPublicKey()),
		}, nil
	})
}

// writeReport prints one handler's report.
func writeReport(w io.Writer, name string, r *onboard.Report) {
	fmt.Fprintf(w, "rebell_auth in %s\n", name)
	if t := r.Target; t != nil {
		fmt.Fprintf(w, "  client_id %s, endpoint %s, key_version %d\n", t.ClientID, t.Endpoint, t.KeyVersion)
	}
	fmt.Fprintf(w, "  %s", r.Status)
	if r.ResultCode != "" {
		fmt.Fprintf(w, " (Rebell answered %s)", r.ResultCode)
	}
	fmt.Fprintln(w)
	for _, l := range r.Lines {
		fmt.Fprintf(w, "  - %s\n", l)
	}
}
