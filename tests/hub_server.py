"""A stand-in for a model hub on 127.0.0.1: folders served the way the Hugging Face hub serves model repos
(revision info, file tree, ``resolve`` downloads with ETag and commit headers), enough for huggingface_hub's
``snapshot_download``. Error codes follow the hub's ``X-Error-Code`` header. Records every request."""
import hashlib, json, threading, re, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

class Hub:
    def __init__(self, repos):  # repos: {"org/name": {"main": folder, "v1": folder2}}
        self.repos = repos; self.requests = []
        self.shas = {}
        for repo, revs in repos.items():
            for rev, folder in revs.items():
                h = hashlib.sha1(f"{repo}@{rev}".encode()).hexdigest()
                self.shas[(repo, rev)] = h; self.shas[(repo, h)] = h
    def folder(self, repo, rev):
        for (r, name), sha in self.shas.items():
            if r == repo and (name == rev or sha == rev):
                for n, f in self.repos[repo].items():
                    if self.shas[(repo, n)] == sha: return Path(f), sha
        return None, None
    def start(self):
        hub = self
        class H(BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def _send(self, code, body=b"", headers=None, head=False):
                self.send_response(code)
                for k, v in (headers or {}).items(): self.send_header(k, v)
                self.send_header("Content-Length", str(len(body))); self.end_headers()
                if not head: self.wfile.write(body)
            def _json(self, obj, code=200, head=False):
                self._send(code, json.dumps(obj).encode(), {"Content-Type": "application/json"}, head)
            def handle_any(self, head=False):
                path = urllib.parse.urlparse(self.path).path
                hub.requests.append((self.command, path))
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/(.+)", path)
                if m:
                    folder, sha = hub.folder(m.group(1), urllib.parse.unquote(m.group(2)))
                    if folder is None:
                        return self._send(404, b"{}", {"X-Error-Code": "RevisionNotFound" if m.group(1) in hub.repos else "RepoNotFound", "X-Error-Message": "not found"})
                    return self._json({"id": m.group(1), "sha": sha, "siblings": [{"rfilename": p.name} for p in sorted(folder.iterdir())]}, head=head)
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", path)
                if m:
                    folder, sha = hub.folder(m.group(1), urllib.parse.unquote(m.group(2)))
                    if folder is None: return self._send(404, b"{}", {"X-Error-Code": "RevisionNotFound"})
                    return self._json([{"type": "file", "path": p.name, "size": p.stat().st_size,
                                        "oid": hashlib.sha1(p.read_bytes()).hexdigest()} for p in sorted(folder.iterdir()) if p.is_file()], head=head)
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if m:
                    folder, sha = hub.folder(m.group(1), urllib.parse.unquote(m.group(2)))
                    if folder is None: return self._send(404, b"", {"X-Error-Code": "RepoNotFound" if m.group(1) not in hub.repos else "RevisionNotFound"}, head)
                    f = folder / urllib.parse.unquote(m.group(3))
                    if not f.is_file(): return self._send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha}, head)
                    data = f.read_bytes()
                    return self._send(200, data, {"X-Repo-Commit": sha, "ETag": '"' + hashlib.sha1(data).hexdigest() + '"', "Content-Type": "application/octet-stream"}, head)
                self._send(404)
            def do_GET(self): self.handle_any()
            def do_HEAD(self): self.handle_any(head=True)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"
