# Source this file (bash): it installs PostgreSQL from Debian's packages when missing, starts a throwaway
# server on loopback in a temporary folder, and exports QITER_TEST_POSTGRES_URL for the tests that need a
# real database (tests/test_studies_postgres.py). The server stops, and its folder goes, when the shell exits.
#   . .ci/postgres.sh && python -m pytest tests/test_studies_postgres.py
# Returns non-zero (and exports nothing) when no server could be started.

qiter_pg_start() {
    local bin_dir data_dir port run_as=()
    if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
        if [ "$(id -u)" != 0 ]; then
            echo "postgres: not installed, and installing it needs root (apt-get install postgresql)" >&2
            return 1
        fi
        echo "postgres: installing Debian's postgresql package"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >/dev/null ||
            { echo "postgres: apt-get install postgresql failed" >&2; return 1; }
    fi
    bin_dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    QITER_PG_DIR=$(mktemp -d /tmp/qiter-pg.XXXXXX)
    data_dir="$QITER_PG_DIR/data"
    # The server refuses to run as root: as root it runs as the package's postgres user.
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$QITER_PG_DIR"
        run_as=(runuser -u postgres --)
    fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "${run_as[@]}" "$bin_dir/initdb" -D "$data_dir" -U qiter -A trust --no-sync >"$QITER_PG_DIR/initdb.log" 2>&1 ||
        { echo "postgres: initdb failed: $(tail -n 3 "$QITER_PG_DIR/initdb.log")" >&2; return 1; }
    # Loopback only, socket in the temp folder (not /var/run/postgresql), no fsync: a test server.
    "${run_as[@]}" "$bin_dir/pg_ctl" -D "$data_dir" -l "$QITER_PG_DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $QITER_PG_DIR -c fsync=off -c max_connections=200" \
        start >/dev/null ||
        { echo "postgres: server did not start: $(tail -n 3 "$QITER_PG_DIR/server.log")" >&2; return 1; }
    QITER_PG_STOP="${run_as[*]} $bin_dir/pg_ctl -D $data_dir -m immediate stop"
    export QITER_TEST_POSTGRES_URL="postgresql+psycopg://qiter@127.0.0.1:$port/postgres"
    echo "postgres: $("$bin_dir/postgres" --version) on 127.0.0.1:$port ($QITER_PG_DIR)"
}

qiter_pg_stop() {
    if [ -n "${QITER_PG_STOP:-}" ]; then
        $QITER_PG_STOP >/dev/null 2>&1 || true
        rm -rf "$QITER_PG_DIR"
        unset QITER_PG_STOP QITER_TEST_POSTGRES_URL
    fi
}
trap qiter_pg_stop EXIT

qiter_pg_start
