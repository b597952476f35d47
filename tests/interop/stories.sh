#!/usr/bin/env bash
# USER-STORIES.md's five stories, back to back, as their people type them: `podiam` and the real
# `aws` CLI and boto3, each command straight after the one before, no sleep and no retry between
# them. A process started in the background is waited for by reading what it prints.
#
# What cannot run here is stood in for, and says so: there is no cluster, so story 3's
# `kubectl apply -k deploy/` is tests/interop/deploy.sh's (every overlay rendered, validated, its
# server and agent containers run as the kubelet would); here the cluster's token signer is a
# second podiam whose issuer is `https://kubernetes.default.svc`, the apiserver's ServiceAccounts
# come from tests/interop/stories/apiserver.py (its wire format), and the pod's creation is the
# AdmissionReview the apiserver would send the webhook (tests/interop/stories/admit.py).
#
# Needs PODIAM_BIN and PostgreSQL (PODIAM_TEST_DATABASE_URL; scripts/test provides one) for story
# 3's two replicas; with the venv's python, aws, openssl and curl on PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${PODIAM_BIN:?PODIAM_BIN must point at the podiam binary}"
if [ -z "${PODIAM_TEST_DATABASE_URL:-}" ]; then
  echo "FAIL: stories needs PostgreSQL for story 3 (PODIAM_TEST_DATABASE_URL; run it from scripts/test)" >&2
  exit 1
fi
here=$PWD/tests/interop/stories
tmp=$(mktemp -d)
mkdir -p "$tmp/bin"
ln -s "$(realpath "$PODIAM_BIN")" "$tmp/bin/podiam"
export PATH="$tmp/bin:$PATH"
# Nothing of the caller's AWS set-up leaks in.
unset AWS_PROFILE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_CONFIG_FILE \
  AWS_SHARED_CREDENTIALS_FILE AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE AWS_ENDPOINT_URL \
  PODIAM_DATA_DIR PODIAM_DATABASE_URL PODIAM_MASTER_KEY_FILE
export AWS_EC2_METADATA_DISABLED=true
real_home=$HOME
pids=()
fds=()
cleanup() {
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  # Bounded: a process that ignores its stop is killed (and was a failure of its own story).
  for _ in $(seq 200); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.05
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  [ -n "${db:-}" ] && psql "$PODIAM_TEST_DATABASE_URL" -q -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
  if [ -n "${STORIES_KEEP:-}" ]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for log in "$tmp"/*.log; do [ -s "$log" ] && { echo "--- $log" >&2; tail -20 "$log" >&2; }; done
  exit 1
}
story() { echo; echo "== story $*"; }
# `expect TEXT WHAT`: stdin holds TEXT.
expect() { local out; out=$(cat); grep -qF -- "$1" <<<"$out" || fail "$2: no \`$1\` in:"$'\n'"$out"; }

# stop_within SECONDS PID WHAT: SIGTERM, as the kubelet sends it; WHAT must exit 0 in time.
stop_within() {
  kill -TERM "$2"
  for _ in $(seq $(($1 * 20))); do kill -0 "$2" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$2" 2>/dev/null && fail "$3 did not stop within $1 s of SIGTERM"
  wait "$2" || fail "$3 exited $? on SIGTERM (expected 0)"
}

# start NAME CMD…: runs CMD in the background, its stdout read through a pipe (fd saved in
# fd_NAME), its stderr in $tmp/NAME.log.
start() {
  local name=$1
  shift
  mkfifo "$tmp/$name.out"
  "$@" >"$tmp/$name.out" 2>"$tmp/$name.log" &
  pids+=($!)
  local fd
  exec {fd}<"$tmp/$name.out"
  printf -v "fd_$name" %s "$fd"
}
# until_line NAME PATTERN: the first line NAME prints that matches PATTERN (an extended regex);
# fails if NAME exits or says nothing for 60 s. Lines read are echoed.
until_line() {
  local fdvar="fd_$1" line
  while IFS= read -r -t 60 line <&"${!fdvar}"; do
    echo "   | $line" >&2
    if [[ $line =~ $2 ]]; then
      printf '%s\n' "$line"
      return 0
    fi
  done
  fail "$1 ended or went quiet before printing /$2/"
}
# drain NAME: keep reading NAME's stdout (into its log) so that it never blocks on the pipe.
drain() { local fdvar="fd_$1"; cat <&"${!fdvar}" >>"$tmp/$1.log" & }

# === 1. A developer on a laptop (IRSA, offline) ===
story "1: a developer on a laptop (IRSA, offline)"
export HOME=$tmp/home1
mkdir -p "$HOME"
listen=()
if (exec 3<>/dev/tcp/127.0.0.1/7780) 2>/dev/null; then
  echo "127.0.0.1:7780 (podiam up's default) is taken here: story 1 uses --listen 127.0.0.1:0"
  listen=(--listen 127.0.0.1:0)
fi
start up1 podiam up "${listen[@]}"
line=$(until_line up1 '^export AWS_CONFIG_FILE=')
drain up1
eval "$line"
[ "$AWS_CONFIG_FILE" = "$HOME/.local/share/podiam/aws/config" ] || fail "the export line names $AWS_CONFIG_FILE"
endpoint=$(sed -n 's/^endpoint_url = //p' "$AWS_CONFIG_FILE")
cd "$tmp"
cat >policy.json <<'EOF'
{
  "Version": "2012-10-17",
  "Statement": [{"Effect": "Allow", "Action": ["iam:ListRoles", "iam:GetRole"], "Resource": "*"}]
}
EOF
aws iam create-policy --policy-name weasel-pod --policy-document file://policy.json --query Policy.Arn --output text \
  | expect "arn:aws:iam::000000000000:policy/weasel-pod" "create-policy"
podiam create iamserviceaccount --name weasel-eks-pod-sa --namespace weasel \
  --attach-policy-arn arn:aws:iam::000000000000:policy/weasel-pod >sa.yaml
role_arn=$(sed -n 's/^ *eks.amazonaws.com\/role-arn: //p' sa.yaml)
expect "kind: ServiceAccount" "the printed manifest" <sa.yaml
[ "$role_arn" = "arn:aws:iam::000000000000:role/weasel-weasel-eks-pod-sa" ] || fail "role ARN in the manifest: $role_arn"
podiam token create --namespace weasel --service-account weasel-eks-pod-sa >token
AWS_ROLE_ARN=$role_arn AWS_WEB_IDENTITY_TOKEN_FILE=token AWS_ENDPOINT_URL=$endpoint python "$here/app.py" >app.out
cat app.out
expect "caller arn:aws:sts::000000000000:assumed-role/weasel-weasel-eks-pod-sa/" "the app's identity" <app.out
expect "refused AccessDenied" "the app's forbidden call" <app.out
# Which statement or condition refused it; the table names the pod's ServiceAccount.
podiam audit --denied >denied.txt
cat denied.txt
expect "weasel/weasel-eks-pod-sa" "podiam audit --denied's ServiceAccount column" <denied.txt
expect "iam:DeleteRole" "podiam audit --denied" <denied.txt
expect "because no identity-based policy allows the action" "podiam audit --denied's reason" <denied.txt
podiam audit --width 100 >narrow.txt
python -c 'import sys; sys.exit(any(len(l.rstrip("\n")) > 100 for l in open(sys.argv[1], encoding="utf-8")))' narrow.txt \
  || fail "podiam audit --width 100 printed a longer line:"$'\n'"$(cat narrow.txt)"
aws iam simulate-principal-policy --policy-source-arn "$role_arn" --action-names iam:DeleteRole iam:GetRole \
  --query 'EvaluationResults[].[EvalActionName,EvalDecision]' --output text >sim.txt
cat sim.txt
expect $'iam:DeleteRole\timplicitDeny' "simulate-principal-policy" <sim.txt
expect $'iam:GetRole\tallowed' "simulate-principal-policy" <sim.txt
cd - >/dev/null

# === 2. A CI pipeline that tests least privilege ===
story "2: a CI pipeline that tests least privilege"
export HOME=$tmp/home2
mkdir -p "$HOME"
unset AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE AWS_PROFILE PODIAM_DATA_DIR
ci_data="$(mktemp -d)"
started=$(date +%s%N)
start up2 podiam up --data-dir "$ci_data" --listen 127.0.0.1:0
until_line up2 '^podiam is up at http://127\.0\.0\.1:[0-9]+ ' >/dev/null
line=$(until_line up2 '^export ')
ready_ms=$((($(date +%s%N) - started) / 1000000))
drain up2
echo "   podiam up answered after ${ready_ms} ms (first start: keys made)"
[ "$ready_ms" -lt 10000 ] || fail "podiam up took ${ready_ms} ms to start"
eval "$line"
cat >"$tmp/orders-trust.json" <<EOF
{"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
  "Principal": {"Federated": "arn:aws:iam::000000000000:oidc-provider/$(sed -n 's/^endpoint_url = http:\/\///p' "$AWS_CONFIG_FILE")"},
  "Action": "sts:AssumeRoleWithWebIdentity"}]}
EOF
aws iam create-role --role-name orders --assume-role-policy-document "file://$tmp/orders-trust.json" >/dev/null
aws iam put-role-policy --role-name orders --policy-name read-own-role --policy-document \
  '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:GetRole","Resource":"arn:aws:iam::000000000000:role/orders"}]}'
podiam token create --namespace orders --service-account api >"$tmp/orders-token"
creds=$(aws sts assume-role-with-web-identity --role-arn arn:aws:iam::000000000000:role/orders \
  --role-session-name ci --web-identity-token "file://$tmp/orders-token" \
  --query 'Credentials.[AccessKeyId,SecretAccessKey,SessionToken]' --output text)
read -r ak sk st <<<"$creds"
# The keys in the environment win over the profile's (which still gives the endpoint and region).
as_app() { AWS_ACCESS_KEY_ID=$ak AWS_SECRET_ACCESS_KEY=$sk AWS_SESSION_TOKEN=$st aws "$@"; }
# The application's tests: what it needs works, what it must not do is refused.
as_app iam get-role --role-name orders --query Role.RoleName --output text | expect orders "allowed call"
for forbidden in "iam get-role --role-name weasel" "iam list-roles" "iam delete-role --role-name orders"; do
  # shellcheck disable=SC2086
  if as_app $forbidden >/dev/null 2>"$tmp/forbidden.err"; then fail "aws $forbidden was allowed"; fi
  expect AccessDenied "aws $forbidden" <"$tmp/forbidden.err"
done
echo "   allowed: iam:GetRole on its role; refused: the three forbidden calls"
# It leaves nothing behind: stopped, the directory removed, nothing anywhere else.
kill -INT "${pids[-1]}"
wait "${pids[-1]}" || fail "podiam up did not stop cleanly on SIGINT"
unset 'pids[-1]'
rm -rf "$ci_data"
leftover=$(find "$HOME" -mindepth 1 | head -5)
[ -z "$leftover" ] || fail "podiam left files in \$HOME: $leftover"
echo "   stopped; nothing left in \$HOME"

# === 3. A platform engineer on a self-managed cluster ===
story "3: a platform engineer on a self-managed cluster"
export HOME=$tmp/home3
mkdir -p "$HOME"
unset AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE AWS_PROFILE PODIAM_DATA_DIR
db="podiam_stories_$$"
psql "$PODIAM_TEST_DATABASE_URL" -q -c "CREATE DATABASE $db" >/dev/null
export PODIAM_DATABASE_URL="${PODIAM_TEST_DATABASE_URL%/*}/$db"
export PODIAM_MASTER_KEY_FILE=$tmp/master.key
head -c 32 /dev/urandom >"$PODIAM_MASTER_KEY_FILE"
chmod 600 "$PODIAM_MASTER_KEY_FILE"
# The two replicas (deploy/'s Deployment: PostgreSQL, the master key from a Secret).
for r in a b; do
  mkdir -m 700 "$tmp/replica-$r"
  start "server_$r" podiam server --listen 127.0.0.1:0 --data-dir "$tmp/replica-$r" --replica-name "podiam-server-$r"
  printf -v "pid_$r" %s "${pids[-1]}"
  line=$(until_line "server_$r" '^podiam is up at ')
  drain "server_$r"
  printf -v "server_$r" %s "$(awk '{print $5}' <<<"$line")"
done
echo "   replicas at $server_a and $server_b"
export AWS_SHARED_CREDENTIALS_FILE=$tmp/replica-a/aws/credentials AWS_CONFIG_FILE=$tmp/replica-a/aws/config AWS_PROFILE=podiam
# The cluster: its kube-apiserver signs ServiceAccount tokens as https://kubernetes.default.svc,
# which podiam cannot reach.
ISSUER=https://kubernetes.default.svc
mkdir -m 700 "$tmp/cluster"
start cluster podiam up --data-dir "$tmp/cluster" --listen 127.0.0.1:0 --issuer-url "$ISSUER"
apiserver=$(until_line cluster '^podiam is up at ' | awk '{print $5}')
drain cluster
kubectl_get_raw_jwks() { curl -sf "$apiserver/openid/v1/jwks"; } # `kubectl get --raw /openid/v1/jwks`
# docs/operating.md, "Register the cluster", as written (podiam-admin is `podiam` in the server pod).
kubectl_get_raw_jwks | podiam create oidcprovider --url "$ISSUER" --jwks-file /dev/stdin \
  | expect "arn:aws:iam::000000000000:oidc-provider/kubernetes.default.svc" "create oidcprovider"
aws iam create-policy --policy-name payments-read --policy-document \
  '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:GetRole","Resource":"*"}]}' >/dev/null
podiam create iamserviceaccount --namespace payments --name api --issuer "$ISSUER" \
  --attach-policy-arn arn:aws:iam::000000000000:policy/payments-read >"$tmp/api-sa.yaml"
payments_role=$(sed -n 's/^ *eks.amazonaws.com\/role-arn: //p' "$tmp/api-sa.yaml")
echo "   the team's ServiceAccount is annotated with $payments_role"
# The webhook, reading ServiceAccounts from the apiserver; SDKs in IRSA pods sent to podiam's STS.
start kube python "$here/apiserver.py" "payments/api=$payments_role"
kube_api=$(until_line kube '^http://')
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=podiam-webhook.podiam.svc \
  -keyout "$tmp/tls.key" -out "$tmp/tls.crt" 2>/dev/null
ports=$(python -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
read -r webhook_port webhook_metrics <<<"$ports"
start webhook podiam webhook --listen "127.0.0.1:$webhook_port" --metrics-listen "127.0.0.1:$webhook_metrics" \
  --tls-cert "$tmp/tls.crt" --tls-key "$tmp/tls.key" --kube-api "$kube_api" --sts-endpoint "$server_b"
drain webhook
# Started in the background: wait (bounded) until it answers, as the kubelet's probe would.
for _ in $(seq 300); do curl -skf "https://127.0.0.1:$webhook_port/healthz" >/dev/null && break; sleep 0.05; done
python "$here/admit.py" "https://127.0.0.1:$webhook_port" payments api api-7d9f8-x2x4k >"$tmp/pod.env"
cat "$tmp/pod.env"
expect "AWS_ROLE_ARN=$payments_role" "the mutated pod" <"$tmp/pod.env"
expect "AWS_ENDPOINT_URL_STS=$server_b" "the mutated pod" <"$tmp/pod.env"
expect "mount /var/run/secrets/eks.amazonaws.com/serviceaccount" "the mutated pod" <"$tmp/pod.env"
token_path=$(sed -n 's/^AWS_WEB_IDENTITY_TOKEN_FILE=//p' "$tmp/pod.env")
[ "$token_path" = /var/run/secrets/eks.amazonaws.com/serviceaccount/token ] || fail "token path $token_path"
# The kubelet projects the token (here: into the test's directory, not /var/run); the pod's
# unmodified SDK runs with the environment the webhook gave it and no other AWS set-up.
# (`env -u`: the stand-in cluster's store is its data directory and its own master key, not the servers' database.)
env -u PODIAM_DATABASE_URL -u PODIAM_MASTER_KEY_FILE podiam token create --data-dir "$tmp/cluster" --namespace payments --service-account api \
  --pod-name api-7d9f8-x2x4k --pod-uid 0f6c2a5e-1d2b-4c3a-9e8f-7a6b5c4d3e2f >"$tmp/pod-token"
pod_env=()
while IFS= read -r kv; do [[ $kv == AWS_* ]] && pod_env+=("$kv"); done <"$tmp/pod.env"
in_pod() {
  env -i PATH="$PATH" HOME="$tmp/pod-home" "${pod_env[@]}" AWS_WEB_IDENTITY_TOKEN_FILE="$tmp/pod-token" \
    AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true "$@"
}
in_pod aws sts get-caller-identity --query Arn --output text | expect "assumed-role/payments-api/" "the pod's identity"
# The session works on both replicas (the SDK's IAM calls go to replica A here).
pod_creds=$(in_pod python -c 'import boto3; c = boto3.Session().get_credentials().get_frozen_credentials(); print(c.access_key, c.secret_key, c.token)')
read -r pak psk pst <<<"$pod_creds"
as_pod() { env -i PATH="$PATH" HOME="$tmp/pod-home" AWS_ACCESS_KEY_ID=$pak AWS_SECRET_ACCESS_KEY=$psk AWS_SESSION_TOKEN=$pst AWS_DEFAULT_REGION=us-east-1 aws "$@"; }
as_pod --endpoint-url "$server_a" iam get-role --role-name payments-api --query Role.RoleName --output text | expect payments-api "replica A"
as_pod --endpoint-url "$server_b" iam get-role --role-name payments-api --query Role.RoleName --output text | expect payments-api "replica B"
# Prometheus scrapes every component (the agent in story 5).
for target in "$server_a/metrics" "$server_b/metrics" "http://127.0.0.1:$webhook_metrics/metrics"; do
  curl -sf "$target" >"$tmp/scrape"
  grep -q '^# TYPE ' "$tmp/scrape" || fail "$target: not Prometheus text"
  echo "   scraped $target: $(grep -c '^# TYPE ' "$tmp/scrape") metric families"
done
grep -q '^podiam_webhook' "$tmp/scrape" || fail "the webhook's metrics have no podiam_webhook_* family"

# === 4. A security engineer ===
story "4: a security engineer"
cd "$tmp"
cat >trust.json <<'EOF'
{"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
  "Principal": {"Federated": "arn:aws:iam::000000000000:oidc-provider/kubernetes.default.svc"},
  "Action": "sts:AssumeRoleWithWebIdentity",
  "Condition": {"StringLike": {"kubernetes.default.svc:sub": "system:serviceaccount:*:*"}}}]}
EOF
cat >broad.json <<'EOF'
{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}]}
EOF
podiam policy validate trust.json broad.json >validate.txt || true
cat validate.txt
expect "system:serviceaccount:*:*" "validate: the any-ServiceAccount trust" <validate.txt
expect ":aud" "validate: the missing audience condition" <validate.txt
expect "NotAction" "validate: NotAction with Resource *" <validate.txt
podiam audit --role payments-api --since 24h >who.txt
cat who.txt
expect "payments/api" "audit --role: namespace/ServiceAccount" <who.txt
expect "allowed" "audit --role: outcome" <who.txt
expect "127.0.0.1" "audit --role: source address" <who.txt
grep -Eq ' [0-9]+[smhd] ' who.txt || fail "audit --role: no token age"
# Revoke every session issued before now: one deny on aws:TokenIssueTime (AWS's "Revoke active
# sessions"). Now is the next whole second, so the pod's session, issued at most this second, is in.
revoke_at=$(date -u -d "@$(($(date +%s) + 1))" +%Y-%m-%dT%H:%M:%SZ)
aws iam put-role-policy --role-name payments-api --policy-name AWSRevokeOlderSessions --policy-document \
  "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Deny\",\"Action\":\"*\",\"Resource\":\"*\",\"Condition\":{\"DateLessThan\":{\"aws:TokenIssueTime\":\"$revoke_at\"}}}]}"
if as_pod --endpoint-url "$server_b" iam get-role --role-name payments-api >/dev/null 2>revoked.err; then
  fail "the session issued before $revoke_at still works"
fi
expect AccessDenied "the revoked session" <revoked.err
expect "explicit deny" "the revoked session's reason" <revoked.err
echo "   the pod's session issued before $revoke_at is refused: $(tail -1 revoked.err)"
aws iam delete-role-policy --role-name payments-api --policy-name AWSRevokeOlderSessions
cd - >/dev/null

# === 5. Moving a team to Pod Identity ===
story "5: moving a team to Pod Identity"
# The prod cluster's issuer, which podiam can reach (discovery and JWKS fetched at registration).
mkdir -m 700 "$tmp/prod"
start prod podiam up --data-dir "$tmp/prod" --listen 127.0.0.1:0
prod_issuer=$(until_line prod '^podiam is up at ' | awk '{print $5}')
drain prod
podiam cluster create --name prod --issuer-url "$prod_issuer" | expect "registered cluster prod" "cluster create"
podiam create podidentityassociation --cluster prod --namespace payments --service-account api \
  --role-name payments-api --permission-policy-arns arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess
# One role with ABAC on the namespace tag serves many namespaces.
aws iam put-role-policy --role-name payments-api --policy-name own-namespace-tags --policy-document \
  '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:ListRoleTags","Resource":"arn:aws:iam::000000000000:role/${aws:PrincipalTag/kubernetes-namespace}-*"}]}'
podiam create podidentityassociation --cluster prod --namespace shop --service-account api --role-name payments-api
aws iam create-role --role-name shop-data --assume-role-policy-document "file://$tmp/orders-trust.json" >/dev/null
# The node agent, as the DaemonSet runs it, with a key allowed only AssumeRoleForPodIdentity
# (docs/operating.md's least-privilege agent user).
aws iam create-user --user-name podiam-agent >/dev/null
aws iam put-user-policy --user-name podiam-agent --policy-name pod-identity --policy-document \
  '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"eks-auth:AssumeRoleForPodIdentity","Resource":"*"}]}'
aws iam create-access-key --user-name podiam-agent --query 'AccessKey.[AccessKeyId,SecretAccessKey]' --output text >"$tmp/agent-key"
read -r agent_ak agent_sk <"$tmp/agent-key"
printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$agent_ak" "$agent_sk" >"$tmp/agent-credentials"
start agent env -i PATH="$PATH" HOME="$tmp/agent-home" AWS_SHARED_CREDENTIALS_FILE="$tmp/agent-credentials" \
  AWS_EC2_METADATA_DISABLED=true podiam agent --cluster prod --server "$server_a" --listen 127.0.0.1:0 \
  --probe-listen 127.0.0.1:0
agent_credentials=""
agent_probe=""
while line=$(until_line agent '^(credentials|probe|podiam agent ready)'); do
  case $line in
    credentials*) agent_credentials=${line#credentials } ;;
    probe*) agent_probe=${line#probe } ;;
    "podiam agent ready") break ;;
  esac
done
drain agent
[ -n "$agent_credentials" ] || fail "the agent printed no credentials address"
for ns in payments shop; do
  env -u PODIAM_DATABASE_URL -u PODIAM_MASTER_KEY_FILE podiam token create --data-dir "$tmp/prod" --namespace "$ns" --service-account api \
    --audience pods.eks.amazonaws.com --pod-name "api-$ns-1" --pod-uid "uid-$ns-1" >"$tmp/$ns-pod-token"
done
# A pod's SDK: the container credentials provider, as EKS Pod Identity's webhook sets it up.
pi_pod() {
  env -i PATH="$PATH" HOME="$tmp/pod-home" AWS_CONTAINER_CREDENTIALS_FULL_URI="$agent_credentials" \
    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="$tmp/$1-pod-token" AWS_DEFAULT_REGION=us-east-1 \
    AWS_EC2_METADATA_DISABLED=true aws --endpoint-url "$server_b" "${@:2}"
}
pi_pod payments sts get-caller-identity --query Arn --output text | expect "assumed-role/payments-api/" "the payments pod"
pi_pod payments iam list-role-tags --role-name payments-api --query 'length(Tags)' --output text >/dev/null
if pi_pod payments iam list-role-tags --role-name shop-data >/dev/null 2>"$tmp/abac.err"; then
  fail "the payments pod read the shop namespace's role"
fi
expect AccessDenied "ABAC across namespaces" <"$tmp/abac.err"
pi_pod shop iam list-role-tags --role-name shop-data --query 'length(Tags)' --output text >/dev/null
echo "   one role: payments' pod reads payments-*, not shop-*; shop's pod reads shop-*"
if [ -n "$agent_probe" ]; then
  curl -sf "$agent_probe/metrics" | grep -q '^# TYPE ' || fail "the agent's /metrics is not Prometheus text"
  echo "   scraped the agent's $agent_probe/metrics"
fi
# A rollout of story 3's Deployment: the kubelet sends each replica SIGTERM and waits out the
# grace period; a replica on PostgreSQL stops well within it (its audit events written).
for r in a b; do
  pidvar=pid_$r
  stop_within 10 "${!pidvar}" "replica $r (podiam server on PostgreSQL)"
  ! grep -F "still in use" "$tmp/server_$r.log" || fail "replica $r stopped with its database pool still open"
done
echo "   both replicas stopped on SIGTERM, exit 0"
HOME=$real_home
echo
echo "stories: all five ran back to back"
