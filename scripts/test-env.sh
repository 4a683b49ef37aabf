# Sourced by `make test`: exports what scripts/test-setup.sh prepared.
state=${HIMALIA_TEST_STATE:-/tmp/himalia-test}
if [ -s "$state/pg_url" ]; then
    HIMALIA_TEST_PG_URL=$(cat "$state/pg_url")
    export HIMALIA_TEST_PG_URL
fi
if [ -s "$state/ldap/env" ]; then
    HIMALIA_TEST_LDAP_ENV="$state/ldap/env"
    export HIMALIA_TEST_LDAP_ENV
fi
