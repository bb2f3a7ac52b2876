// A benchmark peer, written for KubeHero's bench: the verifier behind kube-apiserver's OIDC authenticator
// (github.com/coreos/go-oidc v2 over gopkg.in/square/go-jose.v2, from Debian's golang-*-dev packages), serving
// GET /api/v1/whoami the way kube-apiserver authenticates a bearer token: discovery and the JWKS come from
// the issuer, every token is verified (signature, iss, aud, exp), and successes are cached for CACHE_SECS
// (kube-apiserver: 10 s) keyed by the token's SHA-256. Not a KubeHero component; only the bench runs it.
//
// Build (GOPATH mode, no network): GO111MODULE=off GOPATH=$DIR:/usr/share/gocode go build -o gooidc .
// Run: ISSUER=http://127.0.0.1:PORT AUDIENCE=kubehero LISTEN=127.0.0.1:PORT CACHE_SECS=10 ./gooidc
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	oidc "github.com/coreos/go-oidc"
)

type entry struct {
	Sub    string   `json:"sub"`
	Groups []string `json:"groups"`
	exp    time.Time
}

func main() {
	issuer, audience, listen := os.Getenv("ISSUER"), os.Getenv("AUDIENCE"), os.Getenv("LISTEN")
	ttl := 10 * time.Second
	if v, err := strconv.Atoi(os.Getenv("CACHE_SECS")); err == nil {
		ttl = time.Duration(v) * time.Second
	}
	provider, err := oidc.NewProvider(context.Background(), issuer)
	if err != nil {
		log.Fatalf("discovery: %v", err)
	}
	verifier := provider.Verifier(&oidc.Config{ClientID: audience, SupportedSigningAlgs: []string{"RS256", "ES256"}})
	var mu sync.Mutex
	cache := map[[32]byte]entry{}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	http.HandleFunc("/api/v1/whoami", func(w http.ResponseWriter, r *http.Request) {
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		key := sha256.Sum256([]byte(token))
		mu.Lock()
		e, ok := cache[key]
		mu.Unlock()
		if !ok || time.Now().After(e.exp) {
			idt, err := verifier.Verify(r.Context(), token)
			if err != nil {
				http.Error(w, `{"code":"unauthenticated"}`, http.StatusUnauthorized)
				return
			}
			var claims struct {
				Groups []string `json:"groups"`
			}
			_ = idt.Claims(&claims)
			e = entry{Sub: idt.Subject, Groups: claims.Groups, exp: time.Now().Add(ttl)}
			if ttl > 0 {
				mu.Lock()
				cache[key] = e
				mu.Unlock()
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(e)
	})
	log.Fatal(http.ListenAndServe(listen, nil))
}
