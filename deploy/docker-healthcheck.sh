#!/bin/sh
# The image's HEALTHCHECK: GET /healthz on docket's own listener, read from DOCKET_LISTEN
# (default 0.0.0.0:8080), over https when DOCKET_TLS__CERT_FILE is set. In a container,
# set `listen` and `tls.*` through these variables (not only in a TOML file), or override
# the health check.
#
# /healthz says the process answers; readiness (the databases take writes) is /readyz,
# which orchestrators probe separately (deploy/k8s/deployment.yaml).
set -eu

listen=${DOCKET_LISTEN:-0.0.0.0:8080}
port=${listen##*:}
host=${listen%:*}
case $host in
    '' | 0.0.0.0) host=127.0.0.1 ;;
    '[::]') host='[::1]' ;;
esac

scheme=http
if [ -n "${DOCKET_TLS__CERT_FILE:-}" ]; then
    scheme=https
fi

# -k: the certificate names the public host, not the loopback address asked here; this
# only checks that the server answers.
exec curl --fail --silent --show-error --insecure --globoff --max-time 4 --output /dev/null \
    "$scheme://$host:$port/healthz"
