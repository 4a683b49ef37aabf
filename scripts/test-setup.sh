#!/usr/bin/env bash
# Install and start what the test suite needs beyond Python packages:
# Debian's chromium (for Playwright), wrk-free; a PostgreSQL server on loopback.
# Idempotent. Writes scripts/test-env.sh's inputs under ${HIMALIA_TEST_STATE:-/tmp/himalia-test}.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
state=${HIMALIA_TEST_STATE:-/tmp/himalia-test}
mkdir -p "$state"

need=()
command -v chromium >/dev/null || need+=(chromium)
command -v pg_ctl >/dev/null || [ -x /usr/lib/postgresql/15/bin/pg_ctl ] || need+=(postgresql)
# The test OpenID Provider (tests/engines/oidc) runs on node >= 20 (this machine kind has it).
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends "${need[@]}" \
            || { apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}"; }
    else
        echo "test-setup: missing ${need[*]} and not root; those tests will be skipped" >&2
    fi
fi

if [ "$(id -u)" = 0 ] && { command -v pg_ctl >/dev/null || [ -d /usr/lib/postgresql ]; }; then
    port=${PG_PORT:-25432}
    PG_PORT=$port PG_DIR="$state/pg-$port" bash "$here/pg_up.sh" | tail -n 1 > "$state/pg_url"
else
    rm -f "$state/pg_url"
fi
# OpenLDAP's slapd for the LDAP sign-in tests: ldap_up.sh installs Debian's slapd if missing and
# runs its own instance (test CA, LDAPS and StartTLS) on loopback; its settings go to ldap/env.
if [ "$(id -u)" = 0 ]; then
    LDAP_DIR="$state/ldap" LDAP_PORT=${LDAP_PORT:-25389} LDAPS_PORT=${LDAPS_PORT:-25636} \
        bash "$here/../tests/engines/ldap_up.sh" | tail -n 1
else
    echo "test-setup: not root: the LDAP tests will be skipped" >&2
fi
# The test OpenID Provider's pinned npm packages (package-lock.json), in the checkout.
oidc_dir="$here/../tests/engines/oidc"
if command -v npm >/dev/null; then
    want=$(node -p "require('$oidc_dir/package-lock.json').packages['node_modules/oidc-provider'].version")
    have=$(node -p "try { require('$oidc_dir/node_modules/oidc-provider/package.json').version } catch { '' }")
    if [ "$have" != "$want" ]; then
        (cd "$oidc_dir" && npm ci --no-audit --no-fund --loglevel=error)
        echo "test-setup: installed oidc-provider $want into tests/engines/oidc/node_modules"
    fi
fi
# A one-node Slurm (munged, slurmctld, slurmd) for the slurm spawner's tests (tests/hub/test_slurm.py).
if [ "$(id -u)" = 0 ]; then
    if ! bash "$here/slurm_up.sh" > "$state/slurm_up.log" 2>&1; then
        cat "$state/slurm_up.log" >&2
        echo "test-setup: Slurm did not start; its tests will fail in CI, be skipped elsewhere" >&2
        [ "${CI:-}" != true ] || exit 1
    fi
fi
# Users' servers run as their own accounts in the tests: those accounts must reach the venv.
if [ "$(id -u)" = 0 ]; then
    venv_python="$here/../.venv/bin/python"
    if ! setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$venv_python" -c pass 2>/dev/null; then
        if [ "${CI:-}" = true ]; then
            # A throwaway CI machine: let other accounts traverse (not list) the checkout's parents.
            dir=$(cd "$here/.." && pwd)
            while [ "$dir" != / ]; do chmod o+x "$dir"; dir=$(dirname "$dir"); done
            echo "test-setup: made the checkout's parent directories traversable for test accounts"
        else
            echo "test-setup: other accounts cannot run $venv_python (a parent directory is private);" >&2
            echo "test-setup: the per-user account tests will fail; clone under a traversable path" >&2
        fi
    fi
fi
echo "test-setup: done"
