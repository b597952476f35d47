"""Story 3: what the kube-apiserver sends the webhook when a pod is created (an AdmissionReview
v1 over HTTPS), and what comes back: prints the JSON patch's environment for the container as
`NAME=value` lines, and the volume mounts as `mount PATH`.

Usage: admit.py WEBHOOK_URL NAMESPACE SERVICE_ACCOUNT POD_NAME
"""

import base64
import json
import ssl
import sys
import urllib.request

url, namespace, sa, pod = sys.argv[1:5]
review = {
    "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
    "request": {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": namespace, "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": pod, "namespace": namespace},
                   "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "app:1"}]}},
        "dryRun": False,
    },
}
# The apiserver verifies the webhook with the caBundle of its configuration; the certificate here
# is a throwaway self-signed one.
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
req = urllib.request.Request(url + "/mutate", json.dumps(review).encode(), {"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=10, context=context) as r:
    answer = json.load(r)["response"]
assert answer["uid"] == review["request"]["uid"] and answer["allowed"], answer
patch = json.loads(base64.b64decode(answer.get("patch", "W10=")))
for op in patch:
    value = op.get("value")
    if op["path"].startswith("/spec/containers/0/env"):
        for e in value if isinstance(value, list) else [value]:
            if "value" in e:
                print(f"{e['name']}={e['value']}")
    if op["path"].startswith("/spec/containers/0/volumeMounts"):
        for m in value if isinstance(value, list) else [value]:
            print(f"mount {m['mountPath']}")
