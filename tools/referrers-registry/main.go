// Command referrers-registry serves an in-process OCI registry on loopback with the
// OCI 1.1 referrers API, for bundler's tests: go-containerregistry's pkg/registry
// (blobs on disk) wrapped so that
//   - a manifest PUT whose body has a "subject" is answered with OCI-Subject;
//   - GET /v2/<name>/referrers/<digest> lists, sorted by digest, the manifests of
//     <name> whose subject is <digest>, each with artifactType = the manifest's
//     artifactType, else its config media type, and the manifest's annotations; an
//     artifactType query filters them (and OCI-Filters-Applied says so);
//   - every request is written to stdout as one line in the combined log format.
//
// Spec: distribution-spec v1.1 "Listing Referrers", "Pushing Manifests with Subject".
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

type descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

type parsed struct {
	MediaType    string            `json:"mediaType"`
	ArtifactType string            `json:"artifactType"`
	Config       *descriptor       `json:"config"`
	Subject      *descriptor       `json:"subject"`
	Annotations  map[string]string `json:"annotations"`
}

type server struct {
	inner http.Handler
	mu    sync.Mutex
	// repository -> subject digest -> referrer digest -> its descriptor
	refs map[string]map[string]map[string]descriptor
}

type recorder struct {
	http.ResponseWriter
	status  int
	size    int
	subject string
}

func (r *recorder) WriteHeader(status int) {
	if r.subject != "" && status/100 == 2 {
		r.Header().Set("OCI-Subject", r.subject)
	}
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	n, err := r.ResponseWriter.Write(b)
	r.size += n
	return n, err
}

// split returns (repository, kind, last element) of /v2/<repo>/<kind>/<ref>.
func split(path string) (string, string, string, bool) {
	elems := strings.Split(strings.TrimPrefix(path, "/v2/"), "/")
	if !strings.HasPrefix(path, "/v2/") || len(elems) < 3 {
		return "", "", "", false
	}
	n := len(elems)
	return strings.Join(elems[:n-2], "/"), elems[n-2], elems[n-1], true
}

func (s *server) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	repo, kind, ref, ok := split(req.URL.Path)
	switch {
	case ok && kind == "referrers" && req.Method == http.MethodGet:
		s.referrers(rec, req, repo, ref)
	case ok && kind == "manifests" && req.Method == http.MethodPut:
		body, err := io.ReadAll(io.LimitReader(req.Body, 4<<20))
		if err != nil {
			http.Error(rec, "cannot read body", http.StatusBadRequest)
			break
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		var m parsed
		if json.Unmarshal(body, &m) == nil && m.Subject != nil {
			rec.subject = m.Subject.Digest
		}
		s.inner.ServeHTTP(rec, req)
		if rec.status/100 == 2 && rec.subject != "" {
			s.record(repo, body, req.Header.Get("Content-Type"), m)
		}
	default:
		s.inner.ServeHTTP(rec, req)
	}
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	fmt.Fprintf(os.Stdout, "%s - - [%s] \"%s %s %s\" %d %d \"\" %q %dms\n",
		strings.Split(req.RemoteAddr, ":")[0], start.UTC().Format("02/Jan/2006:15:04:05 -0700"),
		req.Method, req.URL.RequestURI(), req.Proto, rec.status, rec.size, req.UserAgent(),
		time.Since(start).Milliseconds())
}

func (s *server) record(repo string, body []byte, contentType string, m parsed) {
	sum := sha256.Sum256(body)
	d := descriptor{
		MediaType:    m.MediaType,
		Digest:       "sha256:" + hex.EncodeToString(sum[:]),
		Size:         int64(len(body)),
		ArtifactType: m.ArtifactType,
		Annotations:  m.Annotations,
	}
	if d.MediaType == "" {
		d.MediaType = contentType
	}
	if d.ArtifactType == "" && m.Config != nil {
		d.ArtifactType = m.Config.MediaType
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refs[repo] == nil {
		s.refs[repo] = map[string]map[string]descriptor{}
	}
	if s.refs[repo][m.Subject.Digest] == nil {
		s.refs[repo][m.Subject.Digest] = map[string]descriptor{}
	}
	s.refs[repo][m.Subject.Digest][d.Digest] = d
}

func (s *server) referrers(w http.ResponseWriter, req *http.Request, repo, subject string) {
	if !strings.HasPrefix(subject, "sha256:") || len(subject) != 71 {
		http.Error(w, `{"errors":[{"code":"DIGEST_INVALID","message":"not a digest"}]}`, http.StatusBadRequest)
		return
	}
	want := req.URL.Query()["artifactType"]
	s.mu.Lock()
	list := []descriptor{}
	for _, d := range s.refs[repo][subject] {
		if len(want) == 0 || contains(want, d.ArtifactType) {
			list = append(list, d)
		}
	}
	s.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].Digest < list[j].Digest })
	body, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     list,
	})
	w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
	if len(want) > 0 {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func main() {
	addr := flag.String("addr", "127.0.0.1:5000", "listen address (host:port)")
	dir := flag.String("blobs", "", "directory for blobs (default: in memory)")
	flag.Parse()
	opts := []registry.Option{registry.Logger(log.New(io.Discard, "", 0))}
	if *dir != "" {
		if err := os.MkdirAll(*dir, 0o755); err != nil {
			log.Fatal(err)
		}
		opts = append(opts, registry.WithBlobHandler(registry.NewDiskBlobHandler(*dir)))
	}
	s := &server{inner: registry.New(opts...), refs: map[string]map[string]map[string]descriptor{}}
	log.Fatal(http.ListenAndServe(*addr, s))
}
