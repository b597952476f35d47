"""A stand-in kube-apiserver for story 3 (there is no cluster here): the ServiceAccounts the
webhook reads, with the real API's wire format (a ServiceAccountList, then `?watch=true` events
on a chunked response, and GET of one). Prints its URL, then serves until SIGINT or SIGTERM.

Usage: apiserver.py NAMESPACE/NAME=ROLE_ARN ...
"""

import http.server
import signal
import json
import sys
import threading
import urllib.parse

RV = "7"
accounts = {}
for arg in sys.argv[1:]:
    who, _, role = arg.partition("=")
    ns, _, name = who.partition("/")
    accounts[(ns, name)] = {
        "kind": "ServiceAccount", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}", "resourceVersion": RV,
                     "annotations": {"eks.amazonaws.com/role-arn": role}},
    }
stop = threading.Event()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        parts = url.path.strip("/").split("/")
        if url.path == "/api/v1/serviceaccounts" and q.get("watch") in ("true", "1"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            # A watch with nothing new: a bookmark now and then, until the test ends.
            while not stop.wait(1):
                line = json.dumps({"type": "BOOKMARK", "object": {"kind": "ServiceAccount", "apiVersion": "v1",
                                                                   "metadata": {"resourceVersion": RV}}}).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True
        elif url.path == "/api/v1/serviceaccounts":
            self.reply(200, {"kind": "ServiceAccountList", "apiVersion": "v1", "metadata": {"resourceVersion": RV},
                             "items": list(accounts.values())})
        elif len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "serviceaccounts":
            sa = accounts.get((parts[3], parts[5]))
            if sa:
                self.reply(200, sa)
            else:
                self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                 "message": f'serviceaccounts "{parts[5]}" not found', "code": 404})
        else:
            self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
threading.Thread(target=server.serve_forever, daemon=True).start()
print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda *_: stop.set())
stop.wait()
server.shutdown()
