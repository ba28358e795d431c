#!/usr/bin/env bash
# Start ONE OpenSearch 2.19.1 node (+ k-NN, neural-search, ML Commons) from Maven Central artifacts, no tarball.
#
#   docker/opensearch-local/start.sh [--port PORT] [--assemble-only]
#
# 1. assembles a node "home" (lib/ modules/ plugins/) once with Maven into $OPENSEARCH_LOCAL_CACHE
#    (default ~/.cache/latentsearch/opensearch-local-2.19.1; Maven's own cache is ~/.m2);
# 2. makes a throw-away run directory (config/, data/, logs/; lib/ modules/ plugins/ link to the cache);
# 3. runs the node in the foreground on 127.0.0.1:PORT (default 9200), security off (the security plugin is not
#    installed), single-node discovery. It stops on Ctrl-C/SIGTERM or when its stdin reaches EOF, and the run
#    directory is removed.
#
# Env: OPENSEARCH_LOCAL_JAVA_OPTS (default -Xms512m -Xmx1g), OPENSEARCH_LOCAL_MVN_ARGS (e.g. -Dml.skip=true to
# leave out ML Commons and job-scheduler), JAVA_HOME (Java 17 or newer).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
port=9200
assemble_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --assemble-only) assemble_only=1; shift ;;
    *) echo "usage: $0 [--port PORT] [--assemble-only]" >&2; exit 2 ;;
  esac
done

java_bin="${JAVA_HOME:+$JAVA_HOME/bin/}java"
mvn_args="${OPENSEARCH_LOCAL_MVN_ARGS:-}"
cache="${OPENSEARCH_LOCAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/latentsearch/opensearch-local-2.19.1}"
# the assembled home is keyed by what defines it: the POM, the hand-written module descriptors, the Maven args
key=$(cat "$here/pom.xml" "$here"/modules/*/plugin-descriptor.properties <(echo "$mvn_args") | sha1sum | cut -c1-12)
home="$cache/home-$key"
if [ ! -f "$home/.complete" ]; then
  echo "[opensearch-local] assembling $home with Maven" >&2
  rm -rf "$home.tmp"
  # shellcheck disable=SC2086
  mvn -q -B -ntp -Dstyle.color=never -f "$here/pom.xml" generate-resources -Dhome="$home.tmp" $mvn_args >&2
  for d in "$here"/modules/*/; do cp "$d/plugin-descriptor.properties" "$home.tmp/modules/$(basename "$d")/"; done
  rm -rf "$home" && mv "$home.tmp" "$home" && touch "$home/.complete"
fi
[ "$assemble_only" = 1 ] && { echo "$home"; exit 0; }

run="$(mktemp -d "${TMPDIR:-/tmp}/opensearch-local.XXXXXX")"
pid=
cleanup() {
  trap - EXIT INT TERM
  [ -n "$pid" ] && { kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 143' INT TERM
mkdir -p "$run/config" "$run/data" "$run/logs"
ln -s "$home/lib" "$home/modules" "$home/plugins" "$run/"
cat > "$run/config/opensearch.yml" <<YML
cluster.name: latentsearch-test
node.name: latentsearch-test
network.host: 127.0.0.1
http.port: $port
discovery.type: single-node
path.data: $run/data
path.logs: $run/logs
cluster.routing.allocation.disk.threshold_enabled: false
plugins.ml_commons.only_run_on_ml_node: false
plugins.ml_commons.native_memory_threshold: 100
plugins.ml_commons.jvm_heap_memory_threshold: 100
YML
cat > "$run/config/log4j2.properties" <<'L4J'
status = error
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d{HH:mm:ss,SSS}][%-5p][%c{1.}] %m%n
rootLogger.level = info
rootLogger.appenderRef.console.ref = console
logger.deprecation.name = org.opensearch.deprecation
logger.deprecation.level = error
L4J
# shellcheck disable=SC2086
"$java_bin" ${OPENSEARCH_LOCAL_JAVA_OPTS:--Xms512m -Xmx1g} -XX:+UseSerialGC -Djava.awt.headless=true \
  -Dlog4j2.disable.jmx=true -Dlog4j.shutdownHookEnabled=false -Dfile.encoding=UTF-8 \
  -Djava.io.tmpdir="$run" -cp "$run/lib/*" "$here/Launcher.java" "$run" <&0 &
pid=$!
set +e
wait "$pid"
rc=$?
echo "[opensearch-local] the node exited with status $rc" >&2
exit "$rc"
