#!/bin/sh
# The container's entrypoint: `docket "$@"` (the image's CMD is `serve`).
#
# DOCKET_MIGRATE_ON_START=1 (or true) runs `docket migrate` before `docket serve`, with the
# same arguments (`serve` replaced by `migrate`, so `--config FILE` applies to both); a
# failed migration stops the container with its exit status and the server never starts.
# Other commands (`tenant create`, `maintenance sweep`, ...) run as they are.
#
# docket refuses any DOCKET_* variable that is not a configuration key, so this one is taken
# out of the environment before docket runs. `docker exec` does not pass through here: run
# operator commands as `docker compose run --rm docket tenant list` (or
# `docker exec CONTAINER docker-entrypoint.sh tenant list`), not `docker exec ... docket ...`.
set -eu

migrate_on_start=${DOCKET_MIGRATE_ON_START:-}
unset DOCKET_MIGRATE_ON_START

if [ "$#" -eq 0 ]; then
    set -- serve
fi

case $migrate_on_start in
    1 | true | TRUE | True | yes) migrate=1 ;;
    '' | 0 | false | FALSE | False | no) migrate=0 ;;
    *)
        echo "docker-entrypoint: DOCKET_MIGRATE_ON_START must be 1/true or 0/false, not '$migrate_on_start'" >&2
        exit 2
        ;;
esac

# Runs `docket` with the given arguments, each `serve` replaced by `migrate`.
migrate_first() {
    for arg do
        shift
        if [ "$arg" = serve ]; then
            set -- "$@" migrate
        else
            set -- "$@" "$arg"
        fi
    done
    docket "$@"
}

if [ "$migrate" = 1 ]; then
    serving=0
    for arg do
        if [ "$arg" = serve ]; then
            serving=1
        fi
    done
    if [ "$serving" = 1 ]; then
        echo "docker-entrypoint: DOCKET_MIGRATE_ON_START is set: running docket migrate first" >&2
        status=0
        migrate_first "$@" || status=$?
        if [ "$status" -ne 0 ]; then
            echo "docker-entrypoint: docket migrate failed (exit $status); not starting the server" >&2
            exit "$status"
        fi
    fi
fi

exec docket "$@"
